"""Metrics on hand-computed cases."""
from __future__ import annotations

import math

import numpy as np
import pytest

from layerseek.eval import metrics as M
from layerseek.datasets import Query


def test_ap_trapezoid_by_hand():
    # positives at ranks 0 and 2: (1+1)/2 * 1/2 + (1/2 + 2/3)/2 * 1/2
    assert M.average_precision([0, 1, 2], {0, 2}) == pytest.approx(0.5 + (0.5 + 2 / 3) / 4)
    assert M.average_precision([5, 3], {5, 3}) == pytest.approx(1.0)
    assert M.average_precision([1, 2, 3], {7}) == 0.0  # never retrieved
    assert math.isnan(M.average_precision([1, 2], set()))


def test_ap_junk_and_query_removed_first():
    # junk 1 and the query 9 are taken out: list becomes [0, 2] -> AP 1.0
    assert M.average_precision([9, 1, 0, 2], {0, 2}, junk={1}, exclude=9) == pytest.approx(1.0)
    # the query listed among its own positives is not counted either (Holidays convention)
    assert M.average_precision([9, 0, 4, 2], {9, 0, 2}, exclude=9) == pytest.approx(0.5 + (0.5 + 2 / 3) / 4)


def test_noninterpolated_ap_by_hand():
    # positives at ranks 1 and 3 of 2: (1/1 + 2/3) / 2; one never retrieved counts 0
    assert M.noninterpolated_ap([0, 1, 2], {0, 2}) == pytest.approx((1 + 2 / 3) / 2)
    assert M.noninterpolated_ap([0, 1, 2], {0, 2, 7}) == pytest.approx((1 + 2 / 3) / 3)
    # one positive at rank r: 1/r (the trapezoid rule gives 1/(2r))
    assert M.noninterpolated_ap([4, 5, 6, 1], {1}) == pytest.approx(1 / 4)
    assert M.average_precision([4, 5, 6, 1], {1}) == pytest.approx(1 / 8)
    # junk and the query removed first: [9, 3, 1] -> [1] after dropping query 9 and junk 3
    assert M.noninterpolated_ap([9, 3, 1], {1, 9}, junk={3}, exclude=9) == pytest.approx(1.0)


def test_revisited_precision_kq_rule():
    """revisitop's compute_map: kq = min(1-based rank of the last positive, k), P = hits <= kq / kq."""
    # two positives first: P@1 = 1, P@5 = 2/2 (the plain rule would give 2/5), P@10 = 2/2
    for k, want in ((1, 1.0), (5, 1.0), (10, 1.0)):
        assert M.revisited_precision_at_k([0, 1, 5, 6, 7, 8], {0, 1}, k) == pytest.approx(want)
    # positives at ranks 1 and 3: kq = 1, 3, 3
    for k, want in ((1, 1.0), (5, 2 / 3), (10, 2 / 3)):
        assert M.revisited_precision_at_k([0, 7, 1, 5, 6], {0, 1}, k) == pytest.approx(want)
    # three positives at ranks 2, 4 and 10: kq = 1, 5, 10
    ranks = [9, 0, 8, 1, 7, 6, 5, 4, 3, 2, 11, 12]
    for k, want in ((1, 0.0), (5, 2 / 5), (10, 3 / 10)):
        assert M.revisited_precision_at_k(ranks, {0, 1, 2}, k) == pytest.approx(want)
    # junk 9 removed first: ranks 1, 3, 9 -> kq = 1, 5, 9
    for k, want in ((1, 1.0), (5, 2 / 5), (10, 3 / 9)):
        assert M.revisited_precision_at_k(ranks, {0, 1, 2}, k, junk={9}) == pytest.approx(want)
    assert M.revisited_precision_at_k([3, 4], {0}, 5) == 0.0  # nothing retrieved
    # and the protocol means use it: one Easy positive at rank 1 of a query -> mP@5 Easy 1
    q = Query(path=None, positives=[0], hard=[1], junk=[2])
    s = M.revisited_scores([[0, 3, 2, 4, 1, 5]], [q], ks=(1, 5, 10))
    assert (s["mP@1_easy"], s["mP@5_easy"], s["mP@10_easy"]) == (1.0, 1.0, 1.0)
    # Medium: positives 0 and 1 at ranks 1 and 4 (junk 2 removed): kq 1, 4, 4
    assert (s["mP@1_medium"], s["mP@5_medium"], s["mP@10_medium"]) == (1.0, 0.5, 0.5)
    # Hard: 1 at rank 3 (junk 2 and easy 0 removed): kq 1, 3, 3
    assert (s["mP@1_hard"], s["mP@5_hard"], s["mP@10_hard"]) == (0.0, pytest.approx(1 / 3), pytest.approx(1 / 3))


