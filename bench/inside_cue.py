"""Which strongest match may decide the shared-part rule: the share of its image inside the photo.

    .venv/bin/python bench/inside_cue.py /var/tmp/mixed10k.lsx [--keep /tmp/inside.pkl]

The shared-part rule (`verify.geometry.same_object`) lets a query's strongest match, when it fills
its image, take the mark of every match that shares only a part of it: right for a cover whose
other covers share a printed band, wrong for a photo of a landmark whose strongest match is
another view of it, where the other views match the building in a part of each photo. What
tells them apart here: a cover lies whole inside the phone photo, while another view of a scene
extends past the photo's frame. `frame_inside` measures it (a homography fitted to the inliers
lays the matched image into the query; the share of it that lands inside the frame), and the
rule lets the strongest decide only from a bar of it (`SHARED_PART_INSIDE`).

The same 776 searches as `bench/overlap_cue.py` (the 400 SMVS phone photos, the 276 Paris photos
and the 100 covers, each indexed, searched with itself): every verified candidate's evidence is
kept as the search verified it, `frame_inside` of each, then the rule is applied offline for each
bar: phone searches with another cover marked same (of them, those whose covers all lie in the
photo, by eye: `same_object.VISIBLE`), marks between two Paris photos of one landmark, cover
searches with another cover marked, Paris searches marking a photo outside the Paris folder.

    .venv/bin/python bench/inside_cue.py /var/tmp/photolib.lsx --phones [--keep /tmp/phones.pkl]

A library of photos rather than scans: the Canon and Droid photos of the 100 covers (folders
`canon`, `droid`) and Corel-1k, searched with the E63 and Palm photos; counted: searches with a
photo of another cover marked same (and how far its number is from the query's: covers with
near numbers lay side by side when they were photographed, so a photo often shows its
neighbours), and the photos of the right cover marked (two a search at most).

    mkdir -p /var/tmp/photolib/canon /var/tmp/photolib/droid
    for f in ../shared/data/smvs-dvd-covers/Canon/*.jpg; do ln -s $(realpath $f) /var/tmp/photolib/canon/; done
    for f in ../shared/data/smvs-dvd-covers/Droid/*.jpg; do ln -s $(realpath $f) /var/tmp/photolib/droid/; done
    ln -s $(realpath ../shared/data/corel1k/jpg) /var/tmp/photolib/corel
    .venv/bin/layerseek index /var/tmp/photolib --index /var/tmp/photolib.lsx
"""
from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from layerseek.verify.geometry import evidence_of, same_object  # noqa: E402

from overlap_cue import counted, searches  # noqa: E402


def capture(index_path: Path, phones: bool = False) -> tuple[list, dict, int, float]:
    """Each search's verified candidates: (kind, query, {id: Evidence with its `inside`})."""
    return searches(index_path, lambda v, qf, f, n, qi, di: evidence_of(n, qf, f, qi, di, 1e-9), phones)


def tally(rows, path, min_inliers, wide, inside) -> str:
    c = counted(rows, path, lambda found: {i for i, n in same_object(found, min_inliers, wide, inside=inside).items()
                                           if n >= min_inliers})
    return (f"phone searches with another cover same {c['phone']} (covers in the photo: {c['visible']}); "
            f"same-landmark marks {c['landmarks']}; cover searches with another cover {c['covers']}; Paris marks "
            f"outside its folder {c['outside']}")


def tally_phones(rows, path, min_inliers, wide, inside) -> str:
    """In a library of phone photos: searches with a photo of another cover marked same (by how far
    its number is from the query's), and the right cover's photos marked."""
    other = right = 0
    gaps = {"1-2": 0, "3-8": 0, "9+": 0}
    for kind, q, found in rows:
        num = Path(q).stem
        counts = same_object(found, min_inliers, wide, inside=inside)
        covers = [Path(path[i]) for i, n in counts.items() if n >= min_inliers and Path(path[i]).parent.name in ("canon", "droid")]
        wrong = [p for p in covers if p.stem != num]
        other += bool(wrong)
        right += len(covers) - len(wrong)
        for p in wrong:
            gap = abs(int(p.stem) - int(num))
            gaps["1-2" if gap <= 2 else "3-8" if gap <= 8 else "9+"] += 1
    return (f"searches with another cover's photo same {other} (those photos by the gap in number: {gaps}); "
            f"the right cover's photos marked {right} of {2 * len(rows)}")


def strongest_inside(rows, min_inliers, wide) -> str:
    """The `inside` of each search's strongest match where it fills its image, by kind."""
    by: dict[str, list] = {}
    for kind, q, found in rows:
        deciding = [i for i, e in found.items() if e.inliers >= min_inliers and not e.copy]
        if deciding:
            best = found[min(deciding, key=lambda i: (-found[i].inliers, i))]
            if best.spread >= wide:
                by.setdefault(kind, []).append(best.inside)
    return "; ".join(f"{k}: {len(v)} searches, 5/10/25/50 %: {np.percentile(v, [5, 10, 25, 50]).round(3).tolist()}"
                     for k, v in by.items())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("index", type=Path)
    ap.add_argument("--keep", type=Path, help="keep the searches' evidence here (a second run reads it)")
    ap.add_argument("--phones", action="store_true", help="a library of phone photos (see above)")
    a = ap.parse_args()
    if a.keep and a.keep.is_file():
        rows, path, mi, wide = pickle.loads(a.keep.read_bytes())
    else:
        rows, path, mi, wide = capture(a.index, a.phones)
        if a.keep:
            a.keep.write_bytes(pickle.dumps((rows, path, mi, wide)))
    print(f"{len(rows)} searches; the strongest match's share inside the photo, where it fills its image: "
          + strongest_inside(rows, mi, wide))
    count = tally_phones if a.phones else tally
    print("rule off:                 " + count(rows, path, mi, 0.0, 0.0))
    for bar in (0.0, 0.5, 0.7, 0.8, 0.85, 0.9, 0.92, 0.95, 0.98):
        print(f"strongest inside >= {bar:4}: " + count(rows, path, mi, wide, bar))


if __name__ == "__main__":
    main()
