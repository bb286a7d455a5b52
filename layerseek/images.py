"""Image loading used by every stage: decode, EXIF upright, RGB, optional crop, max-side resize;
Pillow for every format but cameras' RAW files, which LibRaw (rawpy) reads.

Every failure is an `ImageError` naming the file and one reason: missing, empty, truncated,
not an image, unsupported, too large (or unreadable, for permission and other OS errors).
"""
from __future__ import annotations

import io
import os
import stat
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from .errors import ImageError

#: The field's standard: the longer side is brought down to 1024 px (never up).
DEFAULT_MAX_SIDE = 1024
#: Decompression-bomb limit, in pixels actually decoded (checked from the header, before any
#: decoding): 50 M pixels keep one decode under about 200 MB (RGBA, or 16-bit grey as float32).
#: A JPEG reduced to max_side decodes at 1/2, 1/4 or 1/8 scale, so a 200 M pixel phone photo
#: passes; a 13000 x 13000 PNG (169 M pixels, whatever its file size) does not.
DEFAULT_MAX_DECODE_PIXELS = 50_000_000
DEFAULT_MAX_PIXELS = DEFAULT_MAX_DECODE_PIXELS  # the name earlier code used

#: Cameras' RAW formats, read through LibRaw (rawpy): Adobe's DNG (phones' RAW too) and the
#: makers' own (Canon, Nikon, Sony, Olympus, Panasonic, Fujifilm, Pentax, Samsung, Sigma,
#: Hasselblad, Phase One, Epson, Kodak, Minolta, Leaf, Mamiya, Leica). Not ".raw": the name of
#: many other kinds of file, which LibRaw might take for a camera's by their size alone.
RAW_SUFFIXES = frozenset(
    {".dng", ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".orf", ".rw2", ".raf", ".pef",
     ".srw", ".x3f", ".3fr", ".fff", ".iiq", ".erf", ".kdc", ".dcr", ".mrw", ".mos", ".mef", ".rwl"}
)
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".jfif",
     ".heic", ".heif", ".avif"}  # phones' formats: HEIF through pillow-heif, AVIF through Pillow itself
) | RAW_SUFFIXES

#: the kinds indexed, in words (a message that says a file or a folder holds no photo)
IMAGE_KINDS = "JPEG, PNG, WebP, TIFF, BMP, GIF, HEIC, AVIF, cameras' RAW: DNG, CR2, CR3, NEF, ARW, ORF, RW2, RAF ..."


def _register_heif() -> None:
    """Let Pillow open HEIC/HEIF (iPhone photos) through pillow-heif; its EXIF orientation is then
    applied by `ImageOps.exif_transpose` as for a JPEG. Without the package, HEIC is "unsupported"."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:  # pragma: no cover - pinned in requirements.lock
        return
    # thumbnails listed: a preview may decode a phone's embedded one (`load_image(preview=True)`)
    register_heif_opener(thumbnails=True)


_register_heif()

# Truncated files must fail, not be silently padded with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's content, read 1 MiB at a time."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


#: A file larger than this is refused as "too large" before it is read into memory: the largest
#: image the pixel limit lets through (50 M pixels of 16-bit RGBA, uncompressed) is 400 MB.
MAX_FILE_BYTES = 512 << 20


def read_snapshot(path: str | Path, max_bytes: int = MAX_FILE_BYTES) -> tuple[bytes, int, int]:
    """(content, size, mtime_ns) of a file, all three from one moment: the file's status is taken
    on the open file before and after the read, and a file that changed in between (a copy still
    being written, an editor saving) is an ImageError "changed while being read" instead of a
    hash of one version stored beside the size of another. Opened without blocking: a FIFO in a
    photo's place is "not a regular file", not a wait for a writer."""
    try:
        with os.fdopen(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb") as f:
            before = os.fstat(f.fileno())
            if not stat.S_ISREG(before.st_mode):
                raise ImageError(path, "not an image", "not a regular file")
            if before.st_size > max_bytes:
                raise ImageError(path, "too large", f"{before.st_size} bytes, more than {max_bytes}")
            data = f.read(max_bytes + 1)
            after = os.fstat(f.fileno())
    except FileNotFoundError:
        raise ImageError(path, "missing") from None
    except OSError as e:
        raise ImageError(path, "unreadable", e.strerror or str(e)) from None
    if len(data) > max_bytes:
        raise ImageError(path, "too large", f"more than {max_bytes} bytes")
    if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns) or len(data) != after.st_size:
        raise ImageError(path, "changed while being read", "indexed on the next run, once it is written")
    return data, after.st_size, after.st_mtime_ns