def test_mean_ap_skips_queries_without_positives():
    assert M.mean_ap([[0, 1], [1, 0]], [{0}, set()]) == pytest.approx(1.0)


def test_precision_recall_rr_ns_mapk():
    assert M.precision_at_k([3, 1, 4, 1, 5], {1, 5}, 5) == pytest.approx(3 / 5)
    assert M.precision_at_k([3, 1, 4], {1}, 2, junk={3}) == pytest.approx(0.5)
    assert M.recall_at_k([3, 1, 4], {4}, 2) == 0.0 and M.recall_at_k([3, 1, 4], {4}, 3) == 1.0
    assert M.reciprocal_rank([3, 1, 4], {4}) == pytest.approx(1 / 3)
    assert M.reciprocal_rank([3, 1, 4], {4}, exclude=3) == pytest.approx(1 / 2)
    assert M.ns_score([0, 2, 9, 1, 3], {0, 1, 2, 3}) == 3  # 3 is 5th
    # AP@7: hits at ranks 1 and 3 of 3 positives -> (1/1 + 2/3) / 3
    assert M.map_at_k([10, 0, 11, 12], {10, 11, 99}, 7) == pytest.approx((1 + 2 / 3) / 3)


def test_revisited_protocols():
    pos, junk = M.revisited_sets([1, 2], [3], [4], "easy")
    assert pos == [1, 2] and sorted(junk) == [3, 4]
    pos, junk = M.revisited_sets([1, 2], [3], [4], "medium")
    assert sorted(pos) == [1, 2, 3] and junk == [4]
    pos, junk = M.revisited_sets([1, 2], [3], [4], "hard")
    assert pos == [3] and sorted(junk) == [1, 2, 4]
    q = Query(path=None, positives=[0], hard=[1], junk=[2])
    s = M.revisited_scores([[1, 2, 0]], [q], ks=(1,))
    # Easy: list [0] after removing hard 1 and junk 2 -> 1.0. Hard: [1, 0] -> 1.0 at rank 0.
    assert s["mAP_easy"] == pytest.approx(1.0) and s["mAP_hard"] == pytest.approx(1.0)
    # Medium: [1, 0] both positive -> 1.0; mP@1 medium = 1.
    assert s["mAP_medium"] == pytest.approx(1.0) and s["mP@1_medium"] == 1.0
    s = M.revisited_scores([[0, 2, 1]], [q], ks=(1,))
    assert s["mAP_hard"] == pytest.approx(1.0)  # easy 0 ignored under Hard
    s = M.revisited_scores([[2, 0, 3, 1]], [Query(path=None, positives=[0], hard=[1])], ks=(1,))
    # Medium: positives 0 (rank 1) and 1 (rank 3): (0 + 1/2)/2 * 1/2 + (1/3 + 2/4)/2 * 1/2 = 1/3
    assert s["mAP_medium"] == pytest.approx(1 / 3)
    assert s["mP@1_medium"] == 0.0


