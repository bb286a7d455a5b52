"""How many photos a search verifies in a small index: now (the word filter judges only an index of
`stages.WORD_FILTER_MIN_IMAGES` or more), with the filter judging every index as before, and with
no filter (`word_filter=-1`): one cover, a cover and an identical copy, and 2 to 40 Eiffel Tower photos of
the Paris subset (two other Eiffel photos as queries). docs/RESULTS.md, "A cheap filter before
verification".

    .venv/bin/python bench/small_index.py
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import layerseek.stages
from layerseek.datasets import shared_data_dir
from layerseek.index import Index


def verified_counts(name: str, files: list[Path], queries: list[Path]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        photos = Path(tmp) / "photos"
        photos.mkdir()
        for i, f in enumerate(files):
            shutil.copy(f, photos / f"{i:03d}-{f.name}")
        with Index.create(Path(tmp) / "idx", "rmac", backbone="mobilenet_v2", verify=True) as idx:
            idx.add_folder(photos)
            for q in queries:
                now = sum(h.verified for h in idx.search(q, top=len(files)))
                at = layerseek.stages.WORD_FILTER_MIN_IMAGES
                layerseek.stages.WORD_FILTER_MIN_IMAGES = 1  # as before: every index judged
                before = sum(h.verified for h in idx.search(q, top=len(files)))
                layerseek.stages.WORD_FILTER_MIN_IMAGES = at
                off = sum(h.verified for h in idx.search(q, top=len(files), word_filter=-1))
                print(f"{name:20s} {len(files):3d} images  {q.name:24s} verified: now {now:2d}, "
                      f"filter judging every index {before:2d}, no filter {off:2d}")


def main() -> None:
    root = shared_data_dir()
    covers, paris = root / "smvs-dvd-covers", root / "paris6k-subset" / "jpg"
    cover = covers / "Reference" / "001.jpg"
    verified_counts("one cover", [cover], [covers / "Palm" / "001.jpg", cover])
    verified_counts("a cover twice", [cover, cover], [covers / "Palm" / "001.jpg"])
    eiffel = sorted(paris.glob("paris_eiffel_*.jpg"))
    for n in (2, 3, 5, 10, 20, 40):
        verified_counts("Eiffel Tower photos", eiffel[:n], [eiffel[45], eiffel[46]])


if __name__ == "__main__":
    main()
