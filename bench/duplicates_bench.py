"""`layerseek duplicates` on a folder with planted copies and look-alikes (issue 29, item 1).

    .venv/bin/python bench/duplicates_bench.py /var/tmp/dupbench [--copies 40] [--paris 120] [--heic]

The folder (benchmark data: keep it outside the repository) holds
- all 100 SMVS reference covers (many Blu-ray cases share a printed band: look-alikes);
- planted copies of the first `--copies` covers, one kind each in turn: resized to half, JPEG
  quality 30, cropped to the middle 70 %, rotated 90 degrees, grey; and one byte-identical file;
- photos of 20 other covers taken with two phones (the same object, not copies);
- the first `--paris` photos of the Paris subset (other photos of the same buildings).

It is indexed with the defaults, `duplicates --kind all` is run, and the report is scored: each
planted copy found as a copy (or identical file) of its cover, and every pair reported as a copy
that is not a planted one (a false copy). Then `--move-to` is run as a dry run and with --apply
on a copy of the folder: what moved must be exactly what the dry run listed, and only copies.

`--shared-part-counts`: no folder is made; the pairs the report verifies on an index made already
(`WORK/idx.lsx`, or `--index PATH`) are counted with the shared-part rule off and on
(`duplicates.shared_parts`), labelled by their file names: a cover's number (folders `covers`,
`copies`, `phone`), a Paris landmark's (`paris_<landmark>_<n>.jpg` in a folder `paris`), the
others unlabelled; and the groups they form.

`--heic`: every photo is saved as HEIC (quality 90; the q30 copy at 30) with a 320 px thumbnail
embedded, as an iPhone's photos have, and the byte-identical file is a copy of its cover's HEIC:
the copy test's first look reads those thumbnails.
"""
from __future__ import annotations

import argparse
import csv
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
LAYERSEEK = [sys.executable, "-m", "layerseek.cli"]
KINDS = ("resized", "q30", "crop", "rot90", "grey")


