"""The shared-part rule (`verify.geometry.same_object`, issue 29) over the verified pairs of a
collection: each query's first-stage top N verified with the default verifier, each pair kept
with its inliers and spread, and the rule applied per query for a grid of bars. Counts, per
setting, the queries left with a wrong verified result and the positives kept.

    .venv/bin/python bench/shared_part.py --dataset smvs
    .venv/bin/python bench/shared_part.py --dataset rparis6k-subset

The first stage and features are `bench/inlier_spread.py`'s (`first_stage`).
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inlier_spread import first_stage  # noqa: E402 - bench/, beside this script

from layerseek.verify.features import query_space  # noqa: E402
from layerseek.verify.geometry import DEFAULT_FUNDAMENTAL, Verifier, same_object  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="smvs")
    ap.add_argument("--shortlist", type=int, default=100)
    ap.add_argument("--wide", default="0,0.2,0.25,0.3,0.35,0.4")
    ap.add_argument("--weak", default="0.05,0.1,0.15")
    args = ap.parse_args()
    ds, first, db_f, q_f = first_stage(args.dataset)
    v = Verifier(fundamental=DEFAULT_FUNDAMENTAL)

    def one(qi):  # {database index: (inliers, spread)} of the verified, and the query's positives
        q = q_f[qi]
        query = ds.queries[qi]
        found = {}
        if q is not None:
            space = query_space(q)
            for j in first[qi][:args.shortlist]:
                if db_f[j] is not None and j not in set(query.junk):
                    ev = v.evidence(q, db_f[j], space)[0]
                    if ev.inliers >= v.min_inliers:
                        found[j] = ev
        return qi, found, set(query.positives) | set(query.hard)

    with ThreadPoolExecutor(2) as pool:
        per_query = list(pool.map(one, list(first)))
    pos = sum(len(f.keys() & p) for _, f, p in per_query)
    print(f"{ds.describe()}: verified in the top {args.shortlist}: {pos} positives, "
          f"{sum(len(f.keys() - p) for _, f, p in per_query)} others")
    print("| wide | weak | queries with another verified | positives kept |\n|---|---|---|---|")
    for wide in map(float, args.wide.split(",")):
        for weak in map(float, args.weak.split(",")) if wide else [0.1]:
            wrong, kept = 0, 0
            for _, found, positives in per_query:
                counts = same_object(found, v.min_inliers, wide, weak)
                verified = {j for j, n in counts.items() if n >= v.min_inliers}
                wrong += bool(verified - positives)
                kept += len(verified & positives)
            print(f"| {wide:g} | {weak:g} | {wrong} | {kept} of {pos} |")
    others = defaultdict(list)
    for qi, found, positives in per_query:
        counts = same_object(found, v.min_inliers, 0.3)
        for j in found.keys() - positives:
            if counts[j] >= v.min_inliers:
                others[f"{ds.queries[qi].path.parent.name}/{ds.queries[qi].path.name}"].append(ds.database[j].name)
    print("still verified beside the query's own at 0.3 / 0.1:", dict(others))


if __name__ == "__main__":
    main()
