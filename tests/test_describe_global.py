"""The descriptor cache and the global-descriptor scorer (per-layer L2, whitening, WMFF, QE)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from layerseek.describe import DescriptorCache, Request, pool_all
from layerseek.errors import LayerseekError
from layerseek.fusion import l2n
from layerseek.globaldesc import GlobalConfig, fit_whitenings, rank, score
from layerseek.images import load_image


class CountingExtractor:
    """Wraps a FeatureExtractor and records which layers each forward pass was asked for."""

    def __init__(self, fx):
        self.fx, self.calls = fx, []

    def __getattr__(self, name):
        return getattr(self.fx, name)

    def __call__(self, img, layers=None):
        self.calls.append(tuple(layers or self.fx.layers))
        return self.fx(img, layers)


@pytest.fixture(scope="module")
def mobilenet(make_extractor):
    return make_extractor("mobilenet_v2", ["s32", "last"])


def test_cache_hits_misses_and_new_layers(mobilenet, data_dir, tmp_path):
    from layerseek.backbones import FeatureExtractor

    imgs = [data_dir / "corel1k" / "jpg" / f"{i}.jpg" for i in (3, 404)]
    fx = CountingExtractor(mobilenet)
    cache = DescriptorCache(tmp_path, fx, max_side=160)
    first = cache.describe([Request(p) for p in imgs])
    assert fx.calls == [("s32", "last"), ("s32", "last")]
    # the cached vectors are the poolings of a direct extraction
    direct = pool_all(mobilenet(load_image(imgs[1], max_side=160)))
    for k, v in direct.items():
        np.testing.assert_allclose(first[1][k], v, rtol=1e-5, atol=1e-6)
    again = cache.describe([Request(p) for p in imgs])
    assert len(fx.calls) == 2  # all hits
    assert all(np.array_equal(a[k], b[k]) for a, b in zip(first, again) for k in a)
    # a crop box is another entry
    cache.describe([Request(imgs[0], (0, 0, 100, 100))])
    assert len(fx.calls) == 3
    # an extractor with one more layer computes only that layer for cached images
    wider = CountingExtractor(FeatureExtractor("mobilenet_v2", ["s16", "s32", "last"]))
    out = DescriptorCache(tmp_path, wider, max_side=160).describe([Request(imgs[0])])
    assert wider.calls == [("s16",)]
    assert {k.split("/")[1] for k in out[0]} == {"s16", "s32", "last"}
    # another max side is another cache
    assert DescriptorCache(tmp_path, fx, max_side=200).dir != cache.dir


def test_cache_same_content_shares_entry_and_bad_files_reported(mobilenet, data_dir, tmp_path):
    src = data_dir / "corel1k" / "jpg" / "7.jpg"
    shutil.copy(src, tmp_path / "copy.jpg")
    (tmp_path / "empty.jpg").write_bytes(b"")
    fx = CountingExtractor(mobilenet)
    cache = DescriptorCache(tmp_path / "c", fx, max_side=128)
    errors = []
    out = cache.describe([Request(src), Request(tmp_path / "empty.jpg"), Request(tmp_path / "copy.jpg")], errors=errors)
    assert out[1] is None and len(errors) == 1 and "empty.jpg" in errors[0] and "empty" in errors[0]
    assert len(fx.calls) == 1  # the copy has the same content: one extraction
    # a damaged cache entry is recomputed, not fatal
    entry = cache.path_for(Request(src))
    entry.write_bytes(b"garbage")
    assert cache.describe([Request(src)])[0] is not None and len(fx.calls) == 2


def _random_vectors(n, dims, seed):
    rng = np.random.default_rng(seed)
    return [{f"fcrow/{layer}": rng.random(d).astype(np.float32) for layer, d in dims.items()} for _ in range(n)]


DIMS = {"a": 8, "b": 5}


def test_score_single_layer_is_cosine():
    q, d = _random_vectors(3, DIMS, 0), _random_vectors(7, DIMS, 1)
    cfg = GlobalConfig("fcrow", ("a",))
    ref = l2n(np.stack([v["fcrow/a"] for v in q])) @ l2n(np.stack([v["fcrow/a"] for v in d])).T
    np.testing.assert_allclose(score(cfg, q, d), ref, rtol=1e-6)


def test_score_wmff_weights_and_similarity():
    q, d = _random_vectors(3, DIMS, 2), _random_vectors(6, DIMS, 3)
    sa = score(GlobalConfig("fcrow", ("a",)), q, d)
    sb = score(GlobalConfig("fcrow", ("b",)), q, d)
    np.testing.assert_allclose(score(GlobalConfig("fcrow", ("a", "b"), "1:3"), q, d), 0.25 * sa + 0.75 * sb, rtol=1e-6)
    np.testing.assert_allclose(score(GlobalConfig("fcrow", ("a", "b")), q, d), 0.5 * (sa + sb), rtol=1e-6)
    # Euclidean similarity ranks like cosine on unit vectors
    e = score(GlobalConfig("fcrow", ("a",), similarity="euclidean"), q, d)
    assert np.array_equal(rank(e), rank(sa))


def test_query_expansion_skips_the_query_itself():
    d = _random_vectors(6, DIMS, 4)
    q = [d[2]]  # the query is database image 2
    cfg = GlobalConfig("fcrow", ("a",), qe=1)
    base = score(GlobalConfig("fcrow", ("a",)), q, d)
    second = int(np.argsort(-base[0])[1])
    dm = l2n(np.stack([v["fcrow/a"] for v in d]))
    expected = l2n(dm[2] + dm[second]) @ dm.T
    np.testing.assert_allclose(score(cfg, q, d, exclude=[2])[0], expected, rtol=1e-5)
    # without the exclusion the query would expand with itself: a different result
    assert not np.allclose(score(cfg, q, d)[0], expected)


def test_whitening_is_learned_per_layer_and_applied():
    train, q, d = _random_vectors(40, DIMS, 5), _random_vectors(2, DIMS, 6), _random_vectors(5, DIMS, 7)
    cfg = GlobalConfig("fcrow", ("a", "b"))
    wh = fit_whitenings(cfg, train)
    assert [w.transform(np.zeros((1, n), np.float32)).shape[1] for w, n in zip(wh, DIMS.values())] == [8, 5]
    ref = np.mean([l2n(w.transform(l2n(np.stack([v[f"fcrow/{k}"] for v in q])))) @
                   l2n(w.transform(l2n(np.stack([v[f"fcrow/{k}"] for v in d])))).T for w, k in zip(wh, DIMS)], axis=0)
    np.testing.assert_allclose(score(cfg, q, d, wh), ref, rtol=1e-4, atol=1e-6)


def test_config_errors_name_the_choices():
    with pytest.raises(LayerseekError, match="valid: .*crow.*fcrow"):
        GlobalConfig("nope")
    with pytest.raises(LayerseekError, match="valid: .*cosine"):
        GlobalConfig("gem", similarity="dot")
    with pytest.raises(LayerseekError, match="3"):
        GlobalConfig("gem", ("a", "b", "c"), weights="1:2")
    with pytest.raises(LayerseekError, match="extract that layer"):
        score(GlobalConfig("gem", ("a",)), _random_vectors(1, DIMS, 0), _random_vectors(1, DIMS, 0))
