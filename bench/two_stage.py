"""Two stages against each alone: a global descriptor ranks the whole collection, MOF re-scores its
top N. On SMVS DVD covers and the RParis6k subset, MOF's vocabularies trained on the other one.

    python bench/two_stage.py --backbone mobilenet_v2 --global-method rmac --mof-layers s16,s32,last \
        --words 2000 --window-pooling sum --shortlists 10,20,100
"""
from __future__ import annotations

import argparse
import warnings

from layerseek.backbones import get_spec
from layerseek.datasets import get_dataset
from layerseek.describe import describe_dataset
from layerseek.eval.runner import PRIMARY, evaluate_global, evaluate_mof
from layerseek.local.train import train_mof
from layerseek.globaldesc import GlobalConfig
from layerseek.local.mof import MOFParams
from layerseek.progress import versions
from mof_setup import add_spherical_option

TRAIN_ON = {"smvs": "rparis6k-subset", "rparis6k-subset": "smvs"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="mobilenet_v2")
    ap.add_argument("--global-method", default="rmac")
    ap.add_argument("--global-layers", default=None)
    ap.add_argument("--mof-layers", default="s16,s32,last")
    ap.add_argument("--words", type=int, default=2000)
    add_spherical_option(ap)
    ap.add_argument("--max-train", type=int, default=100_000)
    ap.add_argument("--window-pooling", default="sum")
    ap.add_argument("--max-side", type=int, default=1024)
    ap.add_argument("--shortlists", default="10,20,100")
    ap.add_argument("--datasets", default="smvs,rparis6k-subset")
    args = ap.parse_args()
    glayers = tuple(args.global_layers.split(",")) if args.global_layers else get_spec(args.backbone).default_layers
    mlayers = tuple(args.mof_layers.split(","))
    print(f"{args.global_method} on {args.backbone} {'+'.join(glayers)} (SUM) as stage 1; MOF {'+'.join(mlayers)}, "
          f"{args.window_pooling}-pooled windows, {args.words} words, BoW+HE as stage 2; max side {args.max_side}; "
          f"layerseek {versions()['layerseek']}\n")
    for name in args.datasets.split(","):
        ds, tds = get_dataset(name), get_dataset(TRAIN_ON[name])
        metrics = PRIMARY[ds.protocol]
        db, qs, _ = describe_dataset(ds, args.backbone, glayers, args.max_side, poolings=[args.global_method])
        ldb, lqs, _ = describe_dataset(ds, args.backbone, mlayers, args.max_side, local=True)
        tdb, tqs, _ = describe_dataset(tds, args.backbone, mlayers, args.max_side, local=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = train_mof(MOFParams(layers=mlayers, words=args.words, spherical=args.spherical), tdb + tqs, args.window_pooling,
                              max_train=args.max_train)
        g = evaluate_global(ds, GlobalConfig(args.global_method, glayers), db, qs)
        rows = [(f"{args.global_method} alone", g), ("MOF alone", evaluate_mof(ds, model, args.window_pooling, ldb, lqs))]
        shortlist = dict(g["_ranks"])
        for n in (int(x) for x in args.shortlists.split(",")):
            rows.append((f"{args.global_method} top {n} re-scored by MOF",
                         evaluate_mof(ds, model, args.window_pooling, ldb, lqs, shortlist=shortlist, rerank=n)))
        print(f"### {name} ({ds.describe()})\n")
        print("| method | " + " | ".join(metrics) + " | scoring s/query |")
        print("|---|" + "---|" * (len(metrics) + 1))
        for label, r in rows:
            print(f"| {label} | " + " | ".join(f"{100 * r[m]:.1f}" for m in metrics)
                  + f" | {r['_score_seconds'] / max(1, len(qs)):.3f} |")
        print(flush=True)


if __name__ == "__main__":
    main()
