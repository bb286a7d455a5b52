"""The `layerseek` command's entry, and what a search prints.

A search of one photo that a running `layerseek serve` of the index can answer is sent there
before the command line itself is loaded: Typer, numpy, Pillow and the rest took 0.3 s of each
such search (docs/BENCHMARKS.md, "Third round: the resize, the indexing threads, a search a
server answers"). Anything else, or anything this path does not know (an option it does not
read, a folder of photos, a server that refuses or does not answer), goes to the full command
line (`cli`), which says what it says today. Only the standard library is imported here: a
terminal's table is written here too (Rich's imports were 30 ms of a served search).
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def region_text(text: str) -> str:
    """A region as the command line takes it (`hits.parse_region`), written as the server reads it."""
    from .hits import format_region, parse_region

    return format_region(parse_region(text))


#: the search options this path reads: name -> (parameter sent to the server, type); the flags below
_VALUED = {"--top": ("top", int), "-n": ("top", int), "--qe": ("qe", int), "--verify": ("verify", int),
           "--word-candidates": ("words", int), "--word-filter": ("word_filter", float),
           "--hubness": ("hubness", int), "--min-inliers": ("min_inliers", int), "--region": ("region", region_text)}
_FLAGS = {"--json": "json", "--csv": "csv", "--paths-only": "paths_only", "--exclude-self": "exclude_self",
          "--same-only": "same_only"}

def parse_quick_search(args: list[str]) -> tuple[Path, Path, dict] | None:
    """(index, photo, options) of `layerseek search INDEX PHOTO [options]` when every word is one
    this path reads and every value is in range (`hits.SEARCH_LIMITS`); else None."""
    from .hits import SEARCH_LIMITS

    limits = {"top": SEARCH_LIMITS["top"], "qe": SEARCH_LIMITS["qe"], "verify": SEARCH_LIMITS["verify"],
              "words": SEARCH_LIMITS["words"], "word_filter": SEARCH_LIMITS["word_filter"],
              "hubness": SEARCH_LIMITS["hubness"], "min_inliers": (1, float("inf"))}
    opts: dict = {"top": 10}
    positional: list[str] = []
    i = 0
    while i < len(args):
        word = args[i]
        name, eq, value = word.partition("=") if word.startswith("--") else (word, "", "")
        if name in _FLAGS and not eq:
            opts[_FLAGS[name]] = True
        elif name in _VALUED:
            if not eq:
                i += 1
                if i == len(args):
                    return None
                value = args[i]
            key, kind = _VALUED[name]
            try:
                v = kind(value)
            except ValueError:
                return None
            lo, hi = limits.get(key, (None, None))
            if lo is not None and not lo <= v <= hi:
                return None
            opts[key] = v
        elif word.startswith("-"):
            return None  # an option read only by the full command line (or a mistake it explains)
        else:
            positional.append(word)
        i += 1
    if len(positional) != 2 or sum(bool(opts.get(k)) for k in ("json", "csv", "paths_only")) > 1:
        return None
    index, photo = Path(positional[0]), Path(positional[1])
    if not photo.is_file():  # a folder, several photos, a mistyped name: the full command line
        return None
    return index, photo, opts


def quick_search(args: list[str]) -> bool:
    """Answer `layerseek search` through a running server of the index, printing what the full
    command line prints; False (nothing printed) when this path cannot."""
    parsed = parse_quick_search(args)
    if parsed is None:
        return False
    index, photo, opts = parsed
    from .server.client import RemoteError, running_server, search

    server = running_server(index)
    if server is None:
        return False
    table = is_table(bool(opts.get("json")), bool(opts.get("csv")), bool(opts.get("paths_only")))
    params = search_params(opts["top"], opts.get("exclude_self", False), opts.get("qe", 0), opts.get("verify"),
                           opts.get("words"), opts.get("word_filter"), opts.get("hubness"), photos=table,
                           region=opts.get("region"))
    t0 = time.perf_counter()
    try:
        hits, answer = search(server, photo, params)
    except RemoteError:  # refused or gone: the full command line says why, or searches here
        return False
    from .errors import escape_output

    escape_output()
    print(f"searched by the server at {server.url} (pid {server.pid}); --here searches in this process",
          file=sys.stderr)
    content = served_content(answer) if table else None  # a table: identical files are one row
    hits = shown_hits(hits, photo, opts["top"], opts.get("exclude_self", False), opts.get("same_only", False),
                      opts.get("min_inliers"), content)
    writer, header = results_start(opts.get("csv", False), opts.get("json", False), opts.get("paths_only", False),
                                   False)
    if header:
        header()
    print_hits(photo, hits, time.perf_counter() - t0, False, bool(opts.get("json")), writer,
               bool(opts.get("paths_only")), content, kept_words(opts.get("same_only", False), opts.get("min_inliers")),
               opts.get("region"))
    return True


def is_table(json_out: bool, csv_out: bool, paths_only: bool) -> bool:
    """Whether results are printed as a terminal's table (else JSON, CSV, paths or tab-separated lines)."""
    return sys.stdout.isatty() and not (json_out or csv_out or paths_only)