def _open(path: Path, data: bytes | None) -> Image.Image:
    src = io.BytesIO(data) if data is not None else path
    with warnings.catch_warnings():
        # Pillow's own bomb check warns or raises on size; we apply our own limit below.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            return Image.open(src)
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB. Transparent pixels are composited on white."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "RGBa", "La", "PA"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode.startswith("I;16") or mode in ("I", "F"):
        # 16-bit and 32-bit grey: scale the stored range to 0..255 instead of clipping.
        arr = np.asarray(img, dtype=np.float32)
        top = 65535.0 if mode.startswith("I;16") else max(float(arr.max()), 1.0)
        if mode == "F" and arr.max() <= 1.0:
            top = 1.0
        grey = np.clip(np.round(arr * (255.0 / top)), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    # L, 1, CMYK, YCbCr, LAB, HSV: Pillow converts these directly.
    return img.convert("RGB")


#: A JPEG draft this much smaller than the target is decoded and used as it is, rather than the
#: next larger one decoded and reduced: a 12 MP phone photo (4032 x 3024) then decodes at 1/4,
#: 1008 x 756, in 24 ms, where 1/2 and area averaging down to 1024 x 768 took 75 ms (about a
#: sixth of the CPU an indexed photo costs; docs/BENCHMARKS.md, "Fifth round"). 4000 x 3000,
#: 4080 x 3072 and 48-50 MP photos (1/8) fall within it too.
DRAFT_SLACK = 0.025


def draft_scale(width: int, height: int, want_w: int, want_h: int, slack: float = DRAFT_SLACK) -> int:
    """The JPEG DCT scale (8, 4, 2 or 1) to decode a width x height JPEG at when want_w x want_h
    is wanted: the smallest image that covers the request, or falls short of it by at most
    `slack` of each side."""
    for scale in (8, 4, 2):
        w, h = -(-width // scale), -(-height // scale)
        if w >= want_w * (1 - slack) and h >= want_h * (1 - slack):
            return scale
    return 1


def draft_size(width: int, height: int, want_w: int, want_h: int, slack: float = DRAFT_SLACK) -> tuple[int, int]:
    """The size a JPEG decodes at (`draft_scale`)."""
    return _drafted(width, height, draft_scale(width, height, want_w, want_h, slack))


def _drafted(width: int, height: int, scale: int) -> tuple[int, int]:
    """A width x height JPEG's size decoded at 1/scale (libjpeg rounds up)."""
    return -(-width // scale), -(-height // scale)


def resized_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """(width, height) scaled so the longer side is at most max_side, aspect kept, never enlarged."""
    if not max_side or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def load_image(
    path: str | Path,
    max_side: int | None = DEFAULT_MAX_SIDE,
    bbox: tuple[float, float, float, float] | None = None,
    max_pixels: int = DEFAULT_MAX_DECODE_PIXELS,
    data: bytes | None = None,
    rotate: int = 0,
    preview: bool = False,
    region: tuple[float, float, float, float] | None = None,
) -> np.ndarray:
    """Decode an image file into an upright H×W×3 uint8 RGB array, its longer side at most
    max_side (a larger JPEG's may come out up to DRAFT_SLACK shorter: `draft_scale`).

    bbox (x1, y1, x2, y2), in pixels of the upright full-size image, crops before the resize
    (benchmark queries are cropped to their box); `region` (x, y, w, h) is such a box as shares of
    the upright image's width and height (a part of a photo searched with: `hits.parse_region`).
    `data` decodes bytes already read (uploads);
    `path` then only names the source in errors. `rotate` (0, 90, 180, 270 degrees clockwise) is
    applied after the EXIF orientation, before the crop: benchmarks that store some images
    sideways (INRIA Holidays) list the turn that makes each upright. `preview`: the image is
    only to be looked at (the page's thumbnails, a report's): a HEIC's embedded thumbnail is
    decoded instead of the photo when it covers max_side (an iPhone's 320 x 240 one gives a
    256 px preview in about 8 ms; the 12 MP photo takes about 1 s). Never for what is indexed, nor
    alone for a decision (the duplicates copy test looks at it first and decides a copy on the
    photo): a thumbnail says nothing of whether the photo itself decodes, and an editor may
    leave a stale one. A camera's RAW file (`RAW_SUFFIXES`, by its name) goes through LibRaw
    (`_load_raw`), preview or not.
    """
    if rotate % 90:
        raise ImageError(path, "unsupported", f"rotation {rotate} is not a multiple of 90 degrees")
    if region is not None and bbox is not None:
        raise ValueError("a crop box or a region, not both")
    path = Path(path)
    if data is None:
        if not path.exists():
            raise ImageError(path, "missing")
        if path.is_dir():
            raise ImageError(path, "not an image", "is a directory")
        try:
            st = path.stat()
        except OSError as e:
            raise ImageError(path, "unreadable", e.strerror or str(e)) from None
        if not stat.S_ISREG(st.st_mode):  # a FIFO would block the reader for ever
            raise ImageError(path, "not an image", "not a regular file")
        size = st.st_size
        if size == 0:
            raise ImageError(path, "empty")
    elif len(data) == 0:
        raise ImageError(path, "empty")
    if is_raw_name(path):
        return _load_raw(path, data, max_side, bbox, region, max_pixels, rotate)
    return _load(path, data, max_side, bbox, max_pixels, rotate, preview, region)


def _load(path: Path, data: bytes | None, max_side: int | None, bbox, max_pixels: int, rotate: int, preview: bool,
          region) -> np.ndarray:
    """`load_image` of a file Pillow reads (or of `data`, bytes Pillow reads, named by `path`)."""
    try:
        img = _open(path, data)
    except UnidentifiedImageError:
        raise ImageError(path, "not an image") from None
    except PermissionError as e:
        raise ImageError(path, "unreadable", e.strerror or str(e)) from None
    except (OSError, ValueError, SyntaxError) as e:
        # Recognised header, but a variant Pillow cannot read (e.g. BMP with JPEG compression).
        raise ImageError(path, "unsupported", str(e)) from None

    with img:
        w, h = img.size
        if w == 0 or h == 0:
            raise ImageError(path, "empty", f"{w}x{h} pixels")
        # JPEG decodes at 1/2, 1/4 or 1/8 scale for a fraction of the time (its DCT scaling averages
        # the pixels it drops); the smallest of those that covers the target, or falls short of it
        # by at most DRAFT_SLACK, is decoded, and area averaging (`shrink`) takes a larger one down
        # the rest of the way (less than 2x). A 12 MP photo decodes at 1008 x 756 instead of in full
        # (docs/BENCHMARKS.md, "Where an indexed photo's time goes" and "Fifth round").
        draft = img.format == "JPEG" and bool(max_side) and bbox is None and region is None
        scale = draft_scale(w, h, *resized_size(w, h, max_side)) if draft else 1
        dw, dh = _drafted(w, h, scale)
        if dw * dh > max_pixels:
            raise ImageError(path, "too large", f"{w}x{h}: {dw * dh} pixels to decode > limit {max_pixels}")
        try:
            if preview and img.format == "HEIF" and max_side and bbox is None and region is None:
                # pillow-heif's draft picks the smallest embedded thumbnail that covers the size
                # and is a scaled copy (same orientation, crop and colour profile), else nothing
                img.draft(None, resized_size(w, h, max_side))
            if scale > 1:
                # Pillow takes the largest scale s with size // request >= s: ask for size // s
                img.draft(img.mode, (max(1, w // scale), max(1, h // scale)))
            img.load()
            try:
                # in place: with nothing to turn, a new image would be a copy of every pixel (15 ms of
                # a 12 MP JPEG's draft, 40 ms of a 12 MP HEIC)
                ImageOps.exif_transpose(img, in_place=True)
            except Exception:  # malformed EXIF: keep the stored orientation rather than fail
                pass
            rgb = _to_rgb(img)
            if rotate % 360:
                # PIL rotates counter-clockwise; expand keeps the whole image.
                rgb = rgb.rotate(-(rotate % 360), expand=True)
        except OSError as e:
            text = str(e)
            if "truncated" in text or "broken data stream" in text or "image file is truncated" in text:
                raise ImageError(path, "truncated", text) from None
            raise ImageError(path, "unsupported", text) from None
        except (ValueError, SyntaxError, EOFError) as e:
            raise ImageError(path, "truncated" if isinstance(e, EOFError) else "unsupported", str(e)) from None
        except Image.DecompressionBombError as e:  # pragma: no cover - limit is disabled above
            raise ImageError(path, "too large", str(e)) from None

    return _crop_and_shrink(path, rgb, max_side, bbox, region)


def _crop_and_shrink(path: Path, rgb: Image.Image, max_side: int | None, bbox, region) -> np.ndarray:
    """An upright RGB image cropped to `bbox` or `region` and brought down to `max_side`."""
    if region is not None:
        bbox = region_box(region, rgb.width, rgb.height)
    if bbox is not None:
        # The box is in full-resolution coordinates; a draft decode would have shrunk the image.
        x1, y1, x2, y2 = (float(v) for v in bbox)
        x1, y1 = max(0.0, x1), max(0.0, y1)
        x2, y2 = min(float(rgb.width), x2), min(float(rgb.height), y2)
        if x2 - x1 < 1 or y2 - y1 < 1:
            raise ImageError(path, "unsupported", f"empty crop box {tuple(bbox)} for {rgb.width}x{rgb.height}")
        rgb = rgb.crop((round(x1), round(y1), round(x2), round(y2)))

    target = resized_size(rgb.width, rgb.height, max_side)
    if target != rgb.size:
        return shrink(np.asarray(rgb, dtype=np.uint8), target)
    return np.asarray(rgb, dtype=np.uint8).copy()


#: LibRaw's orientation codes (`sizes.flip`) as the clockwise turn that makes the photo upright
_RAW_TURN = {0: 0, 3: 180, 5: 270, 6: 90}
#: a RAW photo's embedded JPEG stands for it when its width / height is the photo's within this
#: share (a preview with black bars, or of another crop, does not)
RAW_PREVIEW_ASPECT = 0.01


def _load_raw(path: Path, data: bytes | None, max_side: int | None, bbox, region, max_pixels: int,
              rotate: int) -> np.ndarray:
    """`load_image` of a camera's RAW file (`RAW_SUFFIXES`), through LibRaw. The JPEG the camera
    (or the converter that made a DNG) embedded is the photo as the camera rendered it, and most
    are the sensor's full size: it is decoded (at a JPEG draft) when it covers `max_side` and has
    the photo's shape, and turned upright by the RAW's orientation. Otherwise the sensor's data
    are demosaiced (at half size when that covers `max_side`: a quarter of the work) with the
    camera's white balance and sRGB's tone curve."""
    try:
        import rawpy
    except ImportError:  # pragma: no cover - pinned in requirements.lock
        raise ImageError(path, "unsupported", "camera RAW files need the rawpy package") from None
    try:
        raw = rawpy.imread(io.BytesIO(data) if data is not None else str(path))
    except rawpy.LibRawFileUnsupportedError:
        raise ImageError(path, "not an image", "not a camera RAW file LibRaw knows") from None
    except (rawpy.LibRawIOError, rawpy.LibRawDataError) as e:
        raise ImageError(path, "truncated", _libraw_text(e)) from None
    except (rawpy.LibRawError, OSError) as e:
        raise ImageError(path, "unsupported", _libraw_text(e)) from None
    with raw:
        s = raw.sizes
        w, h, turn = s.width, s.height, _RAW_TURN.get(s.flip, 0)
        if w == 0 or h == 0:
            raise ImageError(path, "empty", f"{w}x{h} pixels")
        upright = (h, w) if turn in (90, 270) else (w, h)
        if bbox is not None:  # full-size pixels: as shares, whatever size is decoded
            region = (bbox[0] / upright[0], bbox[1] / upright[1], (bbox[2] - bbox[0]) / upright[0],
                      (bbox[3] - bbox[1]) / upright[1])
        jpeg = _raw_preview(raw, w, h, max_side)
        if jpeg is not None:
            with Image.open(io.BytesIO(jpeg)) as im:  # a preview with an orientation of its own keeps it
                own = im.getexif().get(0x0112, 1)
            return _load(path, jpeg, max_side, None, max_pixels, (rotate + (0 if own != 1 else turn)) % 360,
                         False, region)
        if s.raw_width * s.raw_height > max_pixels:
            raise ImageError(path, "too large", f"{s.raw_width}x{s.raw_height}: {s.raw_width * s.raw_height} "
                                                f"sensor pixels to decode > limit {max_pixels}")
        half = bool(max_side) and region is None and max(w, h) // 2 >= max_side * (1 - DRAFT_SLACK)
        try:
            rgb = raw.postprocess(use_camera_wb=True, half_size=half, output_bps=8, gamma=(2.4, 12.92))
        except (rawpy.LibRawIOError, rawpy.LibRawDataError) as e:
            raise ImageError(path, "truncated", _libraw_text(e)) from None
        except rawpy.LibRawError as e:
            raise ImageError(path, "unsupported", _libraw_text(e)) from None
    img = Image.fromarray(rgb)  # LibRaw has turned it upright
    if rotate % 360:
        img = img.rotate(-(rotate % 360), expand=True)
    return _crop_and_shrink(path, img, max_side, None, region)


def _raw_preview(raw, w: int, h: int, max_side: int | None) -> bytes | None:
    """The JPEG embedded in a RAW file when it can stand for the w x h photo at `max_side` (or in
    full, without one), else None."""
    import rawpy

    try:
        thumb = raw.extract_thumb()
    except (rawpy.LibRawError, OSError):  # none, or one LibRaw cannot give
        return None
    if thumb.format != rawpy.ThumbFormat.JPEG:
        return None
    try:
        with Image.open(io.BytesIO(thumb.data)) as im:
            tw, th = im.size
    except Exception:  # noqa: BLE001 - a damaged preview: the sensor's data decide
        return None
    want = resized_size(w, h, max_side)
    if not (th and abs(tw / th - w / h) <= RAW_PREVIEW_ASPECT * w / h):
        return None
    if max(tw, th) < max(want) * (1 - DRAFT_SLACK):
        return None
    return thumb.data


def _libraw_text(e: Exception) -> str:
    """A LibRaw error's message (rawpy gives bytes)."""
    msg = e.args[0] if e.args else ""
    return (msg.decode(errors="replace") if isinstance(msg, bytes) else str(msg)) or type(e).__name__


def region_box(region: tuple[float, float, float, float], width: int, height: int) -> tuple[int, int, int, int]:
    """The pixels (x1, y1, x2, y2) of a part (x, y, w, h: shares of the width and height) of a
    width x height image, at least a pixel each way."""
    x0, y0 = min(width - 1, round(region[0] * width)), min(height - 1, round(region[1] * height))
    return (x0, y0, max(x0 + 1, round((region[0] + region[2]) * width)),
            max(y0 + 1, round((region[1] + region[3]) * height)))


def crop_region(pixels: np.ndarray, region: tuple[float, float, float, float]) -> np.ndarray:
    """The part (x, y, w, h: shares of the width and height) of an H x W x 3 image (`region_box`)."""
    x0, y0, x1, y1 = region_box(region, pixels.shape[1], pixels.shape[0])
    return np.ascontiguousarray(pixels[y0:y1, x0:x1])


def jpeg_bytes(pixels: np.ndarray, max_side: int | None = None, quality: int = 85) -> bytes:
    """An H x W x 3 uint8 image as JPEG bytes, its longer side brought down to `max_side` first
    (`shrink`): the thumbnails and previews the page and the reports show."""
    import io

    size = resized_size(pixels.shape[1], pixels.shape[0], max_side)
    if size != (pixels.shape[1], pixels.shape[0]):
        pixels = shrink(pixels, size)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def jpeg_data_uri(pixels: np.ndarray, max_side: int | None = None, quality: int = 85) -> str:
    """`jpeg_bytes` as a data: URI (a report's pictures, a search's preview of its query)."""
    import base64

    return "data:image/jpeg;base64," + base64.b64encode(jpeg_bytes(pixels, max_side, quality)).decode()


def shrink(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An H x W x 3 uint8 image brought down to size (width, height) by area averaging (OpenCV's
    INTER_AREA: each new pixel the mean of the old ones it covers, so nothing aliases). 2016 x 1512
    -> 1024 x 768 took 43-58 ms with Pillow's LANCZOS, 12-21 ms so; the
    two differ by about a grey level (docs/BENCHMARKS.md, "Third round: the resize, ...")."""
    import cv2

    return cv2.resize(np.ascontiguousarray(pixels), size, interpolation=cv2.INTER_AREA)


def is_image_name(path: str | Path) -> bool:
    """Whether a file name has an image suffix (a cheap pre-filter before decoding)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def is_raw_name(path: str | Path) -> bool:
    """Whether a file name is a camera RAW file's (`RAW_SUFFIXES`)."""
    return Path(path).suffix.lower() in RAW_SUFFIXES
