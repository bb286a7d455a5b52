"""The eval runner: score a method on a described dataset (`describe.describe_dataset`), compute the
protocol's metrics."""
from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from ..datasets import Dataset
from ..globaldesc import GlobalConfig, fit_whitenings, rank, score
from ..local.train import local_descriptors
from . import metrics as M


def protocol_metrics(ds: Dataset, ranks: np.ndarray, keep_db: list[int]) -> dict[str, float]:
    """Metrics of ds.protocol from q x n' ranks over the database entries `keep_db`, each as the
    protocol's reference code computes it: revisitop (revisited: trapezoid AP, mP@k with its kq
    rule), Oxford `compute_ap` (classic Oxford/Paris) and INRIA's Holidays code (trapezoid AP), N-S
    for UKBench. SMVS and generic ground-truth files report the usual non-interpolated AP as
    `mAP` and the trapezoid value as `mAP_trapezoid`. The query itself never counts as a positive
    (UKBench's N-S, whose definition counts it, excepted)."""
    ranks = [[keep_db[j] for j in row] for row in ranks]
    qs = ds.queries
    if ds.protocol == "revisited":
        return M.revisited_scores(ranks, qs)
    excl = [q.db_index if q.db_index is not None else q.self_index for q in qs]
    positives, junk = [q.positives for q in qs], [q.junk for q in qs]
    out = {}
    if ds.protocol in ("smvs", "map"):
        out["mAP"] = M.mean_ap(ranks, positives, junk, excl, ap=M.noninterpolated_ap)
        out["mAP_trapezoid"] = M.mean_ap(ranks, positives, junk, excl)
    else:
        out["mAP"] = M.mean_ap(ranks, positives, junk, excl)
    if ds.protocol in ("smvs", "map", "oxford"):  # instance search by example: a right image first, in the top k
        has = [(r, q) for r, q in zip(ranks, qs) if set(q.positives) - {q.db_index}]
        for k in (1, 5, 10):
            out[f"R@{k}"] = float(np.mean([M.recall_at_k(r, q.positives, k, q.db_index) for r, q in has])) if has else float("nan")
        out["MRR"] = float(np.mean([M.reciprocal_rank(r, q.positives, q.db_index) for r, q in has])) if has else float("nan")
    elif ds.protocol == "ukbench":
        out["N-S"] = float(np.mean([M.ns_score(r, q.positives) for r, q in zip(ranks, qs)]))
    elif ds.protocol == "category":
        for k in (10, 50):
            out[f"P@{k}"] = float(np.mean([M.precision_at_k(r, q.positives, k, (), q.db_index) for r, q in zip(ranks, qs)]))
    if ds.protocol == "map":
        out["mAP@7"] = float(np.nanmean([M.map_at_k([j for j in r if j != q.db_index], q.positives, 7)
                                         for r, q in zip(ranks, qs)]))
    return out


def per_query(ds: Dataset, ranked: Sequence[tuple[int, Sequence[int]]]) -> list[dict]:
    """Each query's AP under its protocol's rule (revisited: Easy, Medium and Hard) and the
    1-based places of its positives (junk and the query itself removed; revisited: Medium's),
    from `(query index, ranking)` pairs such as an evaluation's "_ranks" (its first 1000)."""
    out = []
    for qi, ranking in ranked:
        q = ds.queries[qi]
        excl = q.db_index if q.db_index is not None else q.self_index
        if ds.protocol == "revisited":
            rec = {}
            for proto in M.REVISITED_PROTOCOLS:
                pos, junk = M.revisited_sets(q.positives, q.hard, q.junk, proto)
                rec[f"ap_{proto}"] = float(M.average_precision(ranking, pos, junk)) if pos else None
            pos, junk = M.revisited_sets(q.positives, q.hard, q.junk, "medium")
        else:
            pos, junk = q.positives, q.junk
            rule = M.noninterpolated_ap if ds.protocol in ("smvs", "map") else M.average_precision
            ap = rule(ranking, pos, junk, excl)
            rec = {"ap": None if np.isnan(ap) else float(ap)}
        wanted = set(pos)
        rec["positives_at"] = [i + 1 for i, j in enumerate(M._clean(ranking, junk, excl)) if j in wanted]
        out.append({"query": str(q.path), **rec})
    return out


PRIMARY = {"revisited": ["mAP_easy", "mAP_medium", "mAP_hard"], "smvs": ["R@1", "R@5", "mAP"], "map": ["mAP", "R@1"],
           "oxford": ["mAP", "R@1"], "holidays": ["mAP"], "ukbench": ["N-S"], "category": ["mAP", "P@10"]}


