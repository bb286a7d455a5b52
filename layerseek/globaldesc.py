"""The global-descriptor methods (FCroW + WMFF and the pooling baselines) as one configurable
scorer over the pooled vectors of `describe.pool_all`.

Per layer: pooled vector -> L2 -> (PCA whitening learned on another collection) -> similarity;
the layers' similarities fused with WMFF weights (Eq. 7); optional query expansion re-queries
with each layer's vector averaged over the top k of the fused ranking.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import LayerseekError
from .fusion import get_similarity, l2n, parse_weights, wmff
from .pooling import get_pooling
from .postprocess import PCAWhitening, alpha_query_expansion, average_query_expansion


@dataclass
class GlobalConfig:
    pooling: str = "fcrow"
    layers: tuple[str, ...] = ("conv3_3", "conv4_3", "conv5_3")
    weights: str | None = None  # ratios like "1:1:5:2:4"; None = equal (SUM)
    similarity: str = "cosine"
    qe: int = 0  # query expansion over the top k (0 = off)
    qe_alpha: float = 0.0  # 0: average QE; > 0: alpha-QE
    whiten_dim: int | None = None

    def __post_init__(self):
        get_pooling(self.pooling)
        get_similarity(self.similarity)
        self.layers = tuple(self.layers)
        if not self.layers:
            raise LayerseekError("at least one layer is needed")
        self.weight_vector()

    def weight_vector(self) -> np.ndarray:
        if self.weights is None:
            return np.full(len(self.layers), 1.0 / len(self.layers))
        return parse_weights(self.weights, len(self.layers))

    def keys(self) -> list[str]:
        return [f"{self.pooling}/{layer}" for layer in self.layers]


def stack(vectors: Sequence[dict], key: str) -> np.ndarray:
    try:
        return np.stack([v[key] for v in vectors]).astype(np.float32)
    except KeyError:
        raise LayerseekError(f"no pooled vectors for {key!r}; extract that layer first") from None


def layer_matrices(cfg: GlobalConfig, vectors: Sequence[dict], whitenings: list[PCAWhitening] | None = None):
    """One L2-normalised (and whitened) matrix per layer."""
    mats = [l2n(stack(vectors, k)) for k in cfg.keys()]
    if whitenings:
        mats = [w.transform(m).astype(np.float32) for w, m in zip(whitenings, mats)]
    return mats


def fit_whitenings(cfg: GlobalConfig, vectors: Sequence[dict]) -> list[PCAWhitening]:
    """One PCA whitening per layer, learned on `vectors` (a different collection than the one
    searched)."""
    return [PCAWhitening(dim=cfg.whiten_dim).fit(l2n(stack(vectors, k))) for k in cfg.keys()]


def layer_similarities(cfg: GlobalConfig, q_mats, d_mats) -> list[np.ndarray]:
    sim = get_similarity(cfg.similarity)
    return [sim(q, d) for q, d in zip(q_mats, d_mats)]


def score(cfg: GlobalConfig, queries: Sequence[dict], database: Sequence[dict],
          whitenings: list[PCAWhitening] | None = None, exclude: Sequence[int | None] | None = None) -> np.ndarray:
    """q x n fused similarity. `exclude[i]` is query i's own database index (kept out of its
    query expansion)."""
    return score_matrices(cfg, layer_matrices(cfg, queries, whitenings), layer_matrices(cfg, database, whitenings),
                          exclude)


def score_matrices(cfg: GlobalConfig, q_mats: Sequence[np.ndarray], d_mats: Sequence[np.ndarray],
                   exclude: Sequence[int | None] | None = None,
                   layer_sims: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """`score` on per-layer matrices already normalised (and whitened); `layer_sims` may pass the
    per-layer similarities when they are already computed (weight search)."""
    w = cfg.weight_vector()
    fused = wmff(layer_sims if layer_sims is not None else layer_similarities(cfg, q_mats, d_mats), w)
    if cfg.qe > 0:
        masked = fused.copy()
        if exclude is not None:
            for i, j in enumerate(exclude):
                if j is not None:
                    masked[i, j] = -np.inf
        ranks = np.argsort(-masked, axis=1, kind="stable")
        if cfg.qe_alpha > 0:
            q_mats = [alpha_query_expansion(q, d, ranks, masked, cfg.qe, cfg.qe_alpha) for q, d in zip(q_mats, d_mats)]
        else:
            q_mats = [average_query_expansion(q, d, ranks, cfg.qe) for q, d in zip(q_mats, d_mats)]
        fused = wmff(layer_similarities(cfg, q_mats, d_mats), w)
    return fused


def rank(similarity: np.ndarray) -> np.ndarray:
    """Database indices, most similar first, per query."""
    return np.argsort(-similarity, axis=1, kind="stable")