def served_content(answer: dict) -> dict:
    """{id: its file's content} of a server's answer (the first 16 hex digits of its sha256)."""
    return {int(h["id"]): h.get("content") for h in answer.get("results", [])}


def search_params(top: int, exclude_self: bool, qe: int = 0, verify: int | None = None, words: int | None = None,
                  word_filter: float | None = None, hubness: int | None = None, photos: bool = False,
                  region: str | None = None) -> dict:
    """What a search asks of the index or of a server (as `/search` names it): one result more
    when the query's own file is to be left out; `photos`: `top` counts photos, identical files
    once (a terminal's table shows them as one row); `region`: the part of the photo searched
    with (`region_text`)."""
    return {"top": top + 1 if exclude_self else top, "qe": qe, "verify": verify, "words": words,
            "word_filter": word_filter, "hubness": hubness, "photos": 1 if photos else None, "region": region}


def shown_hits(hits: list, query: Path, top: int, exclude_self: bool = False, same_only: bool = False,
               min_inliers: int | None = None, content: dict | None = None) -> list:
    """The results a search prints: the query's own file left out (`exclude_self`), the first
    `top` (photos when each hit's `content` is given: identical files count once), then only the
    verified ones (`same_only`) or those with `min_inliers`."""
    from .hits import first_photos

    hits = without_self(hits, query) if exclude_self else hits
    hits = first_photos(hits, top, content) if content is not None else hits[:top]
    if same_only:
        hits = [h for h in hits if h.verified]
    if min_inliers is not None:
        hits = [h for h in hits if (h.inliers or 0) >= min_inliers]
    return hits


def kept_words(same_only: bool, min_inliers: int | None) -> str:
    """What --same-only and --min-inliers keep, in words."""
    if min_inliers is not None:
        return f"with at least {min_inliers} verified inliers" + (" and verified as the same object"
                                                                   if same_only else "")
    return "verified as the same object" if same_only else ""


def results_start(csv_out: bool, json_out: bool, paths_only: bool, batch: bool):
    """(a CSV writer on stdout or None, the header to print before the first results or None):
    CSV's columns, or into a pipe or a file the tab-separated columns' names."""
    if csv_out:
        import csv

        writer = csv.writer(sys.stdout, lineterminator="\n")
        return writer, lambda: writer.writerow(["query", "rank", "score", "inliers", "verified", "path"])
    if not (json_out or paths_only or sys.stdout.isatty()):
        return None, lambda: print(table_header(batch))
    return None, None


def without_self(hits: list, query: Path) -> list:
    """The hits less the query's own file (by its resolved path)."""
    own = str(query.resolve())
    return [h for h in hits if str(Path(h.path).resolve()) != own]


def table_header(batch: bool) -> str:
    """The first line of the tab-separated results printed into a pipe or a file."""
    return ("query\t" if batch else "") + "rank\tscore\tinliers\tverified\tpath"


def print_hits(image: Path, hits: list, seconds: float, batch: bool, json_out: bool, writer, paths_only: bool,
               content: dict | None = None, kept: str = "", region: str | None = None) -> None:
    """One query's results in the form asked for (see `cli.search`). `content`: each hit's file
    content (its sha256, by id): a terminal's table shows identical files as one photo, the others
    named under it, as the page does (JSON, CSV and piped lines keep one row a file). `kept`: what
    the results shown had to be (`kept_words`), said when none was. `region`: the part of the
    photo searched with (`region_text`), named beside it."""
    from .errors import plural, shown

    named = shown(str(image)) + (f" (the part {region})" if region else "")
    if not hits and not (json_out or writer is not None or paths_only):  # a line, not an empty table
        print(f"{named}: no photo {kept or 'found'}", file=sys.stdout if sys.stdout.isatty() else sys.stderr)
        return

    if json_out:
        import json

        data = {"query": str(image), **({"region": region} if region else {}), "seconds": seconds,
                "results": [{"rank": i + 1, "id": h.id, "path": h.path, "score": h.score,
                             "inliers": h.inliers, "verified": h.verified} for i, h in enumerate(hits)]}
        print(json.dumps(data) if batch else json.dumps(data, indent=2))
        return
    if writer is not None:
        for i, h in enumerate(hits, 1):
            writer.writerow([str(image), i, f"{h.score:.4f}", "" if h.inliers is None else h.inliers, int(h.verified),
                             h.path])
        return
    if paths_only:
        for h in hits:
            print((f"{shown(str(image))}\t" if batch else "") + shown(h.path))
        return
    if not sys.stdout.isatty():
        for i, h in enumerate(hits, 1):
            print((f"{shown(str(image))}\t" if batch else "")
                  + f"{i}\t{h.score:.4f}\t{'' if h.inliers is None else h.inliers}\t{int(h.verified)}\t{shown(h.path)}")
        if hits and any(h.inliers is not None for h in hits) and not any(h.verified for h in hits):
            sys.stdout.flush()
            print(f"{shown(str(image))}: no photo verified as the same object", file=sys.stderr)
        return
    hits, twins = identical_apart(hits, content or {})
    own = os.path.realpath(image)  # an indexed photo searched with: its own row says so, verified or not
    itself = {h.id for h in hits if any(os.path.realpath(t.path) == own for t in [h, *twins.get(h.id, [])])}
    same = [h for h in hits if h.verified or h.id in itself]
    checked = any(h.inliers is not None for h in hits)
    counts = (f"{plural(len(same), 'same object')} · {len(hits) - len(same)} similar"
              if checked or same else f"{len(hits)} similar")
    paint = _painter()
    print(f"{paint(named, BOLD)}: {counts} · {seconds:.1f} s")
    if checked and not same:
        print("no photo verified as the same object; the closest by appearance:")
    rows = []
    for i, h in enumerate(hits, 1):
        if h.id in itself:
            match = ("same", " · the photo itself")
        elif h.verified:
            match = ("same", f" · {h.inliers} inliers")
        elif checked:
            match = ("similar", f" · {h.inliers} inliers" if h.inliers else "")
        else:  # nothing verified in this index: the first stage's similarity is the order
            match = ("similar", f" · {h.score:.3f}")
        also = [f"+ identical file: {shown(t.path)}" for t in twins.get(h.id, [])]
        rows.append((str(i), match, shown(h.path), h.verified or h.id in itself, also))
    print_table(rows, paint)


