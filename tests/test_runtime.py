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


def test_the_look_up_normalisation_is_the_arithmetic_of_each_value():
    """`normalised` (OpenCV's look-up, written into the batch in place) gives every pixel the
    value its table holds, which is PyTorch's (x - mean) / std for each of the 256 values."""
    from layerseek.backbones.runtime import normalised

    spec = get_spec("mobilenet_v2")
    mean, std = np.asarray(spec.mean, np.float32), np.asarray(spec.std, np.float32)
    table = ((np.arange(256, dtype=np.float32)[None] - mean[:, None]) * (1 / std)[:, None]).astype(np.float32)
    rng = np.random.default_rng(5)
    for shape in [(1, 1, 1, 3), (2, 7, 13, 3), (1, 768, 1024, 3), (3, 33, 5, 3)]:
        batch = rng.integers(0, 256, shape, dtype=np.uint8)
        batch[0, 0, 0] = (0, 128, 255)
        got = normalised(batch, table)
        slow = np.stack([np.stack([table[c][img[..., c].astype(np.int64)] for c in range(3)]) for img in batch])
        assert got.shape == (shape[0], 3, *shape[1:3]) and got.dtype == np.float32
        assert np.array_equal(got, slow), shape
    assert np.allclose(table, (np.arange(256)[None] - mean[:, None]) / std[:, None], atol=1e-5)
    # a strided view (every other column) is read as the pixels it shows
    wide = rng.integers(0, 256, (1, 20, 40, 3), dtype=np.uint8)
    assert np.array_equal(normalised(wide[:, :, ::2], table), normalised(wide[:, :, ::2].copy(), table))


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
    assert out.stdout.split() == [str(photos[2].resolve()), "True", "False", "False", "False"]  # indexed by its real path


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


def test_an_int8_network_is_close_to_the_float_one_and_made_once(data_dir, monkeypatch):
    """Issue 28: `precision="int8"` runs the graph quantized from the float one (calibrated on 24
    Corel photos, the pooled layers' nodes in float): its R-MAC vectors of photos it was not
    calibrated on point where the float ones do (cosine >= 0.97, measured 0.988-0.998), and it
    is quantized once, then read from the cache; it keeps the float graph beside it."""
    from layerseek.backbones import runtime
    from layerseek.methods import make_method

    int8 = runtime.OnnxExtractor("mobilenet_v2", precision="int8")
    fp = runtime.OnnxExtractor("mobilenet_v2")
    float_path = runtime.graph_path("mobilenet_v2", fp.layers, runtime.weights_sha256(fp.spec))
    assert runtime.int8_graph_path(float_path).is_file() and float_path.is_file()
    assert runtime.int8_graph_path(float_path).name.startswith("mobilenet_v2-int8-s8+s16+s32+last-")
    method = make_method("rmac", backbone="mobilenet_v2")
    calibrated = set(runtime.calibration_photos())
    for photo in (data_dir / "paris6k-subset/jpg/paris_louvre_000004.jpg", data_dir / "smvs-dvd-covers/Canon/001.jpg"):
        assert photo not in calibrated
        img = load_image(photo, max_side=1024)
        a, b = method.encode(fp(img))[0], method.encode(int8(img))[0]
        assert float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) >= 0.97
        assert not np.array_equal(a, b)  # another network indeed
    monkeypatch.setattr(runtime, "quantize", lambda *a: pytest.fail("quantized again"))
    runtime.OnnxExtractor("mobilenet_v2", precision="int8")(np.zeros((64, 96, 3), np.uint8))
    with pytest.raises(UnknownNameError, match="valid: float, int8"):
        runtime.OnnxExtractor("mobilenet_v2", precision="int4")
    with pytest.raises(LayerseekError, match="ONNX Runtime"):
        runtime.make_extractor("mobilenet_v2", precision="int8", runtime="torch")


def test_an_int8_index_keeps_its_network(copy_paris, tmp_path):
    """`index --precision int8`: the manifest says so (a float index's manifest has no such key),
    its own photo comes first, `info -v` names it, asking for the float network is refused, and
    Ray (PyTorch's float network) refuses to encode for it."""
    import json

    from typer.testing import CliRunner

    from layerseek.cli import app
    from layerseek.distributed import ray_results
    from layerseek.index import Index

    photos = copy_paris(tmp_path / "photos", 4)
    run = CliRunner().invoke
    r = run(app, ["index", str(photos), "--index", str(tmp_path / "i8"), "--max-side", "320", "--precision", "int8"])
    assert r.exit_code == 0, r.output
    r = run(app, ["index", str(photos), "--index", str(tmp_path / "fl"), "--max-side", "320", "--no-verify"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "i8" / "manifest.json").read_text())["params"]["precision"] == "int8"
    assert "precision" not in json.loads((tmp_path / "fl" / "manifest.json").read_text())["params"]
    query = sorted(photos.iterdir())[2]
    r = run(app, ["search", str(tmp_path / "i8"), str(query), "--paths-only", "-n", "1", "--here"])
    assert r.exit_code == 0 and r.output.strip() == str(query.resolve()), r.output
    assert "(int8 network)" in run(app, ["info", str(tmp_path / "i8"), "-v"]).output
    r = run(app, ["index", str(photos), "--index", str(tmp_path / "i8"), "--precision", "float"])
    assert r.exit_code == 1 and "precision 'int8', not 'float'" in r.output
    with Index.open(tmp_path / "i8") as idx, pytest.raises(LayerseekError, match="--ray"):
        next(ray_results(idx, [("x.jpg", 1, 1)]))
