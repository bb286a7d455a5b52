"""The default pipeline in a mixed library: the shared collections in one database (the SMVS
covers, the Paris subset, Corel-1k) plus N real distractor photos, searched with the SMVS phone
photos and the Paris queries as an index searches them (`eval.runner.evaluate_index_rule`: R-MAC
of MobileNetV2, the first 100 verified, 1 round of verified QE, the diffusion from the verified
over a 15-NN graph, fundamental matrices at 20 inliers), with and without the word candidates.

    .venv/bin/python bench/mixed_library.py --distractors /path/to/distractors --n 0,2000 --words 0,100

Reports per kind: SMVS R@1 per phone and mAP; Paris mAP Easy / Medium / Hard; the time per
query of the search after extraction (`bench/word_candidates.py` gives each candidate source's
recall before verification). The distractors are the first N of the folder's photos in a fixed shuffled order
(`../shared/tools/distractors.py` assembles them; keep them outside the repository). CNN
descriptors and SIFT features are cached as for `eval`, so a rerun only re-scores. Past
`diffusion.FULL_GRAPH_MAX` images each query's diffusion runs over the graph of its 1000 best, as
an index's does.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from layerseek.backbones.weights import cache_dir  # noqa: E402
from layerseek.datasets import Dataset, distractor_photos, get_dataset  # noqa: E402
from layerseek.describe import describe_dataset  # noqa: E402
from layerseek.eval.runner import evaluate_index_rule, evaluate_rankings, word_features, words_engine  # noqa: E402
from layerseek.methods import make_method  # noqa: E402
from layerseek.verify.diffusion import FULL_GRAPH_MAX, SHORTLIST, settings  # noqa: E402
from layerseek.verify.geometry import DEFAULT_FUNDAMENTAL, Verifier  # noqa: E402
from layerseek.verify.pipeline import dataset_features  # noqa: E402


def shifted(q, by: int):
    return replace(q, positives=[i + by for i in q.positives], junk=[i + by for i in q.junk],
                   hard=[i + by for i in q.hard], db_index=None if q.db_index is None else q.db_index + by)


def mixed(kinds: list[Dataset], extra: list[Path]) -> tuple[list[Path], list[Dataset]]:
    """One database of every kind's images and the extra photos; each kind's queries re-pointed at it."""
    database, out = [], []
    for ds in kinds:
        out.append(Dataset(ds.name, ds.protocol, [], [shifted(q, len(database)) for q in ds.queries],
                           rotations=ds.rotations))
        database += ds.database
    database += extra
    for ds in out:
        ds.database = database
    return database, out


def queried_mixed(kinds: list[Dataset], extra: list[Path], queries: str) -> tuple[list[Path], list[Dataset], Dataset]:
    """`mixed`, the kinds named in `queries` (comma-separated) that have queries, and one dataset
    of the database with all their queries (what is described and featured at once)."""
    database, sets = mixed(kinds, extra)
    queried = [ds for ds in sets if ds.queries and ds.name in queries.split(",")]
    return database, queried, Dataset("mixed", "none", database, [q for ds in queried for q in ds.queries])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--distractors", default=None)
    ap.add_argument("--n", default="0")
    ap.add_argument("--words", default="0,100", help="word candidates verified beside the shortlist (0: off)")
    ap.add_argument("--shortlist", type=int, default=100)
    ap.add_argument("--geometry", default="descriptors",
                    help="what verification matches: descriptors (SIFT ratio test), words (shared word and HE "
                         "signature, `geometry.word_matches`), or both, comma-separated")
    ap.add_argument("--hamming", default="20", help="word geometry: Hamming thresholds to try, comma-separated")
    ap.add_argument("--filter", default="",
                    help="cheap filters to try: word-engine scores at or below which a candidate is not verified, "
                         "comma-separated (empty: none)")
    ap.add_argument("--skip-unfiltered", action="store_true",
                    help="run only the filters given (without it, every setting also runs with no filter)")
    ap.add_argument("--count-filter", default="",
                    help="cheap filters to try: candidates with fewer HE matches of the query's features than this "
                         "are not verified, comma-separated (empty: none)")
    ap.add_argument("--hubness", default="0",
                    help="first-stage hubness correction to try: 0 (cosine) or k (CSLS over each image's k nearest), "
                         "comma-separated")
    ap.add_argument("--ma", type=int, default=5, help="word geometry: words per query feature")
    ap.add_argument("--kinds", default="smvs,rparis6k-subset,corel1k", help="the collections in the database")
    ap.add_argument("--queries", default="smvs,rparis6k-subset", help="the collections whose queries are searched")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--max-side", type=int, default=None, help="the network's input side (default: the method's, 1024)")
    args = ap.parse_args()
    kinds = [get_dataset(k) for k in args.kinds.split(",")]
    method = make_method("rmac", backbone="mobilenet_v2", max_side=args.max_side)
    rows = []
    for n in (int(x) for x in args.n.split(",")):
        database, queried, whole = queried_mixed(kinds, distractor_photos(args.distractors, n), args.queries)
        t0 = time.perf_counter()
        db, qs, err = describe_dataset(whole, method.backbone, method.layers, method.max_side, None, None,
                                       [method.pooling])
        fdb, fqs, ferr = dataset_features(whole, cache_dir() / "features")
        t_describe = time.perf_counter() - t0
        t0 = time.perf_counter()
        engine = words_engine(fdb) if any(int(w) for w in args.words.split(",")) else None
        t_words = time.perf_counter() - t0
        geometries = []  # (label, database features, query features, verifier)
        for g in args.geometry.split(","):
            if g == "descriptors":
                geometries.append(("descriptors", fdb, fqs, Verifier(fundamental=DEFAULT_FUNDAMENTAL)))
            else:
                wdb, wqs = word_features(fdb), word_features(fqs, args.ma)
                for h in (int(x) for x in args.hamming.split(",")):
                    geometries.append((f"words h{h} ma{args.ma}", wdb, wqs,
                                       Verifier(fundamental=DEFAULT_FUNDAMENTAL, hamming=h)))
        print(f"{len(database)} images ({' + '.join(f'{len(k.database)} {k.name}' for k in kinds)} + {n} distractors), "
              f"{len(whole.queries)} queries; {len(err) + len(ferr)} unreadable; described in {t_describe:.0f} s, "
              f"word engine in {t_words:.0f} s", flush=True)
        truncate = SHORTLIST if len(database) > FULL_GRAPH_MAX else None
        filters = ([] if args.skip_unfiltered else [(None, None)]) + ([(float(t), None) for t in args.filter.split(",") if t]
                   + [(None, int(c)) for c in args.count_filter.split(",") if c])
        for (label, gdb, gqs, verifier), words, (wf, cf), hub in ((g, int(w), t, int(h)) for g in geometries
                                                                  for w in args.words.split(",") for t in filters
                                                                  for h in args.hubness.split(",")):
            at = 0
            for ds in queried:
                q_vecs, q_feats = qs[at:at + len(ds.queries)], gqs[at:at + len(ds.queries)]
                at += len(ds.queries)
                res = evaluate_index_rule(ds, method, db, q_vecs, gdb, q_feats, verifier, args.shortlist, 1,
                                          settings(k=15), truncate=truncate, words=words, engine=engine,
                                          word_filter=wf, count_filter=cf, hubness=hub)
                row = {"n": n, "images": len(database), "kind": ds.name, "words": words, "geometry": label, "hubness": hub,
                       "word_filter": wf, "count_filter": cf, "skipped": res["_skipped"],
                       "seconds_per_query": res["_verify_seconds"],
                       **{k: v for k, v in res.items() if not k.startswith("_")}}
                line = (f"  N={n} words={words} {label}" + (f" filter>{wf:g}" if wf is not None else "")
                        + (f" matches>={cf}" if cf is not None else "") + (f" csls{hub}" if hub else "")
                        + f" {ds.name}: ")
                if ds.protocol == "smvs":
                    ranks = dict(res["_ranks"]) if "_ranks" in res else None
                    line += f"R@1 {100 * res['R@1']:.1f} mAP {100 * res['mAP']:.1f}"
                    if ranks is not None:
                        for phone in sorted({q.path.parent.name for q in ds.queries}):
                            sub = {qi: r for qi, r in ranks.items() if ds.queries[qi].path.parent.name == phone}
                            pr = evaluate_rankings(ds, sub)
                            row[phone] = pr["R@1"]
                            line += f"  {phone} {100 * pr['R@1']:.1f}"
                else:
                    line += "  ".join(f"{k} {100 * v:.1f}" for k, v in res.items() if k.startswith("mAP"))
                line += f"  ({res['_verify_seconds']:.2f} s/query, {100 * res['_skipped']:.0f} % of candidates unverified)"
                print(line, flush=True)
                rows.append(row)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
