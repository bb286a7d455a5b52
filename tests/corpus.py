"""A corpus of good, odd and bad inputs for layerseek (issue 16, item 2), written into a folder.

`make_corpus(folder, photos)` writes one file (or entry) per kind and returns {kind: Item}. Good
images are each made from a different real photo, so each is its own best match; `twins` names the
entries that show exactly the same picture (a duplicate, a symlink) and may take its place.
"""
from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass
class Item:
    path: bytes  # os.fsencode of the entry's path (some names are not valid UTF-8)
    expect: str  # "good": indexed and findable; "bad": reported in one line; "ignored": neither
    reason: str = ""  # for "bad": a word the one-line report contains
    twins: set[str] = field(default_factory=set)  # kinds showing the very same picture

    @property
    def name(self) -> str:
        return os.fsdecode(self.path)


def _png_with_huge_header(width: int, height: int) -> bytes:
    """A PNG whose header announces width x height pixels, with a tiny (wrong) body: a bomb for
    any reader that allocates before it checks."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def make_corpus(folder: Path, photos: list[Path]) -> dict[str, Item]:
    """Write the corpus into `folder` (created) from real photos (at least 26)."""
    folder.mkdir(parents=True, exist_ok=True)
    base = os.fsencode(folder)
    items: dict[str, Item] = {}
    it = iter(photos)

    def photo(side: int = 320) -> Image.Image:
        img = Image.open(next(it)).convert("RGB")
        img.thumbnail((side, side))
        return img

    def save(kind: str, name: bytes | str, img: Image.Image, **kw) -> None:
        p = base + b"/" + (name if isinstance(name, bytes) else os.fsencode(name))
        img.save(os.fsdecode(p), **kw)
        items[kind] = Item(p, "good")

    def raw(kind: str, name: str, data: bytes, expect: str = "bad", reason: str = "") -> None:
        p = base + b"/" + os.fsencode(name)
        with open(p, "wb") as f:
            f.write(data)
        items[kind] = Item(p, expect, reason)

    # -- good: formats and modes
    save("jpeg", "plain.jpg", photo(), quality=90)
    save("png rgb", "rgb.png", photo())
    save("png rgba", "alpha.png", photo().convert("RGBA"))
    save("png la", "grey-alpha.png", photo().convert("LA"))
    save("png 1-bit", "one-bit.png", photo().convert("1"))
    save("jpeg greyscale", "grey.jpg", photo().convert("L"))
    save("jpeg cmyk", "cmyk.jpg", photo().convert("CMYK"))
    save("gif palette", "palette.gif", photo().convert("P"))
    frames = [photo(), photo()]
    save("gif animated", "animated.gif", frames[0], save_all=True, append_images=[frames[1]], duration=100)
    save("webp", "photo.webp", photo(), quality=80)
    save("tiff", "photo.tif", photo())
    save("bmp", "photo.bmp", photo())
    grey = np.asarray(photo().convert("L"))
    save("png 16-bit", "sixteen.png", Image.fromarray(grey.astype(np.uint16) * 257))
    save("tiff float", "float.tif", Image.fromarray(grey.astype(np.float32) / 255.0))
    items["png 16-bit"].twins, items["tiff float"].twins = {"tiff float"}, {"png 16-bit"}  # one picture
    for kind, tag in (("exif rotated 90", 6), ("exif rotated 180", 3), ("exif rotated 270", 8)):
        exif = Image.Exif()
        exif[0x0112] = tag
        save(kind, f"exif-{tag}.jpg", photo(), exif=exif, quality=90)
    save("1x1", "dot.png", Image.new("RGB", (1, 1), (200, 30, 60)))
    save("1x4000", "strip.png", photo(4000).resize((4000, 1)))
    save("uppercase suffix", "LOUD.JPG", photo())
    # -- good: names
    save("unicode name", "café 東京 ünï.jpg", photo())
    save("spaces", "my holiday photo 1.jpg", photo())
    save("newline", "new\nline.jpg", photo())
    save("not utf-8 name", b"caf\xe9-\xff.jpg", photo())
    save("255-byte name", "n" * 251 + ".jpg", photo())
    # -- good: the same picture twice
    dup = base + b"/duplicate-of-plain.jpg"
    with open(dup, "wb") as f:
        f.write(open(items["jpeg"].path, "rb").read())
    items["duplicate"] = Item(dup, "good")
    link = base + b"/link-to-plain.jpg"
    os.symlink(items["jpeg"].path, link)
    items["symlink"] = Item(link, "good")
    for a in ("jpeg", "duplicate", "symlink"):
        items[a].twins = {"jpeg", "duplicate", "symlink"} - {a}

    # -- bad: each reported in one line, nothing else disturbed
    src = open(items["jpeg"].path, "rb").read()
    raw("empty", "empty.jpg", b"", reason="empty")
    raw("truncated jpeg", "cut.jpg", src[: len(src) // 3], reason="truncated")
    png = open(items["png rgb"].path, "rb").read()
    raw("truncated png", "cut.png", png[: len(png) // 3], reason="truncated")
    raw("text named jpg", "notes.jpg", b"these are not pixels\n" * 50, reason="not an image")
    raw("html named jpg", "page.jpg", b"<!doctype html><html><body>404</body></html>\n", reason="not an image")
    raw("jpeg header, garbage body", "garbage.jpg", src[:600] + bytes(range(256)) * 40)
    raw("decompression bomb", "bomb.png", _png_with_huge_header(60000, 60000), reason="too large")
    fifo = base + b"/pipe.jpg"
    os.mkfifo(fifo)
    items["fifo"] = Item(fifo, "bad", "not a regular file")
    dangling = base + b"/dangling.jpg"
    os.symlink(base + b"/nowhere.jpg", dangling)
    items["dangling symlink"] = Item(dangling, "bad", "which is not there")
    os.symlink(base + b"/loop-b.jpg", base + b"/loop-a.jpg")
    os.symlink(base + b"/loop-a.jpg", base + b"/loop-b.jpg")
    items["symlink loop"] = Item(base + b"/loop-a.jpg", "bad", "unreadable")
    items["symlink loop b"] = Item(base + b"/loop-b.jpg", "bad", "unreadable")
    if os.geteuid() != 0:  # root reads anything: the kind only exists for other users
        raw("unreadable", "locked.jpg", src, reason="unreadable")
        os.chmod(items["unreadable"].path, 0)
    # -- ignored: not taken for images, not errors
    os.mkdir(base + b"/folder.jpg")  # a folder named like a photo: walked into
    items["folder named jpg"] = Item(base + b"/folder.jpg", "ignored")
    raw("not an image name", "readme.txt", b"hello", expect="ignored")
    return items
