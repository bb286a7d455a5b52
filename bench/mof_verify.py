"""MOF -> verification by MOF's own matched windows (issue 13): the HE matches of each layer paired
by window centres, a homography (or a similarity) fitted by USAC MAGSAC, the shortlist re-ordered
by its inliers. Prints the metrics per --min-inliers, the share of positive and negative pairs
of the shortlists each verifies, and the time per query of the verification.

    .venv/bin/python bench/mof_verify.py --dataset smvs --train-on rparis6k-subset
    .venv/bin/python bench/mof_verify.py --dataset rparis6k-subset --train-on smvs --model similarity

The first stage is `layerseek eval DATASET --method mof --backbone mobilenet_v2 --train-on T
--words 2000 --max-train 100000` (descriptors and vocabularies cached as for eval).
"""
from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from layerseek.backbones import get_spec  # noqa: E402
from layerseek.eval.runner import evaluate_mof, evaluate_rankings  # noqa: E402
from layerseek.images import load_image  # noqa: E402
from layerseek.local.train import local_descriptors  # noqa: E402
from layerseek.local.windows import STEP  # noqa: E402
from layerseek.verify.geometry import verified_order  # noqa: E402
from layerseek.verify.windows import he_matches, one_to_one, window_centres, window_grid_shape  # noqa: E402
from mof_setup import add_options, metrics_line, prepare  # noqa: E402


def image_size(path, bbox, rotate, max_side):
    h, w = load_image(path, max_side=max_side, bbox=bbox, rotate=rotate).shape[:2]
    return h, w


def centres_of(vec, size, layers, strides, pooling):
    """Per layer the window centres (n x 2 px) of one described image."""
    h, w = size
    out = {}
    for layer in layers:
        n = len(vec[f"{pooling}/{layer}"])
        rows, cols = window_grid_shape(n, h, w, strides[layer])
        out[layer] = window_centres(rows, cols, h, w)
    return out


def fit(src, dst, threshold, model):
    import cv2

    if len(src) < 4:
        return 0
    src = src.reshape(-1, 1, 2).astype(np.float32)
    dst = dst.reshape(-1, 1, 2).astype(np.float32)
    try:
        if model == "homography":
            _, mask = cv2.findHomography(src, dst, cv2.USAC_MAGSAC, float(threshold), maxIters=2000, confidence=0.999)
        else:
            _, mask = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=float(threshold),
                                                  maxIters=2000, confidence=0.999)
    except cv2.error:
        return 0
    return 0 if mask is None else int(mask.sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(ap)
    ap.add_argument("--shortlist", type=int, default=100)
    ap.add_argument("--min-inliers", default="6,8,10,15,20,30")
    ap.add_argument("--threshold", default="1,1.5", help="RANSAC threshold in window steps (32 px)")
    ap.add_argument("--model", default="homography,similarity")
    ap.add_argument("--per-layer", action="store_true", help="RANSAC per layer, inliers added (else: pooled)")
    args = ap.parse_args()
    setup = prepare(args)
    ds, model, layers, pooling, db, qs = setup.ds, setup.model, setup.layers, setup.pooling, setup.db, setup.qs
    strides = {n: get_spec(args.backbone).layers[n].stride for n in layers}
    res = evaluate_mof(ds, model, pooling, db, qs)
    first = {qi: list(r) for qi, r in res["_ranks"]}

    def fmt(r):
        return metrics_line(ds, r)

    print(f"{ds.describe()}\nMOF {args.backbone} {'+'.join(layers)} {pooling}, {args.words} words on {args.train_on}: "
          f"{fmt(evaluate_rankings(ds, first))}", flush=True)

    t0 = time.perf_counter()
    db_size = [image_size(p, None, ds.rotations.get(p.name, 0), args.max_side) for p in ds.database]
    q_size = [image_size(q.path, q.bbox, q.rotate, args.max_side) for q in ds.queries]
    db_enc = [None if v is None else model.encode(local_descriptors(v, pooling, layers), db=True) for v in db]
    db_xy = [None if v is None else centres_of(v, s, layers, strides, pooling) for v, s in zip(db, db_size)]
    print(f"window positions and encodings: {time.perf_counter() - t0:.0f} s", flush=True)

    models = args.model.split(",")
    thresholds = [float(t) for t in args.threshold.split(",")]

    def one(qi):
        q_enc = model.encode(local_descriptors(qs[qi], pooling, layers))
        q_xy = centres_of(qs[qi], q_size[qi], layers, strides, pooling)
        counts = {}
        for j in first[qi][:args.shortlist]:
            src, dst = [], []
            for layer in layers:
                a, b, dist = he_matches(*q_enc[layer], *db_enc[j][layer], model.params.dt)
                a, b = one_to_one(a, b, dist)
                src.append(q_xy[layer][a])
                dst.append(db_xy[j][layer][b])
            for m in models:
                for t in thresholds:
                    if args.per_layer:
                        counts[(m, t, j)] = sum(fit(s, d, t * STEP, m) for s, d in zip(src, dst))
                    else:
                        counts[(m, t, j)] = fit(np.concatenate(src), np.concatenate(dst), t * STEP, m)
        return qi, counts

    t0 = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        all_counts = dict(pool.map(one, [qi for qi in first if qs[qi] is not None]))
    per_q = (time.perf_counter() - t0) / max(1, len(all_counts))
    print(f"verification: {per_q:.2f} s per query (2 threads), shortlist {args.shortlist}", flush=True)
    for m in models:
        for t in thresholds:
            for mi in map(int, args.min_inliers.split(",")):
                pos_v = pos_n = neg_v = neg_n = 0
                new = {}
                for qi, counts in all_counts.items():
                    inl = {j: counts[(m, t, j)] for j in first[qi][:args.shortlist]}
                    new[qi] = verified_order(first[qi][:args.shortlist], inl, mi) + first[qi][args.shortlist:]
                    q = ds.queries[qi]
                    positive, junk = set(q.positives) | set(q.hard), set(q.junk)
                    for j, c in inl.items():
                        if j in junk:
                            continue
                        if j in positive:
                            pos_n, pos_v = pos_n + 1, pos_v + (c >= mi)
                        else:
                            neg_n, neg_v = neg_n + 1, neg_v + (c >= mi)
                print(f"{m} thr {t} steps, min {mi}: {fmt(evaluate_rankings(ds, new))}   positives verified "
                      f"{pos_v}/{pos_n}, negatives {neg_v}/{neg_n}", flush=True)


if __name__ == "__main__":
    main()
