"""What the word engine costs per image: assigning 1000 RootSIFT descriptors to the shipped 20,000
words (exact scan against HNSW at several search breadths, and an inverted file), encoding one image at a time or a
batch, and the bytes its inverted file keeps per image.

    .venv/bin/python bench/word_encode.py --images 40
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from layerseek.datasets import shared_data_dir  # noqa: E402
from layerseek.images import load_image  # noqa: E402
from layerseek.verify.features import rootsift, sift_features  # noqa: E402
from layerseek.verify.words import WordsEngine, shipped  # noqa: E402


def timed(fn, n: int = 5) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return 1000 * (time.perf_counter() - t) / n


def main() -> None:
    import faiss

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=40)
    args = ap.parse_args()
    w = shipped()
    paths = sorted((shared_data_dir() / "smvs-dvd-covers" / "Reference").glob("*.jpg"))[:args.images]
    feats = [sift_features(load_image(p, max_side=640)) for p in paths]
    x = rootsift(feats[0].desc)
    exact = faiss.IndexFlatIP(128)
    exact.add(w.vocabulary_.centroids_)
    truth = exact.search(x, 1)[1][:, 0]
    print(f"{len(x)} descriptors of one cover, {w.k} words, {faiss.omp_get_max_threads()} threads:")
    print(f"  exact scan: {timed(lambda: exact.search(x, 1)):.0f} ms")
    for ef in (16, 32, 64):
        h = faiss.IndexHNSWFlat(128, 32)
        h.add(w.vocabulary_.centroids_)
        h.hnsw.efSearch = ef
        agree = float(np.mean(h.search(x, 1)[1][:, 0] == truth))
        print(f"  HNSW efSearch {ef}: {timed(lambda: h.search(x, 1)):.0f} ms, {100 * agree:.1f} % the exact word")
    # an inverted file over the words instead (a coarse quantiser, then the words of the nearest lists)
    for nlist, nprobe in ((256, 16), (256, 32), (512, 32)):
        ivf = faiss.IndexIVFFlat(faiss.IndexFlatL2(128), 128, nlist)
        ivf.train(w.vocabulary_.centroids_)
        ivf.add(w.vocabulary_.centroids_)
        ivf.nprobe = nprobe
        agree = float(np.mean(ivf.search(x, 1)[1][:, 0] == truth))
        print(f"  IVF {nlist} lists, {nprobe} probed: {timed(lambda: ivf.search(x, 1)):.0f} ms, "
              f"{100 * agree:.1f} % the exact word")
    t = time.perf_counter()
    for f in feats:
        w.encode(f)
    one = 1000 * (time.perf_counter() - t) / len(feats)
    t = time.perf_counter()
    codes = w.encode_many(feats)
    many = 1000 * (time.perf_counter() - t) / len(feats)
    print(f"encoding {len(feats)} covers: {one:.0f} ms per image one at a time, {many:.0f} ms in one batch")
    engine = WordsEngine(w)
    for i, c in enumerate(codes):
        engine.add(i, c)
    with tempfile.TemporaryDirectory() as d:
        engine.save(d)
        files = {p.name: p.stat().st_size for p in (Path(d) / "invfile").iterdir()}
    per_image = sum(v for k, v in files.items() if k.endswith(".npy")) / len(feats)
    print(f"saved: {per_image:.0f} bytes per image in the lists, plus {sum(files.values()) - per_image * len(feats):.0f} "
          f"bytes of tables ({', '.join(f'{k} {v}' for k, v in sorted(files.items()))})")


if __name__ == "__main__":
    main()