def evaluate_global(ds: Dataset, cfg: GlobalConfig, db_vecs, q_vecs, whiten_vecs=None) -> dict:
    """Score and measure; images that failed to load are dropped from the database (and their
    queries skipped) and counted."""
    keep_db = [i for i, v in enumerate(db_vecs) if v is not None]
    keep_q = [i for i, v in enumerate(q_vecs) if v is not None]
    remap = {old: new for new, old in enumerate(keep_db)}
    whitenings = fit_whitenings(cfg, [v for v in whiten_vecs if v is not None]) if whiten_vecs else None
    sub = Dataset(ds.name, ds.protocol, [ds.database[i] for i in keep_db], [ds.queries[i] for i in keep_q])
    exclude = [remap.get(q.db_index) if q.db_index is not None else None for q in sub.queries]
    t0 = time.perf_counter()
    sims = score(cfg, [q_vecs[i] for i in keep_q], [db_vecs[i] for i in keep_db], whitenings, exclude)
    ranks = rank(sims)
    t_score = time.perf_counter() - t0
    result = protocol_metrics(sub, ranks, keep_db)
    result["_score_seconds"] = t_score
    # For plots: per kept query (index into ds.queries), its ranking in original database indices.
    result["_ranks"] = [(qi, [keep_db[j] for j in row[:1000]]) for qi, row in zip(keep_q, ranks)]
    result["_failed"] = (len(db_vecs) - len(keep_db), len(q_vecs) - len(keep_q))
    return result


def evaluate_mof(ds: Dataset, model, pooling: str, db_vecs, q_vecs, layers=None, he: bool | None = None,
                 shortlist: dict[int, list[int]] | None = None, rerank: int = 0) -> dict:
    """MOF on a described dataset: the database into inverted files, each query scored (Eqs. 3-8),
    images with no shared word ranked last. `layers` (a subset of the model's) and `he` select
    the configuration without retraining. Two stages: with `shortlist` (query index -> another
    method's ranking, in database indices), MOF re-orders that ranking's first `rerank` images
    and the rest keeps its order."""
    layers = tuple(layers or model.params.layers)
    return evaluate_mof_combos(ds, model, pooling, db_vecs, q_vecs, [layers], he, shortlist, rerank)[layers]


def evaluate_mof_combos(ds: Dataset, model, pooling: str, db_vecs, q_vecs, combos, he: bool | None = None,
                        shortlist: dict[int, list[int]] | None = None, rerank: int = 0) -> dict[tuple, dict]:
    """`evaluate_mof` for several layer combinations at once: each query's per-layer scores are
    computed once and fused (added) per combination."""
    from ..local.mof import MOFEngine, rerank_head

    keep_db = [i for i, v in enumerate(db_vecs) if v is not None]
    keep_q = [i for i, v in enumerate(q_vecs) if v is not None]
    sub = Dataset(ds.name, ds.protocol, [ds.database[i] for i in keep_db], [ds.queries[i] for i in keep_q])
    remap = {old: new for new, old in enumerate(keep_db)}
    engine = MOFEngine(model)
    for new, old in enumerate(keep_db):
        engine.add(new, model.encode(local_descriptors(db_vecs[old], pooling, model.params.layers), db=True))
    combos = [tuple(c) for c in combos]
    ranks: dict[tuple, list] = {c: [] for c in combos}
    t0 = time.perf_counter()
    for qi in keep_q:
        per_layer = engine.layer_scores(model.encode(local_descriptors(q_vecs[qi], pooling, model.params.layers)), he)
        for combo in combos:
            scores: dict[int, float] = {}
            for layer in combo:
                for i, v in per_layer[layer].items():
                    scores[i] = scores.get(i, 0.0) + v
            if shortlist is not None:
                found = rerank_head([remap[j] for j in shortlist[qi] if j in remap], scores, rerank)
            else:
                found = sorted(scores, key=lambda j: (-scores[j], j))
            seen = set(found)
            ranks[combo].append(found + [j for j in range(len(keep_db)) if j not in seen])
    t_score = (time.perf_counter() - t0) / len(combos)
    out = {}
    for combo in combos:
        r = ranks[combo]
        result = protocol_metrics(sub, np.array(r, dtype=np.int64).reshape(len(keep_q), len(keep_db)), keep_db)
        result["_score_seconds"] = t_score
        result["_ranks"] = [(qi, [keep_db[j] for j in row[:1000]]) for qi, row in zip(keep_q, r)]
        result["_failed"] = (len(db_vecs) - len(keep_db), len(q_vecs) - len(keep_q))
        result["_index_bytes"] = engine.nbytes()
        out[combo] = result
    return out


