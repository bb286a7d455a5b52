"""Local features for verification: keypoints and descriptors from OpenCV, stored compactly.

An image's features are kept as uint8 descriptors and float16 keypoint positions (n x 2, in
pixels of the image as described, with its size), so a query never re-reads the database photos.
SIFT (the default; n x 128, OpenCV's values fit in a byte) is matched as RootSIFT (Arandjelović &
Zisserman 2012: L1-normalise, square root), computed at matching time from the stored bytes.
ORB (32 bytes) is binary, matched by Hamming distance: faster to extract, measured against SIFT
in docs/RESULTS.md ("Faster local features"). (AKAZE left OpenCV's main modules in 5.0: the
pinned opencv-python-headless has no AKAZE_create.)
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from ..errors import LayerseekError

#: The classic pipeline's settings: 1000 strongest SIFT features of the image brought to 640 px.
DEFAULT_FEATURES = 1000
DEFAULT_FEATURE_SIDE = 640
_MAGIC = b"LSF1"  # SIFT (the first format, kept)
_MAGIC_KIND = b"LSF2"  # any kind: the header also names the kind
#: the local features an image can be described with: descriptor bytes and whether they are binary
FEATURE_KINDS = {"sift": (128, False), "orb": (32, True)}
_KIND_CODE = {name: i for i, name in enumerate(FEATURE_KINDS)}


def check_kind(kind: str) -> str:
    if kind not in FEATURE_KINDS:
        raise LayerseekError(f"unknown local features {kind!r}; valid: {', '.join(FEATURE_KINDS)}")
    return kind


@dataclass
class LocalFeatures:
    xy: np.ndarray  # n x 2 float32 keypoint positions (x, y) in pixels of the described image
    desc: np.ndarray  # n x D uint8 descriptors (D: FEATURE_KINDS[kind][0])
    size: tuple[int, int]  # (width, height) of the described image
    kind: str = "sift"

    def __len__(self) -> int:
        return len(self.desc)

    @property
    def binary(self) -> bool:
        return FEATURE_KINDS[self.kind][1]

    def pack(self) -> bytes:
        """Bytes for the catalog: a 16-byte header (SIFT) or 20-byte one (naming the kind), float16
        positions, uint8 descriptors."""
        n = len(self.desc)
        head = (_MAGIC + struct.pack("<III", n, *self.size) if self.kind == "sift" else
                _MAGIC_KIND + struct.pack("<IIII", n, *self.size, _KIND_CODE[self.kind]))
        return head + self.xy.astype(np.float16).tobytes() + np.ascontiguousarray(self.desc, np.uint8).tobytes()

    @classmethod
    def unpack(cls, data: bytes) -> LocalFeatures:
        if data[:4] == _MAGIC:
            kind, at = "sift", 16
            n, w, h = struct.unpack_from("<III", data, 4)
        elif data[:4] == _MAGIC_KIND and len(data) >= 20:
            n, w, h, code = struct.unpack_from("<IIII", data, 4)
            if code >= len(FEATURE_KINDS):
                raise LayerseekError("stored local features are damaged (unknown kind)")
            kind, at = list(FEATURE_KINDS)[code], 20
        else:
            raise LayerseekError("stored local features are damaged (bad header)")
        dim = FEATURE_KINDS[kind][0]
        if len(data) != at + n * (4 + dim):
            raise LayerseekError("stored local features are damaged (wrong length)")
        xy = np.frombuffer(data, np.float16, 2 * n, at).reshape(n, 2).astype(np.float32)
        desc = np.frombuffer(data, np.uint8, dim * n, at + 4 * n).reshape(n, dim)
        return cls(xy, desc, (w, h), kind)


_MAGIC_WORDS = b"LSW1"  # WordFeatures: positions, visual words, HE signatures


@dataclass
class WordFeatures:
    """An image's features as the word engine sees them (`verify.words`): keypoint positions,
    each feature's visual word(s) and 64-bit HE signature(s) — 14 bytes a feature stored, against
    132 for a SIFT descriptor and its position. Matched by shared word and close signatures
    (`geometry.word_matches`), so verification needs no descriptors (issue 26, item 4)."""

    xy: np.ndarray  # n x 2 float32 keypoint positions, as in LocalFeatures
    words: np.ndarray  # n x ma int32 (a stored image: ma = 1; a query may take several)
    sigs: np.ndarray  # n x ma x 8 uint8 signatures, one per word
    size: tuple[int, int]
    kind: str = "words"
    binary: bool = False

    def __len__(self) -> int:
        return len(self.xy)

    @classmethod
    def of(cls, f: LocalFeatures, codes: tuple[np.ndarray, np.ndarray]) -> WordFeatures:
        """The features `f` with their (words, signatures) as `SiftWords.encode` gives them."""
        return cls(f.xy, codes[0], codes[1], f.size)

    def nearest(self, m: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(words, signatures) of each feature's `m` nearest words, as the word engine's inverted
        file takes them (its lists hold 1 a feature)."""
        return self.words[:, :m], self.sigs[:, :m]

    def pack(self) -> bytes:
        """A 20-byte header (n, width, height, words per feature), float16 positions, uint16 words,
        the signatures."""
        n, ma = self.words.shape if self.words.ndim == 2 else (len(self.words), 1)
        if n and int(self.words.max()) > 0xFFFF:
            raise LayerseekError("a vocabulary of more than 65,536 words does not fit stored word features")
        return (_MAGIC_WORDS + struct.pack("<IIII", n, *self.size, ma) + self.xy.astype(np.float16).tobytes()
                + self.words.astype("<u2").tobytes() + np.ascontiguousarray(self.sigs, np.uint8).tobytes())

    @classmethod
    def unpack(cls, data: bytes) -> WordFeatures:
        if data[:4] != _MAGIC_WORDS or len(data) < 20:
            raise LayerseekError("stored word features are damaged (bad header)")
        n, w, h, ma = struct.unpack_from("<IIII", data, 4)
        if ma < 1 or len(data) != 20 + n * (4 + ma * 10):
            raise LayerseekError("stored word features are damaged (wrong length)")
        xy = np.frombuffer(data, np.float16, 2 * n, 20).reshape(n, 2).astype(np.float32)
        words = np.frombuffer(data, "<u2", n * ma, 20 + 4 * n).reshape(n, ma).astype(np.int32)
        sigs = np.frombuffer(data, np.uint8, 8 * n * ma, 20 + 4 * n + 2 * n * ma).reshape(n, ma, 8)
        return cls(xy, words, sigs, (w, h))


