"""Searching with a photo that is itself indexed (the page's "search with this photo", `search`
of a file in the library): each cover and each Paris photo of a mixed library searched with
itself, through `Index.search` as the CLI's. Counts the other photos marked *same*: for a cover
every other cover is a false mark; for a Paris photo named after its landmark
(`paris_<landmark>_<n>.jpg`) another photo of that landmark is a true one, of another landmark
a false one; the Paris subset's web photos (no landmark in the name) are counted apart.

    .venv/bin/python bench/indexed_query.py /var/tmp/mixed10k.lsx [--shared-part 0] [--list]
    .venv/bin/python bench/indexed_query.py /var/tmp/mixed10k.lsx --shares

`--shares`: what tells the photo itself from another photo of its object (`verify.geometry.
COPY_SHARE`): every pair verified in the first stage's top 100 of those searches and of the 400
SMVS phone photos, its inliers as a share of the fewer features of the two; the lowest of the
photos matched with themselves, the highest of every other pair.

The library must hold the covers in a folder named `covers` and the Paris subset in one named
`paris` (as /var/tmp/mixed10k does: docs/BENCHMARKS.md, "Fifth round").
"""
from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from layerseek.index import Index  # noqa: E402


def landmark(path: str) -> str | None:
    m = re.match(r"paris_([a-z]+)_\d+", Path(path).name)
    return m.group(1) if m else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("index", type=Path)
    ap.add_argument("--top", type=int, default=100, help="results looked at per search")
    ap.add_argument("--shared-part", type=float, default=None, help="this run's shared-part bar (0: off)")
    ap.add_argument("--list", action="store_true", help="list each cover's other covers marked same")
    ap.add_argument("--shares", action="store_true", help="the inlier shares of the photo itself and of other pairs")
    args = ap.parse_args()
    if args.shares:
        return shares(args.index)
    with Index.open(args.index) as idx:
        if args.shared_part is not None:  # this run only: the manifest on disk is not changed
            idx.catalog.manifest["verify"]["shared_part"] = args.shared_part
        entries = [e.path for e in idx.catalog.entries()]
        covers = sorted(p for p in entries if Path(p).parent.name == "covers")
        paris = sorted(p for p in entries if Path(p).parent.name == "paris")
        tally = dict.fromkeys(["cover searches", "with another cover same", "other covers same", "paris searches",
                               "with another photo same", "same landmark", "other landmark", "web photo",
                               "not of paris"], 0)
        t0 = time.perf_counter()
        for path in covers + paris:
            others = [h for h in idx.search(path, top=args.top) if h.verified and h.path != path]
            if path in covers:
                tally["cover searches"] += 1
                wrong = [h for h in others if Path(h.path).parent.name == "covers"]
                tally["with another cover same"] += bool(wrong)
                tally["other covers same"] += len(wrong)
                if args.list and wrong:
                    print(f"{Path(path).name}: " + ", ".join(f"{Path(h.path).name} ({h.inliers})" for h in wrong))
                continue
            tally["paris searches"] += 1
            tally["with another photo same"] += bool(others)
            for h in others:
                if Path(h.path).parent.name != "paris":
                    tally["not of paris"] += 1
                elif landmark(path) and landmark(h.path):
                    tally["same landmark" if landmark(path) == landmark(h.path) else "other landmark"] += 1
                else:
                    tally["web photo"] += 1
        took = time.perf_counter() - t0
    print(f"{args.index}: {len(covers) + len(paris)} searches, {took / max(1, len(covers) + len(paris)):.2f} s each")
    for k, v in tally.items():
        print(f"  {k}: {v}")


def shares(path: Path) -> None:
    from layerseek.datasets import shared_data_dir
    from layerseek.verify.features import unpack_features

    with Index.open(path) as idx:
        entries = [e.path for e in idx.catalog.entries()]
        queries = sorted(p for p in entries if Path(p).parent.name in ("covers", "paris"))
        phones = shared_data_dir() / "smvs-dvd-covers"
        queries += [str(p) for ph in ("Canon", "Droid", "E63", "Palm") for p in sorted((phones / ph).glob("*.jpg"))]
        itself, others = [], []
        for q in queries:
            img = idx.query_image(q)
            qf = idx.local_features(img, query=True)
            hits = idx.search_vector(idx.encode_query(img), 100)
            stored = idx.catalog.features(h.id for h in hits)
            feats = [unpack_features(stored[h.id]) if h.id in stored else None for h in hits]
            counts = idx.verifier.scores(qf, feats)
            for h, f, n in zip(hits, feats, counts):
                if f is not None and n >= idx.verifier.min_inliers:
                    (itself if h.path == q else others).append(n / max(1, min(len(qf), len(f))))
    print(f"{len(queries)} searches: the photo itself matched in {len(itself)}, lowest share {min(itself):.3f}; "
          f"{len(others)} other verified pairs, highest share {max(others):.3f}; "
          f"{sum(x >= 0.7 for x in others)} of them at 0.7 or more")


if __name__ == "__main__":
    main()