def evaluate_rankings(ds: Dataset, rankings: dict[int, list[int]]) -> dict:
    """The protocol's metrics of given rankings (query index -> database indices, best first; the
    database images a ranking lacks are appended in index order, as ranked last)."""
    n = len(ds.database)
    qis = sorted(rankings)
    rows = []
    for qi in qis:
        r = [int(j) for j in rankings[qi]]
        seen = set(r)
        rows.append(r + [j for j in range(n) if j not in seen])
    sub = Dataset(ds.name, ds.protocol, ds.database, [ds.queries[i] for i in qis])
    result = protocol_metrics(sub, np.array(rows, dtype=np.int64).reshape(len(qis), n), list(range(n)))
    result["_ranks"] = [(qi, row[:1000]) for qi, row in zip(qis, rows)]
    return result


def evaluate_verified(ds: Dataset, first: dict[int, list[int]] | None, db_feats, q_feats, verifier,
                      shortlist: int, threads: int = 2) -> dict:
    """Verification on a described dataset: each query's first-stage ranking (`first`: query index
    -> database indices; None: local features alone, a vote over all database descriptors) with
    its first `shortlist` re-ordered by RANSAC inliers. Adds the seconds per query of the vote and
    the verification ("_verify_seconds") and the inlier counts ("_inliers")."""
    from ..verify.pipeline import VoteIndex, verify_rankings

    t0 = time.perf_counter()
    if first is None:
        votes = VoteIndex(db_feats, verifier.ratio)
        first = {qi: votes.ranking(f) for qi, f in enumerate(q_feats) if f is not None}
    new, inliers = verify_rankings(first, db_feats, q_feats, verifier, shortlist, threads)
    seconds = (time.perf_counter() - t0) / max(1, len(new))
    result = evaluate_rankings(ds, new)
    result["_verify_seconds"] = seconds
    result["_inliers"] = inliers
    return result


def word_features(feats, ma: int = 1):
    """SIFT features (None where an image failed) as `verify.features.WordFeatures` of the
    shipped vocabulary, `ma` words per feature (a stored image has 1)."""
    from ..verify.features import WordFeatures
    from ..verify.words import shipped

    out = [None] * len(feats)
    have = [i for i, f in enumerate(feats) if f is not None]
    for at in range(0, len(have), 256):
        part = have[at:at + 256]
        for i, code in zip(part, shipped().encode_many([feats[i] for i in part], ma)):
            out[i] = WordFeatures.of(feats[i], code)
    return out


def words_engine(db_feats):
    """The word engine (`verify.words`, the shipped vocabulary) of a database's SIFT features (or
    their `word_features`), keyed by database index."""
    from ..verify.features import WordFeatures
    from ..verify.words import WordsEngine, shipped

    engine = WordsEngine(shipped())
    if not all(isinstance(f, WordFeatures) for f in db_feats if f is not None):
        db_feats = word_features(db_feats)
    for i, f in enumerate(db_feats):
        if f is not None:
            engine.add(i, f.nearest())
    return engine


