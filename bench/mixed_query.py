"""Query time and answers through a real index of a mixed folder: SMVS phone photos searched with
`Index.search` (decoding, the network, SIFT, the store, the word engine, verification, expansion
and diffusion all included), with the word candidates on and off, one warm-up query first.

    .venv/bin/layerseek index MIXED_FOLDER --index /var/tmp/mixed.lsx
    .venv/bin/python bench/mixed_query.py --index /var/tmp/mixed.lsx --photos 10

The folder must hold the 100 SMVS reference covers under their own names (NNN.jpg in a folder
named `covers`); a search is right when that cover comes first.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from layerseek.datasets import shared_data_dir  # noqa: E402
from layerseek.index import Index  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--index", type=Path, required=True)
    ap.add_argument("--photos", type=int, default=10, help="photos per phone (spread over the 100 covers)")
    ap.add_argument("--words", default="100,0", help="word candidates per search, each setting in turn")
    ap.add_argument("--word-filter", default="index",
                    help="word filters to try with each, comma-separated: index (the index's setting) or a number "
                         "(-1: every candidate verified)")
    ap.add_argument("--hubness", default="index",
                    help="first-stage hubness corrections to try with each: index (the index's setting) or k (0: off)")
    args = ap.parse_args()
    smvs = shared_data_dir() / "smvs-dvd-covers"
    step = max(1, 100 // args.photos)
    photos = [smvs / phone / f"{i:03d}.jpg" for phone in ("Canon", "Droid", "E63", "Palm")
              for i in range(1, 101, step)][: 4 * args.photos]
    with Index.open(args.index) as idx:
        print(f"{args.index}: {idx.catalog.count()} images; {len(photos)} phone photos")
        idx.search(photos[0], top=10)  # warm-up: the network, the word engine and the graph loaded
        filters = [None if f == "index" else float(f) for f in args.word_filter.split(",")]
        hubs = [None if h == "index" else int(h) for h in args.hubness.split(",")]
        for words, wf, hub in ((int(w), f, h) for w in args.words.split(",") for f in filters for h in hubs):
            times, right = [], 0
            for p in photos:
                t0 = time.perf_counter()
                hits = idx.search(p, top=10, words=words, word_filter=wf, hubness=hub)
                times.append(time.perf_counter() - t0)
                right += bool(hits) and Path(hits[0].path).name == p.name and Path(hits[0].path).parent.name == "covers"
            t = np.array(times)
            print(f"  word candidates {words}, word filter {'index' if wf is None else format(wf, 'g')}, hubness "
                  f"{'index' if hub is None else hub}: right cover first {right} / {len(photos)}; query p50 "
                  f"{np.median(t):.2f} s, p90 {np.percentile(t, 90):.2f} s, max {t.max():.2f} s", flush=True)


if __name__ == "__main__":
    main()
