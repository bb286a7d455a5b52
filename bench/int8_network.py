"""The network quantized to 8 bits (ONNX Runtime's static QDQ quantization, calibrated on Corel
photos): its speed against the float graph layerseek runs, how far its vectors move, and the
first stage's figures on SMVS and the Paris subset with it. A measurement for a decision, not a
setting of layerseek (nothing here changes an index).

    .venv/bin/python bench/int8_network.py                  # speed and agreement
    .venv/bin/python bench/int8_network.py --eval           # and `layerseek eval` of both collections

The quantized graph is written under a temporary cache (`$LAYERSEEK_CACHE`) in place of the float
one, with the weights and other graphs linked from the real cache, so that `eval` runs it as it
runs the float graph; the descriptor cache there starts empty.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from layerseek.backbones.runtime import OnnxExtractor, graph_path, weights_sha256  # noqa: E402
from layerseek.cache import cache_dir  # noqa: E402
from layerseek.datasets import shared_data_dir  # noqa: E402
from layerseek.images import load_image  # noqa: E402
from layerseek.methods import make_method  # noqa: E402


def quantized(fp32: Path, out: Path, photos: list[Path], fx: OnnxExtractor, calibrate: str = "minmax",
              float_outputs: bool = False) -> Path:
    """`fp32` quantized to `out` by layerseek's own `runtime.quantize` (min-max with the pooled
    layers in float is what `index --precision int8` runs; the rest are the variants compared)."""
    from layerseek.backbones.runtime import quantize

    return quantize(fp32, out, fx.preprocess, photos, calibrate, float_outputs)


def timed(session, x: np.ndarray, n: int = 8) -> tuple[float, float]:
    """(median wall ms, median CPU ms of this process) of one run."""
    session.run(None, {"x": x})
    wall, cpu = [], []
    for _ in range(n):
        t, c = time.perf_counter(), time.process_time()
        session.run(None, {"x": x})
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return 1000 * float(np.median(wall)), 1000 * float(np.median(cpu))


def session(path: Path, threads: int = 2):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calibration", type=int, default=24, help="Corel photos whose activations set the ranges "
                    "(24: those of `index --precision int8`)")
    ap.add_argument("--eval", action="store_true", help="also run `layerseek eval` (first stage) on SMVS and Paris")
    ap.add_argument("--pipeline", action="store_true", help="with --eval: Paris with the default pipeline too")
    ap.add_argument("--index", type=Path, help="with --eval: time `layerseek index` of this folder, float then int8")
    ap.add_argument("--calibrate", default="minmax", choices=("minmax", "percentile", "entropy"))
    ap.add_argument("--float-outputs", action="store_true", help="keep the nodes that make the pooled layers in float")
    ap.add_argument("--only-pipeline", action="store_true", help="with --eval: Paris with the default pipeline alone")
    args = ap.parse_args()
    data = shared_data_dir()
    fx = OnnxExtractor("mobilenet_v2")
    layers = fx.layers
    fp32 = graph_path("mobilenet_v2", layers, weights_sha256(fx.spec))
    corel = sorted((data / "corel1k").rglob("*.jpg"))
    calibration = corel[::max(1, len(corel) // args.calibration)][:args.calibration]  # as runtime.calibration_photos
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        int8 = quantized(fp32, tmp / "int8.onnx", calibration, fx, args.calibrate, args.float_outputs)
        print(f"quantized on {len(calibration)} Corel photos ({args.calibrate}"
              f"{', pooled layers in float' if args.float_outputs else ''}) in {time.perf_counter() - t:.1f} s")
        x = np.random.default_rng(0).standard_normal((1, 3, 768, 1024)).astype(np.float32)
        for name, path in (("float", fp32), ("int8", int8), ("float", fp32), ("int8", int8)):
            wall, cpu = timed(session(path), x)
            print(f"  {name:5s} MobileNetV2 to {', '.join(layers)} at 1024 x 768, 2 threads: {wall:.0f} ms, CPU {cpu:.0f} ms")
        # how far the R-MAC vectors move, on photos of neither the calibration nor each other
        method = make_method("rmac", backbone="mobilenet_v2")
        photos = sorted((data / "paris6k-subset" / "jpg").glob("*.jpg"))[::30][:8] + \
            sorted((data / "smvs-dvd-covers" / "Canon").glob("*.jpg"))[::50][:8]
        f, q = session(fp32), session(int8)
        cos, rel = [], []
        for p in photos:
            img = fx.preprocess(load_image(p, max_side=1024))
            a = dict(zip(layers, f.run(list(layers), {"x": img})))
            b = dict(zip(layers, q.run(list(layers), {"x": img})))
            rel.append(max(float(np.abs(a[n] - b[n]).max() / max(np.abs(a[n]).max(), 1e-12)) for n in layers))
            va, vb = method.encode(a)[0], method.encode(b)[0]
            cos.append(float(va @ vb / (np.linalg.norm(va) * np.linalg.norm(vb))))
        print(f"  {len(photos)} photos: cosine of the float and int8 R-MAC vectors {min(cos):.4f}-{max(cos):.4f} "
              f"(median {np.median(cos):.4f}); largest activation difference {np.median(rel):.3f} of the layer's "
              "largest (median over photos)")
        if not args.eval:
            return
        cache = tmp / "cache"
        (cache / "onnx").mkdir(parents=True)
        for sub in ("weights", "assign"):
            if (cache_dir() / sub).exists():
                os.symlink(cache_dir() / sub, cache / sub)
        for g in (cache_dir() / "onnx").glob("*.onnx"):
            os.symlink(g, cache / "onnx" / g.name)
        (cache / "onnx" / fp32.name).unlink()
        os.replace(int8, cache / "onnx" / fp32.name)
        int8_env = {**os.environ, "LAYERSEEK_CACHE": str(cache)}
        runs = [] if args.only_pipeline else [("smvs", []), ("rparis6k-subset", [])]
        if args.pipeline or args.only_pipeline:  # the default pipeline's stages, as docs/BENCHMARKS.md runs them
            runs.append(("rparis6k-subset", ["--verify", "100", "--expand", "1", "--diffusion", "15", "--fundamental",
                                             "20", "--word-candidates", "100", "--hubness", "10"]))
        for collection, extra in runs:
            cmd = [sys.executable, "-m", "layerseek.cli", "eval", collection, "--method", "rmac", "--backbone",
                   "mobilenet_v2", *extra]
            out = subprocess.run(cmd, capture_output=True, text=True, env=int8_env)
            rows = [ln for ln in out.stdout.splitlines() if any(k in ln for k in ("R@1 ", "mAP ", "mAP_e", "mAP_m",
                                                                                   "mAP_h", "extraction"))]
            print(f"int8, eval {collection} ({'default pipeline' if extra else 'first stage'}):")
            print("\n".join("  " + r.strip() for r in rows) or out.stderr[-500:])
        if args.index:
            for name, env in (("float", dict(os.environ)), ("int8", int8_env)) * 2:
                t = time.perf_counter()
                subprocess.run([sys.executable, "-m", "layerseek", "index", str(args.index), "--index",
                                str(tmp / f"idx-{name}")], capture_output=True, env=env, check=True)
                print(f"  {name:5s} `layerseek index` of {args.index}: {time.perf_counter() - t:.2f} s")
                subprocess.run(["rm", "-rf", str(tmp / f"idx-{name}")], check=True)


if __name__ == "__main__":
    main()
