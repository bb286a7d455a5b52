"""Where a backbone's forward pass runs: PyTorch (the reference, and the GPU path) or ONNX Runtime.

On a CPU, ONNX Runtime runs the same graph faster than PyTorch eager (MobileNetV2 at 1024 x 768
on 2 cores: 83-117 ms against 134-161 ms; docs/BENCHMARKS.md, "Speed a user feels"). The graph is exported from the checked weights by PyTorch's exporter the
first time a (backbone, layers, weights) triple is asked for, kept in the cache
(`<cache>/onnx/`), and reused; `layerseek models pull` exports the default layers at set-up. Its
activations match PyTorch's within `TOLERANCE` (tests/test_runtime.py).

`$LAYERSEEK_RUNTIME` (torch / onnx) overrides the choice for a process.
"""
from __future__ import annotations

import hashlib
import os
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import LayerseekError, UnknownNameError

RUNTIMES = ("auto", "torch", "onnx")
#: the arithmetic of the network: float (the reference), or int8 (ONNX Runtime on the CPU, twice
#: as fast: docs/BENCHMARKS.md, "A network quantized to 8 bits")
PRECISIONS = ("float", "int8")
#: an int8 graph's activation ranges are those of these photos: every n-th of Corel-1k (no
#: benchmark's query set here), named in the graph's file name (another set makes another graph)
CALIBRATION = ("corel1k", 24)
OPSET = 17
#: Largest |ONNX - PyTorch| over a layer, relative to the layer's largest |PyTorch| activation.
TOLERANCE = 1e-4


def onnx_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def choose(runtime: str, device: str) -> str:
    """"torch" or "onnx" for `runtime` ("auto": ONNX Runtime on a CPU where it is installed)."""
    runtime = os.environ.get("LAYERSEEK_RUNTIME") or runtime
    if runtime not in RUNTIMES:
        raise UnknownNameError(f"unknown runtime {runtime!r}; valid: {', '.join(RUNTIMES)}")
    if runtime == "auto":
        return "onnx" if str(device) == "cpu" and onnx_available() else "torch"
    if runtime == "onnx":
        if str(device) != "cpu":
            raise LayerseekError(f"the onnx runtime runs on the CPU only; device {device!r} needs runtime torch")
        if not onnx_available():
            raise LayerseekError("the onnx runtime needs the onnxruntime package (pip install onnxruntime)")
    return runtime


def graph_path(backbone: str, layers: Sequence[str], weights_sha256: str) -> Path:
    """The cached graph of one backbone cut at `layers`, named by all that makes it: the layers,
    the weights' checksum, the source of the backbones package (a changed architecture never
    reuses an old graph), the opset and the exporting PyTorch's version (read without importing it)."""
    from importlib.metadata import version

    from ..cache import cache_dir

    key = hashlib.sha256(f"{backbone}|{','.join(layers)}|{weights_sha256}|{OPSET}|{version('torch')}".encode())
    for source in sorted(Path(__file__).parent.glob("*.py")):
        key.update(source.read_bytes())
    return cache_dir() / "onnx" / f"{backbone}-{'+'.join(layers)}-{key.hexdigest()[:16]}.onnx"


def export(net, layers: Sequence[str], path: Path) -> Path:
    """Export `net` (a StagedNet in eval mode) cut at `layers` to `path`, with any batch size and
    image size. Written under another name and renamed: two processes exporting at once each
    leave a whole file."""
    import torch

    class Cut(torch.nn.Module):  # one input, the asked layers as a tuple of outputs
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            out = self.net(x, layers)
            return tuple(out[n] for n in layers)

    path.parent.mkdir(parents=True, exist_ok=True)
    x = torch.zeros(1, 3, 224, 288)
    axes = {"x": {0: "n", 2: "h", 3: "w"}, **{n: {0: "n", 2: f"h_{n}", 3: f"w_{n}"} for n in layers}}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice
            warnings.simplefilter("ignore")
            # The TorchScript exporter: it keeps H and W symbolic through MobileNet's and VGG's
            # padding with no extra package (the dynamo exporter needs onnxscript).
            torch.onnx.export(Cut().eval(), (x,), tmp, dynamo=False, input_names=["x"],
                              output_names=list(layers), dynamic_axes=axes, opset_version=OPSET)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    # graphs of the same cut made by older code or weights: never asked for again
    for old in path.parent.glob(f"{path.name.rsplit('-', 1)[0]}-*.onnx"):
        if old != path:
            old.unlink(missing_ok=True)
    return path


def int8_graph_path(float_path: Path) -> Path:
    """Where the int8 graph made from the float graph at `float_path` is cached: named by the float
    graph, the calibration photos and the quantizing ONNX Runtime's version."""
    from importlib.metadata import version

    backbone, rest = float_path.stem.split("-", 1)
    cut, _ = rest.rsplit("-", 1)
    key = hashlib.sha256(f"{float_path.name}|{CALIBRATION}|{version('onnxruntime')}".encode()).hexdigest()[:16]
    return float_path.with_name(f"{backbone}-int8-{cut}-{key}.onnx")


