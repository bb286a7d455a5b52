"""Global poolings: pure functions from an N x C x H x W activation map to N x C vectors.

Written on numpy, so the query path of an index (ONNX Runtime, numpy) never imports torch. Each
also takes a torch tensor and returns one (computed on the CPU). None of them normalises its
output: the global descriptor L2-normalises each layer's vector afterwards.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np

from .errors import lookup

EPS = 1e-6
#: MOF's poolings of each dense window (`local.windows`), named here where no torch is imported
LOCAL_POOLINGS = ("sum", "max")


def _arrays(fn: Callable) -> Callable:
    """Let a numpy pooling take a torch tensor too (and give one back, on the tensor's device)."""

    @functools.wraps(fn)
    def wrapper(x, *args, **kwargs):
        if isinstance(x, np.ndarray):
            if x.ndim != 4:
                raise ValueError(f"{fn.__name__}: expected an N x C x H x W map, got shape {x.shape}")
            return fn(np.asarray(x, dtype=np.float32), *args, **kwargs)
        import torch

        if x.ndim != 4:
            raise ValueError(f"{fn.__name__}: expected an N x C x H x W map, got shape {tuple(x.shape)}")
        out = fn(x.detach().float().cpu().numpy(), *args, **kwargs)
        return torch.from_numpy(np.ascontiguousarray(out)).to(x.device)

    return wrapper


def as_numpy(v) -> np.ndarray:
    """A pooling's output as a float32 numpy array, whether it was given numpy or torch."""
    return v if isinstance(v, np.ndarray) else v.detach().float().cpu().numpy()


@_arrays
def spoc(x: np.ndarray, center_prior: bool = False) -> np.ndarray:
    """SPoC, sum pooling (Babenko & Lempitsky, ICCV 2015, Eq. 2: psi = sum over positions).

    center_prior=True weights positions with their Gaussian centre prior (Sec. 3.2: sigma one third
    of the distance between the centre and the closest border).
    """
    if not center_prior:
        return x.sum(axis=(-2, -1))
    return (x * _center_prior(x.shape[-2], x.shape[-1])).sum(axis=(-2, -1))


def _center_prior(h: int, w: int) -> np.ndarray:
    ys = np.arange(h, dtype=np.float32) - (h - 1) / 2
    xs = np.arange(w, dtype=np.float32) - (w - 1) / 2
    sigma = max(min(h, w) / 2 / 3, EPS)
    return np.exp(-(ys[:, None] ** 2 + xs[None, :] ** 2) / (2 * sigma**2)).astype(np.float32)


@_arrays
def mac(x: np.ndarray) -> np.ndarray:
    """MAC, maximum activation of convolutions (Tolias, Sicre & Jégou, ICLR 2016, Eq. 1)."""
    return x.max(axis=(-2, -1))


@_arrays
def gem(x: np.ndarray, p: float = 3.0, eps: float = EPS) -> np.ndarray:
    """GeM, generalized mean (Radenović, Tolias & Chum, TPAMI 2018, Eq. 2); p=1 is average
    pooling, p -> inf tends to MAC. Values are clamped at eps first (activations after ReLU).
    Computed as m * mean((x / m)^p)^(1/p) with m the channel maximum, the same number without
    float32 overflow at large p."""
    x = np.maximum(x, np.float32(eps))
    m = x.max(axis=(-2, -1), keepdims=True)
    return m[..., 0, 0] * np.power(np.power(x / m, np.float32(p)).mean(axis=(-2, -1)), np.float32(1.0 / p))


def rmac_regions(h: int, w: int, levels: int = 3, overlap: float = 0.4) -> list[tuple[int, int, int, int]]:
    """R-MAC regions (Tolias et al., ICLR 2016, Sec. 3 'Regional feature vectors') on an h x w map,
    as (top, left, height, width).

    At scale l = 1..levels the regions are squares of side floor(2 min(h, w) / (l + 1)): at l = 1
    as large as the shorter side. Along the shorter side l regions are laid out uniformly, along
    the longer side l + d, where the extra count d is chosen once, at l = 1, so that neighbouring
    regions there overlap as close to 40% as possible (2..7 regions tried, so d >= 1 unless the
    map is square, where d = 0). Start positions are floor(i * step), the step spreading the
    regions evenly from one border to the other.
    """
    short = min(h, w)
    extra_w = extra_h = 0
    if h != w:
        best, best_gap = 0, float("inf")
        for count in range(2, 8):  # regions along the long side at l = 1
            step = (max(h, w) - short) / (count - 1)
            gap = abs((short * short - short * step) / (short * short) - overlap)
            if gap < best_gap:
                best, best_gap = count - 1, gap
        if w > h:
            extra_w = best
        else:
            extra_h = best
    regions = []
    for level in range(1, levels + 1):
        side = math.floor(2 * short / (level + 1))
        if side < 1:
            continue
        ny, nx = level + extra_h, level + extra_w
        step_y = (h - side) / (ny - 1) if ny > 1 else 0.0
        step_x = (w - side) / (nx - 1) if nx > 1 else 0.0
        for iy in range(ny):
            for ix in range(nx):
                regions.append((math.floor(iy * step_y), math.floor(ix * step_x), side, side))
    return regions


@_arrays
def rmac(x: np.ndarray, levels: int = 3, overlap: float = 0.4) -> np.ndarray:
    """R-MAC (Tolias et al., ICLR 2016, Sec. 3): the MAC of every region of `rmac_regions`,
    each L2-normalised, summed. (The paper also PCA-whitens each regional vector before the sum;
    here whitening is a separate, learned post-processing step on the final vector.)"""
    c, h, w = x.shape[-3:]
    regions = rmac_regions(h, w, levels, overlap)
    # A column band's max over its width is taken once for all the regions that share it (5x
    # faster than a 2-D max per region on NCHW). Few channels on a large map (MobileNetV2's s8:
    # 32 x 96 x 128): along each row of the map as it is, 1.7 ms against 3.7; else channels
    # last, so each max runs over whole rows of C (its 1280 x 24 x 32: 2.7 ms against 14).
    rows = h * w >= 64 * c
    xt = x if rows else np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    bands: dict[tuple[int, int], np.ndarray] = {}
    maxima = []
    for top, left, rh, rw in regions:
        if (left, rw) not in bands:  # N x C x H, or N x H x C
            bands[left, rw] = x[..., left : left + rw].max(axis=3) if rows else xt[:, :, left : left + rw].max(axis=2)
        band = bands[left, rw]
        maxima.append(band[:, :, top : top + rh].max(axis=2) if rows else band[:, top : top + rh].max(axis=1))
    v = np.stack(maxima, axis=1)  # N x regions x C
    return (v / (np.linalg.norm(v, axis=-1, keepdims=True) + EPS)).sum(axis=1)


@_arrays
def crow_spatial_weights(x: np.ndarray, a: float = 2.0, b: float = 2.0) -> np.ndarray:
    """CroW spatial weights (Kalantidis, Mellina & Osindero, ECCVW 2016, Eq. 2):
    S = sum over channels; S_ij = (S_ij / (sum_mn S_mn^a)^(1/a))^(1/b). N x H x W.

    With a = 2, b = 2 this is also FCroW's Eq. 1 (p = 2, square root)."""
    s = x.sum(axis=1)
    norm = np.power(np.power(s, a).sum(axis=(-2, -1), keepdims=True), 1.0 / a)
    # An all-zero map has no salient location: every weight 0 (the pooled vector is 0 anyway).
    return np.power(np.maximum(s / np.maximum(norm, 1e-12), 0), 1.0 / b).astype(np.float32)


@_arrays
def crow_channel_weights(x: np.ndarray, eps: float = EPS) -> np.ndarray:
    """CroW channel weights (Kalantidis et al., Eq. 4): Q_k = share of non-zero positions of
    channel k; beta_k = log((K eps + sum_h Q_h) / (eps + Q_k)). N x C."""
    q = (x > 0).astype(np.float32).mean(axis=(-2, -1))
    k = x.shape[1]
    return np.log((k * eps + q.sum(axis=1, keepdims=True)) / (eps + q)).astype(np.float32)


@_arrays
def crow(x: np.ndarray, a: float = 2.0, b: float = 2.0) -> np.ndarray:
    """CroW (Kalantidis et al., ECCVW 2016, Eqs. 1-4): spatially weighted sum pooling, times the
    channel weights."""
    s = crow_spatial_weights(x, a, b)
    return (x * s[:, None]).sum(axis=(-2, -1)) * crow_channel_weights(x)


@_arrays
def fcrow_channel_weights(x: np.ndarray, terms: str = "counts") -> np.ndarray:
    """FCroW channel weights (Wang et al., Neurocomputing 2019, Eq. 2):
    C_j = log( sum_i x_i / x_j + y_j / sum_i y_i ).   N x C.

    How the terms are computed: the paper defines x_j as "the sum of non-zero responses" and y_j as
    "the sum of zero responses" of channel j. Summed as values, zero responses would always give
    y_j = 0, so the sums must count responses: x_j = number of positions where channel j is
    non-zero (> 0; the layers are taken after ReLU), y_j = number of positions where it is zero,
    so x_j + y_j = H W. The first term is then CroW's sparsity weight (rarely firing channels
    count more), the second the channel's share of all zero responses -- the 'null range' the
    paper adds. Sums run over the C channels of the same image.

    terms="mass" is the other literal reading of x_j, "the sum of non-zero responses": the sum of
    channel j's activation values (y_j stays the count of zeros, the only reading of a sum of
    zero responses that is not 0).

    Note: y_j / sum_i y_i is a share of K channels, about 1/K, next to a first term of the order
    of K; on VGG16 and MobileNetV2 maps the second term moves the weights by < 0.01%, so with
    counts FCroW ranks like CroW (measured in docs/RESULTS.md).

    Guards, which change nothing for channels that fire: a channel with x_j = 0 is all zero, so
    its pooled value is 0 whatever its weight; it gets weight 0 instead of log(inf). A map with
    no zero at all has sum_i y_i = 0; the second term is then 0 for every channel (0/0 -> 0).
    """
    if terms not in ("counts", "mass"):
        raise ValueError(f"terms must be 'counts' or 'mass', got {terms!r}")
    count = (x > 0).astype(np.float32).sum(axis=(-2, -1))
    nonzero = count if terms == "counts" else np.maximum(x, 0).sum(axis=(-2, -1))  # x_j
    zero = np.float32(x.shape[-2] * x.shape[-1]) - count  # y_j
    total_nonzero = nonzero.sum(axis=1, keepdims=True)
    total_zero = zero.sum(axis=1, keepdims=True)
    first = total_nonzero / np.where(count > 0, nonzero, 1)
    second = np.where(total_zero > 0, zero / np.maximum(total_zero, 1), 0)
    with np.errstate(divide="ignore"):
        return np.where(count > 0, np.log(first + second), 0).astype(np.float32)


@_arrays
def fcrow(x: np.ndarray, terms: str = "counts") -> np.ndarray:
    """FCroW (Wang et al., Neurocomputing 2019, Sec. 3.2): the map times the spatial weights of
    Eq. 1 and the channel weights of Eq. 2, summed over space."""
    s = crow_spatial_weights(x, a=2.0, b=2.0)
    return (x * s[:, None]).sum(axis=(-2, -1)) * fcrow_channel_weights(x, terms)


@_arrays
def fcrow_mass(x: np.ndarray) -> np.ndarray:
    """FCroW with x_j read as the sum of channel j's activation values (see fcrow_channel_weights)."""
    return fcrow(x, terms="mass")


#: name -> pooling function (N x C x H x W -> N x C)
POOLINGS: dict[str, Callable] = {
    "spoc": spoc, "mac": mac, "gem": gem, "rmac": rmac, "crow": crow, "fcrow": fcrow, "fcrow_mass": fcrow_mass,
}


def get_pooling(name: str) -> Callable:
    return lookup(POOLINGS, name, "pooling")
