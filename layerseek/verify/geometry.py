"""Correspondences and their geometry: which shortlisted images show the query's object.

A query descriptor matches its nearest database descriptor when that one is clearly nearer than
the second (Lowe's ratio test on RootSIFT); each database keypoint keeps its best match only. RANSAC
(OpenCV's USAC MAGSAC) then fits a homography to the matched positions and counts the inliers,
with a threshold that is a fixed fraction of the database image's longer side. A shortlisted
image is *verified* when it has at least `min_inliers`. A homography holds a plane (a cover, a
facade) but not a deep 3-D scene seen from elsewhere; with `fundamental` > 0 an image the
homography leaves unverified is verified when a fundamental matrix (the epipolar geometry of any
rigid scene) holds at least that many of the matches, and a good share of them.
"""
from __future__ import annotations

import contextlib
import os
import threading

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .features import BYTE_SCALE, LocalFeatures, WordFeatures, database_space, distances, query_space


_POOL = None


def _pool():
    """The threads a shortlist is verified in (one per core, at most 4)."""
    global _POOL
    if _POOL is None:
        import os
        from concurrent.futures import ThreadPoolExecutor

        _POOL = ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1)), thread_name_prefix="verify")
    return _POOL


#: ONNX's MatMulInteger (uint8 a: m x k, int8 b: k x n -> int32 m x n) as a serialised model: ONNX
#: Runtime runs it with the CPU's 8-bit multiply-add instructions (AVX2's, or VNNI's where there
#: are; tests/test_verify.py builds it again with onnx.helper, whose import this spares every search)
BYTE_PRODUCTS_MODEL = (
    b'\x08\x05\x12\tlayerseek:n\n\x18\n\x01a\n\x01b\x12\x01y"\rMatMulInteger\x12\rbyte_productsZ\x15\n\x01'
    b'a\x12\x10\n\x0e\x08\x02\x12\n\n\x03\x12\x01m\n\x03\x12\x01kZ\x15\n\x01b\x12\x10\n\x0e\x08\x03\x12\n'
    b'\n\x03\x12\x01k\n\x03\x12\x01nb\x15\n\x01y\x12\x10\n\x0e\x08\x06\x12\n\n\x03\x12\x01m\n\x03\x12\x01n'
    b'B\x04\n\x00\x10\n')
_BYTE_SESSION = None


def byte_products(q: np.ndarray, d: np.ndarray) -> np.ndarray:
    """q @ d.T for q: m x k uint8 and d: n x k int8, exactly, as int32 (ONNX Runtime, one thread:
    a shortlist is verified in threads of its own)."""
    global _BYTE_SESSION
    if _BYTE_SESSION is None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = so.inter_op_num_threads = 1
        so.log_severity_level = 3
        # two threads may make one each at the first search: either serves (run is thread-safe)
        _BYTE_SESSION = ort.InferenceSession(BYTE_PRODUCTS_MODEL, so, providers=["CPUExecutionProvider"])
    return _BYTE_SESSION.run(None, {"a": q, "b": np.ascontiguousarray(d.T)})[0]


_ONE_BLAS_THREAD = {"open": 0, "lock": threading.Lock()}


@contextlib.contextmanager
def one_blas_thread():
    """A context in which BLAS (numpy's and FAISS's OpenBLAS) runs single-threaded: for work that
    is already spread over the cores by threads of its own. The limit is the process's: inside
    one already (a search's verification, each image of a duplicates run) nothing is done again
    (threadpoolctl looks for the libraries each time: 0.7-1.4 ms)."""
    from threadpoolctl import threadpool_limits

    with _ONE_BLAS_THREAD["lock"]:
        outer = _ONE_BLAS_THREAD["open"] == 0
        _ONE_BLAS_THREAD["open"] += 1
    try:
        with threadpool_limits(limits=1, user_api="blas") if outer else contextlib.nullcontext():
            yield
    finally:
        with _ONE_BLAS_THREAD["lock"]:
            _ONE_BLAS_THREAD["open"] -= 1


