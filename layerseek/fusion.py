"""Per-layer similarities and weighted multi-layer feature fusion (WMFF, Wang et al.,
Neurocomputing 2019, Sec. 3.3), with the search for the fusion weights over the simplex.

Vectors are rows: queries Q (q x d), database D (n x d); a similarity returns q x n, higher is
more similar.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np

from .errors import LayerseekError, lookup

EPS = 1e-12


def l2n(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), EPS)


def cosine(q: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Cosine similarity (paper Eq. 5/6): q.d / (|q| |d|)."""
    return l2n(q) @ l2n(d).T


def correlation(q: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Normalised (Pearson) correlation: the cosine of the vectors centred on their own mean over
    dimensions (paper Table 1, its best measure)."""
    qc = q - q.mean(axis=1, keepdims=True)
    dc = d - d.mean(axis=1, keepdims=True)
    return cosine(qc, dc)


def euclidean(q: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Minus the Euclidean distance of the L2-normalised vectors (paper Table 1)."""
    qn, dn = l2n(q), l2n(d)
    sq = (qn**2).sum(1)[:, None] + (dn**2).sum(1)[None, :] - 2 * qn @ dn.T
    return -np.sqrt(np.maximum(sq, 0))


def kl(q: np.ndarray, d: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Minus the KL divergence KL(p_q || p_d) of the vectors read as distributions (paper
    Table 1): negative entries clipped to 0, eps added, each row scaled to sum 1."""
    p = np.maximum(q, 0) + eps
    r = np.maximum(d, 0) + eps
    p = p / p.sum(1, keepdims=True)
    r = r / r.sum(1, keepdims=True)
    # KL(p||r) = sum p log p - sum p log r
    return -((p * np.log(p)).sum(1)[:, None] - p @ np.log(r).T)


SIMILARITIES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "cosine": cosine, "correlation": correlation, "euclidean": euclidean, "kl": kl,
}


def get_similarity(name: str) -> Callable:
    return lookup(SIMILARITIES, name, "similarity")


def parse_weights(text: str | Sequence[float], n_layers: int | None = None) -> np.ndarray:
    """'1:1:5:2:4' (the paper's Table 3 ratios) or numbers -> weights scaled to sum 1 (Eq. 4)."""
    if isinstance(text, str):
        try:
            parts = [float(v) for v in text.replace(",", ":").split(":")]
        except ValueError:
            raise LayerseekError(f"weights {text!r}: expected ratios like 1:1:5:2:4") from None
    else:
        parts = [float(v) for v in text]
    w = np.asarray(parts, dtype=np.float64)
    if n_layers is not None and len(w) != n_layers:
        raise LayerseekError(f"weights {text!r}: {len(w)} values for {n_layers} layers")
    if np.any(w < 0) or w.sum() <= 0:
        raise LayerseekError(f"weights {text!r}: must be non-negative with a positive sum")
    return w / w.sum()


def format_ratio(w: Sequence[float]) -> str:
    """Weights as the paper writes them: the smallest non-zero weight is 1 when that gives
    near-integers, else two decimals."""
    w = np.asarray(w, dtype=np.float64)
    nz = w[w > 1e-9]
    if len(nz):
        r = w / nz.min()
        if np.allclose(r, np.round(r), atol=0.02) and r.max() <= 20:
            return ":".join(str(int(round(v))) for v in r)
    return ":".join(f"{v:.2f}" for v in w)


def wmff(similarities: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """WMFF score (Eq. 7): Sum_i = w_1 s_1 + ... + w_n s_n over the per-layer similarities."""
    if len(similarities) != len(weights):
        raise LayerseekError(f"{len(similarities)} layer similarities but {len(weights)} weights")
    out = np.zeros_like(similarities[0], dtype=np.float64)
    for s, w in zip(similarities, weights):
        out += w * s
    return out


def simplex_grid(n_layers: int, step: float = 0.05) -> np.ndarray:
    """Every weight vector with entries in multiples of `step` that sums to 1 (Eq. 4)."""
    k = int(round(1 / step))
    if not np.isclose(k * step, 1.0):
        raise LayerseekError(f"step {step} must divide 1")
    rows = [c for c in itertools.product(range(k + 1), repeat=n_layers - 1) if sum(c) <= k]
    return np.array([[*c, k - sum(c)] for c in rows], dtype=np.float64) / k


def ordered_weights(w: np.ndarray) -> bool:
    """The ordering constraint as DESIGN.md reads Eq. 3: later layers weighted at least as much as
    earlier ones, w_1 <= w_2 <= ... <= w_n (layers listed shallow to deep)."""
    return bool(np.all(np.diff(w) >= -1e-12))


def ordered_contributions(w: np.ndarray, layer_totals: np.ndarray) -> bool:
    """Eq. 3 as written: W_n S_n >= W_{n-1} S_{n-1} >= ... where S_n is the sum of the query's
    similarities to the database on layer n (here summed over all tuning queries)."""
    return bool(np.all(np.diff(np.asarray(w) * np.asarray(layer_totals)) >= -1e-12))


CONSTRAINTS = ("none", "weights", "contribution")


def search_weights(
    similarities: Sequence[np.ndarray],
    score: Callable[[np.ndarray], float],
    step: float = 0.05,
    constraint: str = "none",
) -> list[tuple[np.ndarray, float]]:
    """Score every grid point of the simplex (optionally only those meeting the Eq. 3 constraint)
    with `score(fused q x n similarity) -> number` (e.g. mAP on a tuning collection).
    Returns [(weights, score)], best first."""
    if constraint not in CONSTRAINTS:
        raise LayerseekError(f"unknown constraint {constraint!r}; valid: {', '.join(CONSTRAINTS)}")
    totals = np.array([float(np.sum(s)) for s in similarities])
    allowed = {"none": None, "weights": ordered_weights,
               "contribution": lambda w: ordered_contributions(w, totals)}[constraint]
    return grid_search(len(similarities), lambda w: score(wmff(similarities, w)), step, allowed)


def grid_search(n_layers: int, score_of_weights: Callable[[np.ndarray], float], step: float = 0.05,
                allowed: Callable[[np.ndarray], bool] | None = None) -> list[tuple[np.ndarray, float]]:
    """`score_of_weights(w)` at every simplex grid point that `allowed` accepts, best first; for
    scores that are not a function of the fused similarity alone (e.g. with query expansion)."""
    results = [(w, float(score_of_weights(w))) for w in simplex_grid(n_layers, step) if allowed is None or allowed(w)]
    results.sort(key=lambda r: -r[1])
    return results


def plot_simplex(results: Sequence[tuple[np.ndarray, float]], path: str, layer_names: Sequence[str],
                 title: str = "", metric: str = "mAP") -> None:
    """The map of a score over the 3-layer weight simplex (the paper's Fig. 3), as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.tri as mtri

    if len(layer_names) != 3:
        raise LayerseekError("the simplex map needs exactly 3 layers")
    w = np.array([r[0] for r in results])
    s = np.array([r[1] for r in results])
    # Barycentric -> 2-D: corners at layer 0 (left), layer 1 (right), layer 2 (top).
    corners = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, np.sqrt(3) / 2]])
    xy = w @ corners
    fig, ax = plt.subplots(figsize=(6.4, 5.6), dpi=120)
    if len(results) >= 3:
        tri = mtri.Triangulation(xy[:, 0], xy[:, 1])
        cf = ax.tricontourf(tri, s, levels=20, cmap="viridis")
        fig.colorbar(cf, ax=ax, label=metric)
    ax.scatter(xy[:, 0], xy[:, 1], c=s, cmap="viridis", s=10, edgecolors="k", linewidths=0.2)
    best = int(np.argmax(s))
    ax.scatter(*xy[best], marker="*", s=220, c="red", edgecolors="white",
               label=f"best {format_ratio(w[best])}: {s[best]:.3f}")
    ax.plot(*np.vstack([corners, corners[:1]]).T, "k-", lw=0.8)
    for (x, y), name, dy in zip(corners, layer_names, (-0.06, -0.06, 0.03)):
        ax.text(x, y + dy, f"{name} = 1", ha="center", fontsize=10)
    ax.set_xlim(-0.12, 1.12)
    ax.set_ylim(-0.1, np.sqrt(3) / 2 + 0.1)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(title or f"{metric} over the fusion-weight simplex", pad=14)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