def test_protocol_metrics_per_protocol():
    import numpy as np

    from layerseek.datasets import Dataset
    from layerseek.eval.runner import protocol_metrics

    # UKBench: group {0,1,2,3}; query 0 finds itself, 1 and 3 in its top 4 -> N-S 3
    uk = Dataset("u", "ukbench", [None] * 6, [Query(None, positives=[0, 1, 2, 3], self_index=0)])
    out = protocol_metrics(uk, np.array([[0, 1, 4, 3, 2, 5]]), list(range(6)))
    assert out["N-S"] == 3
    # mAP without the query: [1, 4, 3, 2, 5] with positives 1, 2, 3 at ranks 1, 3, 4 (trapezoid)
    assert out["mAP"] == pytest.approx(M.average_precision([1, 4, 3, 2, 5], {1, 2, 3}))
    assert out["mAP"] == pytest.approx((1 + 1) / 6 + (1 / 2 + 2 / 3) / 6 + (2 / 3 + 3 / 4) / 6)
    # SMVS: positive at rank 2 -> R@1 0, R@5 1, MRR 0.5, AP 1/2 (non-interpolated), trapezoid (0 + 1/2) / 2
    sm = Dataset("s", "smvs", [None] * 4, [Query(None, positives=[2])])
    out = protocol_metrics(sm, np.array([[1, 2, 0, 3]]), list(range(4)))
    assert (out["R@1"], out["R@5"], out["MRR"], out["mAP"], out["mAP_trapezoid"]) == (0.0, 1.0, 0.5, 0.5, 0.25)
    # a generic ground-truth file: the same two figures, the query (db 0) never its own positive
    gen = Dataset("g", "map", [None] * 5, [Query(None, positives=[0, 3], db_index=0)])
    out = protocol_metrics(gen, np.array([[0, 1, 3, 2, 4]]), list(range(5)))
    assert (out["mAP"], out["mAP_trapezoid"], out["R@1"]) == (0.5, 0.25, 0.0)
    # Oxford classic (compute_ap) and Holidays (INRIA): the trapezoid AP is their mAP
    for proto in ("oxford", "holidays"):
        ox = Dataset("o", proto, [None] * 4, [Query(None, positives=[2], junk=[0])])
        out = protocol_metrics(ox, np.array([[0, 1, 2, 3]]), list(range(4)))
        assert out["mAP"] == 0.25 and "mAP_trapezoid" not in out
    # category: the query itself (db 0) is skipped; P@10 over the 3 others of 4 positives
    cat = Dataset("c", "category", [None] * 12, [Query(None, positives=[1, 2, 3, 4], db_index=0)])
    out = protocol_metrics(cat, np.array([[0, 1, 5, 2, 6, 3, 7, 8, 9, 10, 11, 4]]), list(range(12)))
    assert out["P@10"] == pytest.approx(0.3)


def test_per_query_records_agree_with_the_protocol_means():
    """`eval --json`'s per-query APs average to the reported means (revisited: per protocol), and
    the positives' places skip junk."""
    from pathlib import Path

    from layerseek.datasets import Dataset
    from layerseek.eval.runner import per_query

    qs = [Query(Path("q0.jpg"), positives=[0, 3], hard=[5], junk=[1]),
          Query(Path("q1.jpg"), positives=[2], hard=[], junk=[0])]
    ds = Dataset("toy", "revisited", [Path(f"{i}.jpg") for i in range(6)], qs)
    ranked = [(0, [1, 0, 2, 5, 3, 4]), (1, [0, 4, 2, 1, 3, 5])]
    per = per_query(ds, ranked)
    means = M.revisited_scores([r for _, r in ranked], qs)
    for proto in ("easy", "medium", "hard"):
        aps = [p[f"ap_{proto}"] for p in per if p[f"ap_{proto}"] is not None]
        assert np.mean(aps) == pytest.approx(means[f"mAP_{proto}"])
    assert per[1]["ap_hard"] is None  # no hard positive: left out, as revisitop does
    # q0, Medium (easy + hard, junk 1 removed): 0 2 5 3 4 -> positives at 1, 3, 4
    assert per[0]["positives_at"] == [1, 3, 4] and per[1]["positives_at"] == [2]


def test_k_occurrence_and_its_skewness_find_the_hub():
    # four items, each listing its 2 nearest others: item 0 is in every list (a hub), item 3 in none
    nb = np.array([[1, 2], [0, 2], [0, 1], [0, 1]])
    nk = M.k_occurrence(nb, 4)
    assert nk.tolist() == [3, 3, 2, 0] and nk.mean() == 2  # the mean is always k
    assert M.k_occurrence(np.array([[1, -1], [0, -1]]), 3).tolist() == [1, 1, 0]  # -1: no neighbour
    assert M.skewness(np.array([1.0, 2.0, 3.0])) == pytest.approx(0.0)
    # by hand: x = (0, 0, 0, 4): mean 1, deviations (-1, -1, -1, 3), E[d^3] = 6, std = sqrt(3)
    assert M.skewness(np.array([0.0, 0.0, 0.0, 4.0])) == pytest.approx(6 / 3 ** 1.5)
    assert M.skewness(np.array([4.0, 4.0, 0.0, 4.0])) < 0 and M.skewness(np.ones(5)) == 0.0
