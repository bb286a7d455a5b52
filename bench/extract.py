"""Extraction speed per backbone: images/s at 224x224 and at 1024x768, and the share of the CPU's
fp32 FLOP peak it reaches.

    .venv/bin/python bench/extract.py [--backbones vgg16,mobilenet_v2,efficientnet_lite0]
        [--threads 2] [--repeat 5] [--variants channels_last,contiguous] [--json out.json]

FLOPs are counted, not estimated: a forward hook on every Conv2d / Linear adds
2 x output elements x (input channels / groups) x kernel area (one multiply-add = 2 FLOP).
The peak is threads x clock x FLOP/cycle/core. FLOP/cycle comes from the SIMD flags in
/proc/cpuinfo (AVX-512: 2 FMA units x 16 fp32 lanes x 2 = 64; AVX2 + FMA: 2 x 8 x 2 = 32). The
clock is measured, because a VM's /proc/cpuinfo shows only the nominal (TSC) clock while the cores
boost above it: a C loop of dependent integer adds (one per cycle) runs on every thread at once,
and cycles / second is the clock under full load. An achieved sgemm rate (torch.mm of two
4096x4096 matrices) is printed beside it as the practical ceiling.

--mixed times a stream of images of varying size one at a time (the case where glibc's malloc
returns PyTorch's large buffers to the OS after every pass); run it once as is and once with
LAYERSEEK_NO_MALLOPT=1 to see what `keep_freed_memory` buys.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch
from torch import nn

from layerseek.backbones import FeatureExtractor


def cpu_info() -> dict:
    flags, mhz, model = set(), None, platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
                elif line.startswith("cpu MHz") and mhz is None:
                    mhz = float(line.split(":", 1)[1])
                elif line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    if "avx512f" in flags:
        per_cycle = 64
    elif "avx2" in flags and "fma" in flags:
        per_cycle = 32
    elif "avx" in flags:
        per_cycle = 16
    else:
        per_cycle = 8
    return {"model": model, "mhz": mhz, "flop_per_cycle_per_core": per_cycle}


CLOCK_C = r"""
#include <stdio.h>
#include <time.h>
int main(void) {
    unsigned long x = 0, n = 200000000UL;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (unsigned long i = 0; i < n; i++)
        __asm__ volatile("add $1,%0\n\tadd $1,%0\n\tadd $1,%0\n\tadd $1,%0\n\tadd $1,%0\n\t"
                         "add $1,%0\n\tadd $1,%0\n\tadd $1,%0\n\tadd $1,%0\n\tadd $1,%0" : "+r"(x));
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%f\n", 10.0 * n / ((b.tv_sec - a.tv_sec) + 1e-9 * (b.tv_nsec - a.tv_nsec)) / 1e6);
    return x == 0;
}
"""


def measured_mhz(threads: int) -> float | None:
    """Clock under load on `threads` cores at once: 10 dependent adds per loop turn = 10 cycles."""
    import shutil
    import subprocess
    import tempfile

    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        src, exe = os.path.join(tmp, "clock.c"), os.path.join(tmp, "clock")
        with open(src, "w") as f:
            f.write(CLOCK_C)
        if subprocess.run([cc, "-O1", "-o", exe, src], capture_output=True).returncode != 0:
            return None
        procs = [subprocess.Popen([exe], stdout=subprocess.PIPE, text=True) for _ in range(threads)]
        rates = [float(p.communicate()[0]) for p in procs]
    return min(rates)


def theoretical_peak(threads: int, info: dict) -> float:
    mhz = info.get("measured_mhz") or info["mhz"] or 0
    return threads * mhz * 1e6 * info["flop_per_cycle_per_core"]


def sgemm_rate(n: int = 4096, repeat: int = 3) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def count_flops(net: nn.Module, run) -> int:
    total = 0

    def hook(mod, inp, out):
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1] * (mod.in_channels // mod.groups)
            total += 2 * out.numel() * k
        elif isinstance(mod, nn.Linear):
            total += 2 * out.numel() * mod.in_features

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return total


def bench_one(backbone: str, size: tuple[int, int], batch: int, repeat: int, channels_last: bool) -> dict:
    fx = FeatureExtractor(backbone, channels_last=channels_last)
    h, w = size
    imgs = np.random.default_rng(0).integers(0, 256, (batch, h, w, 3), dtype=np.uint8)
    x = fx.preprocess(imgs)
    flops = count_flops(fx.net, lambda: fx.forward(x[:1])) * batch
    fx.forward(x)  # warm-up: oneDNN primitive creation, allocator
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fx.forward(x)
        times.append(time.perf_counter() - t)
    med = statistics.median(times)
    return {
        "backbone": backbone, "layers": list(fx.layers), "size": f"{w}x{h}", "batch": batch,
        "channels_last": channels_last, "s_per_batch_median": med, "s_per_batch_min": min(times),
        "images_per_s": batch / med, "gflop_per_image": flops / batch / 1e9, "gflop_per_s": flops / med / 1e9,
    }


def bench_mixed(backbone: str, n: int, channels_last: bool) -> dict:
    """One image at a time, cycling through sizes seen in real photo folders (max side 1024)."""
    sizes = [(768, 1024), (1024, 768), (683, 1024), (1024, 683), (576, 1024), (768, 1000)]
    fx = FeatureExtractor(backbone, channels_last=channels_last)
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (*sizes[i % len(sizes)], 3), dtype=np.uint8) for i in range(n)]
    fx(imgs[0])
    t = time.perf_counter()
    for im in imgs:
        fx(im)
    dt = (time.perf_counter() - t) / n
    return {"backbone": backbone, "mixed": True, "s_per_image": dt, "mallopt": not os.environ.get("LAYERSEEK_NO_MALLOPT")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", default="vgg16,mobilenet_v2,efficientnet_lite0")
    ap.add_argument("--sizes", default="224x224,1024x768", help="WxH list")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--batch224", type=int, default=8, help="batch size at 224x224 (1 at larger sizes)")
    ap.add_argument("--variants", default="channels_last,contiguous")
    ap.add_argument("--mixed", type=int, default=0, help="only time N images of varying size, one at a time")
    ap.add_argument("--json", help="write all results here")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    if args.mixed:
        for backbone in args.backbones.split(","):
            r = bench_mixed(backbone, args.mixed, True)
            print(f"{backbone:20s} mixed sizes, mallopt {'on ' if r['mallopt'] else 'off'}: "
                  f"{r['s_per_image']:.3f} s/image", flush=True)
        return 0
    info = cpu_info()
    info["measured_mhz"] = measured_mhz(args.threads)
    peak = theoretical_peak(args.threads, info)
    gemm = sgemm_rate()
    print(f"CPU: {info['model']}, {args.threads} threads, nominal {info['mhz']} MHz, measured under load "
          f"{info['measured_mhz']:.0f} MHz, {info['flop_per_cycle_per_core']} fp32 FLOP/cycle/core")
    print(f"theoretical peak {peak / 1e9:.1f} GFLOP/s; sgemm 4096 achieved {gemm / 1e9:.1f} GFLOP/s "
          f"({100 * gemm / peak:.0f}% of peak)")
    print(f"torch {torch.__version__}, python {sys.version.split()[0]}")
    rows = []
    header = f"{'backbone':20s} {'size':>9s} {'batch':>5s} {'variant':>14s} {'img/s':>7s} {'GFLOP/img':>9s} {'GFLOP/s':>8s} {'% peak':>6s}"
    print(header)
    for backbone in args.backbones.split(","):
        for size in args.sizes.split(","):
            w, h = (int(v) for v in size.split("x"))
            batch = args.batch224 if w * h <= 224 * 224 else 1
            for variant in args.variants.split(","):
                r = bench_one(backbone, (h, w), batch, args.repeat, variant == "channels_last")
                r["variant"] = variant
                r["pct_peak"] = 100 * r["gflop_per_s"] * 1e9 / peak
                rows.append(r)
                print(f"{backbone:20s} {r['size']:>9s} {batch:5d} {variant:>14s} {r['images_per_s']:7.2f} "
                      f"{r['gflop_per_image']:9.2f} {r['gflop_per_s']:8.1f} {r['pct_peak']:6.1f}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu": info, "threads": args.threads, "peak_gflops": peak / 1e9,
                       "sgemm_gflops": gemm / 1e9, "torch": torch.__version__, "results": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
