"""What a camera's RAW file costs to index: DNGs made from the phone-size photos, with the JPEG a
camera embeds (full size) and without one that covers the network's size (as many phones' DNGs).

    .venv/bin/python bench/raw_photos.py /var/tmp/raw10 --photos /var/tmp/phone30/12mp --n 10

Writes N DNGs of each kind (`tests/rawfiles.py`: the photo as an RGGB mosaic, 16 bits, uncompressed,
about 25 MB each; the photos are 12 MP, 4032 x 3024) under DIR/preview and DIR/sensor, and the N
JPEGs they were made from under DIR/jpeg, then for each kind: `load_image` of each file (the best
of 3, at the index's 1024 px; the median over the files) and `layerseek index` of the folder as a user runs it (a fresh process, its start included).
Real cameras' files are smaller (their data compressed: decoding those costs more) and could not be
measured here; the DNGs are benchmark data: keep them outside the repository.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from layerseek.images import load_image  # noqa: E402
from tests.rawfiles import dng_bytes  # noqa: E402


def make(out: Path, photos: list[Path]) -> None:
    from PIL import Image

    for kind in ("jpeg", "preview", "sensor"):
        (out / kind).mkdir(parents=True, exist_ok=True)
    for p in photos:
        shutil.copy(p, out / "jpeg" / p.name)
        rgb = np.asarray(Image.open(p).convert("RGB"))
        rgb = np.ascontiguousarray(rgb[: rgb.shape[0] // 2 * 2, : rgb.shape[1] // 2 * 2])
        (out / "preview" / f"{p.stem}.dng").write_bytes(dng_bytes(rgb, rgb))
        (out / "sensor" / f"{p.stem}.dng").write_bytes(dng_bytes(rgb))


def median_ms(paths: list[Path]) -> float:
    each = []
    for p in paths:
        runs = []
        for _ in range(3):
            t = time.perf_counter()
            load_image(p)
            runs.append(time.perf_counter() - t)
        each.append(min(runs))
    return 1000 * statistics.median(each)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--photos", type=Path, required=True, help="the 12 MP JPEGs (bench/speed_profile.py photos)")
    ap.add_argument("--n", type=int, default=10)
    a = ap.parse_args()
    photos = sorted(a.photos.glob("*.jpg"))[: a.n]
    if not (a.folder / "sensor").is_dir():
        make(a.folder, photos)
    print(f"load_image at 1024 px, median of {len(photos)} (best of 3 each), and `layerseek index` of each folder:")
    for kind in ("jpeg", "preview", "sensor"):
        files = sorted(p for p in (a.folder / kind).iterdir())
        print(f"  {kind}: {median_ms(files):.0f} ms")
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            subprocess.run([str(ROOT / ".venv/bin/layerseek"), "index", str(a.folder / kind), "--index", f"{tmp}/r.lsx"],
                           check=True, capture_output=True)
            wall = time.perf_counter() - t
        print(f"  `layerseek index` of the {len(files)}: {wall:.2f} s, {len(files) / wall:.2f} photos/s with its start")


if __name__ == "__main__":
    main()
