"""The "similar" results of a small mixed folder, with the diffusion on and off (issue 26, item 2:
the diffusion must not spread from hubs). A folder of N photos — a fixed sample of the Paris
subset's landmark photos, SMVS covers and Corel-1k photos in equal thirds — in which each Paris
photo is searched as "search with this photo" does (itself left out), the default rule of an
index (`eval.runner.evaluate_index_rule`: the first 100 verified, the word candidates, one round
of verified expansion, then the diffusion from the verified images over the folder's k-NN graph).

    .venv/bin/python bench/small_mixed.py --size 150 --k 0,15,5 --hubness 0,10

Right = another photo of the same landmark (the file name's landmark, `paris_<landmark>_N.jpg`:
a category, not the revisited ground truth). Reports each setting's share of right photos in the
first 8 (the page's first row), mean over the Paris queries, and how many queries have all 8 right.
"""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from layerseek.backbones.weights import cache_dir  # noqa: E402
from layerseek.datasets import Dataset, Query, shared_data_dir  # noqa: E402
from layerseek.describe import describe_dataset  # noqa: E402
from layerseek.eval.runner import evaluate_index_rule  # noqa: E402
from layerseek.methods import make_method  # noqa: E402
from layerseek.verify.diffusion import settings  # noqa: E402
from layerseek.verify.geometry import DEFAULT_FUNDAMENTAL, Verifier  # noqa: E402
from layerseek.verify.pipeline import dataset_features  # noqa: E402


def folder(size: int, seed: int) -> tuple[list[Path], list[str]]:
    """The sampled photos and each one's label (the landmark for a Paris photo, else its kind)."""
    data = shared_data_dir()
    rng = random.Random(seed)
    paris = sorted(p for p in (data / "paris6k-subset" / "jpg").glob("paris_*_*.jpg"))
    covers = sorted((data / "smvs-dvd-covers" / "Reference").glob("*.jpg"))
    corel = sorted((data / "corel1k" / "jpg").glob("*.jpg"))
    third = size // 3
    chosen = rng.sample(paris, third) + rng.sample(covers, third) + rng.sample(corel, size - 2 * third)
    labels = [p.name.split("_")[1] for p in chosen[:third]] + ["cover"] * third + ["corel"] * (size - 2 * third)
    return chosen, labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=150)
    ap.add_argument("--seed", default="0", help="folder samples, comma-separated")
    ap.add_argument("--k", default="0,15", help="diffusion graph k to try (0: no diffusion)")
    ap.add_argument("--hubness", default="0", help="first-stage CSLS over each image's k nearest (0: cosine)")
    ap.add_argument("--top", type=int, default=8)
    args = ap.parse_args()
    method = make_method("rmac", backbone="mobilenet_v2")
    verifier = Verifier(fundamental=DEFAULT_FUNDAMENTAL)
    for seed in (int(s) for s in args.seed.split(",")):
        database, labels = folder(args.size, seed)
        queries = [Query(p, positives=[j for j, m in enumerate(labels) if m == labels[i] and j != i], db_index=i)
                   for i, p in enumerate(database) if labels[i] not in ("cover", "corel")]
        ds = Dataset("small-mixed", "category", database, queries)
        db, _, _ = describe_dataset(Dataset("db", "none", database, []), method.backbone, method.layers,
                                    method.max_side, None, None, [method.pooling])
        fdb, _, _ = dataset_features(Dataset("db", "none", database, []), cache_dir() / "features")
        # a query is its own database photo, as "search with this photo" sends it
        qv, qf = [db[q.db_index] for q in queries], [fdb[q.db_index] for q in queries]
        print(f"seed {seed}: {len(database)} photos, {len(queries)} Paris queries "
              f"({', '.join(f'{m} {labels.count(m)}' for m in sorted(set(labels)))})", flush=True)
        for hub in (int(h) for h in args.hubness.split(",")):
            for k in (int(x) for x in args.k.split(",")):
                res = evaluate_index_rule(ds, method, db, qv, fdb, qf, verifier, 100, 1,
                                          settings(k=k) if k else None, words=100, hubness=hub)
                right = []
                for qi, order in res["_ranks"]:
                    q = ds.queries[qi]
                    first = [j for j in order if j != q.db_index][:args.top]
                    right.append(sum(j in set(q.positives) for j in first))
                right = np.array(right)
                print(f"  diffusion {'k=' + str(k) if k else 'off':>5}  csls {hub:>2}: {100 * right.mean() / args.top:.1f} % "
                      f"of the first {args.top} right; all {args.top} right for {int((right == args.top).sum())} of "
                      f"{len(right)}; mAP {100 * res['mAP']:.1f}", flush=True)


if __name__ == "__main__":
    main()
