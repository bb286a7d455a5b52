"""Post-processing of global descriptors: query expansion and learned PCA whitening."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import LayerseekError
from .fusion import l2n


def average_query_expansion(query: np.ndarray, db: np.ndarray, ranks: np.ndarray, k: int) -> np.ndarray:
    """Average query expansion (Chum et al., ICCV 2007; the FCroW paper Sec. 4.3): each query
    vector averaged with its top-k database vectors, re-normalised.

    query q x d, db n x d, ranks q x >=k (database indices, best first)."""
    if k <= 0:
        return l2n(query)
    top = db[ranks[:, :k]]  # q x k x d
    return l2n(query + top.sum(axis=1))


def alpha_query_expansion(query: np.ndarray, db: np.ndarray, ranks: np.ndarray, sims: np.ndarray,
                          k: int, alpha: float = 3.0) -> np.ndarray:
    """alpha-QE (Radenović, Tolias & Chum, TPAMI 2018, Sec. 5.1): the top-k vectors weighted by
    their similarity to the query raised to alpha (negative similarities weigh 0); alpha = 0 is
    average QE. sims is q x n (the similarities the ranks came from)."""
    if k <= 0:
        return l2n(query)
    idx = ranks[:, :k]
    w = np.maximum(np.take_along_axis(sims, idx, axis=1), 0) ** alpha  # q x k
    return l2n(query + np.einsum("qk,qkd->qd", w, db[idx]))


class PCAWhitening:
    """PCA whitening learned on one collection and applied to another (Jégou & Chum, ECCV 2012;
    Babenko & Lempitsky 2015): x -> L2( diag(lambda^-power) E^T (x - mean) ), keeping `dim`
    components. power = 0.5 is full whitening.

    The constructor only stores parameters; `fit` learns mean_, components_, eigenvalues_.
    """

    def __init__(self, dim: int | None = None, power: float = 0.5, eps: float = 1e-9):
        self.dim = dim
        self.power = power
        self.eps = eps

    def fit(self, x: np.ndarray) -> PCAWhitening:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] < 2:
            raise LayerseekError(f"whitening needs at least 2 vectors to learn from, got shape {x.shape}")
        self.mean_ = x.mean(axis=0)
        xc = x - self.mean_
        cov = xc.T @ xc / (x.shape[0] - 1)
        vals, vecs = np.linalg.eigh(cov)
        order = np.argsort(vals)[::-1]
        vals, vecs = vals[order], vecs[:, order]
        # Directions with (numerically) no variance carry no information to whiten: drop them.
        rank = int(np.sum(vals > vals[0] * 1e-10)) if vals[0] > 0 else 0
        keep = min(self.dim or rank, rank)
        if keep < 1:
            raise LayerseekError("whitening: the training vectors have no variance")
        self.eigenvalues_ = vals[:keep]
        self.components_ = vecs[:, :keep].T  # keep x d
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        if not hasattr(self, "components_"):
            raise LayerseekError("PCAWhitening: fit or load it before transform")
        x = np.asarray(x, dtype=np.float64)
        proj = (x - self.mean_) @ self.components_.T
        return l2n(proj / (self.eigenvalues_ + self.eps) ** self.power)

    def fit_transform(self, x: np.ndarray) -> np.ndarray:
        return self.fit(x).transform(x)

    def save(self, path: str | Path) -> None:
        np.savez(path, mean=self.mean_, components=self.components_, eigenvalues=self.eigenvalues_,
                 power=self.power, eps=self.eps, dim=-1 if self.dim is None else self.dim)

    @classmethod
    def load(cls, path: str | Path) -> PCAWhitening:
        with np.load(path) as z:
            dim = int(z["dim"])
            obj = cls(dim=None if dim < 0 else dim, power=float(z["power"]), eps=float(z["eps"]))
            obj.mean_, obj.components_, obj.eigenvalues_ = z["mean"], z["components"], z["eigenvalues"]
        return obj


def centre(x: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Vectors less a collection's mean, re-normalised: the simplest hubness remedy (a hub is an
    image close to the collection's centre, Radovanović et al. 2010; centring moves the centre
    to the origin, where the cosine no longer favours it)."""
    return l2n(np.asarray(x, np.float64) - mean)


def neighbourhood_similarity(sims_to_neighbours: np.ndarray) -> np.ndarray:
    """r_x, each database image's mean similarity to its k nearest database images (a row of
    `sims_to_neighbours` each): how dense its neighbourhood is, the term that CSLS and Jégou et
    al.'s contextual dissimilarity measure (CVPR 2007) take away from a hub."""
    return np.asarray(sims_to_neighbours, np.float64).mean(axis=1)


def csls(sims: np.ndarray, r_db: np.ndarray, beta: float = 0.5) -> np.ndarray:
    """Hubness-aware similarity (Conneau et al., ICLR 2018, Eq. 6, CSLS = 2 cos - r_q - r_x,
    halved; the query's own r_q is one constant per query and cannot change its ranking):
    cos(q, x) - beta * r_x. q x n sims, n r_db."""
    return np.asarray(sims) - beta * np.asarray(r_db)[None, :]
