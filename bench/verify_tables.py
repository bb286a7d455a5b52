"""Geometric verification on the shared collections: each pipeline's metrics, with the inlier
threshold, ratio and shortlist swept, and the time per query of the verification stage.

    .venv/bin/python bench/verify_tables.py --dataset smvs --first rmac:mobilenet_v2 --shortlist 100
    .venv/bin/python bench/verify_tables.py --dataset rparis6k-subset --first local --shortlist 10
    .venv/bin/python bench/verify_tables.py --dataset smvs --first rmac:mobilenet_v2 --min-inliers 8,10,12,15,20,25

`--first` is the first stage: POOLING:BACKBONE[:LAYERS] (a global descriptor, max side 1024,
descriptors cached as for `eval`), `local` (RootSIFT votes over all database descriptors) or
`none` (the database order: verification alone decides). Inlier counts are computed once per
(ratio, threshold) and re-used for every --min-inliers. With --per-phone (SMVS), the metrics are
also given per camera (the query folder). With --expand R (a global first stage, no whitening),
each query is also run as an index runs it with R rounds of verified query expansion, and with
--diffusion K,... also with the diffusion from the verified images over a K-NN graph
(`eval.runner.evaluate_index_rule` on the fused vectors of `methods.make_method`).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from layerseek.backbones import get_spec  # noqa: E402
from layerseek.backbones.weights import cache_dir  # noqa: E402
from layerseek.datasets import Dataset, get_dataset  # noqa: E402
from layerseek.describe import describe_dataset  # noqa: E402
from layerseek.eval.runner import evaluate_global, evaluate_index_rule, evaluate_rankings  # noqa: E402
from layerseek.globaldesc import GlobalConfig  # noqa: E402
from layerseek.verify.geometry import Verifier, verified_order  # noqa: E402
from layerseek.methods import make_method  # noqa: E402
from layerseek.verify.diffusion import DEFAULT_ALPHA, DEFAULT_GAMMA, settings  # noqa: E402
from layerseek.verify.pipeline import VoteIndex, dataset_features, verify_rankings  # noqa: E402


def first_stage(ds: Dataset, spec: str, q_feats, db_feats, whiten_on: str | None) -> dict[int, list[int]]:
    if spec == "none":
        return {qi: list(range(len(ds.database))) for qi in range(len(ds.queries))}
    if spec == "local":
        votes = VoteIndex(db_feats)
        return {qi: votes.ranking(f) for qi, f in enumerate(q_feats) if f is not None}
    pooling, backbone, *layers = spec.split(":")
    layer_list = tuple(layers[0].split(",")) if layers else get_spec(backbone).default_layers
    db, qs, _ = describe_dataset(ds, backbone, layer_list, 1024, None, None, [pooling])
    wv = None
    if whiten_on:
        wdb, _, _ = describe_dataset(get_dataset(whiten_on), backbone, layer_list, 1024, None, None, [pooling], queries=False)
        wv = wdb
    res = evaluate_global(ds, GlobalConfig(pooling, layer_list), db, qs, wv)
    return {qi: list(ranking) for qi, ranking in res["_ranks"]}  # the first 1000: enough for any shortlist


def expanded(ds: Dataset, args, q_feats, db_feats, verifier: Verifier, shortlist: int, diffusion: int = 0,
             truncate: int = 0) -> dict:
    """The metrics of the index's rule per query (`eval.runner.evaluate_index_rule`: verification,
    `--expand` rounds of verified QE, and with `diffusion` > 0 the diffusion from the verified
    images over a k-NN graph of the database, or with `truncate` T of the query's T best) on the
    fused vectors of the first stage."""
    pooling, backbone, *layers = args.first.split(":")
    method = make_method(pooling, backbone=backbone, **({"layers": tuple(layers[0].split(","))} if layers else {}))
    db, qs, _ = describe_dataset(ds, backbone, method.layers, 1024, None, None, [pooling])
    rule = settings(k=diffusion) if diffusion else None
    return evaluate_index_rule(ds, method, db, qs, db_feats, q_feats, verifier, shortlist, args.expand, rule,
                               truncate=truncate or None)


def query_seeded(ds: Dataset, args, k: int, kq: int = 10) -> dict:
    """Diffusion as Iscen et al. seed it, with no verification: the query's kq nearest database
    vectors, weighted s^gamma, spread over the k-NN graph; the ranking by the diffused score."""
    import numpy as np

    from layerseek.verify.diffusion import KnnGraph, diffuse

    pooling, backbone, *layers = args.first.split(":")
    method = make_method(pooling, backbone=backbone, **({"layers": tuple(layers[0].split(","))} if layers else {}))
    db, qs, _ = describe_dataset(ds, backbone, method.layers, 1024, None, None, [pooling])

    def fused(vecs):
        return method.encode_pooled([np.stack([v[f"{pooling}/{layer}"] for v in vecs]) for layer in method.layers])

    D, Q = fused(db), fused(qs)
    S = KnnGraph(k).fit(np.arange(len(D)), D).affinity(DEFAULT_GAMMA)
    out = {}
    for qi, q in enumerate(Q):
        s = D @ q
        y = np.zeros(len(D))
        top = np.argsort(-s, kind="stable")[:kq]
        y[top] = np.maximum(s[top], 0) ** DEFAULT_GAMMA
        f = diffuse(S, y, DEFAULT_ALPHA)
        out[qi] = [int(j) for j in np.lexsort((np.arange(len(D)), -f))]
    return evaluate_rankings(ds, out)


def fmt(res: dict, protocol: str) -> str:
    if protocol == "revisited":
        return " / ".join(f"{100 * res[k]:.1f}" for k in ("mAP_easy", "mAP_medium", "mAP_hard"))
    return " / ".join(f"{100 * res[k]:.1f}" for k in ("R@1", "R@5", "mAP"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="smvs")
    ap.add_argument("--first", default="rmac:mobilenet_v2")
    ap.add_argument("--whiten-on", default=None)
    ap.add_argument("--shortlist", default="100")
    ap.add_argument("--min-inliers", default="15")
    ap.add_argument("--threshold", default="0.01", help="RANSAC threshold as a fraction of the longer side")
    ap.add_argument("--ratio", default="0.8")
    ap.add_argument("--fundamental", default="0", help="min inliers of a fundamental matrix that verifies an "
                    "image the homography does not (0: off), comma-separated values")
    ap.add_argument("--spread", default="0", help="min inlier spread of a verified image (Verifier.spread; 0: off), "
                                                  "comma-separated values")
    ap.add_argument("--features", type=int, default=1000)
    ap.add_argument("--side", type=int, default=640)
    ap.add_argument("--kind", default="sift", help="local features: sift or orb")
    ap.add_argument("--per-phone", action="store_true")
    ap.add_argument("--expand", type=int, default=0, help="rounds of verified query expansion (global first stage)")
    ap.add_argument("--diffusion", default="", help="k of the diffusion from verified images, comma-separated "
                                                    "(global first stage, after --expand rounds; 0: off)")
    ap.add_argument("--diffusion-shortlist", default="0", help="diffuse over the graph of each query's T best "
                    "first-stage images only (as an index past diffusion.FULL_GRAPH_MAX does); T, comma-separated "
                    "(0: the graph of the whole database)")
    ap.add_argument("--query-seeded", default="", help="also: diffusion seeded by the query's 10 nearest "
                                                       "neighbours (Iscen et al.), no verification; k, comma-separated")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    ds = get_dataset(args.dataset)
    t0 = time.perf_counter()
    db_feats, q_feats, errors = dataset_features(ds, cache_dir() / "features", None, args.features, args.side,
                                                 args.kind)
    t_feat = time.perf_counter() - t0
    n_feat = [len(f) for f in db_feats if f is not None]
    bytes_per_image = sum(len(f.pack()) for f in db_feats if f is not None) / max(1, len(n_feat))
    print(f"{ds.describe()}; {args.kind} features {args.features} at {args.side} px: {sum(n_feat) / max(1, len(n_feat)):.0f} "
          f"per image, {bytes_per_image:.0f} bytes per image ({t_feat:.0f} s, {len(errors)} failed)")
    first = first_stage(ds, args.first, q_feats, db_feats, args.whiten_on)
    base = evaluate_rankings(ds, first)
    print(f"first stage {args.first}: {fmt(base, ds.protocol)}")
    for k in ([int(x) for x in args.query_seeded.split(",")] if args.query_seeded else []):
        print(f"query-seeded diffusion k {k} (no verification): {fmt(query_seeded(ds, args, k), ds.protocol)}", flush=True)
    rows = []
    for ratio, fm, sp in [(r, f, x) for r in map(float, args.ratio.split(",")) for f in map(int, args.fundamental.split(","))
                          for x in map(float, args.spread.split(","))]:
        for thr in map(float, args.threshold.split(",")):
            for shortlist in map(int, args.shortlist.split(",")):
                t0 = time.perf_counter()
                _, inliers = verify_rankings(first, db_feats, q_feats,
                                             Verifier(ratio, thr, min(map(int, args.min_inliers.split(","))), fm, sp),
                                             shortlist)
                per_q = (time.perf_counter() - t0) / max(1, len(first))
                for m in map(int, args.min_inliers.split(",")):
                    new = {qi: verified_order(order[:shortlist], inliers[qi], m) + order[shortlist:]
                           for qi, order in first.items()}
                    res = evaluate_rankings(ds, new)
                    row = {"ratio": ratio, "threshold": thr, "shortlist": shortlist, "min_inliers": m, "fundamental": fm,
                           "spread": sp,
                           "seconds_per_query": per_q, **{k: v for k, v in res.items() if not k.startswith("_")}}
                    line = (f"ratio {ratio} thr {thr} shortlist {shortlist} min {m}" + (f" F {fm}" if fm else "")
                            + (f" spread {sp:g}" if sp else "")
                            + f": {fmt(res, ds.protocol)}  ({per_q:.2f} s/q)")
                    if args.per_phone and ds.protocol == "smvs":
                        for phone in sorted({q.path.parent.name for q in ds.queries}):
                            sub = {qi: r for qi, r in new.items() if ds.queries[qi].path.parent.name == phone}
                            pr = evaluate_rankings(ds, sub)
                            row[phone] = {k: v for k, v in pr.items() if not k.startswith("_")}
                            line += f"  {phone} {fmt(pr, ds.protocol)}"
                    print(line, flush=True)
                    rows.append(row)
                    for k, trunc in [(k, t) for k in ([int(x) for x in args.diffusion.split(",")] if args.diffusion
                                                      else ([0] if args.expand else []))
                                     for t in (map(int, args.diffusion_shortlist.split(",")) if k else [0])]:
                        res = expanded(ds, args, q_feats, db_feats, Verifier(ratio, thr, m, fm, sp), shortlist, k,
                                       trunc)
                        extra = {k2: v for k2, v in res.items() if not k2.startswith("_")}
                        line = (f"  + {args.expand} round(s) of verified QE" + (f", diffusion k {k}" if k else "")
                                + (f" over each query's {trunc} best" if trunc else "")
                                + f": {fmt(res, ds.protocol)}  ({res['_verify_seconds']:.2f} s/q)")
                        if args.per_phone and ds.protocol == "smvs":
                            for phone in sorted({q.path.parent.name for q in ds.queries}):
                                pr = evaluate_rankings(ds, {qi: r for qi, (r) in dict(res["_ranks"]).items()
                                                            if ds.queries[qi].path.parent.name == phone})
                                line += f"  {phone} {fmt(pr, ds.protocol)}"
                        rows.append({**row, "expand": args.expand, "diffusion": k, "diffusion_shortlist": trunc, **extra})
                        print(line, flush=True)
    if args.json:
        args.json.write_text(json.dumps({"dataset": ds.name, "first": args.first, "first_metrics":
                                         {k: v for k, v in base.items() if not k.startswith("_")},
                                         "features": args.features, "side": args.side,
                                         "bytes_per_image": bytes_per_image, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
