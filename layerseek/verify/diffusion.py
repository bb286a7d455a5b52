"""Diffusion over the database's nearest-neighbour graph, seeded by geometrically verified images.

Iscen et al., "Efficient diffusion on region manifolds", CVPR 2017: the database images are the
nodes of a mutual k-nearest-neighbour graph whose edges weigh s^gamma (s the cosine of the two
global vectors, Eq. 2); its symmetrically normalised affinity S = D^-1/2 W D^-1/2 (Eq. 4) spreads
a query's seed vector y by solving (I - alpha S) f = y (Eq. 6) with conjugate gradients (Sec. 4).
The paper seeds y with the query's own nearest neighbours; here the seeds are the images that
verification found to show the same object or place (`verified_diffusion`), so a query whose
shortlist holds no verified image keeps its first-stage ranking (on collections of covers or
products, where neighbours of a wrong image are other wrong images, query-seeded diffusion
ranks far worse: docs/RESULTS.md).

`KnnGraph` is the learned state (fit / update / save / load of plain arrays): each image's k best
neighbours, kept in step with an index's additions and removals without recomputing the rest.
Building it costs n^2 dot products (5 s at 10k images, hours at a million), so past
FULL_GRAPH_MAX images the graph is truncated instead: built at query time over the first
stage's SHORTLIST best images only (`shortlist_graph`).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

#: Iscen et al.'s alpha and gamma; k chosen on the shared collections (docs/RESULTS.md)
DEFAULT_K, DEFAULT_GAMMA, DEFAULT_ALPHA = 15, 3.0, 0.99
#: above this many images an index keeps no graph of all of them: each query diffuses over the
#: graph of its SHORTLIST best first-stage images (a whole graph at 20k images takes ~20 s to build)
FULL_GRAPH_MAX = 20_000
SHORTLIST = 1000


def top_neighbours(queries: np.ndarray, database: np.ndarray, k: int, self_rows: np.ndarray | None = None,
                   block: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cosines), each len(queries) x k: the k database rows most similar to each query
    (best first, ties by row), leaving out each query's own row `self_rows[i]` when given. Rows
    past the database's size are -1 with similarity -inf."""
    n, m = len(database), len(queries)
    rows = np.full((m, k), -1, np.int64)
    sims = np.full((m, k), -np.inf, np.float32)
    for start in range(0, m, block):
        s = queries[start:start + block] @ database.T
        if self_rows is not None:
            s[np.arange(len(s)), self_rows[start:start + block]] = -np.inf
        kk = min(k, n)
        if kk == 0:
            continue
        part = np.argpartition(-s, kk - 1, axis=1)[:, :kk] if kk < n else np.tile(np.arange(n), (len(s), 1))
        ps = np.take_along_axis(s, part, 1)
        order = np.lexsort((part, -ps), axis=1)
        r, v = np.take_along_axis(part, order, 1), np.take_along_axis(ps, order, 1)
        valid = np.isfinite(v)
        rows[start:start + len(s), :kk] = np.where(valid, r, -1)
        sims[start:start + len(s), :kk] = v
    return rows, sims


