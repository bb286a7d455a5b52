"""Crowded words in MOF on real collections (issue 14): intra-image burstiness and a stop-list of
the words held by more than a share of the images, each alone and together, for quality and
time per query (encoding its windows into words and signatures, and scoring).

    .venv/bin/python bench/mof_crowded.py --dataset smvs --train-on rparis6k-subset --words 2000
    .venv/bin/python bench/mof_crowded.py --dataset rparis6k-subset --train-on smvs --words 2000
    .venv/bin/python bench/mof_crowded.py --dataset smvs --train-on others --words 20000 --shares 1

The first row (no burstiness, no stop-list) is `layerseek eval DATASET --method mof --backbone
mobilenet_v2 --train-on T --words W --max-train 100000`. Descriptors and vocabularies are cached
as for eval.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from layerseek.eval.runner import evaluate_mof  # noqa: E402
from mof_setup import add_options, metrics_line, prepare, training_collections  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(ap)
    ap.add_argument("--shares", default="1,0.5,0.25,0.1", help="stop-list: max share of images holding a word")
    args = ap.parse_args()
    setup = prepare(args)
    ds, model, pooling, db, qs, n_train = setup.ds, setup.model, setup.pooling, setup.db, setup.qs, setup.train_windows
    learned_on = "+".join(training_collections(args.train_on, args.dataset))
    print(f"{ds.describe()}; MOF {args.backbone} {'+'.join(setup.layers)} {pooling}, {args.words} words learned on "
          f"{learned_on} ({n_train} windows per layer, {min(n_train, args.max_train)} used), seed {args.seed}"
          + (", spherical words" if args.spherical else ", plain k-means words")
          + ("" if args.whiten is None else f", windows whitened (power {args.whiten:g}, {args.whiten_dim or 'all'} components)"))
    base = model.params
    nq = sum(v is not None for v in qs)
    evaluate_mof(ds, model, pooling, db, qs)  # untimed: the scorer compiled (or loaded from numba's cache)
    for burst in (False, True):
        for share in map(float, args.shares.split(",")):
            model.params = replace(base, burst=burst, max_share=share)
            t0 = time.perf_counter()
            res = evaluate_mof(ds, model, pooling, db, qs)
            print(f"burstiness {'on ' if burst else 'off'}  stop-list {'none' if share >= 1 else f'> {share:g} of images'}: "
                  f"{metrics_line(ds, res)}   scoring {1000 * res['_score_seconds'] / nq:.1f} ms per query "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
