"""MOF inverted files at 1k / 10k / 100k images: time to add, memory per image, query latency.

Synthetic encoded images stand in for real ones at the large sizes: each image has `--windows`
descriptors per layer (468 is a 1024 x 768 photo) with one word each; each query has as many
descriptors with `--ma` words each, and random 128-bit signatures. Words are drawn either uniformly
over the vocabulary (the best case: every list the same length) or from a Zipf law (`--zipf`),
closer to real descriptors, where a few words hold many entries.

    python bench/mof_search.py --sizes 1000,10000,100000 --words 20000 --layers 3
"""
from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from layerseek.local.invfile import InvertedFile
from layerseek.local.mof import MOFEngine, MOFModel, MOFParams


def draw_words(rng, n, k, zipf):
    if zipf:
        return ((rng.zipf(zipf, n) - 1) % k).astype(np.int32)
    return rng.integers(0, k, n, dtype=np.int32)


def engine_over(files):
    """A MOFEngine around these inverted files (its model is only needed to encode images)."""
    params = MOFParams(layers=tuple(str(j) for j in range(len(files))), words=files[0].k)
    engine = MOFEngine.__new__(MOFEngine)
    engine.model = MOFModel(params)
    engine.files = {str(j): inv for j, inv in enumerate(files)}
    return engine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--words", type=int, default=20000)
    ap.add_argument("--windows", type=int, default=468)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--ma", type=int, default=3)
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--zipf", type=float, default=0.0, help="Zipf exponent for the words (0: uniform)")
    ap.add_argument("--he", type=int, default=1)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"| images | layers | words | distribution | add, s | in-memory bytes/image | query p50, ms | query p99, ms |")
    print("|---|---|---|---|---|---|---|---|")
    for n in (int(s) for s in args.sizes.split(",")):
        files = [InvertedFile(args.words, 16) for _ in range(args.layers)]
        t0 = time.perf_counter()
        for inv in files:
            for i in range(n):
                inv.add(i, draw_words(rng, args.windows, args.words, args.zipf)[:, None],
                        rng.integers(0, 256, (args.windows, 1, 16), dtype=np.uint8))
            inv._settle()
        t_add = time.perf_counter() - t0
        mem = sum(inv.nbytes_used() for inv in files)
        engine = engine_over(files)
        queries = [[(draw_words(rng, args.windows * args.ma, args.words, args.zipf).reshape(-1, args.ma),
                     rng.integers(0, 256, (args.windows, args.ma, 16), dtype=np.uint8)) for _ in files]
                   for _ in range(args.queries)]
        times = []
        for q in queries:
            t0 = time.perf_counter()
            engine.search({str(j): (w, c) for j, (w, c) in enumerate(q)}, top=100, he=bool(args.he))
            times.append(time.perf_counter() - t0)
        dist = f"Zipf {args.zipf}" if args.zipf else "uniform"
        print(f"| {n:,} | {args.layers} | {args.words} | {dist} | {t_add:.1f} | {mem / n:,.0f} | "
              f"{1000 * np.percentile(times, 50):.0f} | {1000 * np.percentile(times, 99):.0f} |", flush=True)
        del files, engine
    print(f"(peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB; HE {'on' if args.he else 'off'}, "
          f"{args.windows} descriptors per image and layer, MA {args.ma} on the query side)")


if __name__ == "__main__":
    main()
