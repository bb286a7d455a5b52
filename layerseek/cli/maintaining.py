"""`layerseek duplicates`, `info`, `check`, `repair` and `upgrade`: looking after an index."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import LayerseekError, plural, shown
from . import base
from .base import app, fail, human_bytes


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
    from ..duplicates import (KINDS, check_reportable, duplicate_groups, movable, move_files, move_plan, write_csv,
                              write_html)
    from ..index import Index
    from ..progress import progress_bar

    if neighbours < 1:
        fail(f"--neighbours {neighbours}: give 1 or more")
    kind = kind or ("copies" if move_to is not None else "all")
    if kind not in KINDS:
        fail(f"--kind {kind}: choose one of {', '.join(KINDS)}")
    if apply and move_to is None:
        fail("--apply moves files: give --move-to DIR too")
    try:
        with Index.open(index_path) as idx:
            check_reportable(idx)  # said before a progress bar starts
            bar, update = progress_bar("verifying neighbours", base.err_console)
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
    base.err_console.print(f"{plural(len(groups), 'group')}: {counts['identical']:,} of identical files, "
                           f"{counts['copies']:,} of copies, {counts['same']:,} of the same object; "
                           f"{plural(sum(len(g.members) for g in groups), 'image')}"
                           + (f"; contact sheet: {html_out}" if html_out else ""), highlight=False, soft_wrap=True)
    if move_to is None:
        return
    from ..duplicates import human_size

    total = human_size(sum(m.size for m in movable(groups)))
    if not apply:
        for src, to in plan:
            base.err_console.print(f"  would move {shown(src)} -> {shown(str(to))}", highlight=False, soft_wrap=True,
                                   markup=False)
        base.err_console.print(f"dry run: {len(plan)} files ({total}) would move to {move_to}; run again with --apply to "
                               "move them", highlight=False, soft_wrap=True)
        return
    base.err_console.print(f"moved {len(moved)} files ({total}) to {move_to}; the index forgot them", highlight=False,
                           soft_wrap=True)
    if failed:
        for src, why in failed:
            base.err_console.print(f"  not moved: {shown(src)} ({shown(why)})", highlight=False, soft_wrap=True,
                                   markup=False)
        raise typer.Exit(1)


def print_groups(groups: list) -> None:
    """The groups for a person at a terminal: each with its kind, the kept image first, every
    other with its relation to it and the evidence."""
    from ..duplicates import _GROUP_WORDS, _WORDS, _similarity, human_size

    for g, group in enumerate(groups, 1):
        base.console.print(f"Group {g}: {_GROUP_WORDS[group.kind]} ({len(group.members)} images)", highlight=False,
                           style="bold")
        names = {m.id: Path(m.path).name for m in group.members}
        for m in group.members:
            n, sim = group.inliers(m.id), _similarity(group, m)
            evidence = "; ".join(x for x in (f"copy of {names[m.copy_of]}" if m.copy_of in names else "",
                                             f"{n} inliers" if n and m.relation != "keep" else "",
                                             f"pixels {sim}" if sim else "") if x)
            base.console.print(f"  {_WORDS[m.relation]:18s} {m.path}  ({m.width}x{m.height}, {human_size(m.size)}"
                               + (f"; {evidence}" if evidence else "") + ")", highlight=False, soft_wrap=True,
                               markup=False)


#: an exclusion's kind as `info` says it (its JSON keeps the kinds)
_EXCLUSION_WORDS = {"glob": "--exclude", "file": "removed file", "folder": "removed folder"}


@app.command(short_help="Say what an index holds.")
def info(index_path: Annotated[Path, typer.Argument(metavar="INDEX", help="the index directory")],
         json_out: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
         verbose: Annotated[bool, typer.Option("--verbose", "-v", help="also the method, its layers and the "
                                                                      "verification's settings")] = False) -> None:
    """What an index holds: how many photos, from which folders, its size and failures (with -v,
    its method and settings)."""
    import json as _json

    from ..index import Index
    from ..server.client import running_server

    try:
        with Index.open(index_path) as idx:
            data = idx.info()
            failures = idx.catalog.failures()
    except LayerseekError as e:
        fail(str(e))
    server = running_server(index_path)  # `serve` of this index, announced in its serve.json
    served = {"url": server.url, "pid": server.pid} if server is not None else None
    if json_out:
        print(_json.dumps({**data, "served": served, "failures": [{"path": p, "reason": r} for p, r in failures]},
                          indent=2))
        return
    p = data["params"]
    base.console.print(f"{data['path']}: {plural(data['images'], 'image')}, {data['failed']:,} failed", highlight=False,
                       soft_wrap=True)
    if data["roots"]:
        gone = set(data["missing_roots"])
        base.console.print("indexed: " + ", ".join(shown(r) + (" (missing: moved, renamed or not mounted?)" if r in gone
                                                                else "") for r in dict.fromkeys(data["roots"])),
                           highlight=False, soft_wrap=True, markup=False)
    if data["excluded"]:
        base.console.print("excluded: " + ", ".join(f"{shown(e['pattern'])} ({_EXCLUSION_WORDS.get(e['kind'], e['kind'])})"
                                                    for e in data["excluded"]),
                           highlight=False, soft_wrap=True, markup=False)
    per = f" ({human_bytes(data['bytes_per_image'])} per image)" if data["bytes_per_image"] else " (empty)"
    v = data.get("verify")
    checks = ("photos of the same object or place are verified by their geometry" if v
              else "no verification (no local features stored)")
    base.console.print(f"{human_bytes(data['bytes_on_disk'])} on disk{per}; {checks}", highlight=False, soft_wrap=True)
    if served:
        base.console.print(f"served at {served['url']}/ (pid {served['pid']}): searches from the shell go there",
                           highlight=False, soft_wrap=True)
    for path, reason in failures:
        base.err_console.print(f"  failed: {shown(path)}: {reason}", highlight=False, soft_wrap=True, markup=False)
    if not verbose:
        return
    if p["method"] == "mof":
        base.console.print(f"method mof on {p['backbone']} {'+'.join(p['layers'])}, {p['pooling']}-pooled windows, "
                           f"{p['words']} {'spherical' if p.get('spherical') else 'plain k-means'} words per layer learned "
                           f"on {p['train_on']}, MA {p['ma']}, HE {'on' if p['he'] else 'off'}, "
                           f"max side {p['max_side']}; {data['vector_bytes_per_image']} bytes of words and signatures "
                           f"per image; search {data['search']}", highlight=False, soft_wrap=True)
    else:
        base.console.print(f"method {p['method']} on {p['backbone']} {'+'.join(p['layers'])}"
                           + (" (int8 network)" if p.get("precision") == "int8" else "") + f", weights {p['weights'] or 'equal'}, "
                           f"{p['similarity']}, max side {p['max_side']}; {data['dim']}-d vectors; search {data['search']}"
                           + (f" at {data['store']}" if data["store"] != "faiss" else ""), highlight=False, soft_wrap=True)
        h = data.get("hubness")
        base.console.print(f"first stage: the cosine less {h['beta']:g} x each image's mean cosine to its {h['k']} nearest "
                           "(hubness correction)" if h else "first stage: the cosine (no hubness correction; `layerseek "
                           "upgrade` adds it)", highlight=False, soft_wrap=True)
    if v:
        words = (f" and the {v['words']['top']} best of the word engine over those features (vocabulary "
                 f"{v['words']['vocabulary']}, wherever the CNN ranks them"
                 + (f"; those whose word score is at most {v['words']['filter']:g} are not verified"
                    if v["words"].get("filter", -1) >= 0 else "") + ")" if v.get("words") else "")
        stored = (f"stored as their visual words and signatures, matched by shared words within {v['hamming']} bits"
                  if v["kind"] == "sift-words" else "matched by descriptor ratio test")
        base.console.print(f"verification: the first 100 of a search{words} re-ordered by RANSAC inliers of {v['features']} SIFT "
                           f"features at {v['side']} px, {stored} (same object from {v['min_inliers']} inliers"
                           + (f"; 3-D scenes from {v['fundamental']} inliers of a fundamental matrix" if v.get("fundamental")
                              else "") + f"), {plural(v.get('expand', 0), 'round')} of verified query expansion"
                           + (f", diffusion from the verified over a {v['diffusion']['k']}-nearest-neighbour graph"
                              if v.get("diffusion") else "")
                           + (f"; {data['feature_bytes_per_image']} bytes of features per image"
                              if data["feature_bytes_per_image"] is not None else "; no features stored yet"), highlight=False, soft_wrap=True)
    else:
        base.console.print("verification: off (this index stores no local features)", highlight=False, soft_wrap=True)
    base.console.print(f"{data['bytes_on_disk']} bytes on disk, {data['bytes_per_image']} per image; schema "
                       f"{data['schema_version']}, made by layerseek {data['versions']['layerseek']}", highlight=False,
                       soft_wrap=True)


@app.command(short_help="Examine an index without changing it.")
def check(index_path: Annotated[Path, typer.Argument(metavar="INDEX", help="the index directory")],
          json_out: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """Examine an index without changing it: the catalog's SQLite integrity, the manifest against
    its typed model and the catalog's copy, the learned files, every derived cache against the
    catalog, and the indexed files on disk. Exit status 1 when something is wrong."""
    import json as _json

    from ..health import PROBLEM, report
    from ..health import check as check_index

    try:
        findings = check_index(index_path)
    except LayerseekError as e:
        fail(str(e))
    problems = [f for f in findings if f.level == PROBLEM]
    if json_out:
        print(_json.dumps({"path": str(index_path), **report(findings)}, indent=2))
    else:
        for f in findings:
            (base.err_console if f.level == PROBLEM else base.console).print(shown(f.line()), highlight=False, soft_wrap=True, markup=False)
        base.console.print(f"{index_path}: " + (f"{plural(len(problems), 'problem')}; `layerseek repair {index_path}` mends what "
                                                "can be rebuilt from the catalog" if problems else "sound"),
                           highlight=False, soft_wrap=True)
    if problems:
        raise typer.Exit(1)


@app.command(short_help="Rebuild what can be rebuilt from the catalog.")
def repair(index_path: Annotated[Path, typer.Argument(metavar="INDEX", help="the index directory")]) -> None:
    """Rebuild from the catalog what can be: the manifest (from the catalog's copy), the SQLite
    indexes, every derived cache (matrix, HNSW graph, diffusion graph, MOF inverted files); drop
    rows that cannot be read (the next `index` adds those files again). Then check again."""
    from ..health import PROBLEM
    from ..health import check as check_index
    from ..health import repair as repair_index
    from ..progress import catching_up_bar

    try:
        done = repair_index(index_path, catching_up_bar(base.err_console))  # a minute at 10,000 photos: a bar
        left = [f for f in check_index(index_path) if f.level == PROBLEM]
    except LayerseekError as e:
        fail(str(e))
    for line in done:
        base.console.print(f"  {line}", highlight=False, soft_wrap=True)
    for f in left:
        base.err_console.print(f.line(), highlight=False, soft_wrap=True)
    if left:
        fail(f"{index_path}: {plural(len(left), 'problem')} left; build the index again")
    base.console.print(f"{index_path}: repaired; sound", highlight=False, soft_wrap=True)


@app.command(short_help="Give an older index the settings a new one gets.")
def upgrade(index_path: Annotated[Path, typer.Argument(metavar="INDEX", help="the index directory")]) -> None:
    """Give an index made by an earlier layerseek the search settings a new one gets (today: the
    word candidates and their filter), without extracting anything again; says what it added, and
    brings the search's caches up to the new settings (the word codes: 90-150 photos a second,
    shown by a bar), so that the next search does not wait for them."""
    from ..index import Index
    from ..progress import catching_up_bar

    try:
        with Index.open(index_path) as idx:
            added = idx.upgrade()
            if added:
                idx.catching_up = catching_up_bar(base.err_console)
                idx.update_graph()
    except LayerseekError as e:
        fail(str(e))
    for line in added:
        base.console.print(f"  added {line}", highlight=False, soft_wrap=True)
    base.console.print(f"{index_path}: " + ("upgraded" if added else "nothing to add: it has what a new index gets"),
                       highlight=False, soft_wrap=True)
