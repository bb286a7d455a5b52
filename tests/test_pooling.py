"""Poolings against slow loop references and small hand-computed maps."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from layerseek.errors import UnknownNameError
from layerseek.pooling import (POOLINGS, crow, crow_channel_weights, fcrow, fcrow_channel_weights, gem,
                               get_pooling, mac, rmac, rmac_regions, spoc)


def relu_map(n=2, c=5, h=6, w=9, seed=0, sparsity=0.5):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32) + (0.5 - sparsity)
    return np.maximum(x, 0)


def test_spoc_mac_gem_by_hand():
    x = np.zeros((1, 2, 2, 2), np.float32)
    x[0, 0] = [[1, 2], [3, 4]]
    x[0, 1] = [[0, 0], [0, 8]]
    assert spoc(x).tolist() == [[10, 8]]
    assert mac(x).tolist() == [[4, 8]]
    # GeM p=1 is the mean; p=3 by hand.
    np.testing.assert_allclose(gem(x, p=1.0), [[2.5, 2.0]], rtol=1e-5)
    np.testing.assert_allclose(gem(x, p=3.0), [[((1 + 8 + 27 + 64) / 4) ** (1 / 3), (512 / 4) ** (1 / 3)]], rtol=1e-5)
    assert gem(x, p=50.0)[0, 1] == pytest.approx(8 * 0.25 ** (1 / 50), rel=1e-3)  # tends to MAC


def test_spoc_center_prior_weights_middle_most():
    x = np.ones((1, 1, 5, 5), np.float32)
    with_prior = spoc(x, center_prior=True)[0, 0]
    assert 1.0 < with_prior < 25.0
    x2 = np.zeros((1, 1, 5, 5), np.float32)
    x2[0, 0, 2, 2] = 1
    x3 = np.zeros((1, 1, 5, 5), np.float32)
    x3[0, 0, 0, 0] = 1
    assert spoc(x2, center_prior=True)[0, 0] == pytest.approx(1.0)
    assert spoc(x3, center_prior=True)[0, 0] < 0.1


def test_rmac_regions_square_and_landscape():
    # Square 10 x 10: l=1 one region of side 10; l=2 2x2 of side 6; l=3 3x3 of side 5.
    r = rmac_regions(10, 10, levels=3)
    assert len(r) == 1 + 4 + 9
    assert r[0] == (0, 0, 10, 10)
    assert r[1:5] == [(0, 0, 6, 6), (0, 4, 6, 6), (4, 0, 6, 6), (4, 4, 6, 6)]
    assert {side for *_, side in r[5:]} == {5}
    # Landscape 48 x 64 (conv5_3 of a 1024 x 768 image), worked by hand: at l=1 the 48-wide squares
    # overlap 100 - 100*(16/(c-1))/48 %: c=2 gives 67%, c=3 83%..., so the closest to 40% is c=2 (d=1).
    r = rmac_regions(48, 64, levels=3)
    l1 = [q for q in r if q[2] == 48]
    assert l1 == [(0, 0, 48, 48), (0, 16, 48, 48)]
    l2 = [q for q in r if q[2] == 32]  # 2 x 3 regions of side 32
    assert l2 == [(0, 0, 32, 32), (0, 16, 32, 32), (0, 32, 32, 32), (16, 0, 32, 32), (16, 16, 32, 32), (16, 32, 32, 32)]
    l3 = [q for q in r if q[2] == 24]  # 3 x 4 regions of side 24
    assert len(l3) == 12 and max(t for t, *_ in l3) == 24 and max(lft for _, lft, *_ in l3) == 40
    # Every region lies inside the map.
    for t, lft, h, w in rmac_regions(31, 97, levels=4):
        assert 0 <= t and t + h <= 31 and 0 <= lft and lft + w <= 97
    # A very elongated map takes the most extra regions (7 at l=1).
    assert len([q for q in rmac_regions(10, 200, levels=1)]) == 7


@pytest.mark.parametrize("c, h, w, rows", [(8, 7, 11, False), (16, 24, 32, False), (16, 33, 19, False),
                                           (8, 16, 16, False), (8, 24, 32, True), (4, 40, 52, True), (3, 61, 37, True)])
def test_rmac_equals_loop_reference(c, h, w, rows):
    """The shared-band fast paths against one 2-D max per region, landscape, portrait, square:
    a map of many channels for its size (channels last) and of few (along its rows)."""
    assert (h * w >= 64 * c) == rows
    x = relu_map(c=c, h=h, w=w)
    ref = np.zeros(x.shape[:2], np.float32)
    for t, lft, h, w in rmac_regions(h, w):
        v = x[:, :, t : t + h, lft : lft + w].max(axis=(2, 3))
        ref += v / (np.linalg.norm(v, axis=1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(rmac(x), ref, rtol=1e-5)


def crow_reference(x, a=2.0, b=2.0, eps=1e-6):
    """Loop version of Kalantidis et al.'s Eqs. 1-4 for one image."""
    c, h, w = x.shape
    s = np.zeros((h, w))
    for i in range(h):
        for j in range(w):
            s[i, j] = sum(x[k, i, j] for k in range(c))
    z = sum(s[i, j] ** a for i in range(h) for j in range(w)) ** (1 / a)
    s = (s / z) ** (1 / b)
    q = [np.count_nonzero(x[k]) / (h * w) for k in range(c)]
    beta = [math.log((c * eps + sum(q)) / (eps + q[k])) for k in range(c)]
    return np.array([beta[k] * sum(x[k, i, j] * s[i, j] for i in range(h) for j in range(w)) for k in range(c)])


