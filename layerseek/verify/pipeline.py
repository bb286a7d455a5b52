"""Verification pipelines over a described collection, for `eval` and the benches: a first stage's
ranking (global descriptor, MOF) with its head re-ordered by inliers, or local features alone
(descriptor votes shortlist, inliers re-order).

Features of benchmark images are cached per file content, crop, rotation and settings, as the
CNN descriptors are (`describe.DescriptorCache`).
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..describe import Request, request_key
from ..images import load_image
from .features import (DEFAULT_FEATURE_SIDE, DEFAULT_FEATURES, LocalFeatures, check_kind, distances,
                       local_features, match_space, query_space)
from .geometry import QueryVerdicts, Verifier, verified_order


class FeatureCache:
    """A directory of packed LocalFeatures, one file per (image content, crop, rotation, settings)."""

    def __init__(self, root: str | Path, n: int = DEFAULT_FEATURES, max_side: int = DEFAULT_FEATURE_SIDE,
                 kind: str = "sift"):
        self.n, self.max_side, self.kind = n, max_side, check_kind(kind)
        settings = {"v": 3, "kind": kind, "n": n, "max_side": max_side}  # 2: the draft rule of issue 28; 3: images.shrink
        self.dir = Path(root) / (f"{kind}-" + hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16])

    def _path(self, req: Request) -> Path:
        key = request_key(req)
        return self.dir / key[:2] / f"{key}.lsf"

    def describe_one(self, req: Request) -> LocalFeatures:
        p = self._path(req)
        if p.is_file():
            try:
                return LocalFeatures.unpack(p.read_bytes())
            except Exception:  # noqa: BLE001 - a damaged entry is computed again
                pass
        # decoded at the side the features are taken at: the crop box is in full-size pixels
        img = load_image(req.path, max_side=self.max_side, bbox=req.bbox, rotate=req.rotate)
        data = local_features(img, self.n, self.max_side, self.kind).pack()
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, p)
        # what the file gives back (positions in float16, as an index stores them), not the
        # float32 features just taken: a run that extracts and one that reads the cache agreed
        # only to ~1 point of Paris' hard mAP otherwise
        return LocalFeatures.unpack(data)

    def describe(self, requests: Sequence[Request], progress: Callable[[int, int], None] | None = None,
                 errors: list | None = None, threads: int = 2) -> list[LocalFeatures | None]:
        """Features of every request (None where the image failed; the error goes to `errors`)."""
        def one(req):
            try:
                return self.describe_one(req), None
            except Exception as e:  # noqa: BLE001 - reported, the batch goes on
                return None, str(e)

        out: list[LocalFeatures | None] = []
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            for k, (f, err) in enumerate(pool.map(one, requests), 1):
                out.append(f)
                if err and errors is not None:
                    errors.append(err)
                if progress:
                    progress(k, len(requests))
        return out


def dataset_features(ds, cache_root: str | Path, progress=None, n: int = DEFAULT_FEATURES,
                     max_side: int = DEFAULT_FEATURE_SIDE, kind: str = "sift") -> tuple[list, list, list[str]]:
    """(database features, query features, errors) of a Dataset, queries cropped to their box."""
    cache = FeatureCache(cache_root, n, max_side, kind)
    reqs = [Request(p, rotate=ds.rotations.get(p.name, 0)) for p in ds.database]
    reqs += [Request(q.path, q.bbox, q.rotate) for q in ds.queries]
    errors: list[str] = []
    out = cache.describe(reqs, progress, errors)
    return out[: len(ds.database)], out[len(ds.database):], errors


def verify_rankings(rankings: dict[int, list[int]], db_feats, q_feats, verifier: Verifier, shortlist: int,
                    threads: int = 2) -> tuple[dict[int, list[int]], dict[int, dict[int, int]]]:
    """Re-order the first `shortlist` of each query's ranking (query index -> database indices)
    by inliers. Returns (new rankings, query -> {database index: inliers})."""
    def one(item):
        qi, order = item
        q = q_feats[qi]
        if q is None:
            return qi, order, {}
        q_space = query_space(q) if len(q) else None
        verdicts = QueryVerdicts(verifier)  # the shared-part rule, when the verifier has it

        def inliers_of(ids):
            return {**dict.fromkeys(ids, 0), **verdicts.add({j: verifier.evidence(q, db_feats[j], q_space)[0]
                                                              for j in ids if db_feats[j] is not None})}

        # the index's rule without expansion rounds: the ranking is given, not searched
        new, counts = verify_and_expand(None, lambda _: list(order), inliers_of, None, None, shortlist,
                                        verifier.min_inliers, rounds=0)
        return qi, new, counts

    new, inl = {}, {}
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for qi, order, counts in pool.map(one, rankings.items()):
            new[qi], inl[qi] = order, counts
    return new, inl


class VoteIndex:
    """Local features alone: every database descriptor (RootSIFT, or +-1 bits for binary kinds)
    in one FAISS index; a query's descriptors vote for the images of their nearest neighbours
    that pass the ratio test."""

    def __init__(self, db_feats: Sequence[LocalFeatures | None], ratio: float = 0.8):
        import faiss

        self.ratio = ratio
        have = [f for f in db_feats if f is not None and len(f)]
        self.binary = bool(have) and have[0].binary
        descs = [match_space(f) for f in have]
        owners = [np.full(len(f), i, np.int64) for i, f in enumerate(db_feats) if f is not None and len(f)]
        self.owner = np.concatenate(owners) if owners else np.zeros(0, np.int64)
        self.n_images = len(db_feats)
        self.dim = descs[0].shape[1] if descs else 128
        self.index = faiss.IndexFlatIP(self.dim)
        if descs:
            self.index.add(np.ascontiguousarray(np.concatenate(descs)))

    def votes(self, q: LocalFeatures) -> np.ndarray:
        """Per database image, the number of query descriptors whose nearest database descriptor
        lies in it and passes the ratio test against the second nearest."""
        out = np.zeros(self.n_images, np.float32)
        if len(q) == 0 or self.index.ntotal < 2:
            return out
        sims, ids = self.index.search(np.ascontiguousarray(match_space(q)), 2)
        d1, d2 = distances(sims[:, 0], self.binary, self.dim), distances(sims[:, 1], self.binary, self.dim)
        ok = d1 < self.ratio * d2
        np.add.at(out, self.owner[ids[ok, 0]], 1.0)
        return out

    def ranking(self, q: LocalFeatures) -> list[int]:
        v = self.votes(q)
        return [int(i) for i in np.lexsort((np.arange(len(v)), -v))]


def verify_and_expand(q: np.ndarray, rank: Callable[[np.ndarray], list[int]],
                      inliers_of: Callable[[list[int]], dict[int, int]], vectors: Callable[[list[int]], np.ndarray],
                      expand: Callable[[np.ndarray, np.ndarray], np.ndarray], shortlist: int, min_inliers: int,
                      rounds: int = 1, extra: Sequence[int] = ()) -> tuple[list[int], dict[int, int]]:
    """Verification with spatially verified query expansion (Chum et al. 2007): rank by the
    global vector `q`, verify the first `shortlist` and the `extra` candidates (another source's,
    e.g. `verify.words`: they are verified whatever the ranking says of them); then, `rounds`
    times, expand the query with the vectors of the verified images (`expand(q, their vectors)`,
    e.g. average QE), rank again and verify the new shortlist (counts already known are kept).
    Returns the verified images by inliers (ties: the ranking's order, then the extras'), then
    the rest of the last ranking in its order (an extra candidate that fails verification stays
    where the ranking put it, or out of it), and every inlier count computed (id -> inliers)."""
    counts: dict[int, int] = {}
    q0 = q
    for r in range(rounds + 1):
        order = rank(q)
        head = list(dict.fromkeys(order[:shortlist] + list(extra)))
        todo = [i for i in head if i not in counts]
        if todo:
            counts.update(inliers_of(todo))
        verified = [i for i in head if counts[i] >= min_inliers]
        if r == rounds or not verified:
            break
        q = expand(q0, vectors(verified))
    good = verified_order(head, counts, min_inliers)[:len(verified)]
    chosen = set(good)
    return good + [i for i in order if i not in chosen], counts