def identical_apart(hits: list, content: dict) -> tuple[list, dict]:
    """(the hits with one file of each content, first come; {a kept hit's id: the hits of its other
    files}): the same photo under two names is one result, not two "same objects"."""
    first, kept, twins = {}, [], {}
    for h in hits:
        c = content.get(h.id)
        if c is not None and c in first:
            twins.setdefault(first[c], []).append(h)
            continue
        if c is not None:
            first[c] = h.id
        kept.append(h)
    return kept, twins


BOLD, GREEN = "1", "32"


def _painter():
    """f(text, style) -> the text in an ANSI style on a terminal that takes colour (not with
    NO_COLOR set, nor on TERM=dumb), else the text."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return lambda text, style: text
    return lambda text, style: f"\x1b[{style}m{text}\x1b[0m"


def _cells(text: str) -> int:
    """The terminal columns a text takes (East Asian wide characters two)."""
    import unicodedata

    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text) if not text.isascii() else len(text)


def _fold(text: str, width: int) -> list[str]:
    """The text in pieces of at most `width` columns."""
    out, piece, used = [], "", 0
    for c in text:
        w = _cells(c)
        if piece and used + w > width:
            out.append(piece)
            piece, used = "", 0
        piece, used = piece + c, used + w
    return out + [piece]


def print_table(rows: list[tuple[str, tuple[str, str], str, bool, list[str]]], paint) -> None:
    """The results as a terminal's table: rank, match ("same" in green, then its detail) and path
    (folded to the terminal's width, lines said of it under it), a rule under the header and
    between the verified results and the rest."""
    import shutil

    width = shutil.get_terminal_size((100, 24)).columns
    w_rank = max([1] + [len(r[0]) for r in rows])
    w_match = max([5] + [_cells(m[0] + m[1]) for _, m, *_ in rows])
    w_path = max(20, width - w_rank - w_match - 4)
    rule = "─" * min(width, w_rank + w_match + 4 + max([4] + [_cells(line) for r in rows for line in [r[2], *r[4]]]))
    print(f"{paint('#'.rjust(w_rank), BOLD)}  {paint('match'.ljust(w_match), BOLD)}  {paint('path', BOLD)}")
    print(rule)
    for k, (rank, (word, detail), path, verified, also) in enumerate(rows):
        if k and rows[k - 1][3] and not verified:
            print(rule)
        match = paint(word, GREEN) if verified else word
        pad = " " * (w_match - _cells(word + detail))
        pieces = [piece for line in [path, *also] for piece in _fold(line, w_path)]
        print(f"{rank.rjust(w_rank)}  {match}{detail}{pad}  {pieces[0]}")
        for piece in pieces[1:]:
            print(" " * (w_rank + w_match + 4) + piece)


def main() -> None:  # pragma: no cover - the console script; tested in a subprocess
    """`layerseek`: a search a running server answers, else the full command line (`cli.main`)."""
    args = sys.argv[1:]
    if args[:1] == ["search"]:
        try:
            answered = quick_search(args[1:])
        except BrokenPipeError:  # `| head -1` closed the pipe: nothing more can be said there
            os._exit(1)  # as the full command line ends then
        if answered:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except OSError:  # a closed pipe
                    pass
            os._exit(0)
    from .cli import main as full

    full()
