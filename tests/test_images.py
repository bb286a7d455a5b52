"""Image loading: every bad-input kind gets its one-line error; modes, EXIF and sizes come out right."""
from __future__ import annotations

import struct

import numpy as np
import pytest
from PIL import Image

from layerseek.errors import ImageError
from layerseek.images import is_image_name, load_image, resized_size


def _reason(path, **kw):
    with pytest.raises(ImageError) as exc:
        load_image(path, **kw)
    assert str(path) in str(exc.value) and "\n" not in str(exc.value)
    return exc.value.reason


def test_missing(tmp_path):
    assert _reason(tmp_path / "nope.jpg") == "missing"


def test_empty(tmp_path):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    assert _reason(p) == "empty"


def test_not_an_image(tmp_path):
    p = tmp_path / "notes.jpg"
    p.write_text("these are not pixels\n" * 20)
    assert _reason(p) == "not an image"
    assert _reason(tmp_path) == "not an image"  # a directory


def test_truncated_real_jpeg(tmp_path, data_dir):
    src = (data_dir / "samples/ukbench/ukbench00000.jpg").read_bytes()
    p = tmp_path / "cut.jpg"
    p.write_bytes(src[: len(src) // 2])
    assert _reason(p) == "truncated"


def test_unsupported_bmp_compression(tmp_path):
    # A well-formed BMP header announcing compression 4 (embedded JPEG), which Pillow cannot read.
    header = struct.pack("<2sIHHI", b"BM", 70, 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, 4, 4, 1, 24, 4, 16, 2835, 2835, 0, 0)
    p = tmp_path / "odd.bmp"
    p.write_bytes(header + info + b"\0" * 16)
    assert _reason(p) == "unsupported"


def test_too_large_bomb(tmp_path):
    p = tmp_path / "bomb.png"
    Image.new("1", (20000, 10000)).save(p)  # 200 M pixels in a few kB
    assert p.stat().st_size < 200_000
    assert _reason(p) == "too large"
    assert _reason(p, max_pixels=1000) == "too large"


def test_real_photo_resized_to_max_side(data_dir):
    arr = load_image(data_dir / "samples/holidays/100000.jpg")  # 2448 x 3264 portrait
    assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3
    assert max(arr.shape[:2]) == 1024
    assert arr.shape[:2] == (1024, 768)
    full = load_image(data_dir / "samples/ukbench/ukbench00000.jpg", max_side=None)
    assert full.shape == (480, 640, 3)  # smaller than 1024: never enlarged


def test_resized_size():
    assert resized_size(3264, 2448, 1024) == (1024, 768)
    assert resized_size(640, 480, 1024) == (640, 480)
    assert resized_size(5000, 10, 1024) == (1024, 2)
    assert resized_size(640, 480, None) == (640, 480)


def test_exif_orientation_applied(tmp_path):
    img = Image.new("RGB", (60, 40), (200, 10, 10))
    img.paste((10, 10, 200), (0, 0, 10, 40))  # blue stripe on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display needs 90 degrees clockwise
    p = tmp_path / "rot.jpg"
    img.save(p, exif=exif, quality=95)
    arr = load_image(p, max_side=None)
    assert arr.shape == (60, 40, 3)
    assert arr[2, 20, 2] > 150 and arr[2, 20, 0] < 80  # the stripe is now on top


@pytest.mark.parametrize("mode", ["P", "L", "1", "LA", "RGBA", "CMYK", "I;16", "I", "F", "YCbCr"])
def test_modes_become_rgb(tmp_path, mode):
    rgb = Image.new("RGB", (16, 12), (120, 60, 30))
    if mode == "I;16":
        img = Image.fromarray(np.full((12, 16), 65535, dtype=np.uint16))
        expected = (255, 255, 255)
    elif mode == "I":
        img = Image.fromarray(np.full((12, 16), 1000, dtype=np.int32))
        expected = (255, 255, 255)  # stored maximum -> white
    elif mode == "F":
        img = Image.fromarray(np.full((12, 16), 0.5, dtype=np.float32))
        expected = (128, 128, 128)
    else:
        img = rgb.convert(mode)
        expected = None
    suffix = ".tif" if mode in ("I;16", "I", "F", "CMYK", "YCbCr") else ".png"
    p = tmp_path / f"m{suffix}"
    img.save(p)
    arr = load_image(p)
    assert arr.shape == (12, 16, 3) and arr.dtype == np.uint8
    if expected is not None:
        assert tuple(arr[0, 0]) == expected


def test_alpha_composited_on_white(tmp_path):
    img = Image.new("RGBA", (8, 8), (255, 0, 0, 0))  # fully transparent red
    img.putpixel((0, 0), (0, 0, 255, 255))
    p = tmp_path / "a.png"
    img.save(p)
    arr = load_image(p)
    assert tuple(arr[4, 4]) == (255, 255, 255)
    assert tuple(arr[0, 0]) == (0, 0, 255)


def test_bbox_crop_before_resize(data_dir):
    path = data_dir / "samples/holidays/100000.jpg"
    arr = load_image(path, max_side=None, bbox=(100, 200, 1100, 700))
    assert arr.shape == (500, 1000, 3)
    small = load_image(path, max_side=500, bbox=(100, 200, 1100, 700))
    assert small.shape == (250, 500, 3)
    with pytest.raises(ImageError, match="empty crop box"):
        load_image(path, bbox=(10, 10, 10, 50))


def test_a_region_is_cut_from_the_full_photo_before_the_resize(data_dir):
    """`region` (shares of the upright photo): the same pixels as the box it names, cut at full
    resolution (not from the 1/4-scale draft a 1024 px decode takes), then brought to max_side."""
    from layerseek.hits import parse_region
    from layerseek.images import crop_region

    path = data_dir / "samples/holidays/100000.jpg"
    w, h = Image.open(path).size
    whole = load_image(path, max_side=None)
    right = parse_region("0.5,0.25,0.5,0.5")
    part = load_image(path, max_side=None, region=right)
    assert part.shape == (h // 2, w // 2, 3) and np.array_equal(part, whole[h // 4:h // 4 + h // 2, w // 2:])
    assert np.array_equal(crop_region(whole, right), part)
    small = load_image(path, max_side=512, region=right)
    assert max(small.shape[:2]) == 512  # a 1024 px decode's part would have had about 512 / 2 (never enlarged)
    with pytest.raises(ValueError, match="not both"):
        load_image(path, bbox=(0, 0, 10, 10), region=right)
    for bad, said in (("0.5,0,0.5", "four numbers"), ("a,b,c,d", "four numbers"), ("0.6,0,0.5,1", "at most 1"),
                      ("0,0,0,1", "above 0"), ("-0.1,0,0.5,0.5", "from 0")):
        with pytest.raises(ValueError, match=said):
            parse_region(bad)
    assert parse_region(" 0.5, 0, 0.5, 1 ") == (0.5, 0.0, 0.5, 1.0)


def test_bytes_input(data_dir):
    p = data_dir / "samples/ukbench/ukbench00001.jpg"
    a = load_image(p)
    b = load_image("upload.jpg", data=p.read_bytes())
    assert np.array_equal(a, b)
    with pytest.raises(ImageError, match="upload.jpg: empty"):
        load_image("upload.jpg", data=b"")


def test_rotate_turns_clockwise(tmp_path):
    from PIL import Image

    from layerseek.errors import ImageError
    from layerseek.images import load_image

    arr = np.zeros((20, 30, 3), np.uint8)
    arr[0, 0] = 255  # a white top-left corner
    Image.fromarray(arr).save(tmp_path / "a.png")
    out = load_image(tmp_path / "a.png", max_side=None, rotate=90)
    assert out.shape == (30, 20, 3)
    np.testing.assert_array_equal(out, np.rot90(arr, k=-1))  # clockwise: top-left -> top-right
    assert out[0, -1, 0] == 255
    with pytest.raises(ImageError, match="a.png.*45"):
        load_image(tmp_path / "a.png", rotate=45)


@pytest.mark.parametrize("suffix", [".heic", ".avif"])
def test_phone_formats_load_upright_like_jpeg(data_dir, tmp_path, suffix):
    from PIL import Image

    from layerseek.images import IMAGE_SUFFIXES, load_image

    src = Image.open(data_dir / "smvs-dvd-covers" / "Canon" / "001.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: to be turned 90 degrees clockwise
    path = tmp_path / f"photo{suffix}"
    src.save(path, exif=exif.tobytes())
    upright = np.asarray(src.convert("RGB").transpose(Image.Transpose.ROTATE_270), np.float32)
    got = load_image(path, max_side=None).astype(np.float32)
    assert suffix in IMAGE_SUFFIXES and got.shape == upright.shape == (1024, 768, 3)
    assert np.abs(got - upright).mean() < 5  # lossy codec, same picture the right way up
    assert np.abs(got[::-1, ::-1] - upright).mean() > 30  # and not turned twice


def test_a_heic_preview_decodes_its_embedded_thumbnail(data_dir, tmp_path, monkeypatch):
    """Issue 28: a HEIC shown as a thumbnail (the page's, a report's) decodes the thumbnail a
    phone embeds when it covers the size asked for, upright as the photo is; a larger preview, and
    anything indexed, decode the photo itself."""
    from PIL import Image
    from pillow_heif.as_plugin import HeifImageFile

    from layerseek.images import load_image

    chosen = []
    draft = HeifImageFile.draft
    monkeypatch.setattr(HeifImageFile, "draft", lambda im, mode, size: chosen.append(draft(im, mode, size)) or chosen[-1])
    src = Image.open(data_dir / "smvs-dvd-covers" / "Canon" / "001.jpg")  # 1024 x 768
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways
    path = tmp_path / "photo.heic"
    src.save(path, exif=exif.tobytes(), thumbnails=[320])
    preview = load_image(path, max_side=256, preview=True).astype(np.float32)
    assert chosen == [("RGB", (0, 0, 240, 320))]  # the 320 px thumbnail (HEIF turns it as the photo)
    photo = load_image(path, max_side=256).astype(np.float32)
    assert len(chosen) == 1  # not a preview: the photo is decoded
    assert preview.shape == photo.shape == (256, 192, 3)
    assert np.abs(preview - photo).mean() < 6  # the same picture, the right way up
    assert np.abs(preview[::-1, ::-1] - photo).mean() > 30
    load_image(path, max_side=512, preview=True)
    assert chosen[-1] is None  # the thumbnail is smaller than asked: the photo is decoded


def test_a_phone_photo_decodes_at_the_draft_scale_that_covers_the_target(tmp_path, data_dir):
    """Issue 28: a 12 MP JPEG reduced to 1024 px decodes at 1/4 scale (1008 x 756: within
    DRAFT_SLACK of the target, so used as it is), not at 1/2 and reduced, nor in full; what comes
    out is what a full decode resized with LANCZOS to that size gives, within a grey level or two
    (the DCT scaling against one LANCZOS filter). A draft further below the target is not taken,
    and sizes that do not divide evenly decode at the scale computed (Pillow is asked so)."""
    from PIL import Image

    from layerseek.images import DRAFT_SLACK, draft_size

    assert DRAFT_SLACK < 0.03  # at most a few pixels of 1024 given up
    assert draft_size(4032, 3024, 1024, 768) == (1008, 756)
    assert draft_size(4000, 3000, 1024, 768) == (1000, 750)
    assert draft_size(8160, 6144, 1024, 771) == (1020, 768)  # 50 MP at 1/8
    assert draft_size(2200, 1650, 1024, 768) == (1100, 825)  # 1/4 (550) falls far short: 1/2, reduced after
    assert draft_size(1900, 1425, 1024, 768) == (1900, 1425)  # 1/2 (950) falls short by 7 %: in full
    src = Image.open(data_dir / "samples/holidays/100002.jpg").convert("RGB")
    # (file size, what comes out, the part of the file that part of the output covers, compared)
    for size, out, covered, compared in (((4032, 3024), (1008, 756), (4032, 3024), (1008, 756)),
                                         # 1000 whole blocks of 4 pixels and a last one of 1
                                         ((4001, 3001), (1001, 751), (4000, 3000), (1000, 750)),
                                         ((2200, 1650), (1024, 768), (2200, 1650), (1024, 768))):
        path = tmp_path / f"phone{size[0]}.jpg"
        src.resize(size).save(path, quality=92)
        got = load_image(path, max_side=1024)
        assert got.shape == (out[1], out[0], 3)
        full = Image.open(path).convert("RGB").crop((0, 0, *covered)).resize(compared, Image.Resampling.LANCZOS)
        assert np.abs(got[:compared[1], :compared[0]].astype(np.float32) - np.asarray(full, np.float32)).mean() < 2.0


def test_shrink_averages_the_pixels_it_covers():
    """images.shrink: an exact halving gives each 2 x 2 block's mean (what area averaging means),
    and a non-integer ratio keeps a flat image flat and a ramp monotone (no ringing)."""
    from layerseek.images import shrink

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    got = shrink(img, (4, 3))
    want = img.astype(np.float64).reshape(3, 2, 4, 2, 3).mean(axis=(1, 3))
    assert got.shape == (3, 4, 3) and np.abs(got - want).max() <= 0.5 + 1e-9
    assert (shrink(np.full((300, 400, 3), 77, np.uint8), (157, 118)) == 77).all()
    ramp = np.repeat(np.repeat(np.arange(200, dtype=np.uint8)[None, :, None], 10, 0), 3, 2)
    row = shrink(ramp, (117, 6))[3, :, 0].astype(int)
    assert (np.diff(row) >= 0).all() and row[0] <= 1 and row[-1] >= 198


def _raw_photo(data_dir, size=(1536, 1024)) -> np.ndarray:
    return np.asarray(Image.open(data_dir / "corel1k" / "jpg" / "102.jpg").convert("RGB").resize(size, Image.LANCZOS))


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.astype(np.float64).mean(axis=2).ravel(), b.astype(np.float64).mean(axis=2).ravel())[0, 1])


def test_a_camera_raw_file_is_read_through_the_jpeg_its_camera_embedded(tmp_path, data_dir):
    import rawpy

    from rawfiles import dng_bytes

    photo = _raw_photo(data_dir)
    shown = 255 - photo  # a preview unlike the sensor's data: which of the two was read shows
    p, turned = tmp_path / "IMG_0001.DNG", tmp_path / "IMG_0002.dng"
    p.write_bytes(dng_bytes(photo, shown))
    turned.write_bytes(dng_bytes(photo, shown, orientation=6))  # the camera held turned right
    with rawpy.imread(str(p)) as raw:
        (tmp_path / "preview.jpg").write_bytes(raw.extract_thumb().data)
    assert all(is_image_name(tmp_path / f"IMG_0001.{s}") for s in ("DNG", "cr2", "CR3", "NEF", "arw", "RAF", "ORF"))
    got = load_image(p)
    assert got.shape == (683, 1024, 3)
    np.testing.assert_array_equal(got, load_image(tmp_path / "preview.jpg"))  # the camera's JPEG, decoded as any
    assert _corr(got, np.asarray(Image.fromarray(shown).resize((1024, 683)))) > 0.99
    up = load_image(turned)
    assert up.shape == (1024, 683, 3)
    np.testing.assert_allclose(up, np.rot90(got, -1), atol=1)
    # the bytes of an upload, a crop box in the full photo's pixels, a part as shares: as a JPEG's
    np.testing.assert_array_equal(load_image("upload.dng", data=p.read_bytes()), got)
    np.testing.assert_array_equal(load_image(p, bbox=(768, 0, 1536, 1024)), load_image(p, region=(0.5, 0, 0.5, 1)))
    assert load_image(p, region=(0.5, 0, 0.5, 1)).shape == (1024, 768, 3)


@pytest.mark.parametrize("preview", ["none", "small", "bars"])
def test_a_raw_file_without_a_preview_that_covers_it_is_demosaiced(tmp_path, data_dir, preview):
    from rawfiles import dng_bytes

    photo = _raw_photo(data_dir)
    other = 255 - photo
    embedded = {"none": None, "small": np.asarray(Image.fromarray(other).resize((384, 256))),  # too small for 1024
                "bars": np.pad(other, ((128, 128), (0, 0), (0, 0)))}[preview]  # not the photo's shape
    p, turned = tmp_path / "photo.dng", tmp_path / "turned.dng"
    p.write_bytes(dng_bytes(photo, embedded))
    turned.write_bytes(dng_bytes(photo, embedded, orientation=6))
    got = load_image(p)
    assert got.shape == (683, 1024, 3)
    ref = np.asarray(Image.fromarray(photo).resize((1024, 683), Image.BOX))
    assert _corr(got, ref) > 0.97  # the sensor's data, developed (white balance, tone curve)
    up = load_image(turned)
    assert up.shape == (1024, 683, 3) and _corr(up, np.rot90(ref, -1)) > 0.97
    full = load_image(p, max_side=None)
    assert full.shape == (1024, 1536, 3) and _corr(full, photo) > 0.97


def test_bad_camera_raw_files_get_their_one_line_error(tmp_path, data_dir):
    from rawfiles import dng_bytes

    empty = tmp_path / "empty.dng"
    empty.write_bytes(b"")
    assert _reason(empty) == "empty"
    notes = tmp_path / "notes.nef"
    notes.write_text("not a photo\n" * 100)
    assert _reason(notes) == "not an image"
    cut = tmp_path / "cut.dng"
    cut.write_bytes(dng_bytes(_raw_photo(data_dir, (768, 512)))[:400_000])  # the sensor's data cut short
    assert _reason(cut) == "truncated"
    big = tmp_path / "big.dng"
    big.write_bytes(dng_bytes(_raw_photo(data_dir, (768, 512))))
    assert _reason(big, max_pixels=100_000) == "too large"


def test_damaged_raw_files_are_refused_in_one_line_or_read(tmp_path, data_dir):
    """LibRaw is C: a damaged RAW file must come back as an ImageError (or a picture), never as
    another exception or a crash of the process that indexes a whole folder. 120 DNGs, damaged as
    copies and disks damage files: bytes changed anywhere or in the directories, cut short."""
    import random

    from rawfiles import dng_bytes

    photo = np.ascontiguousarray(_raw_photo(data_dir, (384, 256)))
    whole = [dng_bytes(photo), dng_bytes(photo, photo, orientation=6)]
    rng = random.Random(7)
    reasons = set()
    for i in range(120):
        b = bytearray(whole[i % 2])
        if i % 3 == 0:
            b = b[: rng.randrange(8, len(b))]
        else:
            tail = len(b) - 1500 if i % 3 == 1 else 0  # the directories lie at the end, as a converter writes them
            for _ in range(rng.randint(1, 12)):
                at = rng.randrange(tail, len(b) - 4)
                b[at:at + 4] = rng.randrange(2**32).to_bytes(4, "little")
        p = tmp_path / f"IMG_{i:04d}.DNG"
        p.write_bytes(bytes(b))
        try:
            got = load_image(p)
        except ImageError as e:
            assert str(p) in str(e) and "\n" not in str(e)
            reasons.add(e.reason)
        else:
            assert got.dtype == np.uint8 and got.ndim == 3 and got.shape[2] == 3
    assert {"not an image", "truncated"} <= reasons