def evaluate_index_rule(ds: Dataset, method, db_vecs, q_vecs, db_feats, q_feats, verifier, shortlist: int,
                        rounds: int = 1, diffusion: dict | None = None, threads: int = 2,
                        truncate: int | None = None, words: int = 0, engine=None,
                        word_filter: float | None = None, count_filter: int | None = None,
                        hubness: int = 0) -> dict:
    """A global method searched as an index searches (`Query.search`): the fused vectors of
    `method` (a `methods.GlobalMethod`, whitening already fitted if any) ranked by inner product,
    the first `shortlist` verified, `rounds` of verified query expansion, then (with `diffusion`,
    {"k", "gamma", "alpha"}) the rest ordered by a diffusion seeded with the verified images over
    the k-NN graph of the database vectors — with `truncate` T, over the graph of the query's T
    best first-stage images only, as an index past `diffusion.FULL_GRAPH_MAX` images does. With
    `words` W, the W best of the word engine over the database's SIFT features (`verify.words`,
    the shipped vocabulary) are verified beside the shortlist, as an index with word candidates
    does (`engine`: a `WordsEngine` of the database already made, keyed by database index).
    With `word_filter` t, a candidate whose word-engine score for the query is t or less is not
    verified at all (counted as 0 inliers): the cheap filter of issue 26, item 3; "_skipped" then
    gives the share of candidates left unverified. With `count_filter` c, likewise a candidate
    with fewer than c HE matches of the query's features (`WordsEngine.match_counts`). With
    `hubness` k, the first stage ranks by CSLS (`postprocess.csls`: the cosine less half each
    database image's mean cosine to its own k nearest), the hubness-aware similarity of issue 26,
    item 2. Failed images are left out as `evaluate_global` does."""
    from concurrent.futures import ThreadPoolExecutor

    from ..verify.diffusion import KnnGraph, shortlist_graph, top_neighbours, verified_diffusion
    from ..verify.features import WordFeatures, query_space
    from ..verify.geometry import QueryVerdicts
    from ..verify.pipeline import verify_and_expand

    keep_db = [i for i, v in enumerate(db_vecs) if v is not None]
    keep_q = [i for i, v in enumerate(q_vecs) if v is not None and q_feats[i] is not None]

    def fused(vecs):
        return method.encode_pooled([np.stack([v[f"{method.pooling}/{layer}"] for v in vecs]) for layer in method.layers])

    D, Q = fused([db_vecs[i] for i in keep_db]), fused([q_vecs[i] for i in keep_q])
    hub_r = 0.0
    if hubness:
        from ..postprocess import neighbourhood_similarity

        hub_r = 0.5 * neighbourhood_similarity(top_neighbours(D, D, hubness, np.arange(len(D)))[1]).astype(np.float32)
    graph = S = None
    if diffusion and not truncate:
        graph = KnnGraph(int(diffusion["k"])).fit(np.arange(len(keep_db)), D)
        S = graph.affinity(float(diffusion["gamma"]))
    skip = {qi: ds.queries[qi].db_index for qi in keep_q}
    row_of = {old: new for new, old in enumerate(keep_db)}
    if (words or word_filter is not None or count_filter is not None) and engine is None:
        engine = words_engine(db_feats)
    tally = {"asked": 0, "skipped": 0}

    def one(item):
        n, qi = item
        qf = q_feats[qi]
        q_space = query_space(qf) if len(qf) else None
        own = row_of.get(skip[qi]) if skip[qi] is not None else None

        def rank(v):
            s = D @ v - hub_r
            if own is not None:
                s[own] = -np.inf  # the query's own entry is not a result
            return [int(j) for j in np.argsort(-s, kind="stable")]

        codes = None if engine is None else qf.nearest() if isinstance(qf, WordFeatures) else engine.words.encode(qf, 1)
        word_score = engine.score_array(codes) if word_filter is not None else None
        counts_of = engine.match_counts(codes) if count_filter is not None else None

        verdicts = QueryVerdicts(verifier)  # the shared-part rule, over every round of this query

        def inliers_of(ids):
            tally["asked"] += len(ids)
            out, found = {}, {}
            for j in ids:
                d = db_feats[keep_db[j]]
                if (word_score is not None and word_score[keep_db[j]] <= word_filter
                        or counts_of is not None and counts_of[keep_db[j]] < count_filter):
                    tally["skipped"] += 1
                    d = None
                out[j] = 0
                if d is not None:
                    found[j] = verifier.evidence(qf, d, q_space)[0]
            out.update(verdicts.add(found))
            return out

        extra = [] if not words else [row_of[i] for i, _ in engine.search(codes, words + 1)
                                      if i in row_of and row_of[i] != own][:words]
        order, counts = verify_and_expand(Q[n], rank, inliers_of, lambda ids: D[ids], method.expand, shortlist,
                                          verifier.min_inliers, rounds, extra)
        if diffusion:
            g, aff = graph, S
            if truncate:  # the graph of this query's shortlist alone (`order` here ranks everything;
                # an index's holds its first `shortlist`)
                ids = list(dict.fromkeys(order[:shortlist] + rank(Q[n])[:truncate]))
                g, aff = shortlist_graph(ids, D[ids], int(diffusion["k"]), float(diffusion["gamma"]))
            order = verified_diffusion(order, counts, verifier.min_inliers, g, aff, float(diffusion["alpha"]))
            if own is not None:
                order = [j for j in order if j != own] + [own]
        return qi, [keep_db[j] for j in order], {keep_db[j]: c for j, c in counts.items()}

    t0 = time.perf_counter()
    rankings, inliers = {}, {}
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for qi, order, counts in pool.map(one, enumerate(keep_q)):
            rankings[qi], inliers[qi] = order, counts
    seconds = (time.perf_counter() - t0) / max(1, len(rankings))
    result = evaluate_rankings(ds, rankings)
    result["_verify_seconds"] = seconds
    result["_inliers"] = inliers
    result["_failed"] = (len(db_vecs) - len(keep_db), len(q_vecs) - len(keep_q))
    result["_skipped"] = tally["skipped"] / max(1, tally["asked"])
    return result
