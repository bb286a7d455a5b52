"""How a MOF vocabulary learned on other collections spreads the searched collection's windows over
its words (issue 14), and what each layer finds alone and fused: per layer the database windows,
the words they fall in and the largest share one word takes, then the metrics of each layer and
of all of them (Eq. 8 summed over the layers, as `layerseek eval --method mof`).

    .venv/bin/python bench/mof_words.py --dataset smvs --train-on others --words 20000 --max-train 1000000 --seed 1
    .venv/bin/python bench/mof_words.py --dataset smvs --train-on others --words 20000 --max-train 1000000 --seed 1 --no-spherical

`--seed` relearns the vocabularies (k-means, HE projections) to see how much a figure moves.
Descriptors and vocabularies are cached as for eval.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from layerseek.eval.runner import evaluate_mof_combos  # noqa: E402
from layerseek.local.train import local_descriptors  # noqa: E402
from mof_setup import add_options, metrics_line, prepare, training_collections  # noqa: E402


def word_use(words: np.ndarray, k: int) -> tuple[int, float]:
    """(words holding any window, the largest share of the windows one word holds)."""
    counts = np.bincount(words, minlength=k)
    return int(np.count_nonzero(counts)), float(counts.max() / max(len(words), 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(ap)
    args = ap.parse_args()
    s = prepare(args)
    print(f"{s.ds.describe()}; {args.words} {'spherical' if args.spherical else 'plain k-means'} words learned on "
          f"{'+'.join(training_collections(args.train_on, args.dataset))} ({s.train_windows} windows per layer), "
          f"seed {args.seed}" + ("" if args.whiten is None else f", windows whitened (power {args.whiten:g})"))
    for layer in s.layers:
        voc = s.model.vocabularies[layer]
        windows = [s.model.windows(layer, local_descriptors(v, s.pooling, (layer,))[layer]) for v in s.db if v is not None]
        words = np.concatenate([voc.assign(x, 1)[:, 0] for x in windows])
        used, top = word_use(words, voc.k)
        print(f"  {layer}: {len(words)} database windows in {used} words, the fullest holds {100 * top:.1f} %")
    combos = [(layer,) for layer in s.layers] + [tuple(s.layers)]
    results = evaluate_mof_combos(s.ds, s.model, s.pooling, s.db, s.qs, combos)
    for combo in combos:
        print(f"  {'+'.join(combo)}: {metrics_line(s.ds, results[combo])}", flush=True)


if __name__ == "__main__":
    main()
