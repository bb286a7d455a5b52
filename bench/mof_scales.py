"""MOF with windows from several image scales (issue 13): each image described once per scale (the
network run once per scale, 224 px windows every 32 px), the windows of all scales in one set
per layer, the vocabularies learned on the training collection's windows of the same scales.
Prints MOF's metrics for each scale alone and for their union, with the windows per image.

    .venv/bin/python bench/mof_scales.py --dataset smvs --train-on rparis6k-subset --scales 1024,512
    .venv/bin/python bench/mof_scales.py --dataset rparis6k-subset --train-on smvs --scales 1024,724,512

Descriptors and vocabularies are cached as for `layerseek eval`.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from layerseek.datasets import get_dataset  # noqa: E402
from layerseek.describe import describe_dataset  # noqa: E402
from layerseek.eval.runner import evaluate_mof  # noqa: E402
from layerseek.local.train import train_mof  # noqa: E402
from layerseek.local.method import DEFAULT_LAYERS, DEFAULT_POOLING  # noqa: E402
from layerseek.local.mof import MOFParams  # noqa: E402
from mof_setup import add_spherical_option  # noqa: E402


def union(per_scale: list[list], keys: list[str]) -> list:
    """Per image, the window descriptors of every scale stacked (None if any scale failed)."""
    out = []
    for vs in zip(*per_scale):
        out.append(None if any(v is None for v in vs) else {k: np.concatenate([v[k] for v in vs]) for k in keys})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="smvs")
    ap.add_argument("--train-on", default="rparis6k-subset")
    ap.add_argument("--backbone", default="mobilenet_v2")
    ap.add_argument("--scales", default="1024,512", help="max sides, comma-separated")
    ap.add_argument("--words", type=int, default=2000)
    add_spherical_option(ap)
    ap.add_argument("--max-train", type=int, default=100_000)
    args = ap.parse_args()
    ds, train = get_dataset(args.dataset), get_dataset(args.train_on)
    layers, pooling = DEFAULT_LAYERS[args.backbone], DEFAULT_POOLING[args.backbone]
    keys = [f"{pooling}/{layer}" for layer in layers]
    scales = [int(s) for s in args.scales.split(",")]
    described = {}
    for side in scales:
        t0 = time.perf_counter()
        db, qs, _ = describe_dataset(ds, args.backbone, layers, side, None, None, local=True)
        tdb, tq, _ = describe_dataset(train, args.backbone, layers, side, None, None, local=True)
        described[side] = (db, qs, tdb + tq)
        print(f"{side} px described ({time.perf_counter() - t0:.0f} s)", flush=True)
    fmt = (lambda r: " / ".join(f"{100 * r[k]:.1f}" for k in ("mAP_easy", "mAP_medium", "mAP_hard"))) \
        if ds.protocol == "revisited" else (lambda r: " / ".join(f"{100 * r[k]:.1f}" for k in ("R@1", "R@5", "mAP")))
    params = MOFParams(layers=layers, words=args.words, spherical=args.spherical)
    runs = [(str(s), [s]) for s in scales] + [("+".join(map(str, scales)), scales)]
    print(f"{ds.describe()}; MOF {args.backbone} {'+'.join(layers)} {pooling}, {args.words} words learned on "
          f"{args.train_on} (at most {args.max_train} windows per layer)")
    for name, sides in runs:
        db = union([described[s][0] for s in sides], keys)
        qs = union([described[s][1] for s in sides], keys)
        tr = union([described[s][2] for s in sides], keys)
        model = train_mof(params, tr, pooling, max_train=args.max_train)
        t0 = time.perf_counter()
        res = evaluate_mof(ds, model, pooling, db, qs)
        windows = np.mean([len(v[keys[0]]) for v in db if v is not None])
        print(f"scales {name}: {fmt(res)}   {windows:.0f} windows per database image (first layer), "
              f"{res['_score_seconds'] / max(1, len(qs)):.3f} s per query scoring, "
              f"{res['_index_bytes'] / max(1, len(db)):.0f} B per image in the inverted files "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
