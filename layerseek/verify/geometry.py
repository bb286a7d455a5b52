"""Correspondences and their geometry: which shortlisted images show the query's object.

A query descriptor matches its nearest database descriptor when that one is clearly nearer than
the second (Lowe's ratio test on RootSIFT); each database keypoint keeps its best match only. RANSAC
(OpenCV's USAC MAGSAC) then fits a homography to the matched positions and counts the inliers,
with a threshold that is a fixed fraction of the database image's longer side. A shortlisted
image is *verified* when it has at least `min_inliers`.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .features import LocalFeatures, rootsift


@dataclass(frozen=True)
class Verifier:
    """Settings of the verification stage (defaults calibrated on SMVS, see docs/RESULTS.md)."""

    ratio: float = 0.8  # Lowe's ratio test on descriptor distances
    threshold: float = 0.01  # RANSAC inlier threshold, as a fraction of the longer image side
    min_inliers: int = 10  # a shortlisted image with fewer is "not verified"

    def inliers(self, query: LocalFeatures, db: LocalFeatures, q_root: np.ndarray | None = None) -> int:
        """Inliers of the homography between a query's and a database image's features."""
        if len(query) < 4 or len(db) < 4:
            return 0
        qi, di = ratio_matches(rootsift(query.desc) if q_root is None else q_root, rootsift(db.desc), self.ratio)
        return ransac_inliers(query.xy[qi], db.xy[di], self.threshold * max(db.size))

    def scores(self, query: LocalFeatures, shortlist: Sequence[LocalFeatures | None]) -> list[int]:
        """Inliers of each shortlisted image (0 for one without stored features)."""
        q_root = rootsift(query.desc) if len(query) else None
        return [0 if d is None else self.inliers(query, d, q_root) for d in shortlist]


def ratio_matches(q: np.ndarray, d: np.ndarray, ratio: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """(query indices, database indices) of the matches of unit-norm descriptors q (m x D) in d
    (n x D) passing the ratio test ||q - d1|| < ratio ||q - d2||, one per database descriptor (the
    nearest one kept)."""
    if len(q) == 0 or len(d) < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    sims = q @ d.T
    rows = np.arange(len(q))
    best = np.argmax(sims, axis=1)  # two argmax passes: much faster than a partial sort
    s1 = sims[rows, best].copy()
    sims[rows, best] = -np.inf
    s2 = sims.max(axis=1)
    # unit vectors: ||a - b||^2 = 2 - 2 a.b
    d1, d2 = np.sqrt(np.maximum(2 - 2 * s1, 0)), np.sqrt(np.maximum(2 - 2 * s2, 0))
    ok = np.flatnonzero(d1 < ratio * d2)
    if len(ok) == 0:
        return ok, ok
    # one match per database keypoint: the nearest query descriptor
    order = ok[np.argsort(-s1[ok], kind="stable")]
    _, first_of = np.unique(best[order], return_index=True)
    keep = np.sort(order[first_of])
    return keep, best[keep]


def ransac_inliers(src: np.ndarray, dst: np.ndarray, threshold: float) -> int:
    """Inliers of a homography fitted to matched points src -> dst (k x 2) by USAC MAGSAC."""
    import cv2

    if len(src) < 4:
        return 0
    _, mask = cv2.findHomography(src.reshape(-1, 1, 2).astype(np.float32), dst.reshape(-1, 1, 2).astype(np.float32),
                                 cv2.USAC_MAGSAC, ransacReprojThreshold=float(threshold), maxIters=2000,
                                 confidence=0.999)
    return 0 if mask is None else int(mask.sum())


def verified_order(order: Sequence[int], inliers: dict[int, int], min_inliers: int) -> list[int]:
    """A first stage's ranking re-ordered by verification: the images with at least `min_inliers`
    first, by inliers (ties in first-stage order), then the others in first-stage order."""
    pos = {i: k for k, i in enumerate(order)}
    good = sorted((i for i in order if inliers.get(i, 0) >= min_inliers), key=lambda i: (-inliers[i], pos[i]))
    chosen = set(good)
    return good + [i for i in order if i not in chosen]
