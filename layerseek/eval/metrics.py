"""Retrieval metrics, each a small function on one ranked list (database indices, best first)."""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np


def _clean(ranks: Sequence[int], junk: Iterable[int] = (), exclude: int | None = None) -> list[int]:
    drop = set(junk)
    if exclude is not None:
        drop.add(exclude)
    return [int(r) for r in ranks if int(r) not in drop]


def average_precision(ranks: Sequence[int], positives: Iterable[int], junk: Iterable[int] = (),
                      exclude: int | None = None) -> float:
    """AP as the Oxford / Paris / revisited evaluation code computes it: junk (and the query
    itself, `exclude`) removed from the list, then the area under the precision-recall curve by
    the trapezoid rule between consecutive positives. Positives never retrieved count as missed."""
    pos = set(positives)
    if exclude is not None:
        pos.discard(exclude)
    if not pos:
        return float("nan")
    ranked = _clean(ranks, junk, exclude)
    ap, found, step = 0.0, 0, 1.0 / len(pos)
    for rank, idx in enumerate(ranked):
        if idx in pos:
            prec_before = found / rank if rank > 0 else 1.0
            found += 1
            prec_after = found / (rank + 1)
            ap += (prec_before + prec_after) * step / 2.0
    return ap


def noninterpolated_ap(ranks: Sequence[int], positives: Iterable[int], junk: Iterable[int] = (),
                       exclude: int | None = None) -> float:
    """Non-interpolated AP (TREC; scikit-learn's `average_precision_score` on a full ranking): the
    mean over all positives of the precision at the rank each is found, 0 for one never
    retrieved. Junk and the query itself (`exclude`) are removed first. With one positive at rank r
    it is 1/r, where the trapezoid rule of `average_precision` gives 1/(2r) for r > 1."""
    pos = set(positives)
    if exclude is not None:
        pos.discard(exclude)
    if not pos:
        return float("nan")
    total, found = 0.0, 0
    for rank, idx in enumerate(_clean(ranks, junk, exclude)):
        if idx in pos:
            found += 1
            total += found / (rank + 1)
    return total / len(pos)


def mean_ap(all_ranks: Sequence[Sequence[int]], positives: Sequence[Iterable[int]],
            junk: Sequence[Iterable[int]] | None = None, exclude: Sequence[int | None] | None = None,
            ap=average_precision) -> float:
    """Mean AP over the queries that have at least one positive (NaN ones skipped, as in the
    revisited protocol); `ap` is the per-query rule (the trapezoid `average_precision`, or
    `noninterpolated_ap`)."""
    aps = [ap(r, p, junk[i] if junk else (), exclude[i] if exclude else None)
           for i, (r, p) in enumerate(zip(all_ranks, positives))]
    aps = [a for a in aps if not np.isnan(a)]
    return float(np.mean(aps)) if aps else float("nan")


def precision_at_k(ranks: Sequence[int], positives: Iterable[int], k: int, junk: Iterable[int] = (),
                   exclude: int | None = None) -> float:
    """Share of the top k (junk and the query removed first) that are positives: the plain P@k,
    always divided by k (the category protocol's). The revisited protocol's mP@k is
    `revisited_precision_at_k`."""
    pos = set(positives)
    top = _clean(ranks, junk, exclude)[:k]
    return sum(1 for r in top if r in pos) / k


def revisited_precision_at_k(ranks: Sequence[int], positives: Iterable[int], k: int,
                             junk: Iterable[int] = ()) -> float:
    """P@k as revisitop's `compute_map` computes it (Radenović et al. 2018): junk removed, then the
    positives within the first kq = min(rank of the last positive, k) positions, divided by kq,
    so a query whose positives all lie above rank k scores 1. 0 when no positive is retrieved."""
    pos = set(positives)
    hits = [rank for rank, idx in enumerate(_clean(ranks, junk), start=1) if idx in pos]
    if not hits:
        return 0.0
    kq = min(hits[-1], k)
    return sum(1 for h in hits if h <= kq) / kq


