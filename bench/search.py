"""Index build time, query latency (p50 / p99), disk per image and HNSW recall against exact
search, at growing collection sizes, with synthetic descriptors.

    .venv/bin/python bench/search.py --sizes 1000,10000,100000,1000000 --dim 1280 [--queries 200]
    .venv/bin/python bench/search.py --sizes 10000,100000 --milvus milvus:   # + the Milvus store

With `--milvus ADDRESS` the same vectors are also put in Milvus collections (FLAT and HNSW with the
FAISS graph's M and efConstruction, filled from the catalog by `MilvusStore.rebuild`) and the same
queries searched through `Index.search_vector` with that store; recall is against FAISS exact.

The vectors are synthetic (clustered unit vectors in the dimension of VGG16 FCroW over conv3_3 +
conv4_3 + conv5_3 = 1280), written through the real catalog (SQLite, one transaction per 1000
images) and searched through `Index.search_vector`, so storage, loading and ranking are the real
code; only the CNN is left out (its cost is in bench/extract.py). Queries are noisy copies of
database vectors.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from layerseek.index import Index  # noqa: E402
from layerseek.store.vectors import FaissStore, MilvusStore, parse_store  # noqa: E402


def synthetic(n: int, dim: int, rng, clusters: int = 256, chunk: int = 100_000) -> np.ndarray:
    """Clustered unit vectors, made in float32 chunks (1M x 1280 is 5 GB; no float64 copy of it)."""
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    out = np.empty((n, dim), np.float32)
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        x = centres[rng.integers(0, clusters, m)] + 0.8 * rng.standard_normal((m, dim), dtype=np.float32)
        out[s:s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def pct(values, p):
    return float(np.percentile(values, p) * 1000)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--json")
    ap.add_argument("--milvus", help="also measure the Milvus store at this address (milvus: = milvus-lite)")
    ap.add_argument("--faiss-modes", default="exact,hnsw", help="which FAISS searches to time (exact is the "
                                                                "recall reference and always runs)")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        tmp = Path(tempfile.mkdtemp(prefix="ls-bench-"))
        idx = Index.create(tmp / "idx", "fcrow", backbone="vgg16", ann="exact")
        assert idx.catalog.dim == args.dim, f"this method's dimension is {idx.catalog.dim}"
        vecs = synthetic(n, args.dim, rng)
        t0 = time.perf_counter()
        for s in range(0, n, 1000):
            ups = [(f"/synthetic/{i}.jpg", 1, 1, hashlib.sha256(str(i).encode()).hexdigest(), 1, 1, vecs[i])
                   for i in range(s, min(n, s + 1000))]
            idx.catalog.commit_batch(ups)
        t_build = time.perf_counter() - t0
        qi = rng.integers(0, n, args.queries)
        base = vecs[qi].copy()
        del vecs, ups  # only the catalog holds them now (1M x 1280 floats would be held twice)
        t0 = time.perf_counter()
        idx.store.flat()  # first load: reads the blobs, writes the exact store's rows (cache/flat-<tag>.npy)
        t_load_cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        FaissStore(idx.catalog).flat()  # as a new process meets it: the rows from cache/, memory-mapped
        t_load_warm = time.perf_counter() - t0
        queries = base + 0.3 * rng.standard_normal((args.queries, args.dim)).astype(np.float32) / np.sqrt(args.dim)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        res = {"n": n, "dim": args.dim, "build_s": t_build, "load_cold_s": t_load_cold, "load_warm_s": t_load_warm}
        exact_top = []
        stores = [("", "exact")] + [("", "hnsw")] * ("hnsw" in args.faiss_modes.split(",")) + (
            [("milvus_", "exact"), ("milvus_", "hnsw")] if args.milvus else [])
        for prefix, mode in stores:
            idx.catalog.manifest["ann"] = mode
            key = prefix + mode
            if prefix:  # a Milvus collection per mode, filled from the catalog
                spec = {**parse_store(args.milvus, tmp / "idx"), "collection": f"bench_{mode}_{n}"}
                store = MilvusStore(idx.catalog, spec)
                t0 = time.perf_counter()
                store.rebuild()
                res[f"{key}_fill_s"] = time.perf_counter() - t0
                # Milvus builds the index of sealed segments in the background and scans the rest
                # meanwhile: time the searches once it is built
                t0 = time.perf_counter()
                while True:
                    info = store.client.describe_index(spec["collection"], "vec")
                    if int(info.get("pending_index_rows", 0)) == 0 and int(info.get("indexed_rows", 0)) >= n:
                        break
                    time.sleep(1)
                res[f"{key}_index_wait_s"] = time.perf_counter() - t0
                idx._store = store
            t0 = time.perf_counter()
            idx.search_vector(queries[0], args.k)  # builds the HNSW graph on first use
            res[f"{key}_first_s"] = time.perf_counter() - t0
            times, tops = [], []
            for q in queries:
                t0 = time.perf_counter()
                hits = idx.search_vector(q, args.k)
                times.append(time.perf_counter() - t0)
                tops.append([h.id for h in hits])
            res[f"{key}_p50_ms"], res[f"{key}_p99_ms"] = pct(times, 50), pct(times, 99)
            print(f"  {n} {key}: p50 {res[f'{key}_p50_ms']:.2f} ms", file=sys.stderr, flush=True)
            if key == "exact":
                exact_top = tops
            else:
                res[f"{key}_recall@10"] = float(np.mean([len(set(a) & set(b)) / len(a) for a, b in zip(exact_top, tops)]))
            if prefix:
                store.drop()
                store.close()
                idx._store = None
        size = sum(p.stat().st_size for p in (tmp / "idx").rglob("*") if p.is_file())
        cat = (tmp / "idx" / "catalog.sqlite").stat().st_size
        res["disk_bytes_per_image"] = size / n
        res["catalog_bytes_per_image"] = cat / n
        rows.append(res)
        print(json.dumps(res), flush=True)
        idx.close()
        shutil.rmtree(tmp)
    print()
    print(f"{'images':>8} {'build s':>8} {'load s':>7} {'exact p50/p99 ms':>17} {'HNSW build s':>12} "
          f"{'HNSW p50/p99 ms':>16} {'recall@10':>9} {'catalog B/img':>13} {'disk B/img':>10}")
    for r in (r for r in rows if "hnsw_p50_ms" in r):
        print(f"{r['n']:>8} {r['build_s']:>8.1f} {r['load_cold_s']:>7.2f} "
              f"{r['exact_p50_ms']:>8.2f}/{r['exact_p99_ms']:<8.2f} {r['hnsw_first_s']:>12.1f} "
              f"{r['hnsw_p50_ms']:>7.2f}/{r['hnsw_p99_ms']:<8.2f} {r['hnsw_recall@10']:>9.3f} "
              f"{r['catalog_bytes_per_image']:>13.0f} {r['disk_bytes_per_image']:>10.0f}")
    if args.milvus:
        print(f"\n{'images':>8} {'FLAT fill+index s':>17} {'FLAT p50/p99 ms':>16} {'recall@10':>9} "
              f"{'HNSW fill+index s':>17} {'HNSW p50/p99 ms':>16} {'recall@10':>9}   (Milvus at {args.milvus})")
        for r in rows:
            flat = f"{r['milvus_exact_fill_s']:.1f}+{r['milvus_exact_index_wait_s']:.1f}"
            hnsw = f"{r['milvus_hnsw_fill_s']:.1f}+{r['milvus_hnsw_index_wait_s']:.1f}"
            print(f"{r['n']:>8} {flat:>17} {r['milvus_exact_p50_ms']:>7.2f}/{r['milvus_exact_p99_ms']:<8.2f} "
                  f"{r['milvus_exact_recall@10']:>9.3f} {hnsw:>17} "
                  f"{r['milvus_hnsw_p50_ms']:>7.2f}/{r['milvus_hnsw_p99_ms']:<8.2f} {r['milvus_hnsw_recall@10']:>9.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
