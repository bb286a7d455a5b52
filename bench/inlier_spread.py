"""How far the inliers of verified pairs spread (`verify.geometry.inlier_spread`), positives against
negatives, to choose `Verifier.spread`: over the first stage's top N of every query, each pair
the default verification verifies (homography, or fundamental matrix) is counted as a positive
or a negative of the ground truth, and for each spread bar the bench says how many of each it
would keep.

    .venv/bin/python bench/inlier_spread.py --dataset smvs
    .venv/bin/python bench/inlier_spread.py --dataset rparis6k-subset

The first stage is R-MAC on MobileNetV2 at 1024 px (as `bench/verify_tables.py --first
rmac:mobilenet_v2`); features 1000 SIFT at 640 px, cached as for eval.
"""
from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from layerseek.backbones.weights import cache_dir  # noqa: E402
from layerseek.datasets import get_dataset  # noqa: E402
from layerseek.describe import describe_dataset  # noqa: E402
from layerseek.eval.runner import evaluate_global  # noqa: E402
from layerseek.globaldesc import GlobalConfig  # noqa: E402
from layerseek.backbones import get_spec  # noqa: E402
from layerseek.verify.features import query_space  # noqa: E402
from layerseek.verify.geometry import DEFAULT_FUNDAMENTAL, Verifier  # noqa: E402
from layerseek.verify.pipeline import dataset_features  # noqa: E402


def first_stage(dataset: str):
    """(the dataset, each query's first-stage ranking, the database's and the queries' SIFT
    features): R-MAC on MobileNetV2 at 1024 px, features cached as for eval."""
    ds = get_dataset(dataset)
    layers = get_spec("mobilenet_v2").default_layers
    db, qs, _ = describe_dataset(ds, "mobilenet_v2", layers, 1024, None, None, ["rmac"])
    first = {qi: list(r) for qi, r in evaluate_global(ds, GlobalConfig("rmac", layers), db, qs)["_ranks"]}
    db_f, q_f, _ = dataset_features(ds, cache_dir() / "features")
    return ds, first, db_f, q_f


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="smvs")
    ap.add_argument("--shortlist", type=int, default=100)
    ap.add_argument("--bars", default="0.05,0.1,0.15,0.2,0.25,0.3")
    args = ap.parse_args()
    ds, first, db_f, q_f = first_stage(args.dataset)
    v = Verifier(fundamental=DEFAULT_FUNDAMENTAL)

    def one(qi):
        q = q_f[qi]
        if q is None:
            return []
        space = query_space(q)
        query = ds.queries[qi]
        positive, junk = set(query.positives) | set(query.hard), set(query.junk)
        out = []
        for j in first[qi][:args.shortlist]:
            if db_f[j] is None or j in junk:
                continue
            n, spread = v.check(q, db_f[j], space)
            if n >= v.min_inliers:
                out.append((j in positive, spread, qi, j))
        return out

    t0 = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        pairs = [p for ps in pool.map(one, list(first)) for p in ps]
    pos = np.array([s for ok, s, _, _ in pairs if ok])
    neg = np.array([s for ok, s, _, _ in pairs if not ok])
    print(f"{ds.describe()}: verified pairs in the top {args.shortlist}: {len(pos)} positives, {len(neg)} negatives "
          f"({time.perf_counter() - t0:.0f} s)")
    if len(pos):
        print("positives' spread, percentiles 0 / 1 / 5 / 50: "
              + " / ".join(f"{np.percentile(pos, q):.3f}" for q in (0, 1, 5, 50)))
    if len(neg):
        print("negatives' spread, percentiles 50 / 95 / 100: "
              + " / ".join(f"{np.percentile(neg, q):.3f}" for q in (50, 95, 100)))
    print("| spread bar | positives kept | negatives kept |\n|---|---|---|")
    for bar in map(float, args.bars.split(",")):
        print(f"| {bar:g} | {int((pos >= bar).sum())} of {len(pos)} | {int((neg >= bar).sum())} of {len(neg)} |")
    worst = sorted((s, qi, j) for ok, s, qi, j in pairs if ok)[:3]
    print("narrowest positives:", [(round(s, 3), ds.queries[qi].path.name, ds.database[j].name) for s, qi, j in worst])
    widest = sorted(((s, qi, j) for ok, s, qi, j in pairs if not ok), reverse=True)[:5]
    print("widest negatives:", [(round(s, 3), f"{ds.queries[qi].path.parent.name}/{ds.queries[qi].path.name}",
                                 ds.database[j].name) for s, qi, j in widest])


if __name__ == "__main__":
    main()
