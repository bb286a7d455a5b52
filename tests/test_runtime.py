"""ONNX Runtime against the PyTorch reference: the same activations, the same rankings."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from layerseek.backbones import FeatureExtractor, get_spec
from layerseek.backbones.runtime import TOLERANCE, OnnxNet, choose
from layerseek.errors import LayerseekError, UnknownNameError
from layerseek.images import load_image
from layerseek.pooling import rmac


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).abs().max() / want.abs().max())


@pytest.fixture(scope="module")
def pairs():
    """(onnx, torch) extractors per backbone, default layers."""
    made = {}

    def get(backbone, layers=None):
        key = (backbone, tuple(layers or ()))
        if key not in made:
            made[key] = (FeatureExtractor(backbone, layers, runtime="onnx"),
                         FeatureExtractor(backbone, layers, runtime="torch"))
        return made[key]
    return get


@pytest.mark.parametrize("backbone, layers", [("mobilenet_v2", None), ("efficientnet_lite0", None),
                                              ("vgg16", ["conv3_3", "conv5_3", "pool5"])])
def test_activations_match_pytorch_on_a_real_photo(pairs, data_dir, backbone, layers):
    fast, ref = pairs(backbone, layers)
    assert fast.runtime == "onnx" and ref.runtime == "torch"
    img = load_image(data_dir / "corel1k/jpg/500.jpg", max_side=512)
    got, want = fast(img), ref(img)
    assert set(got) == set(want) == set(layers or get_spec(backbone).default_layers)
    for name in want:
        assert got[name].shape == want[name].shape and got[name].dtype == torch.float32
        assert relative_error(got[name], want[name]) < TOLERANCE, name


def test_any_size_and_batch(pairs):
    """The graph keeps batch, height and width free: odd sizes and a batch of two as PyTorch."""
    fast, ref = pairs("mobilenet_v2")
    rng = np.random.default_rng(4)
    batch = [rng.integers(0, 256, (333, 517, 3), dtype=np.uint8) for _ in range(2)]
    got, want = fast(batch), ref(batch)
    for name in want:
        assert got[name].shape == want[name].shape and got[name].shape[0] == 2
        assert relative_error(got[name], want[name]) < TOLERANCE
    # a layer outside the extractor's set is its own graph, made on first use
    assert relative_error(fast(batch[0], ["s4"])["s4"], ref(batch[0], ["s4"])["s4"]) < TOLERANCE


def test_rankings_are_those_of_pytorch(pairs, data_dir):
    """R-MAC over the default layers of 24 Corel photos: every photo's ranking of the others is
    the same under both runtimes (what retrieval sees of the network)."""
    fast, ref = pairs("mobilenet_v2")
    paths = sorted((data_dir / "corel1k/jpg").glob("*.jpg"))[::40][:24]
    vecs = {}
    for name, fx in (("onnx", fast), ("torch", ref)):
        rows = []
        for p in paths:
            acts = fx(load_image(p, max_side=384))
            v = torch.cat([torch.nn.functional.normalize(rmac(acts[n]), dim=-1) for n in fx.layers], dim=-1)
            rows.append(torch.nn.functional.normalize(v, dim=-1)[0].numpy())
        vecs[name] = np.stack(rows)
    orders = {k: np.argsort(-(v @ v.T), axis=1, kind="stable") for k, v in vecs.items()}
    assert np.abs(vecs["onnx"] - vecs["torch"]).max() < 1e-4
    assert (orders["onnx"] == orders["torch"]).all()


def test_choice_of_runtime(monkeypatch):
    monkeypatch.delenv("LAYERSEEK_RUNTIME", raising=False)
    assert choose("auto", "cpu") == "onnx"
    assert choose("auto", "cuda") == "torch"  # the GPU path stays PyTorch
    with pytest.raises(UnknownNameError, match="valid: auto, torch, onnx"):
        choose("tensorrt", "cpu")
    with pytest.raises(LayerseekError, match="CPU only"):
        choose("onnx", "cuda")
    monkeypatch.setenv("LAYERSEEK_RUNTIME", "torch")
    assert choose("auto", "cpu") == "torch"
    assert FeatureExtractor("mobilenet_v2").runtime == "torch"


def test_damaged_graph_is_named(tmp_path):
    bad = tmp_path / "mobilenet_v2-0000.onnx"
    bad.write_bytes(b"not a graph" * 100)
    with pytest.raises(LayerseekError, match="mobilenet_v2-0000.onnx: not a usable ONNX graph"):
        OnnxNet(bad, ["s8"])


def test_the_lean_extractor_gives_pytorchs_activations_as_numpy(pairs, data_dir):
    from layerseek.backbones.runtime import OnnxExtractor, make_extractor

    lean = make_extractor("mobilenet_v2")
    assert isinstance(lean, OnnxExtractor)
    _, ref = pairs("mobilenet_v2")
    img = load_image(data_dir / "corel1k/jpg/700.jpg", max_side=400)
    got, want = lean(img), ref(img)
    for name in want:
        assert isinstance(got[name], np.ndarray) and got[name].shape == tuple(want[name].shape)
        assert relative_error(torch.from_numpy(got[name]), want[name]) < TOLERANCE
    with pytest.raises(UnknownNameError, match="unknown layer 'conv9' for mobilenet_v2"):
        OnnxExtractor("mobilenet_v2", ["conv9"])


def test_a_search_imports_no_torch(tmp_path, data_dir):
    """Issue 28: an index's search runs on ONNX Runtime and numpy; importing torch alone costs a
    cold `layerseek search` more than a second. A process of few queries (`few_queries`, as the
    CLI's search) loads no numba either (0.65 s of a cold search), nor SciPy (0.4 s; the
    diffusion's sparse matrix is numpy's)."""
    import subprocess
    import sys

    from layerseek.index import Index

    photos = sorted((data_dir / "corel1k/jpg").glob("*.jpg"))[:4]
    with Index.create(tmp_path / "i.lsx", "rmac", backbone="mobilenet_v2", max_side=320, verify=True) as idx:
        assert idx.add_files(photos).added == 4
        idx.update_graph()
    assert Index.open(tmp_path / "i.lsx").verify_settings["words"]  # the word stage runs too
    code = ("import sys\nfrom layerseek.index import Index\nfrom layerseek.local.invfile import few_queries\n"
            "few_queries()\n"
            f"with Index.open({str(tmp_path / 'i.lsx')!r}) as idx:\n"
            f"    hits = idx.search({str(photos[2])!r}, top=2, diffusion=True)\n"
            "print(hits[0].path, hits[0].verified, *(m in sys.modules for m in ('torch', 'numba', 'scipy')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={
        **__import__("os").environ, "LAYERSEEK_RUNTIME": ""})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(photos[2]), "True", "False", "False", "False"]


def test_a_new_graph_replaces_the_stale_ones_of_its_cut(pairs, tmp_path):
    """Graphs are named by all that makes them; one made by older code or weights for the same
    backbone and layers is removed when its successor is written, other cuts are kept."""
    from layerseek.backbones.runtime import export

    _, ref = pairs("mobilenet_v2")
    stale = tmp_path / "mobilenet_v2-s8+s16+s32+last-0000000000000000.onnx"
    other = tmp_path / "mobilenet_v2-s8-0000000000000000.onnx"
    stale.write_bytes(b"old"), other.write_bytes(b"other cut")
    new = export(ref.net, ref.layers, tmp_path / "mobilenet_v2-s8+s16+s32+last-1111111111111111.onnx")
    assert new.is_file() and not stale.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([new.name, other.name])


def test_a_damaged_cached_graph_is_made_again(tmp_path, monkeypatch):
    from layerseek.backbones import runtime

    path = tmp_path / "mobilenet_v2-s4-0000000000000000.onnx"
    path.write_bytes(b"half a graph")
    monkeypatch.setattr(runtime, "graph_path", lambda *a: path)
    fx = runtime.OnnxExtractor("mobilenet_v2", ["s4"])
    out = fx(np.zeros((64, 96, 3), np.uint8))
    assert out["s4"].shape == (1, 24, 16, 24) and path.stat().st_size > 1000