def unpack_features(data: bytes) -> LocalFeatures | WordFeatures:
    """Stored features of either form (an index made before word features stores descriptors)."""
    return WordFeatures.unpack(data) if data[:4] == _MAGIC_WORDS else LocalFeatures.unpack(data)


def rootsift(desc: np.ndarray) -> np.ndarray:
    """RootSIFT: each descriptor L1-normalised, then square-rooted (so its L2 norm is 1 and the
    dot product of two is the Hellinger kernel of the SIFT histograms)."""
    d = desc.astype(np.float32)
    d /= np.maximum(d.sum(axis=1, keepdims=True), 1e-12)
    return np.sqrt(d)


def binary_space(desc: np.ndarray) -> np.ndarray:
    """Binary descriptors (n x B bytes) as n x 8B vectors of +-1: the dot product of two is
    8B - 2 x their Hamming distance, so a flat inner-product search ranks by Hamming distance."""
    return np.unpackbits(np.ascontiguousarray(desc, np.uint8), axis=1).astype(np.float32) * 2 - 1


def match_space(f: LocalFeatures | WordFeatures) -> np.ndarray | None:
    """The vectors a kind of features is matched with: RootSIFT, or +-1 bits (`binary_space`);
    None for word features (matched by their words, `geometry.word_matches`)."""
    if isinstance(f, WordFeatures):
        return None
    return binary_space(f.desc) if f.binary else rootsift(f.desc)


