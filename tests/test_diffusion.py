"""Diffusion from verified images over the database's k-NN graph (Iscen et al. 2017)."""
from __future__ import annotations

import numpy as np
import pytest

from layerseek.verify.diffusion import KnnGraph, diffuse, shortlist_graph, top_neighbours, verified_diffusion


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _brute_lists(ids, X, k):
    """Each row's k best other rows by cosine, by sorting everything (the obviously right way)."""
    out = {}
    for r, i in enumerate(ids):
        cand = sorted(((float(X[r] @ X[c]), int(ids[c])) for c in range(len(ids)) if c != r), key=lambda t: (-t[0], t[1]))
        out[int(i)] = [j for _, j in cand[:k]]
    return out


def test_top_neighbours_match_a_full_sort():
    X = _unit(np.random.default_rng(0).normal(size=(40, 8)))
    rows, sims = top_neighbours(X, X, 5, np.arange(40), block=7)  # several blocks
    want = _brute_lists(np.arange(40), X, 5)
    assert all(list(rows[r]) == want[r] for r in range(40))
    assert np.allclose(sims[:, 0], [X[r] @ X[rows[r, 0]] for r in range(40)])
    rows, sims = top_neighbours(X[:2], X[:3], 5, np.array([0, 1]))  # fewer images than k
    assert list(rows[0]) == [*_brute_lists(np.arange(3), X[:3], 2)[0], -1, -1, -1] and np.isinf(sims[0, 2:]).all()


def test_graph_update_equals_a_fresh_fit_after_adds_removals_and_changes():
    rng = np.random.default_rng(1)
    ids = np.arange(10, 70)
    X = _unit(rng.normal(size=(60, 6)))
    g = KnnGraph(4).fit(ids, X)
    # remove 8 images, change 3 in place (same id, new vector), add 12 new ids
    keep = np.array([r for r in range(60) if r % 7 != 3])
    ids2 = np.concatenate([ids[keep], np.arange(200, 212)])
    X2 = np.concatenate([X[keep], _unit(rng.normal(size=(12, 6)))])
    changed = [int(ids2[0]), int(ids2[5]), int(ids2[20])]
    for i in changed:
        X2[list(ids2).index(i)] = _unit(rng.normal(size=(1, 6)))[0]
    g.update(ids2, X2, changed)
    fresh = KnnGraph(4).fit(ids2, X2)
    assert list(g.ids) == list(ids2)
    assert (g.neighbours == fresh.neighbours).all() and np.allclose(g.sims, fresh.sims)
    want = _brute_lists(ids2, X2, 4)
    assert all(list(g.neighbours[r]) == want[int(i)] for r, i in enumerate(ids2))


def test_affinity_keeps_mutual_edges_and_is_normalised():
    # 0-1-2 close together, 3 far: with k = 1, 0 and 1 are each other's best (an edge), 2's best is
    # 1 but 1's is 0 (no edge), 3's best is 2 (not mutual)
    X = _unit(np.array([[1, 0.0], [1, 0.05], [1, 0.3], [0, 1.0]]))
    g = KnnGraph(1).fit([0, 1, 2, 3], X)
    S = g.affinity(gamma=3).toarray()
    assert np.allclose(S, S.T)
    assert S[0, 1] == pytest.approx(1.0)  # D^-1/2 W D^-1/2 of a single edge: w / sqrt(w * w)
    assert S[1, 2] == 0 and S[2, 3] == 0 and S[3].sum() == 0


def test_diffuse_solves_the_linear_system():
    rng = np.random.default_rng(2)
    X = _unit(rng.normal(size=(30, 5)))
    S = KnnGraph(6).fit(np.arange(30), X).affinity(3)
    y = np.zeros(30)
    y[[3, 7]] = 1
    f = diffuse(S, y, 0.9, tol=1e-10, maxiter=500)
    exact = np.linalg.solve(np.eye(30) - 0.9 * S.toarray(), y)
    assert np.allclose(f, exact, atol=1e-6)
    assert not diffuse(S, np.zeros(30)).any()


def _chain():
    """A chain of views 100..105 bending away from the query, and distractors 106..109 nearer the
    query than the far end of the chain: (ids, their vectors, the first stage's order)."""
    angles = np.linspace(0, 1.2, 6)
    chain = np.stack([np.cos(angles), np.sin(angles), np.zeros(6)], 1)
    rng = np.random.default_rng(3)
    distract = np.stack([np.cos(0.4 + 0.05 * np.arange(4)), np.zeros(4), np.sin(0.4 + 0.05 * np.arange(4))], 1)
    X = _unit(np.concatenate([chain, distract]) + 0.001 * rng.normal(size=(10, 3)))
    ids = np.arange(100, 110)
    q = _unit(np.array([[1.0, 0.0, 0.1]]))[0]
    return ids, X, [int(ids[j]) for j in np.argsort(-(X @ q), kind="stable")]


def test_verified_diffusion_follows_the_manifold_of_the_verified_image():
    # Verified: 100. Diffusion brings the whole chain before the distractors.
    ids, X, first = _chain()
    g = KnnGraph(2).fit(ids, X)
    S = g.affinity(3)
    assert first.index(105) > first.index(106)  # the far view ranks below a distractor at first
    order = verified_diffusion(first, {100: 40}, 10, g, S)
    assert order[0] == 100 and set(order[:6]) == set(range(100, 106)) and sorted(order) == list(ids)
    # nothing verified: the first stage's order, untouched
    assert verified_diffusion(first, {100: 5}, 10, g, S) == first


