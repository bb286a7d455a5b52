"""The HNSW graph kept in step with the catalog in place (issue 14): build it once, sweep efSearch
for latency against recall@10 of exact search, then apply a change of C images (C/2 removed,
C/2 added) and time it, checking that no removed image is returned and every added one is found;
then a second change applied by a newly opened Index (graph files loaded first), as
`layerseek index` meets it; with --merge, last, the change that merges the recent graph into the
main one.

    .venv/bin/python bench/ann_inplace.py --size 1000000 --change 1000 --queries 200

Vectors are bench/search.py's synthetic clustered unit vectors (dimension 1280), written through
the real catalog; the graph is the store's own (`store.vectors.HnswGraph`, M 32, efConstruction
80) reached through `FaissStore.graph()` and searched through `FaissStore.search`, so loading,
tombstones and id mapping are the real code. Queries are noisy copies of database vectors.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from search import synthetic  # noqa: E402

from layerseek.index import Index  # noqa: E402
from layerseek.store import vectors as V  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--change", type=int, default=1000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--ef", default="64,128,256,512")
    ap.add_argument("--merge", action="store_true", help="last, add rows until the recent graph is merged into "
                                                         "the main one, and time that")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    n, k = args.size, 10
    tmp = tempfile.TemporaryDirectory(dir="/var/tmp")
    idx = Index.create(Path(tmp.name) / "idx", "gem", ann="hnsw", backbone="vgg16",
                       layers=("conv3_3", "conv4_3", "conv5_3"))
    assert idx.catalog.dim == args.dim, idx.catalog.dim
    vecs = synthetic(n + args.change // 2, args.dim, rng)
    extra = vecs[n:].copy()

    def rows(lo, hi, src, offset=0):
        return [(f"/s/{i + offset}.jpg", 1, 1, hashlib.sha256(str(i + offset).encode()).hexdigest(), 1, 1, src[i])
                for i in range(lo, hi)]

    t0 = time.perf_counter()
    for s in range(0, n, 1000):
        idx.catalog.commit_batch(rows(s, min(n, s + 1000), vecs))
    out = {"size": n, "dim": args.dim, "catalog_write_s": time.perf_counter() - t0}
    qi = rng.integers(0, n, args.queries)
    queries = vecs[qi] + 0.3 * rng.standard_normal((args.queries, args.dim)).astype(np.float32) / np.sqrt(args.dim)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    ids = idx.catalog.matrix()[0]
    exact = [set(ids[np.argsort(-(vecs[:n] @ q))[:k]].tolist()) for q in queries]
    del vecs
    store = idx.store
    t0 = time.perf_counter()
    g = store.graph()
    out["build_s"] = time.perf_counter() - t0
    print(f"{n} vectors: catalog {out['catalog_write_s']:.0f} s, graph built in {out['build_s']:.0f} s", flush=True)

    default_ef = V.HNSW_EF_MIN

    def sweep(tag):
        res = {}
        for ef in map(int, args.ef.split(",")):
            V.HNSW_EF_MIN = ef
            times, hits = [], 0
            for q, want in zip(queries, exact):
                t = time.perf_counter()
                found, _ = store.search(q, k)
                times.append(time.perf_counter() - t)
                hits += len(want & set(found.tolist()))
            res[ef] = {"p50_ms": 1000 * float(np.percentile(times, 50)), "p99_ms": 1000 * float(np.percentile(times, 99)),
                       "recall@10": hits / sum(len(w) for w in exact)}
            print(f"{tag} efSearch {ef}: p50 {res[ef]['p50_ms']:.2f} ms, p99 {res[ef]['p99_ms']:.2f} ms, "
                  f"recall@10 {res[ef]['recall@10']:.3f}", flush=True)
        return res

    out["sweep"] = sweep("built")
    # a change: C/2 images removed (among the exact answers, so the check means something), C/2 added
    half = args.change // 2
    victims = sorted({int(i) for s in exact for i in s})[::2][:half]  # every other one: some answers stay
    if len(victims) < half:
        victims += [int(i) for i in ids[:half - len(victims)] if int(i) not in victims]
    paths = [idx.catalog.by_id(i).path for i in victims]
    t0 = time.perf_counter()
    idx.catalog.commit_batch((), deletes=paths)
    idx.catalog.commit_batch(rows(0, half, extra, offset=10 * n))
    out["change_commit_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    g2 = store.graph()
    out["change_apply_s"] = time.perf_counter() - t0
    out["rebuilt"] = g2 is not g
    added = {e.path: e.id for e in idx.catalog.entries(under="/s")}
    new_ids = [added[f"/s/{10 * n + i}.jpg"] for i in range(half)]
    V.HNSW_EF_MIN = default_ef
    found_added = sum(int(store.search(extra[i], 1)[0][0] == new_ids[i]) for i in range(half))
    gone = set(victims)
    returned_removed = sum(len(gone & set(store.search(q, 100)[0].tolist())) for q in queries)
    out.update({"added_found_first": found_added, "added": half, "removed": len(victims),
                "removed_returned": returned_removed, "dead_rows": g2.dead, "graph_rows": g2.ntotal})
    print(f"change of {args.change}: committed in {out['change_commit_s']:.1f} s, applied to the graph in "
          f"{out['change_apply_s']:.1f} s ({'rebuilt' if out['rebuilt'] else 'in place'}); added found first "
          f"{found_added}/{half}; removed returned {returned_removed} times in the top 100 of {len(queries)} queries",
          flush=True)
    # the reference after the change: the exact answers that are still there; recall = the share
    # of them found (an added vector that would now enter a true top 10 is not counted either way)
    exact = [s - gone for s in exact]
    out["sweep_after_change"] = sweep("after change")
    # as `layerseek index` meets it: a new process opens the index, loads the graph files and
    # applies another change of C images that the catalog holds
    more = sorted(set(ids[half:].tolist()) - gone)[:half]
    idx.catalog.commit_batch((), deletes=[idx.catalog.by_id(i).path for i in more])
    idx.catalog.commit_batch(rows(0, half, synthetic(half, args.dim, rng), offset=20 * n))
    del g, g2
    idx.close()
    reopened = Index.open(Path(tmp.name) / "idx")
    t0 = time.perf_counter()
    g3 = reopened.store.graph()
    out["reopen_apply_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    V.HnswGraph.load(Path(tmp.name) / "idx" / "cache")
    out["graph_load_s"] = time.perf_counter() - t0
    out["reopen_rebuilt"] = g3.dead == 0
    print(f"another change of {args.change}, applied by a new Index: {out['reopen_apply_s']:.1f} s (reading the graph "
          f"files alone, timed separately after it: {out['graph_load_s']:.1f} s)", flush=True)
    if args.merge:
        # rows added until the recent graph passes HNSW_RECENT_SHARE of the main one: the apply
        # that merges it (linking its rows into the main graph, one copy of the main storage)
        need = int(V.HNSW_RECENT_SHARE * g3.main.ntotal) + 1 - g3.recent.ntotal
        reopened.catalog.commit_batch(rows(0, need, synthetic(need, args.dim, rng), offset=30 * n))
        recent_before = g3.recent.ntotal + need
        t0 = time.perf_counter()
        g4 = reopened.store.graph()
        out["merge_apply_s"] = time.perf_counter() - t0
        out["merged_rows"] = recent_before
        assert g4.recent.ntotal == 0, "not merged"
        print(f"{need} more rows: the recent graph ({recent_before} rows) merged into the main one in "
              f"{out['merge_apply_s']:.1f} s", flush=True)
    out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    reopened.close()


if __name__ == "__main__":
    main()
