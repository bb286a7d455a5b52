"""Recall of the candidate sources before verification, on a shared collection mixed with N real
distractor photos: where the right image ranks in the CNN's ranking (the default pipeline's first
stage, R-MAC of MobileNetV2), in the word engine's (BoW + HE over the stored RootSIFT,
`verify.words`) and in their union.

    .venv/bin/python bench/word_candidates.py --dataset smvs --distractors /path/to/distractors --n 0,2000,10000
    .venv/bin/python bench/word_candidates.py --dataset rparis6k-subset --distractors DIR --n 10000 --dt 20,24,28
    .venv/bin/python bench/word_candidates.py --dataset smvs,rparis6k-subset,corel1k --distractors DIR --n 25000

With several collections, one mixed database of them all (as bench/mixed_library.py builds it),
searched with the queries of `--queries`.

SMVS: the share of the 400 phone photos whose cover is in the top K. Revisited Paris: the share of
each query's positives (Medium: easy + hard) in the top K, averaged over the queries. The
distractors are the first N of DIR's photos in a fixed shuffled order (`../shared/tools/distractors.py`
assembles them). Features and descriptors are cached as for `eval`.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from mixed_library import mixed  # noqa: E402

from layerseek.backbones import get_spec  # noqa: E402
from layerseek.backbones.weights import cache_dir  # noqa: E402
from layerseek.datasets import Dataset, distractor_photos, get_dataset  # noqa: E402
from layerseek.describe import describe_dataset  # noqa: E402
from layerseek.eval.metrics import revisited_sets  # noqa: E402
from layerseek.eval.runner import evaluate_global  # noqa: E402
from layerseek.globaldesc import GlobalConfig  # noqa: E402
from layerseek.verify.pipeline import dataset_features  # noqa: E402
from layerseek.verify.words import WordsEngine, WordsParams, shipped  # noqa: E402

KS = (10, 25, 50, 100, 200, 400)


def wanted(ds: Dataset, qi: int) -> set[int]:
    q = ds.queries[qi]
    if ds.protocol == "revisited":
        return set(revisited_sets(q.positives, q.hard, q.junk, "medium")[0])
    return set(q.positives)


def recall(rankings: dict[int, list[int]], ds: Dataset, k: int) -> float:
    """Mean over queries of the share of their positives in the first k."""
    got = []
    for qi, order in rankings.items():
        pos = wanted(ds, qi)
        if pos:
            got.append(len(pos & set(order[:k])) / len(pos))
    return 100 * float(np.mean(got)) if got else float("nan")


def union(a: list[int], b: list[int], k: int) -> list[int]:
    """The first k of each, a's first (what a search verifies: the CNN's shortlist and the words')."""
    return list(dict.fromkeys(a[:k] + b[:k]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="smvs")
    ap.add_argument("--distractors", default=None)
    ap.add_argument("--n", default="0")
    ap.add_argument("--dt", default=str(WordsParams.dt), help="Hamming thresholds to try")
    ap.add_argument("--burst", default="1", help="0, 1 or 0,1")
    ap.add_argument("--ma", default="1")
    ap.add_argument("--cnn", default="rmac:mobilenet_v2", help="POOLING:BACKBONE of the first stage; none: off")
    ap.add_argument("--queries", default="smvs,rparis6k-subset",
                    help="with several --dataset (one mixed database): the collections whose queries are searched")
    args = ap.parse_args()
    kinds = [get_dataset(k) for k in args.dataset.split(",")]
    words = shipped()
    for n in (int(x) for x in args.n.split(",")):
        extra = distractor_photos(args.distractors, n)
        if len(kinds) == 1:
            sets = [Dataset(kinds[0].name, kinds[0].protocol, list(kinds[0].database) + extra, kinds[0].queries)]
        else:  # one database of every kind, as bench/mixed_library.py builds it
            _, sets = mixed(kinds, extra)
            sets = [d for d in sets if d.queries and d.name in args.queries.split(",")]
        ds = Dataset("+".join(d.name for d in sets), "none", sets[0].database, [q for d in sets for q in d.queries])
        owner = [(d, qi) for d in sets for qi in range(len(d.queries))]  # each query's set and index there
        t0 = time.perf_counter()
        db_f, q_f, errors = dataset_features(ds, cache_dir() / "features")
        t_feat = time.perf_counter() - t0
        cnn = {}
        if args.cnn != "none":
            pooling, backbone = args.cnn.split(":")[:2]
            layers = get_spec(backbone).default_layers
            db, qs, _ = describe_dataset(ds, backbone, layers, 1024, None, None, [pooling])
            res = evaluate_global(ds, GlobalConfig(pooling, layers), db, qs)
            cnn = {qi: list(r) for qi, r in res["_ranks"]}
        t0 = time.perf_counter()
        have = [i for i, f in enumerate(db_f) if f is not None]
        db_codes = [None] * len(db_f)
        for at in range(0, len(have), 256):
            part = have[at:at + 256]
            for i, code in zip(part, words.encode_many([db_f[i] for i in part], 1)):
                db_codes[i] = code
        t_enc = (time.perf_counter() - t0) / max(1, len(db_f))
        print(f"{ds.name} + {n} distractors: {len(ds.database)} images, {len(ds.queries)} queries, "
              f"{len(errors)} unreadable; features {t_feat:.0f} s, words {1000 * t_enc:.1f} ms/image")

        def per_set(rankings: dict[int, list[int]], k: int, d: Dataset) -> float:
            return recall({owner[qi][1]: r for qi, r in rankings.items() if owner[qi][0] is d}, d, k)

        for d in sets:
            if cnn:
                print(f"  {d.name} CNN       " + "  ".join(f"R@{k} {per_set(cnn, k, d):5.1f}" for k in KS))
        for burst in (bool(int(b)) for b in args.burst.split(",")):
            for dt in (int(d) for d in args.dt.split(",")):
                for ma in (int(m) for m in args.ma.split(",")):
                    eng = WordsEngine(words, WordsParams(dt=dt, burst=burst, ma=ma))
                    for i, c in enumerate(db_codes):
                        if c is not None:
                            eng.add(i, c)
                    t0 = time.perf_counter()
                    ranks = {qi: [i for i, _ in eng.search(words.encode(f, ma), max(KS))]
                             for qi, f in enumerate(q_f) if f is not None}
                    ms = 1000 * (time.perf_counter() - t0) / max(1, len(ranks))
                    for d in sets:
                        label = f"  {d.name} words dt={dt} burst={int(burst)} ma={ma} ({ms:.0f} ms/query)"
                        print(label + "\n            " + "  ".join(f"R@{k} {per_set(ranks, k, d):5.1f}" for k in KS))
                        if cnn:
                            line = []
                            for k in KS:
                                both = {qi: union(cnn.get(qi, []), ranks[qi], k) for qi in ranks}
                                line.append(f"R@{k}+{k} {per_set(both, 2 * k, d):5.1f}")
                            print("    union   " + "  ".join(line))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