def make_folder(out: Path, copies: int, paris: int) -> dict[str, str]:
    """The folder; returns {planted copy's name: its cover's name}."""
    from PIL import Image, ImageOps

    from layerseek.datasets import shared_data_dir

    data = shared_data_dir()
    smvs = data / "smvs-dvd-covers"
    shutil.rmtree(out, ignore_errors=True)
    for sub in ("covers", "copies", "phone", "paris"):
        (out / sub).mkdir(parents=True)
    refs = sorted((smvs / "Reference").glob("*.jpg"))
    for r in refs:
        shutil.copy2(r, out / "covers" / r.name)
    time.sleep(0.01)  # the copies are newer than their covers
    planted = {}
    for i, r in enumerate(refs[:copies]):
        im = ImageOps.exif_transpose(Image.open(r)).convert("RGB")
        w, h = im.size
        kind = KINDS[i % len(KINDS)]
        name = f"{r.stem}-{kind}.jpg"
        if kind == "resized":
            im = im.resize((w // 2, h // 2), Image.Resampling.LANCZOS)
        elif kind == "crop":
            im = im.crop((int(w * .15), int(h * .15), int(w * .85), int(h * .85)))
        elif kind == "rot90":
            im = im.rotate(90, expand=True)
        elif kind == "grey":
            im = im.convert("L")
        im.save(out / "copies" / name, quality=30 if kind == "q30" else 90)
        planted[f"copies/{name}"] = f"covers/{r.name}"
    shutil.copy(refs[-1], out / "copies" / f"{refs[-1].stem}-same-bytes.jpg")
    planted[f"copies/{refs[-1].stem}-same-bytes.jpg"] = f"covers/{refs[-1].name}"
    for r in refs[copies:copies + 20]:
        for phone in ("Canon", "Droid"):
            if (smvs / phone / r.name).is_file():
                shutil.copy(smvs / phone / r.name, out / "phone" / f"{r.stem}-{phone}.jpg")
    for p in sorted((data / "paris6k-subset" / "jpg").glob("*.jpg"))[:paris]:
        shutil.copy(p, out / "paris" / p.name)
    return planted


def as_heic(folder: Path, planted: dict[str, str]) -> dict[str, str]:
    """Every JPEG of the folder saved as HEIC in its place (a 320 px thumbnail embedded), and
    the planted copies' names to match."""
    from PIL import Image
    from pillow_heif import register_heif_opener

    register_heif_opener(thumbnails=True)
    same = [c for c in planted if c.endswith("-same-bytes.jpg")]
    for p in sorted(folder.rglob("*.jpg")):
        if str(p.relative_to(folder)) in same:
            continue
        with Image.open(p) as im:
            im.save(p.with_suffix(".heic"), quality=30 if p.stem.endswith("-q30") else 90, thumbnails=[320])
        p.unlink()
    for c in same:
        (folder / c).unlink()
        shutil.copy(folder / Path(planted[c]).with_suffix(".heic"), (folder / c).with_suffix(".heic"))
    return {str(Path(c).with_suffix(".heic")): str(Path(v).with_suffix(".heic")) for c, v in planted.items()}


def rel(path: str, folder: Path) -> str:
    return str(Path(path).relative_to(folder))


def label(path: str) -> str | None:
    """What a file shows, from its name (`--shared-part-counts`): cover<n>, paris_<landmark>,
    paris-web (a Paris photo without a landmark in its name), None (unlabelled)."""
    p = Path(path)
    if p.parent.name in ("covers", "copies", "phone"):
        return "cover" + re.match(r"\d+", p.name).group(0)
    if p.parent.name == "paris":
        m = re.match(r"paris_([a-z]+)_\d+", p.name)
        return f"paris_{m.group(1)}" if m else "paris-web"
    return None


def shared_part_counts(index_path: Path) -> None:
    from layerseek.duplicates import shared_parts, verified_evidence
    from layerseek.index import Index

    with Index.open(index_path) as idx:
        pairs, seen = verified_evidence(idx)
        path = {e.id: e.path for e in idx.catalog.entries()}
        v = idx.verifier
    for bar in (0.0, v.shared_part):
        kept = shared_parts(pairs, seen, v.min_inliers, bar)
        tally: dict[str, int] = {}
        for p in kept:
            a, b = label(path[p.a]), label(path[p.b])
            folders = {Path(path[p.a]).parent.name, Path(path[p.b]).parent.name}
            if p.kind != "same":
                what = p.kind
            elif a is None or b is None:
                what = "unlabelled"
            elif "paris-web" in (a, b):
                what = "a Paris photo from the web"
            elif a == b:
                what = "the same cover or landmark"
            elif folders <= {"covers", "copies"}:
                what = "two covers"
            elif folders == {"phone"}:
                what = "phone photos of two covers"
            else:
                what = "two other labelled objects"
            tally[what] = tally.get(what, 0) + 1
        parent: dict[int, int] = {}

        def root(x: int) -> int:
            while parent[x] != x:
                x = parent[x]
            return x
        for p in kept:
            for x in (p.a, p.b):
                parent.setdefault(x, x)
            parent[root(p.a)] = root(p.b)
        groups: dict[int, list[int]] = {}
        for x in parent:
            groups.setdefault(root(x), []).append(x)
        objects = [len({label(path[x]) for x in g} - {None, "paris-web"}) for g in groups.values()]
        print(f"shared-part bar {bar}: {len(kept)} pairs: " + ", ".join(f"{k} {n}" for k, n in sorted(tally.items())))
        print(f"  {len(groups)} groups, the largest {max(map(len, groups.values()), default=0)} images; "
              f"{sum(o > 1 for o in objects)} hold more than one labelled object (at most {max(objects, default=0)})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("work", type=Path, nargs="?")
    ap.add_argument("--copies", type=int, default=40)
    ap.add_argument("--paris", type=int, default=120)
    ap.add_argument("--heic", action="store_true", help="every photo as HEIC with an embedded 320 px thumbnail")
    ap.add_argument("--shared-part-counts", action="store_true", help="count the pairs with the rule off and on")
    ap.add_argument("--index", type=Path, help="with --shared-part-counts: this index (not WORK/idx.lsx)")
    a = ap.parse_args()
    if a.shared_part_counts:
        return shared_part_counts(a.index or a.work / "idx.lsx")
    if a.work is None:
        ap.error("WORK is needed (the folder, its index and reports are made there)")
    folder, index = a.work / "folder", a.work / "idx.lsx"
    planted = make_folder(folder, a.copies, a.paris)
    ext = "*.jpg"
    if a.heic:
        planted, ext = as_heic(folder, planted), "*.heic"
    shutil.rmtree(index, ignore_errors=True)
    subprocess.run(LAYERSEEK + ["index", str(folder), "--index", str(index)], check=True, capture_output=True)
    t = time.perf_counter()
    out = subprocess.run(LAYERSEEK + ["duplicates", str(index), "--kind", "all", "--csv", str(a.work / "all.csv"),
                                      "--html", str(a.work / "all.html")], capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - t
    rows = list(csv.DictReader(open(a.work / "all.csv", encoding="utf-8")))
    n_images = sum(1 for _ in folder.rglob(ext))
    print(f"{n_images} images, {len(planted)} planted copies; duplicates --kind all: {seconds:.1f} s")
    print(out.stderr.strip().splitlines()[-1])
    copy_rows = [r for r in rows if r["relation"] in ("copy", "identical")]
    found = {rel(r["path"], folder): rel(r["copy_of"], folder) for r in copy_rows}
    # a planted copy may be kept in its cover's place (more pixels or older): the pair counts either way
    pairs = {frozenset((k, v)) for k, v in found.items()}
    hit = [c for c, cover in planted.items() if frozenset((c, cover)) in pairs]
    false = [p for p in pairs if not any(p == frozenset((c, cover)) for c, cover in planted.items())]
    print(f"planted copies found as copies: {len(hit)} of {len(planted)}")
    for c in sorted(set(planted) - set(hit)):
        print(f"  missed: {c}")
    print(f"pairs reported as copies that are not planted: {len(false)}")
    for p in false:
        print(f"  false copy: {' <-> '.join(sorted(p))}")
    kinds = {}
    for r in rows:
        kinds.setdefault(r["kind"], set()).add(r["group"])
    print("groups by kind: " + ", ".join(f"{k} {len(v)}" for k, v in sorted(kinds.items())))
    same_pairs = [r for r in rows if r["relation"] == "same"]
    print(f"images said to be the same object (kept, never moved): {len(same_pairs)}")

    # the dedupe run, on a copy of the folder and its index
    moved_folder, moved_index, dest = a.work / "move-folder", a.work / "move-idx.lsx", a.work / "moved"
    for p in (moved_folder, moved_index, dest):
        shutil.rmtree(p, ignore_errors=True)
    shutil.copytree(folder, moved_folder)
    subprocess.run(LAYERSEEK + ["index", str(moved_folder), "--index", str(moved_index)], check=True,
                   capture_output=True)
    dry = subprocess.run(LAYERSEEK + ["duplicates", str(moved_index), "--move-to", str(dest), "--csv",
                                      str(a.work / "copies.csv")], capture_output=True, text=True, check=True)
    listed = {ln.split(" -> ")[0].split("would move ", 1)[1] for ln in dry.stderr.splitlines() if ln.startswith("  would move ")}
    before = {str(p) for p in moved_folder.rglob(ext)}
    done = subprocess.run(LAYERSEEK + ["duplicates", str(moved_index), "--move-to", str(dest), "--apply", "--csv",
                                       str(a.work / "copies-applied.csv")], capture_output=True, text=True)
    after = {str(p) for p in moved_folder.rglob(ext)}
    gone = before - after
    report = [r for r in csv.DictReader(open(a.work / "copies.csv", encoding="utf-8"))
              if r["relation"] in ("copy", "identical")]
    print(f"dedupe dry run listed {len(listed)} files; --apply exit {done.returncode}, moved {len(gone)}; "
          f"moved == listed: {gone == listed}; moved == the report's copies: {gone == {r['path'] for r in report}}; "
          f"files in {dest.name}/: {sum(1 for _ in dest.rglob(ext))}")
    planted_moved = sum(1 for g in gone if rel(g, moved_folder) in planted or
                        any(rel(g, moved_folder) == cover for cover in planted.values()))
    print(f"of the moved files, planted copies or their covers (one of each pair kept): {planted_moved}")


if __name__ == "__main__":
    main()
