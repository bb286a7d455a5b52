"""`layerseek index`, `watch` and `remove`: what an index holds."""
from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from ..errors import LayerseekError, plural, shown
from . import base
from .base import DEFAULT_INDEX, EXIT_SOME_FAILED, _manifest_verify, app, collection_name, fail, os_error_line


@app.command(short_help="Index a folder of photos (again: only what changed).")
def index(
    folder: Annotated[Path, typer.Argument(help="folder of photos, searched recursively (linked folders followed; "
                                                "hidden files and folders and any index kept in it passed over), "
                                                "or one photo: added by name, even if it was removed before")],
    index_path: Annotated[Optional[Path], typer.Option("--index", help="the index directory, required (created "
                                                                       "if new)")] = None,
    method: Annotated[Optional[str], typer.Option(help="rmac (default), fcrow, crow, spoc, mac, gem, mof")] = None,
    backbone: Annotated[Optional[str], typer.Option(help="mobilenet_v2 (default), vgg16, efficientnet_lite0")] = None,
    layers: Annotated[Optional[str], typer.Option(help="comma-separated layers (default: the backbone's)")] = None,
    weights: Annotated[Optional[str], typer.Option(help="WMFF weight ratios, e.g. 1:2:4 (default: equal)")] = None,
    similarity: Annotated[Optional[str], typer.Option(help="cosine or correlation")] = None,
    max_side: Annotated[Optional[int], typer.Option(help="longer image side (default 1024)")] = None,
    precision: Annotated[Optional[str], typer.Option(metavar="float|int8",
                                                     help="the network's arithmetic: float (default) or int8, twice "
                                                          "as fast on ONNX Runtime, calibrated on Corel-1k (the "
                                                          "first stage as float's, the default pipeline on Paris "
                                                          "about 2 points of mAP lower: docs/BENCHMARKS.md); fixed "
                                                          "when the index is created")] = None,
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
                                                               "pattern, or that lie in a folder that does (e.g. "
                                                               "'*.tmp.jpg', 'thumbnails', ~/Photos/private), now and "
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
    from ..images import IMAGE_KINDS, is_image_name
    from ..index import Index
    from ..ingest import absolute
    from ..progress import catching_up_bar, progress_bar

    index_path = index_option(folder, index_path, "index")
    options = {"backbone": backbone, "layers": tuple(layers.split(",")) if layers else None, "weights": weights,
               "similarity": similarity, "max_side": max_side, "whiten_on": collection_name(whiten_on),
               "train_on": collection_name(train_on), "words": words, "pooling": window_pooling, "ma": ma, "he": he,
               "spherical": spherical, "precision": precision}
    learn_on = whiten_on or train_on
    creating = not Path(index_path, "manifest.json").is_file()
    if creating and not folder.exists():  # checked first: a mistyped folder must not leave an index behind
        fail(f"{folder}: no such folder or photo; no index was created")
    if creating and folder.is_file() and not is_image_name(folder):  # nor a file that is not a photo
        fail(f"{folder}: not a photo ({IMAGE_KINDS}); no index was created")
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
        wbar, wupdate = (progress_bar(f"learning on {learn_on}", base.err_console)
                         if learn_on and creating else (contextlib.nullcontext(), None))
        with wbar:
            idx = Index.open_or_create(index_path, method, threads, ann, wupdate, store,
                                       verify=DEFAULT_INDEX["verify"] if verify is None else verify, **options)
        bar, update = progress_bar(f"indexing {folder}" + (f" on Ray ({ray})" if ray else ""), base.err_console)
        idx.catching_up = catching_up_bar(base.err_console, bar)  # the word codes after: a line of this bar
        held = idx.catalog.count()
        with idx, interrupted(idx, held, folder, index_path), bar:
            for pattern in include or []:
                if not (idx.catalog.include(pattern) or idx.catalog.include(str(absolute(pattern)))):
                    base.err_console.print(f"  not excluded: {shown(pattern)}", highlight=False, soft_wrap=True, markup=False)
            for pattern in exclude or []:  # a path named as it is (a folder: all under it), made absolute
                named = not any(c in pattern for c in "*?[") and Path(pattern).expanduser().exists()
                idx.catalog.exclude(str(absolute(pattern)) if named else pattern, "glob")
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
    base.console.print(f"{index_path}: {report.summary()}", highlight=False)
    say_failures(report.failed, index_path)
    for line in report.unreadable:
        base.err_console.print(f"  folder not read (its entries kept): {shown(line)}", highlight=False, soft_wrap=True, markup=False)
    say_not_images([line for line in report.skipped if line not in report.skipped_before])  # once, not every run
    if report.skipped_before:
        n = len(report.skipped_before)
        base.err_console.print(f"  ({plural(n, 'file that is not an image', 'files that are not images')}, listed "
                               "before, not listed again)", highlight=False, soft_wrap=True, markup=False)
    say_missing_roots(report.missing_roots, index_path)
    if not (report.added or report.updated or report.unchanged or report.failed or report.excluded):
        base.err_console.print(f"  no photo under {shown(str(folder))} ({IMAGE_KINDS}; hidden files and folders are "
                               "passed over)", highlight=False, soft_wrap=True)
    elif creating and report.added and sys.stderr.isatty():  # a new index: what to do with it (said once)
        name = shown(str(index_path))
        base.err_console.print(f"next: `layerseek search {name} PHOTO`, or `layerseek serve {name}` for a page where "
                               f"you drop one; `layerseek index {shown(str(folder))} --index {name}` again takes in what "
                               "changed", highlight=False, soft_wrap=True)
    if report.failed or report.unreadable:
        raise typer.Exit(EXIT_SOME_FAILED)


@contextlib.contextmanager
def interrupted(idx, held: int, folder: Path, index_path: Path):
    """Ctrl-C during `index`: what was done is kept (ingest commits it before stopping); say how
    many photos that is and how to go on, and end with status 130, as an interrupted command does."""
    try:
        yield
    except KeyboardInterrupt:
        kept = idx.catalog.count() - held
        base.err_console.print(f"interrupted: {plural(kept, 'photo')} added to {shown(str(index_path))} and kept; "
                               f"`layerseek index {shown(str(folder))} --index {shown(str(index_path))}` goes on from "
                               "there", highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None


def index_option(folder: Path, index_path: Path | None, command: str) -> Path:
    """`--index`, which `index` and `watch` need: said when missing, and when FOLDER is itself an
    index (`layerseek index photos.lsx`, as `search` and `info` take one), with the command for
    each folder that index holds."""
    if index_path is not None:
        return index_path
    name = shown(str(folder))
    if Path(folder, "manifest.json").is_file():
        from ..index import Index

        try:
            with Index.open(folder) as idx:
                roots = idx.catalog.roots()
        except LayerseekError:
            roots = []
        runs = " or ".join(f"`layerseek {command} {shown(r)} --index {name}`" for r in roots[:3]) or \
            f"`layerseek {command} FOLDER --index {name}`"
        fail(f"{name} is an index, not a folder of photos: {runs}", code=2)
    fail(f"missing --index: where the index of {name} is kept (created if new), e.g. "
         f"`layerseek {command} {name} --index photos.lsx`", code=2)


def watch_reporter(index_path: Path):
    """What `watch` prints after each run: the time and the summary; each failed file named the
    first time this watch meets it (the summary counts the rest: a bad file is not named again at
    every change of its folder), and each file that is not an image the first time the index
    meets it, as `index` names them."""
    from ..ingest import UNCHANGED_SINCE_FAILED

    said: set[str] = set()

    def reported(report) -> None:
        base.console.print(f"{time.strftime('%H:%M:%S')} {index_path}: {report.summary()}", highlight=False, soft_wrap=True)
        for line in report.failed:
            named = line.removesuffix(UNCHANGED_SINCE_FAILED)
            if named != line and named in said:  # not read again, and named already
                continue
            said.add(named)
            base.err_console.print(f"  failed: {shown(line)}", highlight=False, soft_wrap=True)
        say_not_images([line for line in report.skipped if line not in report.skipped_before])
    return reported


#: up to this many new failures are named one a line; the rest, and the failures of earlier runs
#: (files unchanged since), are counted: `info` lists them all
FAILED_NAMED = 20


def say_failures(lines: list[str], index_path: Path) -> None:
    """The files that failed: each one that failed in this run named (up to FAILED_NAMED), those
    that failed before and are unchanged since counted (a broken file is not listed at every run)."""
    from ..ingest import UNCHANGED_SINCE_FAILED

    fresh = [line for line in lines if not line.endswith(UNCHANGED_SINCE_FAILED)]
    for line in fresh[:FAILED_NAMED]:
        base.err_console.print(f"  failed: {shown(line)}", highlight=False, soft_wrap=True)
    more, before = len(fresh) - FAILED_NAMED, len(lines) - len(fresh)
    if more > 0:
        base.err_console.print(f"  ... and {more:,} more failed; `layerseek info {shown(str(index_path))}` lists every "
                               "failure", highlight=False, soft_wrap=True)
    if before:
        base.err_console.print(f"  ({plural(before, 'file that failed before is', 'files that failed before are')} "
                               f"unchanged since, not read again: `layerseek info {shown(str(index_path))}` lists "
                               f"{'it' if before == 1 else 'them'})", highlight=False, soft_wrap=True)


#: up to this many files that are not images are named one a line; more (a phone's export: its videos
#: and sidecar files) are counted by kind
NOT_IMAGES_NAMED = 10


def say_not_images(paths: list[str]) -> None:
    """The files a walk passed over as not images: each named, or when there are many, counted by
    extension with one of them named."""
    if len(paths) <= NOT_IMAGES_NAMED:
        for line in paths:
            base.err_console.print(f"  not an image: {shown(line)}", highlight=False, soft_wrap=True)
        return
    from collections import Counter

    kinds = Counter(os.path.splitext(p)[1].lower() or "(no extension)" for p in paths)
    base.err_console.print(f"  {plural(len(paths), 'file that is not an image', 'files that are not images')}: "
                           + ", ".join(f"{n:,} {kind}" for kind, n in kinds.most_common())
                           + f" (e.g. {shown(paths[0])})", highlight=False, soft_wrap=True)


def say_missing_roots(missing: list[tuple[str, int]], index_path: Path) -> None:
    """One line for each other indexed folder that is gone from the disk, and how to forget it."""
    for root, n in missing:
        base.err_console.print(f"  missing: {shown(root)} ({plural(n, 'indexed file')} under it kept; moved "
                               f"or renamed? `layerseek index {shown(root)} --index {shown(str(index_path))} --prune` "
                               "forgets them)", highlight=False, soft_wrap=True, markup=False)


@app.command(short_help="Keep an index in step with its folder.")
def watch(
    folder: Annotated[Path, typer.Argument(help="the folder of photos to follow")],
    index_path: Annotated[Optional[Path], typer.Option("--index", help="the index directory, required (created "
                                                                       "with the defaults if new)")] = None,
    debounce: Annotated[float, typer.Option(help="seconds of quiet after a change before the index is updated")] = 2.0,
    poll: Annotated[bool, typer.Option("--poll", help="look for changes by polling (network shares, where the "
                                                      "system sends no events)")] = False,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads for the network")] = None,
    allow_mass_removal: Annotated[bool, typer.Option("--allow-mass-removal", "--prune",
                                                     help="let a run forget more than half of the folder's files")] = False,
) -> None:
    """Keep an index in step with FOLDER: index it now, then again each time files are added,
    changed, moved or deleted under it (after DEBOUNCE seconds of quiet), until Ctrl-C."""
    from ..index import Index
    from ..progress import catching_up_bar, progress_bar
    from ..watch import watch as follow

    index_path = index_option(folder, index_path, "watch")
    reported = watch_reporter(index_path)

    def failed(message: str) -> None:
        base.err_console.print(f"[red]error:[/red] {escape(shown(message))} (still watching)", highlight=False,
                               soft_wrap=True, markup=True)

    if not folder.is_dir():
        fail(f"{folder}: {'not a folder' if folder.exists() else 'no such folder'}")
    try:
        new = not Path(index_path, "manifest.json").is_file()  # a new index gets the default pipeline
        idx = Index.open_or_create(index_path, DEFAULT_INDEX["method"] if new else None, threads,
                                   verify=DEFAULT_INDEX["verify"], **({"backbone": DEFAULT_INDEX["backbone"]} if new else {}))
        with idx:
            base.console.print(f"watching {folder} for {index_path} (Ctrl-C stops)", highlight=False)

            def run_bar():  # each run's bar, gone when the run ends (its summary line stays)
                bar, update = progress_bar(f"indexing {folder}", base.err_console, transient=True)
                idx.catching_up = catching_up_bar(base.err_console, bar)
                return bar, update

            follow(idx, folder, debounce, on_report=reported, on_error=failed, poll=poll,
                   allow_mass_removal=allow_mass_removal, run_bar=run_bar)
    except KeyboardInterrupt:
        base.console.print("stopped", highlight=False)
    except LayerseekError as e:
        fail(str(e))


@app.command(short_help="Forget files or folders (they stay on disk).")
def remove(index_path: Annotated[Path, typer.Argument(metavar="INDEX", help="the index directory")],
           files: Annotated[list[Path], typer.Argument(metavar="PATH", help="indexed files or folders to forget (the files stay "
                                                            "on disk)")]) -> None:
    """Forget files from an index; a folder forgets every indexed file under it."""
    from ..index import Index

    try:
        with Index.open(index_path) as idx:
            before = idx.catalog.count()
            missing = idx.remove(files)
            idx.update_graph()
            left = idx.catalog.count()
    except LayerseekError as e:
        fail(str(e))
    base.console.print(f"{before - left} removed, {left} left", highlight=False)
    if missing:
        for p in missing:
            base.err_console.print(f"  not in the index: {shown(str(p))}", highlight=False, soft_wrap=True, markup=False)
        raise typer.Exit(1)
