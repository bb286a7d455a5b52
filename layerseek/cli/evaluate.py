"""`layerseek eval`: a method scored on a benchmark, as its paper does."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from ..errors import LayerseekError, plural
from . import base
from .base import app, fail

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
    qe: Annotated[int, typer.Option(help="query expansion over the first N results (0: off)")] = 0,
    qe_alpha: Annotated[float, typer.Option(help="alpha-QE exponent (0: average QE)")] = 0.0,
    whiten_on: Annotated[Optional[str], typer.Option(help="learn PCA whitening on this other collection (dataset name, ground-truth .json or folder)")] = None,
    max_side: Annotated[int, typer.Option(help="longer image side")] = 1024,
    precision: Annotated[str, typer.Option(metavar="float|int8", help="the network's arithmetic: float, or int8 "
                                                                       "as `index --precision int8` runs it (global "
                                                                       "methods)")] = "float",
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
                                              "cosine less half each database image's mean cosine to its N nearest "
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

    from ..backbones import get_spec
    from ..datasets import get_dataset
    from ..describe import describe_dataset
    from ..eval.runner import PRIMARY, evaluate_global, evaluate_mof, evaluate_verified, per_query
    from ..globaldesc import GlobalConfig
    from ..local.method import LocalMethod
    from ..pooling import POOLINGS
    from ..progress import progress_bar, versions

    if method not in POOLINGS and method not in ("mof", "local"):  # the methods, not only the poolings
        fail(f"unknown method {method!r}; valid: {', '.join(sorted(POOLINGS))}, mof, local")
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
        from ..backbones.runtime import PRECISIONS

        if precision not in PRECISIONS:
            fail(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
        if use_mof and precision != "float":
            fail("--precision int8 is for the global methods (an index's): MOF runs the float network")
        if use_mof and not train_on:
            fail("MOF learns its vocabularies on another collection: give --train-on (a dataset name, .json or folder)")
        if use_mof:
            from ..datasets import training_collections

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
            from ..datasets import read_rotations

            ds.apply_rotations(read_rotations(rotations))
        base.console.print(ds.describe(), highlight=False)
        t0 = time.perf_counter()
        errors, res = [], None
        if cfg is not None:
            bar, update = progress_bar(f"{ds.name} / {backbone}", base.err_console)
            with bar:
                db, qs, errors = describe_dataset(ds, backbone, layer_list, max_side, threads, update, [method], cache,
                                                  precision=precision)
        if use_mof:
            bar, update = progress_bar(f"{ds.name} / {backbone} windows", base.err_console)
            with bar:
                ldb, lqs, lerr = describe_dataset(ds, backbone, mof.layers, max_side, threads, update, cache_root=cache,
                                                  local=True)
            bar, update = progress_bar(f"{train_on} / {backbone} windows (training)", base.err_console)
            with bar:
                errors += lerr + mof.fit(train_on, threads, update, max_train, cache)
        t_extract = time.perf_counter() - t0
        wv = None
        if cfg is not None and whiten_on:
            wds = get_dataset(whiten_on)
            bar, update = progress_bar(f"{wds.name} / {backbone} (whitening)", base.err_console)
            with bar:  # only its database trains the whitening
                wdb, _, werr = describe_dataset(wds, backbone, layer_list, max_side, threads, update, [method], cache,
                                                queries=False, precision=precision)
            wv, errors = wdb, errors + werr
        if cfg is not None:
            res = evaluate_global(ds, cfg, db, qs, wv)
        if use_mof:
            shortlist = None
            if res is not None:
                shortlist = {qi: ranking for qi, ranking in res["_ranks"]}
            res = evaluate_mof(ds, mof.model, mof.pooling, ldb, lqs, shortlist=shortlist, rerank=rerank)
        if verify:
            from ..backbones.weights import cache_dir
            from ..verify.geometry import Verifier
            from ..verify.pipeline import dataset_features

            bar, update = progress_bar(f"{ds.name} / SIFT features", base.err_console)
            with bar:
                fdb, fqs, ferr = dataset_features(ds, cache / "features" if cache else cache_dir() / "features", update)
            errors += ferr
            verifier = Verifier(fundamental=fundamental, spread=spread, hamming=hamming, shared_part=shared_part)
            if geometry == "words":  # as an index stores them: positions, words, signatures
                from ..eval.runner import word_features
                from ..verify.words import GEOMETRY_QUERY_WORDS

                fdb, fqs = word_features(fdb), word_features(fqs, GEOMETRY_QUERY_WORDS)
            first = None if res is None else {qi: ranking for qi, ranking in res["_ranks"]}
            t_first = 0.0 if res is None else res["_score_seconds"]
            if expand or diffusion:
                import numpy as np

                from ..eval.runner import evaluate_index_rule
                from ..methods import make_method
                from ..verify.diffusion import settings

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
        title += f", {plural(expand, 'round')} of verified QE"
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
    base.console.print(table)
    settings = []
    if cfg is not None:
        settings.append(f"weights {cfg.weights or 'equal'}, similarity {similarity}, QE {qe}, whitening {whiten_on or 'none'}"
                        + (f", {precision} network" if precision != "float" else ""))
    if use_mof:
        settings.append(f"MOF {'+'.join(mof.layers)}: {mof.pooling}-pooled windows, {words} "
                        f"{'spherical' if spherical else 'plain k-means'} words learned on {train_on}, "
                        f"MA {ma}, {'BoW+HE' if he else 'BoW'}")
    if verify:
        settings.append(f"verification {res['_verify_seconds']:.2f} s per query")
    base.console.print("; ".join(settings) + f"; extraction {t_extract:.1f} s, scoring {res['_score_seconds']:.3f} s",
                       highlight=False)
    if errors:
        base.err_console.print(f"{plural(len(errors), 'image')} failed and {'was' if len(errors) == 1 else 'were'} "
                               "left out:")
        for line in errors:
            base.err_console.print(f"  {line}", highlight=False, soft_wrap=True)
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
        base.console.print(f"report written to {json_out}", highlight=False)
    if plots:
        from ..eval.plots import write_plots

        files = write_plots(ds, res["_ranks"], plots, f"{method} {'+'.join(layer_list)}")
        base.console.print(f"{plural(len(files), 'plot')} written to {plots}", highlight=False)
