"""Similarities, WMFF weights and their search, query expansion, PCA whitening."""
from __future__ import annotations

import numpy as np
import pytest

from layerseek.errors import LayerseekError, UnknownNameError
from layerseek.fusion import (correlation, cosine, euclidean, format_ratio, get_similarity, kl, l2n,
                              ordered_contributions, ordered_weights, parse_weights, plot_simplex,
                              search_weights, simplex_grid, wmff)
from layerseek.postprocess import (PCAWhitening, alpha_query_expansion, average_query_expansion, centre, csls,
                                  neighbourhood_similarity)

rng = np.random.default_rng(0)


def test_similarities_by_hand():
    q = np.array([[1.0, 0.0, 0.0]])
    d = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [1.0, 1.0, 0.0]])
    np.testing.assert_allclose(cosine(q, d), [[1, 0, 1 / np.sqrt(2)]], atol=1e-6)
    np.testing.assert_allclose(euclidean(q, d), [[0, -np.sqrt(2), -np.sqrt(2 - np.sqrt(2))]], atol=1e-6)
    k = kl(np.abs(d), np.abs(d))
    assert np.allclose(np.diag(k), 0, atol=1e-6) and np.all(k <= 1e-6)


def test_correlation_ignores_a_constant_shift_cosine_does_not():
    q, d = rng.random((3, 8)), rng.random((5, 8))
    np.testing.assert_allclose(correlation(q + 5.0, d), correlation(q, d), atol=1e-5)
    assert not np.allclose(cosine(q + 5.0, d), cosine(q, d), atol=1e-3)
    # Correlation is Pearson's r.
    np.testing.assert_allclose(correlation(q[:1], d[:1])[0, 0], np.corrcoef(q[0], d[0])[0, 1], rtol=1e-5)


def test_paper_weights_and_ratio_text():
    w = parse_weights("1:1:5:2:4")
    np.testing.assert_allclose(w, [0.077, 0.077, 0.384, 0.154, 0.308], atol=1e-3)  # Table 3, No. 6
    assert format_ratio(w) == "1:1:5:2:4"
    assert format_ratio([0.0, 0.25, 0.75]) == "0:1:3"
    with pytest.raises(LayerseekError, match="3 values for 2 layers"):
        parse_weights("1:2:3", n_layers=2)
    with pytest.raises(LayerseekError, match="non-negative"):
        parse_weights("1:-1")
    with pytest.raises(UnknownNameError, match="valid: correlation, cosine, euclidean, kl"):
        get_similarity("hamming")


def test_wmff_equals_dot_of_weighted_concatenation():
    """Eq. 7 with cosine is one dot product of the concatenated sqrt(w)-scaled unit vectors."""
    layers_q = [l2n(rng.random((4, d))) for d in (6, 10, 3)]
    layers_d = [l2n(rng.random((7, d))) for d in (6, 10, 3)]
    w = parse_weights("1:2:4")
    fused = wmff([cosine(a, b) for a, b in zip(layers_q, layers_d)], w)
    cq = np.hstack([np.sqrt(wi) * a for wi, a in zip(w, layers_q)])
    cd = np.hstack([np.sqrt(wi) * b for wi, b in zip(w, layers_d)])
    np.testing.assert_allclose(fused, cq @ cd.T, rtol=1e-5)


def test_simplex_grid_and_constraints():
    g = simplex_grid(3, 0.05)
    assert len(g) == 231 and np.allclose(g.sum(1), 1) and g.min() >= 0
    assert len(simplex_grid(2, 0.5)) == 3
    assert ordered_weights(np.array([0.1, 0.3, 0.6])) and not ordered_weights(np.array([0.5, 0.3, 0.2]))
    assert ordered_contributions(np.array([0.5, 0.3, 0.2]), np.array([1.0, 2.0, 10.0]))
    assert not ordered_contributions(np.array([0.1, 0.3, 0.6]), np.array([10.0, 2.0, 1.0]))


