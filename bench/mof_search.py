"""MOF inverted files at 1k / 10k / 100k images: time to add, memory per image, query latency.

Synthetic encoded images stand in for real ones at the large sizes: each image has `--windows`
descriptors per layer (468 is a 1024 x 768 photo) with one word each; each query has as many
descriptors with `--ma` words each, and random 128-bit signatures. Words are drawn either uniformly
over the vocabulary (the best case: every list the same length) or from a Zipf law (`--zipf`),
closer to real descriptors, where a few words hold many entries.

    python bench/mof_search.py --sizes 1000,10000,100000 --words 20000 --layers 3
    python bench/mof_search.py --sizes 100000 --on-disk /var/tmp/mof-bench   # lists memory-mapped

With `--on-disk FOLDER` the inverted files are saved there and read back memory-mapped, as an index
does, and each query is timed twice: cold (every list file evicted from the page cache with
posix_fadvise before the query, so its lists come from the disk) and warm (right after).
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import time
from pathlib import Path

import numpy as np

from layerseek.local.invfile import InvertedFile
from layerseek.local.mof import MOFEngine, MOFModel, MOFParams


def draw_words(rng, n, k, zipf):
    if zipf:
        return ((rng.zipf(zipf, n) - 1) % k).astype(np.int32)
    return rng.integers(0, k, n, dtype=np.int32)


def engine_over(files, burst=False, max_share=1.0):
    """A MOFEngine around these inverted files (its model is only needed to encode images)."""
    params = MOFParams(layers=tuple(str(j) for j in range(len(files))), words=files[0].k, burst=burst,
                       max_share=max_share)
    engine = MOFEngine.__new__(MOFEngine)
    engine.model = MOFModel(params)
    engine.files = {str(j): inv for j, inv in enumerate(files)}
    return engine


def evict(folder: Path) -> None:
    """Drop the folder's files from the page cache (clean pages; no root needed)."""
    for p in folder.rglob("*.npy"):
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


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
    ap.add_argument("--burst", action="store_true", help="intra-image burstiness (MOFParams.burst)")
    ap.add_argument("--max-share", default="1", help="stop-list: skip words more than this share of the images "
                                                      "hold (MOFParams.max_share); several, comma-separated: one "
                                                      "row each, on the same lists")
    ap.add_argument("--on-disk", type=Path, default=None, help="save the lists here and query them memory-mapped")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    tiny = InvertedFile(4, 16)  # the scorer's loops compiled (or read from numba's cache) before timing
    tiny.add(0, np.zeros((1, 1), np.int32), np.zeros((1, 1, 16), np.uint8))
    tiny.add(1, np.ones((1, 1), np.int32), np.zeros((1, 1, 16), np.uint8))  # word 0's idf is not 0
    for he in (None, np.zeros((1, 1, 16), np.uint8)):
        tiny.votes(np.zeros((1, 1), np.int32), he)
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
        shares = [float(x) for x in args.max_share.split(",")]
        engine = engine_over(files, args.burst, shares[0])
        queries = [[(draw_words(rng, args.windows * args.ma, args.words, args.zipf).reshape(-1, args.ma),
                     rng.integers(0, 256, (args.windows, args.ma, 16), dtype=np.uint8)) for _ in files]
                   for _ in range(args.queries)]
        dist = f"Zipf {args.zipf}" if args.zipf else "uniform"
        if args.on_disk:
            folder = args.on_disk / f"n{n}"
            shutil.rmtree(folder, ignore_errors=True)
            t0 = time.perf_counter()
            engine.save(folder)
            t_save = time.perf_counter() - t0
            del files, engine
            def load():
                return engine_over([InvertedFile.load(folder / f"invfile-{j}") for j in range(args.layers)],
                                   args.burst, shares[0])

            rss_before = rss_mib()
            engine = load()
            rss_load = rss_mib() - rss_before
            size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
            cold, warm = [], []
            for q in queries:
                enc = {str(j): (w, c) for j, (w, c) in enumerate(q)}
                # pages mapped by a process are not evicted: open the files afresh after evicting
                del engine
                evict(folder)
                engine = load()
                t0 = time.perf_counter()
                engine.search(enc, top=100, he=bool(args.he))
                cold.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                engine.search(enc, top=100, he=bool(args.he))
                warm.append(time.perf_counter() - t0)
            # ten more images, saved as an index saves after a change: the base is linked, not rewritten
            for j, inv in enumerate(engine.files.values()):
                for i in range(n, n + 10):
                    inv.add(i, draw_words(rng, args.windows, args.words, args.zipf)[:, None],
                            rng.integers(0, 256, (args.windows, 1, 16), dtype=np.uint8))
            t0 = time.perf_counter()
            engine.save(folder.with_name(folder.name + "-next"))
            t_resave = time.perf_counter() - t0
            shutil.rmtree(folder.with_name(folder.name + "-next"))
            print(f"| {n:,} | {dist} | on disk: {size / 2**20:,.0f} MiB, saved in {t_save:.1f} s, "
                  f"again after 10 more images in {t_resave:.2f} s | "
                  f"RSS after load +{rss_load:,.0f} MiB | cold p50 {1000 * np.percentile(cold, 50):.0f} ms, "
                  f"p99 {1000 * np.percentile(cold, 99):.0f} | warm p50 {1000 * np.percentile(warm, 50):.0f} ms, "
                  f"p99 {1000 * np.percentile(warm, 99):.0f} |", flush=True)
            del engine
            continue
        for share in shares:
            engine = engine_over(files, args.burst, share)
            times = []
            for q in queries:
                t0 = time.perf_counter()
                engine.search({str(j): (w, c) for j, (w, c) in enumerate(q)}, top=100, he=bool(args.he))
                times.append(time.perf_counter() - t0)
            label = dist + ("" if share >= 1 else f", stop-list > {share:g}") + (", burstiness" if args.burst else "")
            print(f"| {n:,} | {args.layers} | {args.words} | {label} | {t_add:.1f} | {mem / n:,.0f} | "
                  f"{1000 * np.percentile(times, 50):.0f} | {1000 * np.percentile(times, 99):.0f} |", flush=True)
        del files, engine
    print(f"(peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB; HE {'on' if args.he else 'off'}, "
          f"burstiness {'on' if args.burst else 'off'}, "
          f"{args.windows} descriptors per image and layer, MA {args.ma} on the query side)")


if __name__ == "__main__":
    main()