class KnnGraph:
    """Each database image's k nearest neighbours (ids and cosines) by its global vector."""

    def __init__(self, k: int = DEFAULT_K):
        self.k = int(k)
        self.ids = np.zeros(0, np.int64)  # learned state: node ids, their neighbours' ids, cosines
        self.neighbours = np.zeros((0, self.k), np.int64)
        self.sims = np.zeros((0, self.k), np.float32)

    def fit(self, ids: Sequence[int], vectors: np.ndarray) -> KnnGraph:
        """The graph of these images (L2-normalised vectors, one row per id), from scratch."""
        ids = np.asarray(ids, np.int64)
        rows, sims = top_neighbours(vectors, vectors, self.k, np.arange(len(ids)))
        self.ids, self.neighbours, self.sims = ids, np.where(rows >= 0, ids[np.maximum(rows, 0)], -1), sims
        return self

    def update(self, ids: Sequence[int], vectors: np.ndarray, changed: Sequence[int] = ()) -> KnnGraph:
        """The graph of the images `ids` now holds (vectors, one row per id), re-using what is still
        valid: the lists of images that are new, `changed` (same id, new vector) or lost a neighbour
        are computed again against everything; every other list only meets the new images. The
        result equals `fit` on the same vectors (up to ties), at the cost of the changes."""
        ids = np.asarray(ids, np.int64)
        if len(self.ids) == 0:
            return self.fit(ids, vectors)
        changed = np.asarray(sorted({int(i) for i in changed}), np.int64)
        gone = np.union1d(np.setdiff1d(self.ids, ids), changed)
        # each row's row in the old graph (-1: new, or changed: computed again)
        order = np.argsort(self.ids, kind="stable")
        at = np.minimum(np.searchsorted(self.ids[order], ids), max(len(order) - 1, 0))
        old = np.where((self.ids[order[at]] == ids) & ~np.isin(ids, changed), order[at], -1)
        fresh = np.flatnonzero(old < 0).tolist()
        neighbours = np.full((len(ids), self.k), -1, np.int64)
        sims = np.full((len(ids), self.k), -np.inf, np.float32)
        held = np.flatnonzero(old >= 0)
        nb = self.neighbours[old[held]]
        lost = np.isin(nb, gone).any(axis=1)  # lost a neighbour: its next best is unknown
        keep = held[~lost].tolist()
        neighbours[held[~lost]], sims[held[~lost]] = nb[~lost], self.sims[old[held[~lost]]]
        redo = fresh + held[lost].tolist()
        if redo:
            redo = np.asarray(sorted(redo), np.int64)
            rr, ss = top_neighbours(vectors[redo], vectors, self.k, redo)
            neighbours[redo], sims[redo] = np.where(rr >= 0, ids[np.maximum(rr, 0)], -1), ss
        if keep and fresh:  # the kept lists meet the new images
            keep_rows, fresh_rows = np.asarray(keep), np.asarray(fresh)
            s_new = vectors[keep_rows] @ vectors[fresh_rows].T
            all_ids = np.concatenate([neighbours[keep_rows], np.tile(ids[fresh_rows], (len(keep_rows), 1))], 1)
            all_s = np.concatenate([sims[keep_rows], s_new.astype(np.float32)], 1)
            order = np.lexsort((np.where(all_ids < 0, np.iinfo(np.int64).max, all_ids), -all_s), axis=1)[:, :self.k]
            neighbours[keep_rows] = np.take_along_axis(all_ids, order, 1)
            sims[keep_rows] = np.take_along_axis(all_s, order, 1)
        self.ids, self.neighbours, self.sims = ids, neighbours, sims
        return self

    def affinity(self, gamma: float = DEFAULT_GAMMA) -> Affinity:
        """S = D^-1/2 W D^-1/2 (Iscen et al. Eq. 4) as a sparse matrix over the rows of `ids`: W_ij =
        max(s_ij, 0)^gamma where i and j are each in the other's list (mutual neighbours, Eq. 2)."""
        n = len(self.ids)
        order = np.argsort(self.ids, kind="stable")
        nb = self.neighbours.ravel()
        at = np.minimum(np.searchsorted(self.ids[order], nb), max(n - 1, 0))
        dst = np.where((n > 0) & (self.ids[order[at]] == nb) & (nb >= 0), order[at], -1) if n else nb
        src = np.repeat(np.arange(n), self.k)
        w = np.maximum(self.sims.ravel(), 0).astype(np.float64) ** gamma
        ok = (dst >= 0) & np.isfinite(self.sims.ravel())
        src, dst, w = src[ok], dst[ok], w[ok]
        # kept only where both lists hold the edge, at the smaller of its two weights
        key, back = src * n + dst, dst * n + src
        by_key = np.argsort(key, kind="stable")
        pos = np.minimum(np.searchsorted(key[by_key], back), max(len(key) - 1, 0))
        mutual = key[by_key[pos]] == back if len(key) else np.zeros(0, bool)
        src, dst = src[mutual], dst[mutual]
        w = np.minimum(w[mutual], w[by_key[pos[mutual]]])
        d = np.bincount(src, weights=w, minlength=n)
        inv = np.where(d > 0, 1.0 / np.sqrt(np.where(d > 0, d, 1.0)), 0.0)
        return Affinity.from_edges(n, src, dst, w * inv[src] * inv[dst])

    def save(self, path: str | Path, **extra: np.ndarray) -> None:
        """Plain arrays in one .npz (`extra`: more arrays kept beside, e.g. what each node was made of)."""
        with open(path, "wb") as f:
            np.savez(f, k=self.k, ids=self.ids, neighbours=self.neighbours, sims=self.sims, **extra)

    @classmethod
    def load(cls, path: str | Path) -> tuple[KnnGraph, dict[str, np.ndarray]]:
        """The graph and the `extra` arrays saved with it."""
        with np.load(path, allow_pickle=False) as z:
            g = cls(int(z["k"]))
            g.ids, g.neighbours, g.sims = z["ids"], z["neighbours"], z["sims"]
            extra = {k: z[k] for k in z.files if k not in ("k", "ids", "neighbours", "sims")}
        return g, extra


