"""Camera RAW files for the tests: a DNG (Adobe's open RAW format, a TIFF) written from an RGB
photo, read back by LibRaw as a camera's would be.

`dng_bytes(rgb)` mosaics the photo into a Bayer pattern (RGGB, linear 16-bit, as a sensor records
it) in a raw image IFD, and, when `preview` is given, puts a JPEG of it in IFD0 as cameras and
converters embed theirs (the raw data then sits in a SubIFD, as DNG 1.4 lays it out).
"""
from __future__ import annotations

import io
import struct

import numpy as np
from PIL import Image

# TIFF field types: their codes and sizes
BYTE, ASCII, SHORT, LONG, RATIONAL, SRATIONAL = 1, 2, 3, 4, 5, 10
_SIZE = {BYTE: 1, ASCII: 1, SHORT: 2, LONG: 4, RATIONAL: 8, SRATIONAL: 8}


def _pack(kind: int, values) -> tuple[int, bytes]:
    if kind == ASCII:
        data = values.encode() + b"\0"
        return len(data), data
    if kind in (RATIONAL, SRATIONAL):
        fmt = "<" + ("ii" if kind == SRATIONAL else "II") * len(values)
        flat = [x for num_den in values for x in num_den]
        return len(values), struct.pack(fmt, *flat)
    fmt = {BYTE: "B", SHORT: "H", LONG: "I"}[kind]
    return len(values), struct.pack("<" + fmt * len(values), *values)


class _Tiff:
    """A little-endian TIFF laid out in order: the header, then blobs and IFDs as they are added."""

    def __init__(self):
        self.buf = bytearray(b"II*\0\0\0\0\0")

    def blob(self, data: bytes) -> int:
        if len(self.buf) % 2:
            self.buf += b"\0"
        at = len(self.buf)
        self.buf += data
        return at

    def ifd(self, tags: dict[int, tuple[int, object]]) -> int:
        """Writes an IFD of {tag: (type, values)} (values stored out of line when over 4 bytes)."""
        entries = []
        for tag in sorted(tags):
            kind, values = tags[tag]
            count, data = _pack(kind, values)
            if len(data) <= 4:
                field = data.ljust(4, b"\0")
            else:
                field = struct.pack("<I", self.blob(data))
            entries.append(struct.pack("<HHI", tag, kind, count) + field)
        return self.blob(struct.pack("<H", len(entries)) + b"".join(entries) + struct.pack("<I", 0))

    def first(self, offset: int) -> bytes:
        self.buf[4:8] = struct.pack("<I", offset)
        return bytes(self.buf)


def bayer(rgb: np.ndarray, white: int = 65535) -> np.ndarray:
    """An H x W x 3 uint8 sRGB image as a sensor's RGGB mosaic: linear light, 16 bits."""
    lin = (rgb.astype(np.float64) / 255.0) ** 2.2 * white
    h, w = rgb.shape[:2]
    out = np.empty((h, w), np.uint16)
    out[0::2, 0::2] = lin[0::2, 0::2, 0]
    out[0::2, 1::2] = lin[0::2, 1::2, 1]
    out[1::2, 0::2] = lin[1::2, 0::2, 1]
    out[1::2, 1::2] = lin[1::2, 1::2, 2]
    return out


def dng_bytes(rgb: np.ndarray, preview: np.ndarray | None = None, orientation: int = 1) -> bytes:
    """A DNG of an H x W x 3 uint8 photo (H and W even): its raw mosaic, `orientation` (the TIFF/EXIF
    code: 6 is a photo taken with the camera turned right, to be shown turned 90 degrees clockwise)
    and, when given, `preview` (an RGB image) embedded as a JPEG. The sensor's data come last, as
    cameras write them, so a file cut short keeps its header and loses pixels."""
    raw = bayer(rgb).tobytes()
    head = _dng(rgb.shape[:2], len(raw), 0, preview, orientation)  # to learn where the data go
    at = len(head) + len(head) % 2
    return _dng(rgb.shape[:2], len(raw), at, preview, orientation).ljust(at, b"\0") + raw


def _dng(shape: tuple[int, int], raw_bytes: int, raw_at: int, preview, orientation: int) -> bytes:
    h, w = shape
    t = _Tiff()
    raw_tags = {
        254: (LONG, [0]),  # the main image
        256: (LONG, [w]), 257: (LONG, [h]), 258: (SHORT, [16]), 259: (SHORT, [1]),
        262: (SHORT, [32803]),  # a colour filter array
        273: (LONG, [raw_at]), 277: (SHORT, [1]), 278: (LONG, [h]), 279: (LONG, [raw_bytes]), 284: (SHORT, [1]),
        33421: (SHORT, [2, 2]), 33422: (BYTE, [0, 1, 1, 2]),  # RGGB
        50714: (LONG, [0]), 50717: (LONG, [65535]),  # black and white levels
    }
    camera = {
        271: (ASCII, "layerseek"), 272: (ASCII, "test DNG"), 274: (SHORT, [orientation]),
        50706: (BYTE, [1, 4, 0, 0]), 50707: (BYTE, [1, 1, 0, 0]), 50708: (ASCII, "layerseek test DNG"),
        # XYZ (D65) -> camera: the camera sees sRGB's primaries (the inverse of sRGB's matrix, x 10000)
        50721: (SRATIONAL, [(v, 10000) for v in (32406, -15372, -4986, -9689, 18758, 415, 557, -2040, 10570)]),
        50728: (RATIONAL, [(1, 1), (1, 1), (1, 1)]),  # as shot: neutral
        50778: (SHORT, [21]),  # D65
    }
    if preview is None:
        return t.first(t.ifd({**raw_tags, **camera}))
    jpg = io.BytesIO()
    Image.fromarray(preview).save(jpg, "JPEG", quality=90)
    jpg_at = t.blob(jpg.getvalue())
    sub = t.ifd(raw_tags)
    ph, pw = preview.shape[:2]
    ifd0 = {
        254: (LONG, [1]),  # a reduced copy: the preview
        256: (LONG, [pw]), 257: (LONG, [ph]), 258: (SHORT, [8, 8, 8]), 259: (SHORT, [7]),  # JPEG
        262: (SHORT, [6]), 273: (LONG, [jpg_at]), 277: (SHORT, [3]), 278: (LONG, [ph]),
        279: (LONG, [len(jpg.getvalue())]), 284: (SHORT, [1]), 330: (LONG, [sub]),
        **camera,
    }
    return t.first(t.ifd(ifd0))
