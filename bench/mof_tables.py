"""MOF tables in the shape of seed 000's Fig. 2 and Table 1: single layers, pairs and all three,
BoW vs BoW + HE, sum vs max window pooling, on SMVS DVD covers and the RParis6k subset. Each
collection is searched with vocabularies trained on the other one.

    python bench/mof_tables.py --backbone mobilenet_v2 --layers s16,s32,last --words 2000 \
        --out docs/results/mof-mobilenet_v2.md
"""
from __future__ import annotations

import argparse
import itertools
import time
import warnings
from pathlib import Path

from layerseek.datasets import get_dataset
from layerseek.describe import describe_dataset
from layerseek.eval.runner import PRIMARY, evaluate_mof_combos
from layerseek.local.train import train_mof
from layerseek.local.mof import MOFParams
from layerseek.progress import progress_bar, versions
from mof_setup import add_spherical_option

TRAIN_ON = {"smvs": "rparis6k-subset", "rparis6k-subset": "smvs"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="mobilenet_v2")
    ap.add_argument("--layers", default="s16,s32,last")
    ap.add_argument("--max-side", type=int, default=1024)
    ap.add_argument("--words", type=int, default=2000)
    add_spherical_option(ap)
    ap.add_argument("--poolings", default="sum,max")
    ap.add_argument("--max-train", type=int, default=100_000, help="training descriptors per layer (sampled)")
    ap.add_argument("--datasets", default="smvs,rparis6k-subset")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    layers = tuple(args.layers.split(","))
    names = args.datasets.split(",")
    described = {}
    for name in sorted(set(names) | {TRAIN_ON[n] for n in names}):
        ds = get_dataset(name)
        bar, update = progress_bar(f"{name} windows / {args.backbone}")
        with bar:
            described[name] = (ds, *describe_dataset(ds, args.backbone, layers, args.max_side, progress=update,
                                                     local=True)[:2])
    combos = [c for r in range(1, len(layers) + 1) for c in itertools.combinations(layers, r)]
    lines = [f"MOF on {args.backbone} ({', '.join(layers)}), max side {args.max_side}, 224 px windows every 32 px, "
             f"{args.words} words per layer (k-means on {args.max_train} sampled descriptors), MA 3 (queries), HE 128 bits (or the layer's dimension), "
             f"d_t 52, sigma 30. Vocabularies and HE medians trained on the other collection "
             f"({', '.join(f'{k} <- {v}' for k, v in TRAIN_ON.items() if k in names)}). "
             f"layerseek {versions()['layerseek']}.", ""]
    for name in names:
        ds, db, qs = described[name]
        train_ds, tdb, tqs = described[TRAIN_ON[name]]
        metrics = PRIMARY[ds.protocol]
        lines += [f"### {name} ({ds.describe()})", "",
                  "| layers | " + " | ".join(f"{kind} {p}" for kind in ("BoW", "BoW+HE") for p in args.poolings.split(","))
                  + " |", "|---|" + "---|" * (2 * len(args.poolings.split(",")))]
        cells = {}
        for pooling in args.poolings.split(","):
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = train_mof(MOFParams(layers=layers, words=args.words, spherical=args.spherical), tdb + tqs, pooling,
                                  max_train=args.max_train)
            print(f"{name} {pooling}: model {time.perf_counter() - t0:.0f} s", flush=True)
            for he in (False, True):
                t0 = time.perf_counter()
                results = evaluate_mof_combos(ds, model, pooling, db, qs, combos, he=he)
                for combo, r in results.items():
                    cells[(combo, he, pooling)] = " / ".join(f"{100 * r[m]:.1f}" for m in metrics)
                    print(f"  {'+'.join(combo)} {'HE' if he else 'BoW'} {pooling}: {cells[(combo, he, pooling)]}",
                          flush=True)
                print(f"  ({time.perf_counter() - t0:.0f} s for {len(qs)} queries)", flush=True)
        for combo in combos:
            lines.append(f"| {'+'.join(combo)} | " + " | ".join(cells[(combo, he, p)] for he in (False, True)
                                                                 for p in args.poolings.split(",")) + " |")
        note = (" mAP is the non-interpolated AP (with one relevant cover per photo, the reciprocal rank)."
                if ds.protocol == "smvs" else " mAP: revisitop's AP." if ds.protocol == "revisited" else "")
        lines += ["", f"Cells: {' / '.join(metrics)} (%).{note}", ""]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