class Affinity:
    """A sparse n x n matrix in compressed rows (numpy only: SciPy's import alone takes 0.4 s of a
    search from the shell): row i's columns `indices[indptr[i]:indptr[i + 1]]`, its values `data`."""

    def __init__(self, n: int, indptr: np.ndarray, indices: np.ndarray, data: np.ndarray):
        self.shape = (n, n)
        self.indptr, self.indices, self.data = indptr, indices, data
        self._rows = np.repeat(np.arange(n), np.diff(indptr))  # each value's row

    @classmethod
    def from_edges(cls, n: int, rows: np.ndarray, cols: np.ndarray, values: np.ndarray) -> Affinity:
        order = np.lexsort((cols, rows))
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n))]).astype(np.int64)
        return cls(n, indptr, np.asarray(cols, np.int64)[order], np.asarray(values, np.float64)[order])

    def __matmul__(self, f: np.ndarray) -> np.ndarray:
        return np.bincount(self._rows, weights=self.data * f[self.indices], minlength=self.shape[0])

    def toarray(self) -> np.ndarray:
        dense = np.zeros(self.shape)
        dense[self._rows, self.indices] = self.data
        return dense


def diffuse(S: Affinity, seeds: np.ndarray, alpha: float = DEFAULT_ALPHA, tol: float = 1e-6, maxiter: int = 50
            ) -> np.ndarray:
    """f solving (I - alpha S) f = y (Iscen et al. Eq. 6) by conjugate gradients (the matrix is
    symmetric positive definite for alpha < 1), stopped once the residual is below `tol` times
    |y| or after `maxiter` steps."""
    y = np.asarray(seeds, np.float64)
    if not y.any():
        return np.zeros_like(y)
    f, r = np.zeros_like(y), y.copy()
    p, rho_prev = None, None
    stop = tol * np.linalg.norm(y)
    for _ in range(maxiter):
        if np.linalg.norm(r) < stop:
            break
        rho = r @ r
        p = r.copy() if p is None else r + (rho / rho_prev) * p
        q = p - alpha * (S @ p)
        step = rho / (p @ q)
        f += step * p
        r -= step * q
        rho_prev = rho
    return f


def settings(k: int = DEFAULT_K, gamma: float = DEFAULT_GAMMA, alpha: float = DEFAULT_ALPHA) -> dict:
    """The diffusion's settings as an index's manifest keeps them (`verify.diffusion`)."""
    return {"k": int(k), "gamma": float(gamma), "alpha": float(alpha)}


def shortlist_graph(ids: Sequence[int], vectors: np.ndarray, k: int = DEFAULT_K, gamma: float = DEFAULT_GAMMA):
    """(KnnGraph, its affinity) of a query's shortlist alone (truncated diffusion): `ids` the
    first stage's best images (and the verified ones), `vectors` theirs, one row each."""
    graph = KnnGraph(k).fit(ids, np.asarray(vectors, np.float32))
    return graph, graph.affinity(gamma)


def verified_diffusion(order: Sequence[int], counts: dict[int, int], min_inliers: int, graph: KnnGraph, S,
                       alpha: float = DEFAULT_ALPHA) -> list[int]:
    """A verified ranking (`order`: ids, its verified images first) extended by diffusion: the
    verified images (>= min_inliers in `counts`) seed the diffusion and keep their places at the head; every
    other image follows by its diffused score, ties (unreached images) in `order`, then the
    images `order` lacks by id. No verified image: `order` unchanged."""
    seeds = [i for i in order if counts.get(i, 0) >= min_inliers]
    listed = set(order)  # verified in an earlier round but no longer in `order`: after the others
    seeds += sorted((i for i, c in counts.items() if c >= min_inliers and i not in listed), key=lambda i: (-counts[i], i))
    if not seeds:
        return list(order)
    ids = np.asarray(graph.ids, np.int64)
    head = np.asarray(sorted(set(seeds)), np.int64)
    y = np.isin(ids, head).astype(np.float64)
    f = diffuse(S, y, alpha)
    # every other image by (-diffused score, place in `order`, id): the graph's images, then those
    # of `order` the graph lacks (score 0); one lexsort instead of a key per image (17 -> 11 ms of
    # a search at 10,000 images)
    listed = np.asarray(order, np.int64)
    graph_rest = ~y.astype(bool)
    extra = listed[~np.isin(listed, ids) & ~np.isin(listed, head)]
    rest = np.concatenate([ids[graph_rest], extra])
    score = np.concatenate([-f[graph_rest], np.zeros(len(extra))])
    place = _places(listed, rest, len(order) + len(ids))
    return list(seeds) + rest[np.lexsort((rest, place, score))].tolist()


def _places(order: np.ndarray, ids: np.ndarray, absent: int) -> np.ndarray:
    """Each id's place in `order` (its last, as a dict built over it keeps), `absent` where it has none."""
    if len(order) == 0:
        return np.full(len(ids), absent, np.int64)
    by_id = np.argsort(order, kind="stable")
    at = np.searchsorted(order[by_id], ids, side="right") - 1
    found = (at >= 0) & (order[by_id[np.maximum(at, 0)]] == ids)
    return np.where(found, by_id[np.maximum(at, 0)], absent)
