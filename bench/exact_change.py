"""The exact (brute-force) store after a small change: how long the first search takes once C
images are added and C removed, as a served index meets it (`serve` / `watch`: the store is
already loaded) and as a fresh process meets it (`layerseek search` after `layerseek index`).

    .venv/bin/python bench/exact_change.py --sizes 10000,49000 --change 1,100

Vectors are bench/search.py's synthetic clustered unit vectors (the default R-MAC on MobileNetV2's
dimension, 1728), written through the real catalog of an index in exact mode and searched
through `FaissStore.search`; each figure is the median of --repeats changes. Every search is
checked: a removed image is never returned, an added one is found first by its own vector.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from search import synthetic  # noqa: E402

from layerseek.index import Index  # noqa: E402


def row(i: int, vec: np.ndarray) -> tuple:
    return (f"/s/{i}.jpg", 1, 1, hashlib.sha256(str(i).encode()).hexdigest(), 1, 1, vec)


def one_size(n: int, changes: list[int], repeats: int, rng) -> list[dict]:
    tmp = tempfile.TemporaryDirectory(dir="/var/tmp")
    root = Path(tmp.name) / "idx"
    idx = Index.create(root, "rmac", ann="exact", backbone="mobilenet_v2")
    dim = idx.catalog.dim  # 1728: the default layers' channels, fused
    extra = 2 * sum(changes) * repeats
    vecs = synthetic(n + extra, dim, rng)
    for s in range(0, n, 1000):
        idx.catalog.commit_batch([row(i, vecs[i]) for i in range(s, min(n, s + 1000))])
    store = idx.store
    store.search(vecs[0], 10)  # warm: the matrix read (and cached on disk)
    live, nxt, out = list(range(n)), n, []

    def change(c: int) -> tuple[list[int], list[int]]:
        nonlocal nxt
        gone = [live.pop(int(rng.integers(0, len(live)))) for _ in range(c)]
        new = list(range(nxt, nxt + c))
        nxt += c
        idx.catalog.commit_batch([row(i, vecs[i]) for i in new], deletes=[f"/s/{i}.jpg" for i in gone])
        live.extend(new)
        return gone, new

    def check(ids, gone, new) -> None:
        paths = [e.path for e in map(idx.catalog.by_id, ids.tolist()) if e]
        assert paths[0] == f"/s/{new[0]}.jpg", "an added image not found first"
        assert not set(paths) & {f"/s/{i}.jpg" for i in gone}, "a removed image returned"

    for c in changes:
        served, fresh = [], []
        for _ in range(repeats):
            gone, new = change(c)  # met by the loaded store (serve, watch)
            t0 = time.perf_counter()
            ids, _ = store.search(vecs[new[0]], 10)
            served.append(time.perf_counter() - t0)
            check(ids, gone, new)
            gone, new = change(c)  # met by a new process (search after index): open, first search
            t0 = time.perf_counter()
            with Index.open(root) as again:
                ids, _ = again.store.search(vecs[new[0]], 10)
            fresh.append(time.perf_counter() - t0)
            check(ids, gone, new)
        res = {"images": n, "change": c, "served_first_search_ms": statistics.median(served) * 1000,
               "fresh_open_and_search_ms": statistics.median(fresh) * 1000}
        print(json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in res.items()}), flush=True)
        out.append(res)
    t0 = time.perf_counter()
    for _ in range(20):
        store.search(vecs[live[0]], 10)
    print(json.dumps({"images": n, "steady_search_ms": round((time.perf_counter() - t0) / 20 * 1000, 1)}), flush=True)
    idx.close()
    tmp.cleanup()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,49000")
    ap.add_argument("--change", default="1,100", help="images added and as many removed, per change")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    for n in map(int, args.sizes.split(",")):
        one_size(n, [int(c) for c in args.change.split(",")], args.repeats, rng)


if __name__ == "__main__":
    main()