def test_search_finds_the_best_point_and_respects_the_constraint(tmp_path):
    sims = [rng.random((2, 5)) for _ in range(3)]
    target = np.array([0.2, 0.3, 0.5])

    def score(fused):  # a score peaked where the fused matrix equals the target's
        return -float(np.abs(fused - wmff(sims, target)).sum())

    free = search_weights(sims, score, step=0.1)
    assert len(free) == 66
    np.testing.assert_allclose(free[0][0], target, atol=1e-9)
    ordered = search_weights(sims, score, step=0.1, constraint="weights")
    assert len(ordered) < len(free) and all(ordered_weights(w) for w, _ in ordered)
    assert ordered[0][1] == pytest.approx(free[0][1])  # the target is ordered, so still found
    out = tmp_path / "simplex.png"
    plot_simplex(free, str(out), ["conv3_3", "conv4_3", "conv5_3"])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


def test_query_expansion_by_hand():
    db = np.eye(4)
    q = np.array([[1.0, 0.2, 0.0, 0.0]])
    ranks = np.array([[0, 1, 2, 3]])
    out = average_query_expansion(q, db, ranks, k=2)
    np.testing.assert_allclose(out, l2n(np.array([[2.0, 1.2, 0, 0]])), atol=1e-6)
    sims = q @ db.T
    np.testing.assert_allclose(alpha_query_expansion(q, db, ranks, sims, k=2, alpha=0.0), out, atol=1e-6)
    a3 = alpha_query_expansion(q, db, ranks, sims, k=2, alpha=3.0)
    np.testing.assert_allclose(a3, l2n(np.array([[2.0, 0.2 + 0.008, 0, 0]])), atol=1e-6)
    np.testing.assert_allclose(average_query_expansion(q, db, ranks, k=0), l2n(q))


def test_pca_whitening_fit_transform_save_load(tmp_path):
    mix = rng.standard_normal((6, 6))
    train = rng.standard_normal((500, 6)) @ mix + 3.0
    wh = PCAWhitening().fit(train)
    proj = (train - wh.mean_) @ wh.components_.T / np.sqrt(wh.eigenvalues_)
    np.testing.assert_allclose(np.cov(proj.T), np.eye(6), atol=1e-6)  # whitened: identity covariance
    other = rng.standard_normal((5, 6))
    out = wh.transform(other)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1, rtol=1e-6)
    path = tmp_path / "wh.npz"
    wh.save(path)
    np.testing.assert_allclose(PCAWhitening.load(path).transform(other), out, rtol=1e-6)
    assert PCAWhitening(dim=3).fit(train).transform(other).shape == (5, 3)
    with pytest.raises(LayerseekError, match="fit or load"):
        PCAWhitening().transform(other)
    with pytest.raises(LayerseekError, match="at least 2"):
        PCAWhitening().fit(train[:1])


def test_csls_takes_the_hub_down_and_centring_moves_the_mean_to_the_origin():
    # a hub h close to everything, and x, the query's real match; by cosine h wins
    h, x, y, z = l2n(np.array([[1.0, 1.0, 1.0], [1.0, 0.1, 0.0], [0.0, 1.0, 0.1], [0.1, 0.0, 1.0]]))
    db = np.stack([h, x, y, z])
    q = l2n(np.array([1.0, 0.6, 0.5]))
    sims = (q @ db.T)[None, :]
    assert int(np.argmax(sims)) == 0
    # each one's mean cosine to its 2 nearest others (by hand from the Gram matrix)
    gram = db @ db.T
    np.fill_diagonal(gram, -np.inf)
    r = neighbourhood_similarity(np.sort(gram, axis=1)[:, -2:])
    assert r[0] == pytest.approx(np.sort(gram[0])[-2:].mean()) and r[0] == r.max()
    scores = csls(sims, r)
    assert scores[0, 0] == pytest.approx(sims[0, 0] - 0.5 * r[0]) and int(np.argmax(scores)) == 1
    c = centre(db, db.mean(axis=0))
    assert np.allclose(np.linalg.norm(c, axis=1), 1)
    assert np.allclose(c, l2n(db - db.mean(axis=0)))