def calibration_photos() -> list[Path]:
    """The photos whose activations set an int8 graph's ranges (`CALIBRATION`)."""
    from ..datasets import shared_data_dir

    folder, n = CALIBRATION
    root = shared_data_dir() / folder
    photos = sorted(root.rglob("*.jpg")) if root.is_dir() else []
    if len(photos) < n:
        raise LayerseekError(f"{root}: an int8 network is calibrated on {n} of its photos, found {len(photos)} "
                             "(set $LAYERSEEK_DATA to the shared data folder)")
    return photos[::len(photos) // n][:n]


def quantize(float_path: Path, out: Path, preprocess, photos: Sequence[Path], calibrate: str = "minmax",
             float_outputs: bool = True) -> Path:
    """The float graph at `float_path` as int8 at `out` (ONNX Runtime's static quantization,
    QDQ): weights per channel, activations with the ranges seen on `photos` at 1024 px
    (`preprocess`: uint8 RGB -> the network's input; `calibrate`: minmax, or percentile /
    entropy, which bench/int8_network.py compares). With `float_outputs` the nodes whose outputs
    are pooled stay in float (quantized too, the default pipeline lost 2-5 points of mAP on
    Paris; so, 1.5-2.5: docs/BENCHMARKS.md, "A network quantized to 8 bits"). Written under
    another name and renamed."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quant_pre_process, quantize_static)

    from ..images import load_image

    def shaped(img: np.ndarray) -> np.ndarray:  # the histogram calibrations stack photos of one shape
        return img if calibrate == "minmax" or img.shape[1] >= img.shape[0] else np.ascontiguousarray(
            img.transpose(1, 0, 2))

    class Photos(CalibrationDataReader):
        def __init__(self):
            self.it = (preprocess(shaped(load_image(p, max_side=1024))) for p in photos)

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {"x": x}

    tag = f".{os.getpid()}.{threading.get_ident()}"
    pre, tmp = out.with_name(f".{out.name}{tag}.pre"), out.with_name(f".{out.name}{tag}.tmp")
    try:
        quant_pre_process(str(float_path), str(pre))
        graph = onnx.load(str(pre)).graph
        outputs = {o.name for o in graph.output}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_static(str(pre), str(tmp), Photos(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method={"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                                              "percentile": CalibrationMethod.Percentile}[calibrate],
                            extra_options={"CalibPercentile": 99.99},
                            nodes_to_exclude=[n.name for n in graph.node if set(n.output) & outputs]
                            if float_outputs else [])
        os.replace(tmp, out)
    finally:
        for f in (pre, tmp):
            if os.path.exists(f):
                os.unlink(f)
    for old in out.parent.glob(f"{out.name.rsplit('-', 1)[0]}-*.onnx"):  # of another calibration or version
        if old != out:
            old.unlink(missing_ok=True)
    return out


def normalised(batch: np.ndarray, table: np.ndarray) -> np.ndarray:
    """N x H x W x 3 uint8 -> N x 3 x H x W float32, each value `table[channel, value]`: OpenCV's
    look-up on each channel plane, written in place (0.9 ms for 1024 x 768 against 3.5 for
    numpy's take, which first widens every index to 64 bits); the same values."""
    import cv2

    n, h, w, _ = batch.shape
    x = np.empty((n, 3, h, w), np.float32)
    luts = [np.ascontiguousarray(table[c].reshape(1, 256), np.float32) for c in range(3)]
    for i in range(n):
        for c, plane in enumerate(cv2.split(np.ascontiguousarray(batch[i]))):
            cv2.LUT(plane, luts[c], dst=x[i, c])
    return x


class OnnxNet:
    """An ONNX Runtime session over one exported graph: normalised N x 3 x H x W float32 ->
    {layer: N x C x h x w}."""

    def __init__(self, path: Path, layers: Sequence[str], threads: int | None = None):
        import onnxruntime as ort

        self.layers = tuple(layers)
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(threads or os.cpu_count() or 1)
        so.inter_op_num_threads = 1
        # No busy-waiting between operators: on 2 cores the decoding threads take SIFT meanwhile.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - a damaged cache file: say which, remake it
            raise LayerseekError(f"{path}: not a usable ONNX graph ({type(e).__name__}); delete it to re-export") from None

    def __call__(self, x: np.ndarray, layers: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        names = list(layers or self.layers)
        missing = [n for n in names if n not in self.layers]
        if missing:
            raise LayerseekError(f"layer {missing[0]!r} is not in this graph (it has {', '.join(self.layers)})")
        got = self.session.run(names, {"x": np.ascontiguousarray(x, dtype=np.float32)})
        return dict(zip(names, got))


def weights_sha256(spec, weights: str | Path | None = None) -> str:
    """The checksum that names a graph: of the user's own weight file, or the one recorded when
    the shipped weights were pulled (not checked against the file again: a graph already
    exported does not read the weights, and exporting loads them through the checked path;
    hashing VGG16's weights took 60 ms of every start)."""
    from ..errors import WeightsError
    from .weights import recorded_sha256, sha256_file

    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise WeightsError(f"{path}: weight file not found")
        return sha256_file(path)
    return recorded_sha256(spec.weights, check=False)


class OnnxExtractor:
    """`FeatureExtractor`'s interface on ONNX Runtime alone, with no torch imported: uint8 RGB
    H x W x 3 images (or a same-size list) -> {layer: N x C x h x w numpy float32}. A graph not yet
    in the cache (or damaged there) is exported once from PyTorch's network, which then is imported."""

    runtime = "onnx"

    def __init__(self, backbone: str, layers: Sequence[str] | None = None, weights: str | Path | None = None,
                 threads: int | None = None, precision: str = "float"):
        from . import get_spec
        from .spec import checked_layers

        if precision not in PRECISIONS:
            raise UnknownNameError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
        self.precision = precision
        self.spec = get_spec(backbone)
        self.layers = checked_layers(self.spec, layers)
        self.threads = int(threads or os.cpu_count() or 1)
        self._weights = weights
        self._graphs: dict[tuple[str, ...], OnnxNet] = {}
        # (value - mean) / std of every uint8 value, per channel: one table look-up a pixel
        mean, inv_std = np.asarray(self.spec.mean, np.float32), 1.0 / np.asarray(self.spec.std, np.float32)
        self._mean, self._inv_std = mean.reshape(1, 3, 1, 1), inv_std.reshape(1, 3, 1, 1)
        self._table = ((np.arange(256, dtype=np.float32)[None] - mean[:, None]) * inv_std[:, None]).astype(np.float32)
        self._graph(self.layers)

    def _graph(self, layers: tuple[str, ...]) -> OnnxNet:
        graph = self._graphs.get(layers)
        if graph is None:
            float_path = graph_path(self.spec.name, layers, weights_sha256(self.spec, self._weights))
            path = int8_graph_path(float_path) if self.precision == "int8" else float_path

            def exported() -> Path:
                """The float graph exported once from PyTorch's network (the reference); an int8
                one quantized from it."""
                if self.precision == "float" or not float_path.is_file():
                    from .base import FeatureExtractor

                    net = FeatureExtractor(self.spec.name, layers, self._weights, runtime="torch").net
                    export(net, layers, float_path)
                if self.precision == "int8":
                    quantize(float_path, path, self.preprocess, calibration_photos())
                return path

            if not path.is_file():
                exported()
            try:
                graph = OnnxNet(path, layers, self.threads)
            except LayerseekError:  # a damaged cache file (a disk error, a killed copy): made again
                path.unlink(missing_ok=True)
                graph = OnnxNet(exported(), layers, self.threads)
            self._graphs[layers] = graph
        return graph

    def preprocess(self, images) -> np.ndarray:
        """uint8 RGB H x W x 3 (or a same-size list / N x H x W x 3) -> normalised N x 3 x H x W."""
        if isinstance(images, (list, tuple)):
            shapes = {np.shape(im) for im in images}
            if len(shapes) != 1:
                raise LayerseekError(f"one batch needs images of one size, got {sorted(shapes)}")
            batch = np.stack([np.asarray(im) for im in images])
        else:
            batch = np.asarray(images)
            if batch.ndim == 3:
                batch = batch[None]
        if batch.ndim != 4 or batch.shape[-1] != 3:
            raise LayerseekError(f"expected H x W x 3 RGB images, got shape {batch.shape}")
        if batch.dtype != np.uint8:  # not a decoded photo: the arithmetic the table holds
            return (batch.transpose(0, 3, 1, 2).astype(np.float32) - self._mean) * self._inv_std
        return normalised(batch, self._table)

    def forward(self, x: np.ndarray, layers: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Normalised N x 3 x H x W -> {layer: N x C x h x w}. A graph per asked layer set; the
        extractor's own set serves any subset of it."""
        layers = tuple(layers or self.layers)
        return self._graph(self.layers if set(layers) <= set(self.layers) else layers)(x, layers)

    def __call__(self, images, layers: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        return self.forward(self.preprocess(images), layers)


def make_extractor(backbone: str, layers: Sequence[str] | None = None, weights: str | Path | None = None,
                   threads: int | None = None, device: str = "cpu", runtime: str = "auto", precision: str = "float"):
    """The extractor an index runs: `OnnxExtractor` where ONNX Runtime is chosen (no torch on the
    path), else PyTorch's `FeatureExtractor`; an int8 network runs on ONNX Runtime only."""
    chosen = choose(runtime, device)
    if precision == "int8" and chosen != "onnx":
        raise LayerseekError("an int8 network runs on ONNX Runtime on the CPU (this index was made so); "
                             f"not with the {chosen} runtime on {device!r}")
    if chosen == "onnx":
        return OnnxExtractor(backbone, layers, weights, threads, precision)
    from .base import FeatureExtractor

    return FeatureExtractor(backbone, layers, weights=weights, threads=threads, device=device, runtime="torch")