def all_blas_threads():
    """A context in which BLAS runs on every core again (inside `one_blas_thread`): for one large
    product, such as a k-NN graph over the whole index (10,000 images: 2.7 s against 4.3 s on
    one thread)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=os.cpu_count() or 1, user_api="blas")


#: what a new index verifies 3-D scenes with: an image the homography leaves unverified is verified
#: by a fundamental matrix with at least this many inliers (docs/RESULTS.md, "3-D scenes")
DEFAULT_FUNDAMENTAL = 20
#: ... and those inliers must be at least this share of the ratio-test matches: the images it
#: verified on the Paris subset had 0.44 or more, 200 random matches give 0.12
EPIPOLAR_MIN_SHARE = 0.3


@dataclass(frozen=True)
class Verifier:
    """Settings of the verification stage (defaults calibrated on SMVS, see docs/RESULTS.md)."""

    ratio: float = 0.8  # Lowe's ratio test on descriptor distances
    threshold: float = 0.01  # RANSAC inlier threshold, as a fraction of the longer image side
    min_inliers: int = 10  # a shortlisted image with fewer is "not verified"
    # 3-D scenes: when the homography finds fewer than min_inliers, a fundamental matrix (epipolar
    # geometry, any rigid scene) with at least this many inliers verifies too; 0: homography only
    fundamental: int = 0
    # inliers confined to a strip of the database image (a shared logo or banner, e.g. every
    # Blu-ray case's "BLU-RAY + DVD" band) do not verify: their `inlier_spread` must reach this
    # share of the image's width and height; 0: no such check
    spread: float = 0.0
    # word features (`features.WordFeatures`): two features correspond when they share a visual
    # word and their 64-bit signatures differ in at most this many bits (docs/RESULTS.md)
    hamming: int = 20
    # the shared-part rule of a query's matches (`same_object`): when the query's strongest match
    # has inliers spread at least this far (an object filling the photo), another match whose
    # inliers spread less, or that has under SHARED_PART_WEAK of the strongest's inliers, shares
    # only a part with it (a printed band, a logo) and is not verified; 0: no such rule
    shared_part: float = 0.0

    def inliers(self, query: LocalFeatures, db: LocalFeatures, q_space: np.ndarray | None = None) -> int:
        """Inliers of the homography between a query's and a database image's features (of one
        kind; `q_space`: the query's `query_space`, if already computed); an image the
        fundamental matrix verifies and the homography does not counts `min_inliers`; an image
        whose verifying inliers spread less than `spread` counts `min_inliers` - 1 (not verified:
        a shared logo, not the same object)."""
        return self.verify(query, db, q_space)[0]

    def verify(self, query: LocalFeatures, db: LocalFeatures, q_space: np.ndarray | None = None
               ) -> tuple[int, np.ndarray, np.ndarray]:
        """(inliers as `inliers` counts them, query and database indices of the inliers that
        verified the pair: none when nothing did)."""
        n, qi, di = self._verified(query, db, q_space)
        if n >= self.min_inliers and self.spread and inlier_spread(db.xy[di], db.size) < self.spread:
            return self.min_inliers - 1, qi, di
        return n, qi, di

    def pairs(self, query: LocalFeatures, db: LocalFeatures, limit: int = 200,
              found: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """The correspondences that verified a pair, to draw: k x 4 (query x, y, database x, y),
        each as a share of its image's width and height; at most `limit` (evenly sampled).
        `found`: the inliers' (query, database) indices as `verify` gave them (else verified again)."""
        qi, di = found if found is not None else self._verified(query, db, None)[1:]
        q, d = query.xy[qi] / np.asarray(query.size, np.float32), db.xy[di] / np.asarray(db.size, np.float32)
        out = np.concatenate([q, d], axis=1).astype(np.float32)
        if len(out) > limit:
            out = out[np.linspace(0, len(out) - 1, limit).astype(int)]
        return out

    def evidence(self, query: LocalFeatures, db: LocalFeatures, q_space: np.ndarray | None = None
                 ) -> tuple[Evidence, np.ndarray, np.ndarray]:
        """(what the shared-part rule (`same_object`) weighs of one candidate of a query, with
        inliers as `inliers` counts them; the query and database indices of those inliers)."""
        n, qi, di = self.verify(query, db, q_space)
        return evidence_of(n, query, db, qi, di, self.shared_part), qi, di

    def check(self, query: LocalFeatures, db: LocalFeatures, q_space: np.ndarray | None = None
              ) -> tuple[int, float]:
        """(inliers as `inliers` counts them without the spread rule, `inlier_spread` of the inliers
        that verified in the database image; 0.0 when nothing verified)."""
        n, _, di = self._verified(query, db, q_space)
        return n, inlier_spread(db.xy[di], db.size)

    def _verified(self, query: LocalFeatures, db: LocalFeatures, q_space: np.ndarray | None
                  ) -> tuple[int, np.ndarray, np.ndarray]:
        """(the count `check` gives, query and database indices of the inliers that verified the
        pair: none when nothing did)."""
        none = np.zeros(0, np.int64)
        if len(query) < 4 or len(db) < 4 or query.kind != db.kind:  # two kinds never match
            return 0, none, none
        if isinstance(db, WordFeatures):
            qi, di = word_matches(query, db, self.hamming)
        else:
            qi, di = ratio_matches(query_space(query) if q_space is None else q_space, database_space(db), self.ratio,
                                   query.binary)
        if len(qi) < min(self.min_inliers, self.fundamental or self.min_inliers):
            return 0, none, none  # no model can have more inliers than matches: no RANSAC to run
        thr = self.threshold * max(db.size)
        mask = ransac_mask(query.xy[qi], db.xy[di], thr)
        n = int(mask.sum())
        if n >= self.min_inliers:
            return n, qi[mask], di[mask]
        if self.fundamental and len(qi) >= self.fundamental:
            fmask = epipolar_mask(query.xy[qi], db.xy[di], thr)
            f = int(fmask.sum())
            # an epipolar line is a weak constraint: among many random matches some always fall
            # near their lines (23 of 200 in the test), so a share of the matches is asked too
            if f >= self.fundamental and f >= EPIPOLAR_MIN_SHARE * len(qi):
                # verified, at the bar: epipolar inliers come easier than a homography's, so an
                # image verified so follows those a homography verifies with more
                return self.min_inliers, qi[fmask], di[fmask]
        return n, none, none

    def scores(self, query: LocalFeatures, shortlist: Sequence[LocalFeatures | None],
               found: list | None = None) -> list[int]:
        """Inliers of each shortlisted image (0 for one without stored features). `found`: a list
        that receives each image's inlier indices (query, database), as `verify` gives them."""
        q_space = query_space(query) if len(query) else None
        none = np.zeros(0, np.int64)

        def one(d):
            return (0, none, none) if d is None else self.verify(query, d, q_space)

        # the matching (BLAS) and RANSAC (OpenCV) release the GIL: the shortlist is verified in
        # threads, each running BLAS on one core (a thread per core each asking BLAS for every
        # core took twice the time: docs/BENCHMARKS.md, "Speed a user feels")
        if len(shortlist) > 1:
            with one_blas_thread():
                out = list(_pool().map(one, shortlist))
        else:
            out = [one(d) for d in shortlist]
        if found is not None:
            found.extend((qi, di) for _, qi, di in out)
        return [n for n, _, _ in out]


#: what a new index's verification takes for an object that fills the photo: its inliers spread
#: over at least 30 % of the image's width and height (docs/RESULTS.md, "A shared part is not the
#: same object")
DEFAULT_SHARED_PART = 0.3
#: ... and a match of the same query with under this share of that one's inliers is only a part too
SHARED_PART_WEAK = 0.1
#: a match whose inliers lie in a strip under this share of the width or height of both images
#: (a printed band, a line of type) is only a part, unless it is the query's strongest match
SHARED_STRIP = 0.05
#: a match whose inliers are at least this share of the query's or the candidate's features
#: (the fewer) is a copy of the query: the photo itself, indexed, matches with 0.92 or more, any
#: two other images of a mixed library at most 0.56 (docs/RESULTS.md, "The photo searched with,
#: itself indexed")
COPY_SHARE = 0.7
#: the strongest match decides the shared-part rule only when at least this share of its image
#: lies inside the photo searched with (`frame_inside`): an object within the photo (a cover's
#: scan: 0.97 or more in 90 % of the SMVS phone photos), not another view of a scene that the
#: photo's frame cuts (a landmark's other photo: a median of 0.79). A compromise measured three
#: ways (docs/RESULTS.md, "An object inside the photo"): landmarks keep more of their marks the
#: higher it is, a library of phone photos of covers marks more neighbouring covers
SHARED_PART_INSIDE = 0.8


class Evidence(NamedTuple):
    """What the shared-part rule (`same_object`) weighs of one candidate of a query."""
    inliers: int
    spread: float  # `inlier_spread` of the inliers in the candidate's image (0.0: none verified)
    copy: bool = False  # a copy of the query (`COPY_SHARE`): the photo itself, indexed
    query_spread: float = 1.0  # `inlier_spread` of the inliers in the query
    inside: float = 1.0  # `frame_inside`: how much of the candidate's image the query shows


def evidence_of(inliers: int, query: LocalFeatures | WordFeatures, db: LocalFeatures | WordFeatures,
                qi: np.ndarray, di: np.ndarray, wide: float = 0.0) -> Evidence:
    """The `Evidence` of a candidate verified with `inliers` (query and database indices qi, di).
    `wide`: the rule's bar (`same_object`); only a candidate whose inliers spread that far can
    decide the rule, so only such a one is given its `frame_inside` (about 0.25 ms; about one a
    phone photo's search, three a landmark's), the others 1.0."""
    spread = inlier_spread(db.xy[di], db.size)
    inside = frame_inside(query, db, qi, di) if wide and spread >= wide else 1.0
    return Evidence(inliers, spread, inliers >= COPY_SHARE * max(1, min(len(query), len(db))),
                    inlier_spread(query.xy[qi], query.size), inside)


def frame_inside(query: LocalFeatures | WordFeatures, db: LocalFeatures | WordFeatures, qi: np.ndarray,
                 di: np.ndarray, steps: int = 24) -> float:
    """The share of the database image that lies inside the query's frame: a homography fitted
    to the inliers (least squares) lays a grid of steps x steps points of the database image into
    the query, and the share that lands inside is counted. A cover photographed whole is 1.0; a
    view of a scene that extends past the query's frame less. 0.0 when no homography can be
    fitted."""
    import cv2

    if len(qi) < 4:
        return 0.0
    H, _ = cv2.findHomography(query.xy[qi].astype(np.float32), db.xy[di].astype(np.float32), 0)
    if H is None or not np.isfinite(H).all() or abs(np.linalg.det(H)) < 1e-12:
        return 0.0
    (w, h), (qw, qh) = db.size, query.size
    xs, ys = np.meshgrid((np.arange(steps) + 0.5) / steps * w, (np.arange(steps) + 0.5) / steps * h)
    p = np.c_[xs.ravel(), ys.ravel(), np.ones(steps * steps)] @ np.linalg.inv(H).T
    ahead = p[:, 2] > 1e-9
    z = np.where(ahead, p[:, 2], 1.0)
    x, y = p[:, 0] / z, p[:, 1] / z
    return float((ahead & (x >= 0) & (x < qw) & (y >= 0) & (y < qh)).mean())


def same_object(found: dict[int, tuple], min_inliers: int, wide: float,
                weak: float = SHARED_PART_WEAK, strip: float = SHARED_STRIP,
                inside: float = SHARED_PART_INSIDE) -> dict[int, int]:
    """One query's verdicts under the shared-part rule: `found` is candidate -> `Evidence` (or its
    first fields) of every candidate verified for the query so far; returns candidate -> inliers,
    where a verified candidate that shares only a part with the query counts min_inliers - 1 (not
    verified). The query's strongest verified candidate that is not a copy of it (most inliers,
    ties by id) decides: when its inliers spread at least `wide` (the object fills its image: a
    cover, a painting, a page) and the query shows at least `inside` of that image (the object
    lies within the photo: not another view of a scene, which the photo's frame cuts), every
    other verified candidate whose inliers spread less than `wide` in its own image, or in the
    query less than `wide` or than the strongest's own do there, or that has fewer than `weak`
    times its inliers, matched a part the two share (the band Blu-ray cases all carry, a logo;
    another cover in a corner of the photo) rather than the object. When the strongest is itself
    confined (a landmark small in a street photo), or cut by the photo's frame, that is all; but
    a candidate whose inliers lie in a strip under `strip` of both images is a part unless it is
    the strongest match of all (a phone photo may match its cover only by the title's line). A
    copy of the query (the photo itself, indexed) fills its image whatever the photo shows: it
    neither decides nor loses its mark, so a verdict does not depend on whether the photo
    searched with is indexed. `wide` 0: off."""
    ev = {i: Evidence(*e) for i, e in found.items()}
    counts = {i: e.inliers for i, e in ev.items()}
    deciding = [i for i, e in ev.items() if e.inliers >= min_inliers and not e.copy]
    if not wide or not deciding:
        return counts
    strongest = min((i for i, n in counts.items() if n >= min_inliers), key=lambda i: (-counts[i], i))
    best = min(deciding, key=lambda i: (-counts[i], i))
    n_best, s_best = ev[best].inliers, ev[best].spread
    deciding_wide = s_best >= wide and ev[best].inside >= inside
    # in the query, a match must spread as far as the object does there (the strongest's inliers),
    # up to `wide`: an identical file of the strongest keeps its mark wherever the object lies
    q_bar = min(wide, ev[best].query_spread)
    for i in deciding:
        e = ev[i]
        part = i != strongest and max(e.spread, e.query_spread) < strip
        if i != best and deciding_wide:
            part = part or e.spread < wide or e.query_spread < q_bar or e.inliers < weak * n_best
        if part:
            counts[i] = min_inliers - 1
    return counts


class QueryVerdicts:
    """The shared-part rule over one query's verification, round after round (expansion verifies
    more): `add` records the new candidates' evidence and returns the verdicts of every candidate
    seen so far (an earlier one may lose its mark to a stronger match found later)."""

    def __init__(self, verifier: Verifier):
        self.verifier = verifier
        self.found: dict[int, tuple] = {}

    def add(self, found: dict[int, tuple]) -> dict[int, int]:
        self.found.update(found)
        v = self.verifier
        return same_object(self.found, v.min_inliers, v.shared_part)


def ratio_matches(q: np.ndarray, d: np.ndarray, ratio: float = 0.8, binary: bool = False
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(query indices, database indices) of the matches of descriptors q (m x D) in d (n x D),
    both in `features.match_space` (unit RootSIFT vectors, or +-1 bits with `binary`) or q in
    `features.query_space` and d in `features.database_space` (RootSIFT in bytes), passing the
    ratio test dist(q, d1) < ratio dist(q, d2), one per database descriptor (the nearest one
    kept)."""
    if len(q) == 0 or len(d) < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if q.dtype == np.uint8:
        sims, scale, floor = byte_products(q, d), 1.0 / BYTE_SCALE**2, np.iinfo(np.int32).min
    else:
        sims, scale, floor = q @ d.T, 1.0, -np.inf
    rows = np.arange(len(q))
    best = np.argmax(sims, axis=1)  # two argmax passes: much faster than a partial sort
    s1 = sims[rows, best].copy()
    sims[rows, best] = floor
    s2 = sims.max(axis=1)
    if scale != 1.0:
        s1, s2 = s1 * np.float32(scale), s2 * np.float32(scale)
    d1, d2 = distances(s1, binary, q.shape[1]), distances(s2, binary, q.shape[1])
    ok = np.flatnonzero(d1 < ratio * d2)
    if len(ok) == 0:
        return ok, ok
    # one match per database keypoint: the nearest query descriptor
    order = ok[np.argsort(-s1[ok], kind="stable")]
    _, first_of = np.unique(best[order], return_index=True)
    keep = np.sort(order[first_of])
    return keep, best[keep]


def word_matches(q: WordFeatures, d: WordFeatures, hamming: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """(query indices, database indices) of the correspondences between two images' word
    features: a query feature (any of its words) and a database feature that share a visual word
    and whose signatures differ in at most `hamming` bits, one per database feature and one per
    query feature (the closest signatures kept; ties by index). The HE matching of Jégou et al.
    2008 used as tentative correspondences, as the descriptor ratio test is (`ratio_matches`)."""
    none = np.zeros(0, np.int64)
    if len(q) == 0 or len(d) == 0:
        return none, none
    ma = q.words.shape[1]
    qw = q.words.reshape(-1)
    qs = np.ascontiguousarray(q.sigs.reshape(len(qw), -1)).view("<u8").ravel()
    ds = np.ascontiguousarray(d.sigs[:, 0]).view("<u8").ravel()
    by_word = np.argsort(d.words[:, 0], kind="stable")
    sorted_words = d.words[by_word, 0]
    lo = np.searchsorted(sorted_words, qw, "left")
    cnt = np.searchsorted(sorted_words, qw, "right") - lo
    if cnt.sum() == 0:
        return none, none
    # every (query entry, database feature) pair of one word, without a Python loop
    entry = np.repeat(np.arange(len(qw)), cnt)
    within = np.arange(len(entry)) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    dj = by_word[np.repeat(lo, cnt) + within]
    h = np.bitwise_count(qs[entry] ^ ds[dj])
    ok = h <= hamming
    qi, dj, h = entry[ok] // ma, dj[ok], h[ok]
    if len(qi) == 0:
        return none, none
    order = np.lexsort((qi, dj, h))  # closest first
    qi, dj = qi[order], dj[order]
    _, first = np.unique(dj, return_index=True)  # one per database feature
    first = np.sort(first)
    qi, dj = qi[first], dj[first]
    _, first = np.unique(qi, return_index=True)  # ... and one per query feature
    first = np.sort(first)
    return qi[first].astype(np.int64), dj[first].astype(np.int64)


def inlier_spread(points: np.ndarray, size: tuple[int, int]) -> float:
    """How far inliers (k x 2, x y in pixels of an image of `size` (width, height)) spread: the
    smaller of the widths and heights of the box between their 10th and 90th percentiles, as a
    share of the image's (a few stray inliers do not widen it, as they would a convex hull)."""
    if len(points) < 2:
        return 0.0
    extent = (np.percentile(points, 90, axis=0) - np.percentile(points, 10, axis=0)) / np.asarray(size, np.float64)
    return float(min(extent))


def ransac_mask(src: np.ndarray, dst: np.ndarray, threshold: float) -> np.ndarray:
    """Which matched points src -> dst (k x 2) are inliers of a homography fitted by USAC MAGSAC."""
    import cv2

    none = np.zeros(len(src), bool)
    if len(src) < 4:
        return none
    try:
        _, mask = cv2.findHomography(src.reshape(-1, 1, 2).astype(np.float32),
                                     dst.reshape(-1, 1, 2).astype(np.float32),
                                     cv2.USAC_MAGSAC, ransacReprojThreshold=float(threshold), maxIters=2000,
                                     confidence=0.999)
    except cv2.error:  # a degenerate sample: no model
        return none
    return none if mask is None else mask.ravel().astype(bool)


def ransac_inliers(src: np.ndarray, dst: np.ndarray, threshold: float) -> int:
    """Inliers of a homography fitted to matched points src -> dst (k x 2) by USAC MAGSAC."""
    return int(ransac_mask(src, dst, threshold).sum())


def epipolar_mask(src: np.ndarray, dst: np.ndarray, threshold: float) -> np.ndarray:
    """Which matched points src -> dst (k x 2) are inliers of a fundamental matrix fitted by USAC
    MAGSAC: the matches consistent with one rigid scene seen from two viewpoints, planar or not."""
    import cv2

    none = np.zeros(len(src), bool)
    if len(src) < 8:
        return none
    try:
        _, mask = cv2.findFundamentalMat(src.reshape(-1, 1, 2).astype(np.float32),
                                         dst.reshape(-1, 1, 2).astype(np.float32),
                                         cv2.USAC_MAGSAC, float(threshold), 0.999, 2000)
    except cv2.error:  # a degenerate sample (points on a line, repeated points): no model
        return none
    return none if mask is None else mask.ravel().astype(bool)


def epipolar_inliers(src: np.ndarray, dst: np.ndarray, threshold: float) -> int:
    """Inliers of a fundamental matrix fitted to matched points src -> dst (k x 2) (`epipolar_mask`)."""
    return int(epipolar_mask(src, dst, threshold).sum())


def verified_order(order: Sequence[int], inliers: dict[int, int], min_inliers: int) -> list[int]:
    """A first stage's ranking re-ordered by verification: the images with at least `min_inliers`
    first, by inliers (ties in first-stage order), then the others in first-stage order."""
    pos = {i: k for k, i in enumerate(order)}
    good = sorted((i for i in order if inliers.get(i, 0) >= min_inliers), key=lambda i: (-inliers[i], pos[i]))
    chosen = set(good)
    return good + [i for i in order if i not in chosen]
