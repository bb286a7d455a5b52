"""`layerseek search` and `layerseek demo`."""
from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from ..errors import LayerseekError, shown
from ..hits import SEARCH_LIMITS
from ..shell import is_table, kept_words, print_hits, results_start, search_params, served_content, shown_hits
from ..stages import DEFAULT_VERIFY
from . import base
from .base import _NOTHING_TO_FINISH, DEFAULT_INDEX, EXIT_SOME_FAILED, app, fail

#: the name a photo read from standard input (`search ... -`) is given in what is printed
STDIN = "standard input"

#: up to this many queries in one process, the word scorer's numpy path answers them sooner than
#: its compiled loops load (about 0.65 s against 55 ms a query at 26,000 images)
FEW_QUERIES = 8


def few_queries() -> None:
    """Set this process up to answer a query or a few (a search from the shell, the demo): the word
    scorer's numpy path (`invfile.few_queries`), and BLAS on one thread: its matrices here are
    small, and verification spreads over the cores by threads of its own (OpenBLAS's idle workers
    spinning beside them made it take about twice as long: docs/BENCHMARKS.md)."""
    from threadpoolctl import threadpool_limits

    from ..local import invfile

    invfile.few_queries()
    threadpool_limits(limits=1, user_api="blas")


def query_images(paths: list[Path]) -> list[Path]:
    """The query images named: files as given, folders by their image files (recursively, sorted;
    as `index` walks a folder: `ingest.photo_walk`)."""
    import os

    from ..images import is_image_name
    from ..ingest import photo_walk

    out: list[Path] = []
    for p in paths:
        if not p.is_dir():
            out.append(p)
            continue
        found = []
        for dirpath, filenames in photo_walk(p):
            found += [Path(dirpath) / f for f in filenames if is_image_name(f) and os.path.isfile(os.path.join(dirpath, f))]
        out += sorted(found)
    return out


