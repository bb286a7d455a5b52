"""Hubs in the CNN stage of a mixed library (issue 26, item 2): how often each database image is
among the 10 nearest of the others (k-occurrence N_10, its skewness, the largest hubs), and what
the remedies that need no other collection do to the first stage alone — centring on the index's
own photos, PCA whitening learned on them, and a hubness-aware similarity (CSLS: the cosine less
half each image's mean similarity to its own 10 nearest).

    .venv/bin/python bench/hubness.py --distractors /path/to/distractors --n 0,10000

The database is bench/mixed_library.py's (the SMVS covers, the Paris subset, Corel-1k and the
first N distractor photos), searched by the CNN alone (R-MAC of MobileNetV2, what the default
pipeline shortlists from): SMVS R@1 / R@10 / R@100 (the cover in the first K: what verification
may then see), Paris mAP E / M / H and the share of its Medium positives in the first 100.
Descriptors are cached as for `eval`, so a run after mixed_library.py only scores.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from mixed_library import queried_mixed  # noqa: E402

from layerseek.datasets import distractor_photos, get_dataset  # noqa: E402
from layerseek.describe import describe_dataset  # noqa: E402
from layerseek.eval.metrics import k_occurrence, revisited_sets, skewness  # noqa: E402
from layerseek.eval.runner import evaluate_rankings  # noqa: E402
from layerseek.methods import make_method  # noqa: E402
from layerseek.postprocess import PCAWhitening, centre, csls, neighbourhood_similarity  # noqa: E402
from layerseek.verify.diffusion import top_neighbours  # noqa: E402

K = 10


def remedies(D: np.ndarray, Q: np.ndarray, which: list[str]):
    """(name, database vectors, query vectors, scorer) for each remedy; a scorer maps q x n cosines
    of the transformed vectors to the scores that rank."""
    plain = lambda s, r=None: s  # noqa: E731
    for name in which:
        if name == "none":
            yield name, D, Q, plain
        elif name == "centred":
            m = D.mean(axis=0)
            yield name, centre(D, m).astype(np.float32), centre(Q, m).astype(np.float32), plain
        elif name.startswith("whitened"):  # whitened or whitened-P (power P; 0.5 is full)
            power = float(name.split("-")[1]) if "-" in name else 0.5
            w = PCAWhitening(power=power).fit(D)
            yield name, w.transform(D).astype(np.float32), w.transform(Q).astype(np.float32), plain
        elif name in ("csls", "centred+csls"):
            if name.startswith("centred"):
                m = D.mean(axis=0)
                D, Q = centre(D, m).astype(np.float32), centre(Q, m).astype(np.float32)
            _, sims = top_neighbours(D, D, K, np.arange(len(D)))
            r = neighbourhood_similarity(sims)
            yield name, D, Q, lambda s, r=r: csls(s, r)
        else:
            raise SystemExit(f"unknown remedy {name}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--distractors", default=None)
    ap.add_argument("--n", default="0")
    ap.add_argument("--remedies", default="none,centred,whitened,whitened-0.25,csls,centred+csls")
    ap.add_argument("--kinds", default="smvs,rparis6k-subset,corel1k")
    ap.add_argument("--queries", default="smvs,rparis6k-subset", help="the collections whose queries are searched")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    kinds = [get_dataset(k) for k in args.kinds.split(",")]
    method = make_method("rmac", backbone="mobilenet_v2")
    rows = []
    for n in (int(x) for x in args.n.split(",")):
        database, queried, whole = queried_mixed(kinds, distractor_photos(args.distractors, n), args.queries)
        db, qs, err = describe_dataset(whole, method.backbone, method.layers, method.max_side, None, None,
                                       [method.pooling])
        keep = [i for i, v in enumerate(db) if v is not None]

        def fused(vecs):
            return method.encode_pooled([np.stack([v[f"{method.pooling}/{layer}"] for v in vecs])
                                         for layer in method.layers]).astype(np.float32)

        D = fused([db[i] for i in keep])
        kind_of = np.empty(len(database), object)
        at = 0
        for k in kinds:
            kind_of[at:at + len(k.database)] = k.name
            at += len(k.database)
        kind_of[at:] = "distractors"
        print(f"{len(database)} images ({n} distractors), {len(whole.queries)} queries, {len(err)} unreadable",
              flush=True)
        for name, Dr, Qall, scorer in remedies(D, fused([q for q in qs if q is not None]), args.remedies.split(",")):
            t0 = time.perf_counter()
            nb = np.zeros((len(Dr), K), np.int64)  # each image's K nearest others, as the remedy scores them
            for s in range(0, len(Dr), 2048):
                sc = scorer(Dr[s:s + 2048] @ Dr.T)
                sc[np.arange(len(sc)), np.arange(s, s + len(sc))] = -np.inf
                part = np.argpartition(-sc, K, axis=1)[:, :K]
                nb[s:s + len(sc)] = part
            nk = k_occurrence(nb, len(Dr))
            hubs = np.argsort(-nk)[:3]
            row = {"n": n, "remedy": name, "skewness_N10": skewness(nk), "max_N10": int(nk.max()),
                   "hubs": [[str(database[keep[h]]), int(nk[h])] for h in hubs],
                   "N10_by_kind": {k: float(nk[kind_of[keep] == k].mean()) for k in dict.fromkeys(kind_of)}}
            line = (f"  N={n} {name:>14}: N10 skew {row['skewness_N10']:5.1f}, max {row['max_N10']} "
                    f"({Path(database[keep[hubs[0]]]).name})")
            qat = 0
            for ds in queried:
                Q = Qall[qat:qat + len(ds.queries)]
                qat += len(ds.queries)
                ranks = np.argsort(-scorer(Q @ Dr.T), axis=1, kind="stable")[:, :1000]
                rankings = {qi: [keep[j] for j in r if keep[j] != ds.queries[qi].db_index] for qi, r in enumerate(ranks)}
                res = evaluate_rankings(ds, rankings)
                first = np.bincount([r[0] for r in rankings.values()], minlength=len(database))
                row[f"{ds.name}_top1_hub_share"] = float(first.max() / len(rankings))
                if ds.protocol == "smvs":
                    for k in (1, 10, 100):
                        row[f"{ds.name}_R@{k}"] = float(np.mean([bool(set(ds.queries[qi].positives) & set(r[:k]))
                                                                  for qi, r in rankings.items()]))
                    line += (f" | SMVS R@1 {100 * row['smvs_R@1']:.1f} R@10 {100 * row['smvs_R@10']:.1f} "
                             f"R@100 {100 * row['smvs_R@100']:.1f}")
                else:
                    rec = []
                    for qi, r in rankings.items():
                        q = ds.queries[qi]
                        pos = set(revisited_sets(q.positives, q.hard, q.junk, "medium")[0])
                        if pos:
                            rec.append(len(pos & set(r[:100])) / len(pos))
                    row.update({k: v for k, v in res.items() if k.startswith("mAP")})
                    row[f"{ds.name}_medium_in_100"] = float(np.mean(rec))
                    line += (f" | Paris E/M/H {100 * res['mAP_easy']:.1f} / {100 * res['mAP_medium']:.1f} / "
                             f"{100 * res['mAP_hard']:.1f}, Medium in first 100 {100 * np.mean(rec):.1f}")
                line += f" (1st for {100 * row[f'{ds.name}_top1_hub_share']:.0f} %)"
            print(line + f"  [{time.perf_counter() - t0:.0f} s]", flush=True)
            rows.append(row)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