#: RootSIFT in bytes, for the ratio test's products (`geometry.byte_products`: 8-bit integer
#: products, 1.9x faster than float ones on one core of this VM's AVX2 CPU): a query's values
#: times BYTE_SCALE as uint8, a database image's as int8, both at most 127 (CPUs without VNNI,
#: this one among them, sum two uint8 x int8 products in 16 bits, which saturate past 32767:
#: ONNX Runtime's quantization notes). RootSIFT values are those of a unit vector, and none seen
#: in SMVS' photos and covers passed 0.37, so BYTE_TOP maps to 127 and a rarer larger one is
#: clipped. The inliers of SMVS' true pairs differ from float products' by 0.9 % on average
#: (docs/BENCHMARKS.md, "Fourth round" and "Fifth round").
BYTE_TOP = 0.4
BYTE_SCALE = 127 / BYTE_TOP


def _byte_space(f: LocalFeatures | WordFeatures, dtype) -> np.ndarray | None:
    """`match_space`, RootSIFT as 0..127 in `dtype` (binary features and word features as they are)."""
    s = match_space(f)
    if s is None or f.binary:
        return s
    return np.clip(np.rint(s * BYTE_SCALE), 0, 127).astype(dtype)


def query_space(f: LocalFeatures | WordFeatures) -> np.ndarray | None:
    """What a query's features are matched with: `match_space`, RootSIFT as uint8 (BYTE_SCALE)."""
    return _byte_space(f, np.uint8)


def database_space(f: LocalFeatures | WordFeatures) -> np.ndarray | None:
    """What a database image's features are matched with: `match_space`, RootSIFT as int8
    (BYTE_SCALE)."""
    return _byte_space(f, np.int8)


def distances(sims: np.ndarray, binary: bool, dim: int) -> np.ndarray:
    """Descriptor distances from `match_space` dot products: Euclidean between unit RootSIFT
    vectors (||a - b||^2 = 2 - 2 a.b), Hamming between binary ones ((dim - a.b) / 2)."""
    return (dim - sims) / 2 if binary else np.sqrt(np.maximum(2 - 2 * sims, 0))


def _detector(kind: str, n: int):
    import cv2

    return cv2.SIFT_create(nfeatures=n) if kind == "sift" else cv2.ORB_create(nfeatures=n)


def local_features(img: np.ndarray, n: int = DEFAULT_FEATURES, max_side: int = DEFAULT_FEATURE_SIDE,
                   kind: str = "sift") -> LocalFeatures:
    """The `n` strongest features of `kind` (FEATURE_KINDS) of an H x W x 3 uint8 RGB image
    brought down to `max_side`."""
    import cv2

    dim = FEATURE_KINDS[check_kind(kind)][0]
    h, w = img.shape[:2]
    scale = min(1.0, max_side / max(h, w)) if max_side else 1.0
    grey = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY)
    if scale < 1.0:
        grey = cv2.resize(grey, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    size = (grey.shape[1], grey.shape[0])
    kps, desc = _detector(kind, n).detectAndCompute(grey, None)
    if desc is None or not kps:
        return LocalFeatures(np.zeros((0, 2), np.float32), np.zeros((0, dim), np.uint8), size, kind)
    if kind == "sift":
        desc = np.clip(np.round(desc), 0, 255).astype(np.uint8)
    xy = np.array([k.pt for k in kps[:n]], np.float32)
    return LocalFeatures(xy, np.ascontiguousarray(desc[:n], np.uint8), size, kind)


def sift_features(img: np.ndarray, n: int = DEFAULT_FEATURES, max_side: int = DEFAULT_FEATURE_SIDE) -> LocalFeatures:
    """The `n` strongest SIFT features of an H x W x 3 uint8 RGB image brought down to `max_side`."""
    return local_features(img, n, max_side, "sift")