@app.command(short_help="Find the indexed photos of the same object or place.")
def search(
    index_path: Annotated[Path, typer.Argument(metavar="INDEX", help="the index directory")],
    images: Annotated[list[Path], typer.Argument(metavar="IMAGE", help="the example image (- reads it from standard input: "
                                                      "a screenshot tool's or the clipboard's output); several, or folders of them, for a "
                                                      "batch (the network is loaded once)")],
    top: Annotated[int, typer.Option("--top", "-n", help="how many results", min=SEARCH_LIMITS["top"][0],
                                     max=SEARCH_LIMITS["top"][1])] = 10,
    qe: Annotated[int, typer.Option(help="query expansion over the first N results (0: off)", min=SEARCH_LIMITS["qe"][0],
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
    word_filter: Annotated[Optional[float], typer.Option(help="candidates whose word score is at most X are not "
                                                         "verified (default: the index's setting, 0.01 for new "
                                                         "indexes; -1: verify every candidate)",
                                                    min=SEARCH_LIMITS["word_filter"][0],
                                                    max=SEARCH_LIMITS["word_filter"][1])] = None,
    hubness: Annotated[Optional[int], typer.Option(help="rank by the cosine less half each image's mean cosine to its "
                                                   "N nearest indexed images, so that an image near everything "
                                                   "does not crowd the results (default: the index's setting, 10 "
                                                   "for new global indexes; 0: the cosine alone)",
                                              min=SEARCH_LIMITS["hubness"][0], max=SEARCH_LIMITS["hubness"][1])] = None,
    same_only: Annotated[bool, typer.Option("--same-only", help="show only the results verified as the same object "
                                                                "or place")] = False,
    min_inliers: Annotated[Optional[int], typer.Option(help="show only the results with at least N verified "
                                                            "correspondences (inliers)", min=1)] = None,
    region: Annotated[Optional[str], typer.Option(metavar="X,Y,W,H", help="search with a part of the photo: its left "
                                                  "and top edges, width and height as shares of the photo's width and "
                                                  "height (0.5,0,0.5,1: the right half)")] = None,
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
    import json as _json

    if json_out + csv_out + paths_only > 1:
        fail("choose one of --json, --csv and --paths-only")
    from ..hits import format_region, parse_region

    try:
        part = parse_region(region) if region is not None else None
    except ValueError as e:
        fail(str(e))
    from ..store.catalog import is_index_dir

    if not is_index_dir(index_path):  # before the photos are looked for: the index is what is wrong
        swapped = next((p for p in images if is_index_dir(p)), None)
        fail(f"{shown(str(index_path))}: not an index" + (
            f"; {shown(str(swapped))} is one: the index comes first (layerseek search INDEX IMAGE)" if swapped else
            f" (create one with `layerseek index DIR --index {shown(str(index_path))}`)"))
    piped = None  # `-`: the photo's bytes from standard input, named so in what is printed
    if any(str(p) == "-" for p in images):
        if len(images) != 1:
            fail("- (standard input) is the only photo of its search")
        import sys

        piped = sys.stdin.buffer.read() if not sys.stdin.isatty() else b""
        if not piped:
            fail("standard input: empty (pipe a photo into it: `... | layerseek search INDEX -`)")
        images = [Path(STDIN)]
    queries = query_images(images) if piped is None else images
    batch = len(queries) != 1 or images[0].is_dir()
    # the index is closed (the ExitStack below) before this command returns or fails
    _NOTHING_TO_FINISH[0] = True
    if not queries:
        fail(f"no image in {', '.join(shown(str(p)) for p in images)}")
    failed: list[tuple[Path, str]] = []
    writer, header = results_start(csv_out, json_out, paths_only, batch)  # header: before the first results
    remote = None  # a running `layerseek serve` of this index answers, unless asked for what it cannot do
    if not here and rerank_with is None and method is None and backbone is None and diffusion is None:
        from ..server.client import running_server

        remote = running_server(index_path)
        if remote is not None:
            base.err_console.print(f"searched by the server at {remote.url} (pid {remote.pid}); --here searches in this "
                                   "process", highlight=False, soft_wrap=True)
    table = is_table(json_out, csv_out, paths_only)  # a table: identical files are one row, `top` counts photos
    params = search_params(top, exclude_self, qe, verify, word_candidates, word_filter, hubness, photos=table,
                           region=format_region(part) if part is not None else None)
    try:
        with contextlib.ExitStack() as stack:
            opened: list = []  # [index, mof index to re-rank with], once a search runs here

            def here_index():
                if not opened:
                    from ..index import Index
                    from ..progress import catching_up_bar

                    if len(queries) <= FEW_QUERIES:
                        few_queries()
                    idx = stack.enter_context(Index.open(index_path, threads))
                    idx.catching_up = catching_up_bar(base.err_console)  # caches behind the catalog: a bar
                    idx.check_method(method, backbone=backbone)
                    if not idx.catalog.count():
                        raise LayerseekError(f"{index_path}: holds no photo yet (`layerseek index FOLDER --index "
                                             f"{index_path}` adds them)")
                    idx.prefetch_words()  # beside the query's decoding and network
                    opened.extend([idx, stack.enter_context(Index.open(rerank_with, threads))
                                   if rerank_with is not None else None])
                return opened

            if remote is None:
                here_index()  # the index's own errors first; no network is loaded yet
            if not batch and piped is None and not queries[0].is_file():  # before any model loads: a typo fails at once
                from ..errors import ImageError

                raise (ImageError(queries[0], "missing") if not queries[0].exists()
                       else ImageError(queries[0], "not an image", "not a regular file"))
            for image in queries:
                t0 = time.perf_counter()
                try:
                    hits, content = None, None
                    if remote is not None:
                        from ..server.client import RemoteError
                        from ..server.client import search as remote_search

                        try:
                            hits, answer = remote_search(remote, image, params, data=piped)
                            content = served_content(answer) if table else None
                        except RemoteError as e:
                            if e.refused:
                                raise LayerseekError(str(e)) from None
                            base.err_console.print(f"{e}; searching in this process", highlight=False, soft_wrap=True)
                            remote = None
                    if hits is None:
                        idx, local = here_index()
                        if local is not None:
                            hits = idx.search_two_stage(image, local, top=params["top"], shortlist=shortlist,
                                                        data=piped, distinct=table, region=part)
                        else:
                            hits = idx.search(image, data=piped, top=params["top"], qe=qe, verify=verify,
                                              diffusion=diffusion, words=word_candidates, word_filter=word_filter,
                                              hubness=hubness, distinct=table, region=part)
                        if table:
                            content = idx.catalog.contents(h.id for h in hits)
                except LayerseekError as e:
                    if not batch:
                        raise
                    failed.append((image, str(e)))
                    base.err_console.print(f"[red]error:[/red] {escape(shown(str(e)))}", highlight=False, soft_wrap=True,
                                           markup=True)
                    if json_out:
                        print(_json.dumps({"query": str(image), "error": str(e)}))
                    continue
                hits = shown_hits(hits, image, top, exclude_self, same_only, min_inliers, content)
                if header:
                    header()
                    header = None
                print_hits(image, hits, time.perf_counter() - t0, batch, json_out, writer, paths_only, content,
                           kept_words(same_only, min_inliers), params["region"])
    except LayerseekError as e:
        fail(str(e))
    if failed:
        fail(f"{len(failed)} of {len(queries)} queries failed: "
             + "; ".join(f"{shown(str(p))} ({shown(r)})" for p, r in failed[:3]) + ("; ..." if len(failed) > 3 else ""))


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
    from ..datasets import shared_data_dir
    from ..index import Index
    from ..progress import progress_bar

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
        bar, update = progress_bar(f"indexing {len(refs)} covers", base.err_console)
        with idx:
            with bar:
                # all of them: the folder (one root, as `index` would); a few: those files
                report = (idx.add_folder(root / "Reference", progress=update) if refs == every
                          else idx.add_files(refs, progress=update))
                idx.update_graph()
            base.console.print(f"{index_path}: {report.summary()}", highlight=False)
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
                base.console.print(f"{'right' if ok else 'WRONG'}  {photo.parent.name}/{photo.name} -> {first} "
                                   f"({time.perf_counter() - t0:.1f} s)", highlight=False)
    except LayerseekError as e:
        fail(str(e))
    base.console.print(f"{right} of {len(queries)} phone photos found their cover first.", highlight=False)
    if len(refs) <= DEFAULT_VERIFY:  # say what this measures: verification saw every cover
        base.console.print(f"(An index of {len(refs)} covers alone: each search verified all of them. In a library of "
                           "mixed kinds the word engine's candidates keep the right photo in sight: docs/RESULTS.md, "
                           "\"Word candidates\".)", highlight=False, soft_wrap=True)
    base.console.print(f"Next: layerseek search {index_path} PHOTO   or   layerseek serve {index_path}  (then open the "
                       "address it prints and drop a photo)", highlight=False, soft_wrap=True)
    if right < len(queries):
        raise typer.Exit(EXIT_SOME_FAILED)
