"""Local features for verification: SIFT keypoints and descriptors from OpenCV, stored compactly.

An image's features are kept as uint8 SIFT descriptors (n x 128; OpenCV's values fit in a byte)
and float16 keypoint positions (n x 2, in pixels of the image as described, with its size), so a
query never re-reads the database photos. RootSIFT (Arandjelović & Zisserman 2012: L1-normalise,
square root) is computed at matching time from the stored bytes.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from ..errors import LayerseekError

#: The classic pipeline's settings: 1000 strongest SIFT features of the image brought to 640 px.
DEFAULT_FEATURES = 1000
DEFAULT_FEATURE_SIDE = 640
_MAGIC = b"LSF1"


@dataclass
class LocalFeatures:
    xy: np.ndarray  # n x 2 float32 keypoint positions (x, y) in pixels of the described image
    desc: np.ndarray  # n x 128 uint8 SIFT descriptors
    size: tuple[int, int]  # (width, height) of the described image

    def __len__(self) -> int:
        return len(self.desc)

    def pack(self) -> bytes:
        """Bytes for the catalog: a 16-byte header, float16 positions, uint8 descriptors."""
        n = len(self.desc)
        return (_MAGIC + struct.pack("<III", n, *self.size) + self.xy.astype(np.float16).tobytes()
                + np.ascontiguousarray(self.desc, np.uint8).tobytes())

    @classmethod
    def unpack(cls, data: bytes) -> LocalFeatures:
        if data[:4] != _MAGIC:
            raise LayerseekError("stored local features are damaged (bad header)")
        n, w, h = struct.unpack_from("<III", data, 4)
        if len(data) != 16 + n * (4 + 128):
            raise LayerseekError("stored local features are damaged (wrong length)")
        xy = np.frombuffer(data, np.float16, 2 * n, 16).reshape(n, 2).astype(np.float32)
        desc = np.frombuffer(data, np.uint8, 128 * n, 16 + 4 * n).reshape(n, 128)
        return cls(xy, desc, (w, h))


def rootsift(desc: np.ndarray) -> np.ndarray:
    """RootSIFT: each descriptor L1-normalised, then square-rooted (so its L2 norm is 1 and the
    dot product of two is the Hellinger kernel of the SIFT histograms)."""
    d = desc.astype(np.float32)
    d /= np.maximum(d.sum(axis=1, keepdims=True), 1e-12)
    return np.sqrt(d)


def sift_features(img: np.ndarray, n: int = DEFAULT_FEATURES, max_side: int = DEFAULT_FEATURE_SIDE) -> LocalFeatures:
    """The `n` strongest SIFT features of an H x W x 3 uint8 RGB image brought down to `max_side`."""
    import cv2

    h, w = img.shape[:2]
    scale = min(1.0, max_side / max(h, w)) if max_side else 1.0
    grey = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY)
    if scale < 1.0:
        grey = cv2.resize(grey, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    kps, desc = cv2.SIFT_create(nfeatures=n).detectAndCompute(grey, None)
    if desc is None or not kps:
        return LocalFeatures(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8), (grey.shape[1], grey.shape[0]))
    desc = np.clip(np.round(desc), 0, 255).astype(np.uint8)[:n]
    xy = np.array([k.pt for k in kps[:n]], np.float32)
    return LocalFeatures(xy, desc, (grey.shape[1], grey.shape[0]))
