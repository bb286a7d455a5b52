"""Dense-window local descriptors for MOF (seed 000, Sec. 2.1-2.2).

The paper crops 224 x 224 windows every 32 px and runs each through the network. Here the network
runs once over the whole image and each window is pooled from the layer's feature map: a window of
224 px is 224/stride cells, a step of 32 px is 32/stride cells, so `avg_pool2d` / `max_pool2d`
with that kernel and step yields every window's vector at once. `crop_window_descriptors` keeps the
paper's per-crop definition, to check the fast path against (tests/test_local.py).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..pooling import LOCAL_POOLINGS

WINDOW = 224
STEP = 32


def signed_sqrt_l2(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """sign(x) sqrt(|x|), then L2 per row (Sec. 3.1: "square rooting ... and L2 normalization")."""
    x = np.sign(x) * np.sqrt(np.abs(x))
    return (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)).astype(np.float32)


def window_cells(stride: int, window: int = WINDOW, step: int = STEP) -> tuple[int, int]:
    """(kernel, step) in cells of a layer with this stride."""
    if window % stride or step % stride:
        raise ValueError(f"window {window} and step {step} px must be multiples of the layer stride {stride}")
    return window // stride, step // stride


def window_pool(x: torch.Tensor, stride: int, pooling: str = "max", window: int = WINDOW, step: int = STEP) -> torch.Tensor:
    """1 x C x H x W -> n x C: the sum (Eq. 1) or max (Eq. 2) of each window's cells, windows in
    row-major order. A side shorter than the window gives one window over all of it."""
    if pooling not in LOCAL_POOLINGS:
        raise ValueError(f"unknown window pooling {pooling!r}; valid: {', '.join(LOCAL_POOLINGS)}")
    k, s = window_cells(stride, window, step)
    kh, kw = min(k, x.shape[2]), min(k, x.shape[3])
    x = torch.as_tensor(x).float()  # ONNX Runtime's maps come as numpy
    if pooling == "max":
        y = F.max_pool2d(x, (kh, kw), s)
    else:
        y = F.avg_pool2d(x, (kh, kw), s) * (kh * kw)
    return y[0].flatten(1).T.contiguous()


def window_grid(height: int, width: int, window: int = WINDOW, step: int = STEP) -> list[tuple[int, int]]:
    """Top-left corners (y, x) of the windows over an image, row-major, as `window_pool` orders
    them for a layer whose map is image/stride cells."""
    ys = range(0, max(height - window, 0) + 1, step)
    xs = range(0, max(width - window, 0) + 1, step)
    return [(y, x) for y in ys for x in xs]


def dense_window_descriptors(acts: dict[str, torch.Tensor], strides: dict[str, int], pooling: str = "max",
                             window: int = WINDOW, step: int = STEP) -> dict[str, np.ndarray]:
    """{layer: 1 x C x H x W} -> {layer: n x C} window descriptors, signed square root and L2."""
    return {layer: signed_sqrt_l2(window_pool(x, strides[layer], pooling, window, step).numpy())
            for layer, x in acts.items()}


def crop_window_descriptors(img: np.ndarray, forward: Callable[[np.ndarray], dict[str, torch.Tensor]],
                            pooling: str = "max", window: int = WINDOW, step: int = STEP,
                            corners: list[tuple[int, int]] | None = None) -> dict[str, np.ndarray]:
    """The paper's definition: each 224 x 224 crop through the network on its own, its whole map
    pooled. Slow (one forward pass per window); a reference for the fast path."""
    h, w = img.shape[:2]
    corners = corners if corners is not None else window_grid(h, w, window, step)
    out: dict[str, list] = {}
    for y, x in corners:
        acts = forward(np.ascontiguousarray(img[y:y + window, x:x + window]))
        for layer, a in acts.items():
            a = a.float()
            v = a.amax(dim=(2, 3)) if pooling == "max" else a.sum(dim=(2, 3))
            out.setdefault(layer, []).append(v[0].numpy())
    return {layer: signed_sqrt_l2(np.stack(v)) for layer, v in out.items()}
