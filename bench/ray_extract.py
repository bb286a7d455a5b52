"""Indexing throughput: the local path against Ray Data with 1 and 2 worker actors on this machine.

    .venv/bin/python bench/ray_extract.py --images 96 --backbone mobilenet_v2 --max-side 1024

Each run indexes the same folder of photos (the Paris subset, first N files) into a new index
through `Index.add_folder` (decoding, the network, the method, the catalog writes), and reports
wall time and images per second. Ray is started once before the Ray runs (its start-up is reported
apart); each Ray run includes its actors' start-up (building the network, loading the weights).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from layerseek.index import Index  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "paris6k-subset" / "jpg"


def run(folder: Path, opts: dict, **kw) -> tuple[float, float, int]:
    """(wall seconds, seconds to the first result, images added)"""
    tmp = Path(tempfile.mkdtemp(prefix="ls-ray-bench-"))
    try:
        idx = Index.create(tmp / "idx", opts["method"], backbone=opts["backbone"], max_side=opts["max_side"])
        first = []

        def progress(done, total):
            if done == 1:
                first.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        report = idx.add_folder(folder, progress=progress, **kw)
        wall = time.perf_counter() - t0
        assert not report.failed, report.failed
        idx.close()
        return wall, first[0], report.added
    finally:
        shutil.rmtree(tmp)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=96)
    ap.add_argument("--method", default="fcrow")
    ap.add_argument("--backbone", default="mobilenet_v2")
    ap.add_argument("--max-side", type=int, default=1024)
    args = ap.parse_args()
    opts = {"method": args.method, "backbone": args.backbone, "max_side": args.max_side}
    folder = Path(tempfile.mkdtemp(prefix="ls-ray-photos-"))
    for p in sorted(DATA.glob("*.jpg"))[:args.images]:
        shutil.copy(p, folder / p.name)
    print(f"{args.images} photos, {args.method} on {args.backbone} at {args.max_side} px, {os.cpu_count()} CPUs")
    rows = []
    run(folder, opts)  # warm-up: weights into the page cache, allocator settled
    rows.append(("local (2 decode threads, torch on all cores)", *run(folder, opts)))

    import ray

    t0 = time.perf_counter()
    ray.init(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    t_init = time.perf_counter() - t0
    for workers in (1, 2):
        rows.append((f"Ray Data, {workers} worker actor{'s' * (workers > 1)}",
                     *run(folder, opts, ray="local", ray_workers=workers)))
    ray.shutdown()
    print("| path | images | wall s | images / s | first result after s | images / s after the first |\n"
          "|---|---:|---:|---:|---:|---:|")
    for name, wall, first, n in rows:
        print(f"| {name} | {n} | {wall:.1f} | {n / wall:.2f} | {first:.1f} | {(n - 1) / (wall - first):.2f} |")
    print(f"(ray.init: {t_init:.1f} s, not included)")
    shutil.rmtree(folder)


if __name__ == "__main__":
    main()