def recall_at_k(ranks: Sequence[int], positives: Iterable[int], k: int, exclude: int | None = None) -> float:
    """1 if any positive is in the top k, else 0 (averaged over queries: Recall@k)."""
    pos = set(positives)
    return float(any(r in pos for r in _clean(ranks, (), exclude)[:k]))


def ns_score(ranks: Sequence[int], group: Iterable[int]) -> int:
    """UKBench N-S score for one query: how many of its group's 4 images (itself included) are in
    the top 4 (max 4)."""
    g = set(group)
    return sum(1 for r in list(ranks)[:4] if r in g)


def map_at_k(ranks: Sequence[int], positives: Iterable[int], k: int = 7) -> float:
    """AP@k as the Perfect-500K challenge computes it: sum over the top k of precision at each
    hit, divided by min(k, number of positives)."""
    pos = set(positives)
    if not pos:
        return float("nan")
    hits, total = 0, 0.0
    for i, r in enumerate(list(ranks)[:k]):
        if r in pos:
            hits += 1
            total += hits / (i + 1)
    return total / min(k, len(pos))


def reciprocal_rank(ranks: Sequence[int], positives: Iterable[int], exclude: int | None = None) -> float:
    """1 / rank of the first positive (0 if none is retrieved); its mean over queries is MRR."""
    pos = set(positives)
    for i, r in enumerate(_clean(ranks, (), exclude)):
        if r in pos:
            return 1.0 / (i + 1)
    return 0.0


REVISITED_PROTOCOLS = ("easy", "medium", "hard")


def revisited_sets(easy: Iterable[int], hard: Iterable[int], junk: Iterable[int], protocol: str):
    """(positives, junk) of a revisited query under Easy / Medium / Hard (Radenović et al. 2018):
    Easy: easy positive, hard ignored; Medium: easy + hard positive; Hard: hard positive, easy
    ignored. Junk is always ignored."""
    easy, hard, junk = list(easy), list(hard), list(junk)
    if protocol == "easy":
        return easy, junk + hard
    if protocol == "medium":
        return easy + hard, junk
    if protocol == "hard":
        return hard, junk + easy
    raise ValueError(f"unknown protocol {protocol!r}; valid: {', '.join(REVISITED_PROTOCOLS)}")


def revisited_scores(all_ranks, queries, ks=(1, 5, 10)) -> dict[str, float]:
    """mAP (trapezoid AP) and mP@k (kq rule) for Easy, Medium and Hard, as revisitop's
    `compute_map`; queries need .positives (easy), .hard, .junk.
    Queries without positives under a protocol are left out of that protocol's means."""
    out = {}
    for proto in REVISITED_PROTOCOLS:
        aps, pks = [], {k: [] for k in ks}
        for ranks, q in zip(all_ranks, queries):
            pos, junk = revisited_sets(q.positives, q.hard, q.junk, proto)
            if not pos:
                continue
            aps.append(average_precision(ranks, pos, junk))
            for k in ks:
                pks[k].append(revisited_precision_at_k(ranks, pos, k, junk))
        out[f"mAP_{proto}"] = float(np.mean(aps)) if aps else float("nan")
        for k in ks:
            out[f"mP@{k}_{proto}"] = float(np.mean(pks[k])) if pks[k] else float("nan")
    return out


def k_occurrence(neighbours: np.ndarray, n: int) -> np.ndarray:
    """N_k of each of n items: how many rows of `neighbours` (each item's k nearest others, -1 for
    none) list it (Radovanović, Nanopoulos & Ivanović, JMLR 2010, Sec. 3). A hub is an item with a
    large N_k; the mean is k whatever the data, the spread is what measures hubness."""
    flat = np.asarray(neighbours).ravel()
    return np.bincount(flat[flat >= 0], minlength=n)


def skewness(x: np.ndarray) -> float:
    """The standardised third moment E[(x - mean)^3] / std^3 (Radovanović et al. Eq. 1, of N_k):
    0 for a symmetric spread, large and positive where a few items are far above the rest."""
    x = np.asarray(x, np.float64)
    s = x.std()
    return float(((x - x.mean()) ** 3).mean() / s ** 3) if s > 0 else 0.0
