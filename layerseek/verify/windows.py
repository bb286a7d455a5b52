"""MOF's own matches as correspondences: the dense windows of two images whose descriptors fall in
the same visual word with signatures within the Hamming threshold (the matches MOF's Eq. 8
scores, seed 000) are paired by their centres, and a geometric model fitted to those pairs
counts the windows that agree, as SIFT keypoints are counted in `geometry`.

Windows are 224 px every 32 px (`local.windows`), so a centre is known to 32 px at best and the
RANSAC threshold is a step, not 1 % of the side. The positions cost nothing to store: they follow
from each layer's window grid (rows x columns), two numbers per layer and image.
"""
from __future__ import annotations

import numpy as np

from ..local.quantize import hamming
from ..local.windows import STEP, WINDOW, window_cells


def window_grid_shape(n: int, height: int, width: int, stride: int, window: int = WINDOW, step: int = STEP
                      ) -> tuple[int, int]:
    """(rows, columns) of the `n` windows `local.windows.window_pool` gave for a layer of this
    stride over an image of height x width pixels. The map is image/stride cells, rounded down
    or up by the network's padding: the rounding whose window count is `n` is the one used."""
    k, s = window_cells(stride, window, step)

    def count(cells):
        return (max(cells - k, 0) // s) + 1 if cells >= 1 else 0

    for hc in (height // stride, -(-height // stride)):
        for wc in (width // stride, -(-width // stride)):
            if count(hc) * count(wc) == n:
                return count(hc), count(wc)
    raise ValueError(f"{n} windows do not fit a {height} x {width} image at stride {stride}")


def window_centres(rows: int, cols: int, height: int, width: int, window: int = WINDOW, step: int = STEP
                   ) -> np.ndarray:
    """rows*cols x 2 (x, y) centres in pixels of the windows, row-major as `window_pool` orders
    them; a side shorter than the window has one window over all of it, centred."""
    ys = np.arange(rows) * step + min(window, height) / 2
    xs = np.arange(cols) * step + min(window, width) / 2
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    return np.stack([xx.ravel(), yy.ravel()], axis=1).astype(np.float32)


def he_matches(q_words: np.ndarray, q_sigs: np.ndarray, d_words: np.ndarray, d_sigs: np.ndarray, dt: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(query window, database window, Hamming distance) of every pair whose words agree (any of
    the query's multiple assignments against the database's) with signatures within `dt` bits:
    the matches Eq. 8 scores. Words: n x m int; signatures: n x m x nbytes uint8."""
    qw, dw = q_words.reshape(len(q_words), -1), d_words.reshape(len(d_words), -1)
    qs, ds = q_sigs.reshape(len(q_sigs), qw.shape[1], -1), d_sigs.reshape(len(d_sigs), dw.shape[1], -1)
    # the database entries sorted by word, so each query assignment finds its list by bisection
    d_flat = dw.ravel()
    order = np.argsort(d_flat, kind="stable")
    sorted_words = d_flat[order]
    q_flat = qw.ravel()
    lo, hi = np.searchsorted(sorted_words, q_flat, "left"), np.searchsorted(sorted_words, q_flat, "right")
    lens = hi - lo
    if lens.sum() == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty
    q_entry = np.repeat(np.arange(len(q_flat)), lens)
    first = np.cumsum(lens) - lens
    d_entry = order[np.arange(lens.sum()) - np.repeat(first, lens) + np.repeat(lo, lens)]
    dist = hamming(qs.reshape(-1, qs.shape[-1])[q_entry], ds.reshape(-1, ds.shape[-1])[d_entry])
    ok = dist <= dt
    return q_entry[ok] // qw.shape[1], d_entry[ok] // dw.shape[1], dist[ok]


def one_to_one(qi: np.ndarray, di: np.ndarray, dist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """At most one match per query window and per database window: each query window's nearest
    in Hamming distance, then of those each database window's nearest (ties: the first).
    Neighbouring windows overlap and look alike, so a window matches a patch of its partner's
    neighbours; many-to-one matches would let a degenerate model, one that maps a region onto a
    point, count them all."""
    if len(qi) == 0:
        return qi, di
    for by_query in (True, False):
        a, b = (qi, di) if by_query else (di, qi)
        order = np.lexsort((b, dist, a))  # by window, then distance, then partner
        first = np.concatenate([[True], a[order][1:] != a[order][:-1]])
        keep = order[first]
        qi, di, dist = qi[keep], di[keep], dist[keep]
    order = np.argsort(qi, kind="stable")
    return qi[order], di[order]
