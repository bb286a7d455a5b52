"""What a truncated diffusion costs per query on a large index (issue 14): past
`diffusion.FULL_GRAPH_MAX` images each query reads its shortlist's vectors from the catalog, builds
their k-NN graph (`shortlist_graph`) and diffuses over it. Synthetic clustered vectors (bench/search.py's)
written through the real catalog; the shortlist is each query's exact best T plus nothing else.

    .venv/bin/python bench/diffusion_shortlist.py --size 100000 --shortlist 1000
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from search import synthetic  # noqa: E402

from layerseek.index import Index  # noqa: E402
from layerseek.verify.diffusion import shortlist_graph, verified_diffusion  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--shortlist", type=int, default=1000)
    ap.add_argument("--queries", type=int, default=20)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    tmp = tempfile.TemporaryDirectory(dir="/var/tmp")
    idx = Index.create(Path(tmp.name) / "idx", "gem", ann="hnsw", backbone="vgg16",
                       layers=("conv3_3", "conv4_3", "conv5_3"))
    assert idx.catalog.dim == args.dim, idx.catalog.dim
    vecs = synthetic(args.size, args.dim, rng)
    for s in range(0, args.size, 1000):
        idx.catalog.commit_batch([(f"/s/{i}.jpg", 1, 1, hashlib.sha256(str(i).encode()).hexdigest(), 1, 1, vecs[i])
                                  for i in range(s, min(args.size, s + 1000))])
    all_ids = idx.catalog.id_hashes()[0]
    steps = {"read the vectors": [], "k-NN graph and affinity": [], "diffusion": []}
    for _ in range(args.queries):
        q = vecs[rng.integers(args.size)]
        top = all_ids[np.argsort(-(vecs @ q))[:args.shortlist]].tolist()
        order = top[:100]  # the verified shortlist, its first two verified
        t0 = time.perf_counter()
        mat = idx.catalog.vectors(top)
        t1 = time.perf_counter()
        graph, S = shortlist_graph(top, mat)
        t2 = time.perf_counter()
        verified_diffusion(order, {order[0]: 50, order[1]: 20}, 10, graph, S)
        t3 = time.perf_counter()
        for times, t in zip(steps.values(), (t1 - t0, t2 - t1, t3 - t2)):
            times.append(t)
    print(f"{args.size} images, shortlist {args.shortlist}, {args.queries} queries: "
          + ", ".join(f"{k} p50 {1000 * np.median(v):.0f} ms" for k, v in steps.items()))
    idx.close()


if __name__ == "__main__":
    main()
