"""What the MOF benches share (bench/mof_crowded.py, bench/mof_verify.py): their options, a
described dataset and a MOF model learned on another collection, and the metrics line."""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from layerseek.datasets import SHARED, Dataset, get_dataset, training_collections  # noqa: E402
from layerseek.describe import describe_dataset  # noqa: E402
from layerseek.local.method import DEFAULT_LAYERS, DEFAULT_POOLING  # noqa: E402
from layerseek.local.mof import MOFModel, MOFParams  # noqa: E402
from layerseek.local.train import train_mof  # noqa: E402


def add_spherical_option(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--spherical", action=argparse.BooleanOptionalAction, default=MOFParams.spherical,
                    help="words as unit vectors (spherical k-means, the default since 2026-11-29) or, with "
                         "--no-spherical, plain k-means words (the paper's; every MOF figure measured before)")


def add_options(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--dataset", default="smvs")
    ap.add_argument("--train-on", default="rparis6k-subset",
                    help="collections to learn the vocabularies on: names, comma-separated, or `others` (every "
                         f"shared collection but the one searched: {', '.join(SHARED)})")
    ap.add_argument("--backbone", default="mobilenet_v2")
    ap.add_argument("--max-side", type=int, default=1024)
    ap.add_argument("--words", type=int, default=2000)
    ap.add_argument("--max-train", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=MOFParams.seed,
                    help="seed of the k-means, the training sample and the HE projections (to measure how much "
                         "relearning moves a figure)")
    ap.add_argument("--whiten", type=float, default=None,
                    help="PCA-whiten the windows before the words: the eigenvalues' power (0 centres only, 0.5 "
                         "whitens fully); default: the paper's windows as they are")
    add_spherical_option(ap)
    ap.add_argument("--whiten-dim", type=int, default=None, help="with --whiten: components kept (default all)")


@dataclass
class Setup:
    ds: Dataset
    layers: tuple[str, ...]
    pooling: str
    db: list
    qs: list
    model: MOFModel
    train_windows: int  # per layer, before sampling max_train


def prepare(args) -> Setup:
    """The dataset's window descriptors and a model learned on --train-on (both cached as for eval)."""
    ds = get_dataset(args.dataset)
    layers, pooling = DEFAULT_LAYERS[args.backbone], DEFAULT_POOLING[args.backbone]
    db, qs, _ = describe_dataset(ds, args.backbone, layers, args.max_side, None, None, local=True)
    train = []
    for name in training_collections(args.train_on, args.dataset):
        tdb, tq, _ = describe_dataset(get_dataset(name), args.backbone, layers, args.max_side, None, None, local=True)
        train += [v for v in tdb + tq if v is not None]
    params = MOFParams(layers=layers, words=args.words, seed=args.seed, whiten=args.whiten, whiten_dim=args.whiten_dim,
                       spherical=args.spherical)
    model = train_mof(params, train, pooling, max_train=args.max_train)
    return Setup(ds, layers, pooling, db, qs, model, sum(len(v[f"{pooling}/{layers[0]}"]) for v in train))


def metrics_line(ds: Dataset, res: dict) -> str:
    keys = {"revisited": ("mAP_easy", "mAP_medium", "mAP_hard"), "category": ("P@10", "P@50", "mAP")}.get(
        ds.protocol, ("R@1", "R@5", "mAP"))
    return " / ".join(f"{100 * res[k]:.1f}" for k in keys)