def _verified_diffusion_by_keys(order, counts, min_inliers, graph, S, alpha=0.99):
    """verified_diffusion written the slow, obvious way: one sort key per image."""
    seeds = [i for i in order if counts.get(i, 0) >= min_inliers]
    seeds += sorted((i for i, c in counts.items() if c >= min_inliers and i not in set(order)),
                    key=lambda i: (-counts[i], i))
    if not seeds:
        return list(order)
    row_of = {int(i): r for r, i in enumerate(graph.ids)}
    y = np.zeros(len(graph.ids))
    for i in seeds:
        if i in row_of:
            y[row_of[i]] = 1.0
    f = diffuse(S, y, alpha)
    pos = {int(i): p for p, i in enumerate(order)}
    rest = [int(i) for i in graph.ids if int(i) not in set(seeds)]
    rest += [int(i) for i in order if int(i) not in row_of and int(i) not in set(seeds)]
    big = len(order) + len(graph.ids)
    return list(seeds) + sorted(rest, key=lambda i: (-(f[row_of[i]] if i in row_of else 0.0), pos.get(i, big), i))


def test_verified_diffusion_orders_as_one_key_per_image_would():
    """The one-lexsort ordering against a key per image: graphs with unreached parts (score 0:
    ties broken by the first stage's order, then by id), images of the order the graph lacks,
    verified images outside the order, and none verified."""
    rng = np.random.default_rng(8)
    for trial in range(12):
        n = int(rng.integers(20, 80))
        ids = rng.permutation(np.arange(1000, 1000 + 2 * n))[:n]
        X = _unit(rng.standard_normal((n, 6)) + (rng.random((n, 1)) < 0.5) * 3)
        g = KnnGraph(3).fit(ids, X)
        S = g.affinity(3)
        first = [int(i) for i in rng.permutation(ids)[: n // 2]] + [5000 + trial, 6000 + trial]  # two the graph lacks
        counts = {int(i): int(rng.choice([0, 5, 12, 40])) for i in first[:15]}
        if trial % 3 == 0:
            counts[7000] = 25  # verified in an earlier round, no longer in the order
        if trial % 4 == 1:
            counts = {i: 0 for i in counts}
        got = verified_diffusion(first, counts, 10, g, S)
        assert got == _verified_diffusion_by_keys(first, counts, 10, g, S), trial
        assert len(got) == len(set(got))


def test_truncated_diffusion_orders_the_shortlist_and_keeps_the_rest_in_first_stage_order():
    """Past FULL_GRAPH_MAX images the graph is the query's shortlist's alone: the verified image
    first, the shortlisted chain reached through it before the distractors, and what lies outside
    the shortlist after them, in the first stage's order."""
    ids, X, first = _chain()
    short = first[:7]
    g, S = shortlist_graph(short, X[np.asarray(short) - 100], 2, 3.0)
    assert sorted(g.ids.tolist()) == sorted(short)
    order = verified_diffusion(first, {100: 40}, 10, g, S)
    assert order[0] == 100 and sorted(order) == list(ids)
    chain_in = [i for i in short if i < 106 and i != 100]
    assert set(order[1:1 + len(chain_in)]) == set(chain_in)  # reached through the verified image
    outside = [i for i in first if i not in short]
    assert [i for i in order if i in outside] == outside and order[-len(outside):] == outside


def test_affinity_and_diffusion_equal_scipy_on_a_graph_with_dangling_neighbours():
    """The numpy affinity and conjugate gradients against SciPy's sparse matrices and `cg`
    (the reference they replaced): a graph with removed images (neighbours no longer held) and
    one-sided edges."""
    from scipy import sparse
    from scipy.sparse.linalg import cg

    rng = np.random.default_rng(5)
    X = _unit(rng.normal(size=(200, 8)))
    ids = np.arange(1000, 1200)
    g = KnnGraph(7).fit(ids, X)
    g.neighbours[::9, 2] = 5  # an id the graph does not hold
    g.sims[::13, 6] = -np.inf
    gamma, alpha = 3.0, 0.99
    n, row_of = len(ids), {int(i): r for r, i in enumerate(ids)}
    src = np.repeat(np.arange(n), g.k)
    dst = np.array([row_of.get(int(j), -1) for j in g.neighbours.ravel()])
    w = np.maximum(g.sims.ravel(), 0).astype(np.float64) ** gamma
    ok = (dst >= 0) & np.isfinite(g.sims.ravel())
    A = sparse.csr_matrix((w[ok], (src[ok], dst[ok])), shape=(n, n))
    W = A.minimum(A.T)
    d = np.asarray(W.sum(axis=1)).ravel()
    inv = np.where(d > 0, 1.0 / np.sqrt(np.where(d > 0, d, 1.0)), 0.0)
    S_ref = sparse.diags(inv) @ W @ sparse.diags(inv)
    S = g.affinity(gamma)
    assert np.allclose(S.toarray(), S_ref.toarray(), atol=1e-12)
    assert len(S.data) == W.nnz  # the mutual edges only
    y = np.zeros(n)
    y[[4, 50, 120]] = 1
    want, _ = cg(sparse.identity(n, format="csr") - alpha * S_ref, y, rtol=1e-6, maxiter=50)
    got = diffuse(S, y, alpha)
    assert np.allclose(got, want, rtol=1e-6, atol=1e-9)
    assert np.argsort(-got, kind="stable").tolist() == np.argsort(-want, kind="stable").tolist()
