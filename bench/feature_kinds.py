"""Local feature kinds side by side (issue 13): extraction time per image (decoding excluded, one
OpenCV thread), features and stored bytes per image, and the time to verify one pair.

    .venv/bin/python bench/feature_kinds.py --images 50

Images: the first N SMVS references and N Paris-subset photos, decoded at 640 px beforehand; a
pair is a phone photo of a cover against its reference.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from layerseek.images import load_image  # noqa: E402
from layerseek.verify.features import FEATURE_KINDS, local_features, query_space  # noqa: E402
from layerseek.verify.geometry import Verifier  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    import cv2

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=50)
    ap.add_argument("--features", type=int, default=1000)
    ap.add_argument("--side", type=int, default=640)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    refs = sorted((DATA / "smvs-dvd-covers" / "Reference").glob("*.jpg"))[:args.images]
    paris = sorted((DATA / "paris6k-subset").rglob("*.jpg"))[:args.images]
    imgs = [load_image(p, max_side=args.side) for p in refs + paris]
    photos = [load_image(DATA / "smvs-dvd-covers" / "Canon" / p.name, max_side=args.side) for p in refs[:20]]
    print("| kind | extraction ms / image | features / image | stored bytes / image | verify one pair, ms |")
    print("|---|---:|---:|---:|---:|")
    v = Verifier()
    for kind in FEATURE_KINDS:
        t0 = time.perf_counter()
        feats = [local_features(im, args.features, args.side, kind) for im in imgs]
        t_ext = (time.perf_counter() - t0) / len(imgs)
        q = [local_features(im, args.features, args.side, kind) for im in photos]
        t0 = time.perf_counter()
        for f, g in zip(q, feats):
            v.inliers(f, g, query_space(f))
        t_pair = (time.perf_counter() - t0) / len(q)
        print(f"| {kind} | {1000 * t_ext:.0f} | {np.mean([len(f) for f in feats]):.0f} | "
              f"{np.mean([len(f.pack()) for f in feats]):,.0f} | {1000 * t_pair:.1f} |", flush=True)


if __name__ == "__main__":
    main()