def fcrow_reference(x):
    """Loop version of Wang et al.'s Eqs. 1-2 with x_j, y_j = counts of non-zero / zero responses."""
    c, h, w = x.shape
    s = x.sum(axis=0)
    s = np.sqrt(s / math.sqrt((s**2).sum()))
    xs = [int(np.count_nonzero(x[k] > 0)) for k in range(c)]
    ys = [h * w - xs[k] for k in range(c)]
    out = []
    for k in range(c):
        if xs[k] == 0:
            out.append(0.0)
            continue
        cw = math.log(sum(xs) / xs[k] + (ys[k] / sum(ys) if sum(ys) else 0.0))
        out.append(cw * float((x[k] * s).sum()))
    return np.array(out)


def test_crow_and_fcrow_equal_loop_references():
    x = relu_map(n=2, c=6, h=5, w=7, sparsity=0.6)
    x[1, 2] = 0  # an empty channel
    for n in range(2):
        np.testing.assert_allclose(crow(x)[n], crow_reference(x[n]), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(fcrow(x)[n], fcrow_reference(x[n]), rtol=1e-4, atol=1e-6)


def test_fcrow_channel_weights_by_hand():
    # 2 channels on a 2 x 2 map: channel 0 fires at 1 position, channel 1 at 3.
    x = np.zeros((1, 2, 2, 2), np.float32)
    x[0, 0, 0, 0] = 1
    x[0, 1] = [[1, 1], [1, 0]]
    w = fcrow_channel_weights(torch.from_numpy(x))[0]
    # x = (1, 3), y = (3, 1): C_0 = log(4/1 + 3/4), C_1 = log(4/3 + 1/4)
    assert float(w[0]) == pytest.approx(math.log(4 + 0.75), rel=1e-6)
    assert float(w[1]) == pytest.approx(math.log(4 / 3 + 0.25), rel=1e-6)
    # CroW on the same map: Q = (1/4, 3/4), beta_k = log(sum Q / Q_k).
    bw = crow_channel_weights(torch.from_numpy(x))[0]
    assert float(bw[0]) == pytest.approx(math.log(4.0), rel=1e-4)
    assert float(bw[1]) == pytest.approx(math.log(4 / 3), rel=1e-4)


def test_empty_channels_do_not_change_the_others():
    x = relu_map(n=1, c=4, h=5, w=5)
    padded = np.concatenate([x, np.zeros((1, 3, 5, 5), np.float32)], axis=1)
    # Spatial weights sum over channels (zeros add nothing); FCroW's channel sums count zeros,
    # so y-terms change -- but x-terms don't and empty channels stay exactly 0.
    out = fcrow(padded)
    assert np.all(out[0, 4:] == 0) and np.all(np.isfinite(out))
    assert np.all(np.isfinite(crow(padded)))


def test_all_zero_map_and_1x1_map():
    z = np.zeros((1, 3, 4, 4), np.float32)
    for name, fn in POOLINGS.items():
        out = fn(z)
        assert out.shape == (1, 3) and np.all(np.isfinite(out)), name
        assert np.allclose(out, 0, atol=1e-4), name
    one = relu_map(n=1, c=3, h=1, w=1, sparsity=0.0) + 0.5
    for name, fn in POOLINGS.items():
        out = fn(one)
        assert out.shape == (1, 3) and np.all(np.isfinite(out)), name
    np.testing.assert_allclose(mac(one), one[:, :, 0, 0])
    np.testing.assert_allclose(spoc(one), one[:, :, 0, 0])


def test_numpy_in_numpy_out_torch_in_torch_out():
    x = relu_map()
    for fn in POOLINGS.values():
        a = fn(x)
        b = fn(torch.from_numpy(x))
        assert isinstance(a, np.ndarray) and isinstance(b, torch.Tensor)
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="N x C x H x W"):
        mac(torch.zeros(3, 4, 5))


def test_registry_lists_valid_names():
    assert get_pooling("gem") is gem
    with pytest.raises(UnknownNameError, match="valid: crow, fcrow, fcrow_mass, gem, mac, rmac, spoc"):
        get_pooling("vlad")


def test_fcrow_mass_reading_by_hand():
    x = np.zeros((1, 2, 2, 2), np.float32)
    x[0, 0, 0, 0] = 3
    x[0, 1] = [[1, 1], [1, 0]]
    w = fcrow_channel_weights(torch.from_numpy(x), terms="mass")[0]
    # x = activation sums (3, 3), y = zero counts (3, 1): C_0 = log(6/3 + 3/4), C_1 = log(6/3 + 1/4)
    assert float(w[0]) == pytest.approx(math.log(2 + 0.75), rel=1e-6)
    assert float(w[1]) == pytest.approx(math.log(2 + 0.25), rel=1e-6)
    with pytest.raises(ValueError, match="counts"):
        fcrow_channel_weights(torch.from_numpy(x), terms="values")
