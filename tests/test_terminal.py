"""What `search` and `index` print (issue 29, item 3): a terminal's table that says which results
are the same object, short and filtering options, and lines never wrapped into a pipe."""
from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

import layerseek.cli as cli
import layerseek.shell as shell
from conftest import PARIS
from layerseek.query import Hit


@pytest.fixture
def terminal(monkeypatch):
    """The command line's console (cli.base: `index`, `duplicates`) as a 100-column terminal,
    recording what it prints."""
    con = Console(force_terminal=True, width=100, color_system=None, record=True)
    monkeypatch.setattr(cli.base, "console", con)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    return con


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def tty(monkeypatch):
    """tty(fn) -> what fn prints on a 100-column terminal that takes no colour (the results' table,
    shell.print_hits, is written without Rich)."""
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.setenv("NO_COLOR", "1")

    def printed(fn) -> str:
        out, before = _Terminal(), sys.stdout
        sys.stdout = out  # here, not in the fixture: pytest puts its own capture back for the test
        try:
            fn()
        finally:
            sys.stdout = before
        return out.getvalue()

    return printed


HITS = [Hit(1, "/photos/covers/001.jpg", 0.9856, 330, True),
        Hit(2, "/photos/covers/004.jpg", 0.9564, 5, False),
        Hit(3, "/photos/corel/12.jpg", 0.9608, 0, False)]


def test_the_terminal_table_puts_the_same_object_apart(tty):
    lines = tty(lambda: cli.print_hits(Path("q.jpg"), HITS, 0.81, False, False, None, False)).splitlines()
    assert lines[0] == "q.jpg: 1 same object · 2 similar · 0.8 s"
    assert lines[1].split() == ["#", "match", "path"] and set(lines[2]) == {"─"}
    rows = [ln for ln in lines if ln.strip()[:1].isdigit()]
    assert [r.split()[1] for r in rows] == ["same", "similar", "similar"]
    assert "330 inliers" in rows[0] and "0.9856" not in "\n".join(lines)  # the order's reason, not the CNN score
    between = lines[lines.index(rows[0]) + 1]
    assert set(between.strip()) == {"─"}  # a rule between the verified and the rest
    assert len({r.index("/photos") for r in rows}) == 1  # the paths in one column


def test_no_verified_result_is_said(tty):
    text = tty(lambda: cli.print_hits(Path("q.jpg"), HITS[1:], 0.5, False, False, None, False))
    assert "0 same objects · 2 similar" in text
    assert "no photo verified as the same object; the closest by appearance:" in text


def test_an_unverified_index_shows_its_similarity(tty):
    text = tty(lambda: cli.print_hits(Path("q.jpg"), [Hit(1, "/p/a.jpg", 0.9, None, False)], 0.5, False, False, None,
                                      False))
    assert "q.jpg: 1 similar" in text and "similar · 0.900" in text and "same object" not in text


def test_a_long_path_folds_in_its_column_and_same_is_green(tty, monkeypatch):
    """A path longer than the terminal's width goes on under itself (a wide character taking two
    columns); "same" is green and the header bold where the terminal takes colour."""
    long = "/photos/" + "写真" * 30 + "/" + "x" * 60 + ".jpg"
    lines = tty(lambda: cli.print_hits(Path("q.jpg"), [Hit(1, long, 0.99, 40, True)], 0.3, False, False, None,
                                       False)).splitlines()
    row = [ln for ln in lines if ln.startswith("1 ")]
    start = row[0].index("/photos")
    pieces = lines[lines.index(row[0]):]
    assert "".join(p[start:] for p in pieces) == long
    assert all(p[:start].strip() == "" for p in pieces[1:]) and len(pieces) >= 3
    widths = [sum(2 if "\u4e00" <= c <= "\u9fff" else 1 for c in p) for p in pieces]
    assert max(widths) <= 100
    monkeypatch.delenv("NO_COLOR")
    text = tty(lambda: cli.print_hits(Path("q.jpg"), HITS, 0.81, False, False, None, False))
    assert "\x1b[32msame\x1b[0m · 330 inliers" in text and "\x1b[1mq.jpg\x1b[0m" in text
    assert "\x1b[32msimilar" not in text


def test_identical_files_are_one_row_at_a_terminal(tty):
    """The same photo under two names is one result (as the page shows it): the other name under
    it, the counts of photos, not of files; JSON, CSV and piped lines keep a row a file."""
    hits = [Hit(1, "/p/a.jpg", 0.99, 300, True), Hit(7, "/p/copy of a.jpg", 0.99, 300, True),
            Hit(2, "/p/b.jpg", 0.95, 0, False), Hit(3, "/p/c.jpg", 0.94, 0, False), Hit(8, "/p/old/b.jpg", 0.95, 0, False)]
    content = {1: "aa", 7: "aa", 2: "bb", 8: "bb", 3: None}
    lines = tty(lambda: cli.print_hits(Path("q.jpg"), hits, 0.4, False, False, None, False, content)).splitlines()
    assert lines[0] == "q.jpg: 1 same object · 2 similar · 0.4 s"
    rows = [ln for ln in lines if ln.strip()[:1].isdigit()]
    assert [r.split()[0] for r in rows] == ["1", "2", "3"] and [r.split()[-1] for r in rows] == ["/p/a.jpg", "/p/b.jpg",
                                                                                                 "/p/c.jpg"]
    start = rows[0].index("/p/a.jpg")
    assert lines[lines.index(rows[0]) + 1] == " " * start + "+ identical file: /p/copy of a.jpg"
    assert lines[lines.index(rows[1]) + 1] == " " * start + "+ identical file: /p/old/b.jpg"
    piped = io.StringIO()
    with contextlib.redirect_stdout(piped):
        cli.print_hits(Path("q.jpg"), hits, 0.4, False, False, None, False, content)
    assert len(piped.getvalue().splitlines()) == 5
    assert shell.served_content({"results": [{"id": 4, "content": "ab12"}, {"id": 5}]}) == {4: "ab12", 5: None}


def test_the_query_itself_is_said(tty, tmp_path):
    """An indexed photo searched with: its own row says "the photo itself", not 1000 inliers (by
    its real path: through a link too); another verified photo keeps its inliers."""
    photo, link = tmp_path / "a.jpg", tmp_path / "link.jpg"
    photo.write_bytes(b"x")
    link.symlink_to(photo)
    hits = [Hit(1, str(photo), 1.0, 1000, True), Hit(2, str(tmp_path / "b.jpg"), 0.9, 80, True)]
    for query in (photo, link):
        rows = [ln for ln in tty(lambda: cli.print_hits(query, hits, 0.2, False, False, None, False)).splitlines()
                if ln[:1].isdigit()]
        assert "same · the photo itself" in rows[0] and "same · 80 inliers" in rows[1], rows
    # an index that verifies nothing: its own file is still the photo itself (it said "similar · 1.000")
    unverified = [Hit(1, str(photo), 1.0), Hit(2, str(tmp_path / "b.jpg"), 0.9)]
    lines = tty(lambda: cli.print_hits(link, unverified, 0.2, False, False, None, False)).splitlines()
    rows = [ln for ln in lines if ln[:1].isdigit()]
    assert lines[0] == f"{link}: 1 same object · 1 similar · 0.2 s"
    assert "same · the photo itself" in rows[0] and "similar · 0.900" in rows[1], lines
    assert lines[lines.index(rows[1]) - 1].startswith("─")  # the rule under the photo itself


def test_nothing_kept_is_one_line(tty, capsys):
    """--same-only or --min-inliers keeping no result: a line that says so, not an empty table (on
    stderr when piped, so that the rows stay rows)."""
    for same_only, least, said in ((True, None, "verified as the same object"),
                                   (False, 40, "with at least 40 verified inliers"),
                                   (True, 40, "with at least 40 verified inliers and verified as the same object")):
        text = tty(lambda: cli.print_hits(Path("q.jpg"), [], 0.3, False, False, None, False, {},
                                          shell.kept_words(same_only, least)))
        assert text == f"q.jpg: no photo {said}\n"
    capsys.readouterr()
    cli.print_hits(Path("q.jpg"), [], 0.3, True, False, None, False, {}, shell.kept_words(True, None))
    assert capsys.readouterr() == ("", "q.jpg: no photo verified as the same object\n")


def _on_a_terminal(*args, stderr_too: bool = False) -> tuple[int, list[str], str]:
    """(exit status, lines, stderr) of `layerseek ARGS` with its stdout on a pseudo-terminal (and
    its stderr, with `stderr_too`: then in the lines)."""
    import os
    import pty
    import subprocess

    leader, follower = pty.openpty()
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "300" if stderr_too else "200"}
    proc = subprocess.run([sys.executable, "-m", "layerseek.cli", *map(str, args)], stdout=follower,
                          stderr=follower if stderr_too else subprocess.PIPE, env=env, timeout=120, text=True)
    os.close(follower)
    out = b""
    with contextlib.suppress(OSError):
        while chunk := os.read(leader, 65536):
            out += chunk
    os.close(leader)
    return proc.returncode, out.decode().replace("\r", "").splitlines(), proc.stderr


def test_search_at_a_terminal_names_identical_files_once(copy_paris, tmp_path):
    """`search` itself, on a pseudo-terminal, in this process: a photo and its three copies are one
    row, and `-n 2` shows two photos (it asked for two files, the photo and a copy, at first; then
    for four, all of them the one photo)."""
    import shutil

    photos = copy_paris(tmp_path / "photos", 3)
    copies = ["copy.jpg", "copy 2.jpg", "copy 3.jpg"]
    for name in copies:
        shutil.copy(photos / PARIS[0], photos / name)
    r = CliRunner().invoke(cli.app, ["index", str(photos), "--index", str(tmp_path / "idx"), "--max-side", "320"])
    assert r.exit_code == 0, r.output
    for top, rows in ((10, 3), (2, 2)):
        code, lines, err = _on_a_terminal("search", tmp_path / "idx", photos / PARIS[0], "--here", "-n", top)
        assert code == 0, err
        assert lines[0].endswith(f": 1 same object · {rows - 1} similar · " + lines[0].rsplit(" · ", 1)[1]), lines
        named = [ln.split("  ")[-1] for ln in lines if ln.strip()[:1].isdigit()]
        also = [ln.strip() for ln in lines if ln.strip().startswith("+ identical file: ")]
        assert len(named) == rows and len(also) == 3, lines
        assert {Path(named[0]).name, *(Path(a.split(": ", 1)[1]).name for a in also)} == {PARIS[0], *copies}
        assert {Path(n).name for n in named[1:]} <= set(PARIS[1:3])


def test_search_with_a_part_of_the_photo(copy_paris, tmp_path):
    """`search --region X,Y,W,H`: each half of a photo of two places finds its own place first, in
    this process and through the shell's short path (which reads --region); a region that is no
    part of a photo fails in one line."""
    from PIL import Image

    photos = copy_paris(tmp_path / "photos", 4)
    r = CliRunner().invoke(cli.app, ["index", str(photos), "--index", str(tmp_path / "idx"), "--max-side", "320"])
    assert r.exit_code == 0, r.output
    a, b = (Image.open(photos / PARIS[i]).convert("RGB").resize((400, 300)) for i in (1, 3))
    both = Image.new("RGB", (800, 300))
    both.paste(a, (0, 0))
    both.paste(b, (400, 0))
    both.save(tmp_path / "both.jpg", quality=92)
    for part, place in (("0,0,0.5,1", PARIS[1]), ("0.5,0,0.5,1", PARIS[3])):
        r = CliRunner().invoke(cli.app, ["search", str(tmp_path / "idx"), str(tmp_path / "both.jpg"), "--region", part,
                                         "--paths-only", "-n", "1", "--here"])
        assert r.exit_code == 0 and r.stdout.strip().endswith(place), r.output
    r = CliRunner().invoke(cli.app, ["search", str(tmp_path / "idx"), str(tmp_path / "both.jpg"), "--region",
                                     "0.5,0,0.5,1", "--json", "-n", "1", "--here"])
    assert r.exit_code == 0 and json.loads(r.stdout)["region"] == "0.5,0,0.5,1", r.output
    code, lines, err = _on_a_terminal("search", tmp_path / "idx", tmp_path / "both.jpg", "--region", "0.5,0,.5,1",
                                      "-n", "2", "--here")
    assert code == 0 and lines[0].startswith(f"{tmp_path / 'both.jpg'} (the part 0.5,0,0.5,1): "), lines
    r = CliRunner().invoke(cli.app, ["search", str(tmp_path / "idx"), str(tmp_path / "both.jpg"), "--region", "0.5,0,1,1"])
    assert r.exit_code == 1 and "error: region '0.5,0,1,1': X and Y from 0" in r.output, r.output
    # `-`: the photo from standard input (a screenshot tool's or the clipboard's output)
    r = CliRunner().invoke(cli.app, ["search", str(tmp_path / "idx"), "-", "--region", "0.5,0,0.5,1", "--json", "-n", "1",
                                     "--here"], input=(tmp_path / "both.jpg").read_bytes())
    assert r.exit_code == 0, r.output
    said = json.loads(r.stdout)
    assert said["query"] == "standard input" and said["results"][0]["path"].endswith(PARIS[3])
    for stdin, words in ((b"", "standard input: empty"), (b"not a photo", "standard input: not an image")):
        r = CliRunner().invoke(cli.app, ["search", str(tmp_path / "idx"), "-", "--here"], input=stdin)
        assert r.exit_code == 1 and f"error: {words}" in r.output, r.output
    r = CliRunner().invoke(cli.app, ["search", str(tmp_path / "idx"), "-", str(tmp_path / "both.jpg")], input=b"x")
    assert r.exit_code == 1 and "- (standard input) is the only photo of its search" in r.output, r.output
    parsed = shell.parse_quick_search([str(tmp_path / "idx"), str(tmp_path / "both.jpg"), "--region", "0.5, 0, .5, 1"])
    assert parsed[2]["region"] == "0.5,0,0.5,1"
    assert shell.search_params(3, False, region="0.5,0,0.5,1")["region"] == "0.5,0,0.5,1"
    assert shell.parse_quick_search([str(tmp_path / "idx"), str(tmp_path / "both.jpg"), "--region", "2,0,1,1"]) is None


def test_a_new_index_says_what_to_do_next_at_a_terminal(copy_paris, tmp_path):
    """A new index made at a terminal ends with the next commands (search, serve, index again);
    not again on the next run, nor into a pipe or a file."""
    photos = copy_paris(tmp_path / "photos", 2)

    def run(*args) -> str:
        code, lines, _ = _on_a_terminal(*args, stderr_too=True)
        assert code == 0, lines
        return "\n".join(lines)

    idx = tmp_path / "idx"
    first = run("index", photos, "--index", idx, "--max-side", "128")
    assert f"next: `layerseek search {idx} PHOTO`, or `layerseek serve {idx}`" in first, first
    assert "next:" not in run("index", photos, "--index", idx)
    piped = CliRunner().invoke(cli.app, ["index", str(photos), "--index", str(tmp_path / "other"), "--max-side", "128"])
    assert piped.exit_code == 0 and "next:" not in piped.output


def test_first_photos_counts_identical_files_once():
    """`hits.first_photos`: the files of the first `top` photos, every file of each kept, in order; a
    hit of unknown content is a photo of its own."""
    from layerseek.hits import first_photos

    hits = [Hit(i, f"/p/{i}.jpg", 1.0 - i / 10) for i in range(1, 8)]
    content = {1: "a", 2: "a", 3: "b", 4: "a", 5: "c", 7: "b"}  # 6: not known
    assert [h.id for h in first_photos(hits, 2, content)] == [1, 2, 3, 4, 7]
    assert [h.id for h in first_photos(hits, 3, content)] == [1, 2, 3, 4, 5, 7]
    assert [h.id for h in first_photos(hits, 4, content)] == [1, 2, 3, 4, 5, 6, 7]
    assert [h.id for h in first_photos(hits, 1, {})] == [1]


def test_the_terminal_table_imports_no_rich():
    """A served search prints its table with the standard library alone (Rich's imports were 30
    ms of it)."""
    import subprocess

    code = ("import sys; sys.stdout.isatty = lambda: True\n"
            "from pathlib import Path; from layerseek.shell import print_hits; from layerseek.hits import Hit\n"
            "print_hits(Path('q.jpg'), [Hit(1, '/p/a.jpg', 0.9, 30, True)], 0.2, False, False, None, False)\n"
            "print('rich' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "same" in out and out.splitlines()[-1] == "False"


@pytest.fixture(scope="module")
def small_index(copy_paris, tmp_path_factory):
    root = tmp_path_factory.mktemp("term")
    photos = copy_paris(root / "a-folder-name-long-enough-that-a-line-of-eighty-columns-would-break-it" / "photos", 4)
    r = CliRunner().invoke(cli.app, ["index", str(photos), "--index", str(root / "idx"), "--max-side", "320"])
    assert r.exit_code == 0, r.output
    return root, photos, r


def test_piped_lines_are_never_wrapped(small_index):
    root, photos, r = small_index
    line = next(ln for ln in r.output.splitlines() if "added" in ln)
    assert line == f"{root / 'idx'}: 4 added, 0 updated, 0 removed, 0 unchanged; 0 failed, 0 not images"
    assert len(line) > 100


def test_an_index_named_second_is_said(small_index, tmp_path):
    """`search PHOTO INDEX` (the two swapped) says which is the index, before any photo is read;
    a missing index says how to make one."""
    root, photos, _ = small_index
    run = CliRunner().invoke
    r = run(cli.app, ["search", str(photos / PARIS[1]), str(root / "idx")])
    assert r.exit_code == 1 and (f"{photos / PARIS[1]}: not an index; {root / 'idx'} is one: the index comes first "
                                 "(layerseek search INDEX IMAGE)") in " ".join(r.output.split()), r.output
    r = run(cli.app, ["search", str(tmp_path / "nowhere"), str(photos / PARIS[1])])
    assert r.exit_code == 1 and f"{tmp_path / 'nowhere'}: not an index (create one with" in r.output


def test_short_top_same_only_and_min_inliers(small_index):
    root, photos, _ = small_index
    run = CliRunner().invoke
    query = str(photos / PARIS[1])
    r = run(cli.app, ["search", str(root / "idx"), query, "-n", "3"])
    rows = [ln.split("\t") for ln in r.stdout.splitlines()[1:]]
    assert r.exit_code == 0 and len(rows) == 3 and rows[0][4] == query and rows[0][3] == "1"
    same = [ln.split("\t") for ln in run(cli.app, ["search", str(root / "idx"), query, "--same-only"]).stdout.splitlines()[1:]]
    assert same and all(row[3] == "1" for row in same) and len(same) < 4
    strong = run(cli.app, ["search", str(root / "idx"), query, "--min-inliers", str(int(rows[0][2]))])
    assert [ln.split("\t")[4] for ln in strong.stdout.splitlines()[1:]] == [query]
    none = run(cli.app, ["search", str(root / "idx"), query, "--min-inliers", "100000"])
    assert none.exit_code == 0 and none.stdout.splitlines() == ["rank\tscore\tinliers\tverified\tpath"]


def test_a_search_process_ends_with_everything_said(small_index):
    """`search` from the shell ends without the interpreter's teardown (issue 28): every line is
    still written, and the exit status is the command's."""
    import subprocess

    root, photos, _ = small_index
    run = lambda *args: subprocess.run([sys.executable, "-m", "layerseek.cli", "search", str(root / "idx"), *args],  # noqa: E731
                                       capture_output=True, text=True)
    ok = run(str(photos / PARIS[1]), "-n", "4", "--json")
    assert ok.returncode == 0, ok.stderr
    import json

    assert [h["path"] for h in json.loads(ok.stdout)["results"]][0] == str(photos / PARIS[1])
    assert len(json.loads(ok.stdout)["results"]) == 4
    missing = run(str(photos / "nope.jpg"))
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr.strip() == f"error: {photos / 'nope.jpg'}: missing"


def test_a_rename_is_moved_and_a_non_image_is_said_once(copy_paris, tmp_path):
    """Issue 29: a renamed photo is "moved" (its vector copied, not "1 added, 1 removed"); a file
    that is not an image is listed on the run that first sees it, then only counted, and listed
    again once it changes."""
    photos = copy_paris(tmp_path / "photos", 2)
    (photos / "notes.txt").write_text("not a photo")
    run = CliRunner().invoke
    args = ["index", str(photos), "--index", str(tmp_path / "idx"), "--max-side", "256"]
    first = run(cli.app, args)
    assert first.exit_code == 0 and f"not an image: {photos / 'notes.txt'}" in first.stderr
    (photos / PARIS[0]).rename(photos / "renamed.jpg")
    second = run(cli.app, args)
    assert "0 added, 0 updated, 0 removed, 1 moved, 1 unchanged;" in second.stdout, second.stdout
    assert "not an image:" not in second.stderr
    assert "(1 file that is not an image, listed before, not listed again)" in second.stderr
    (photos / "notes.txt").write_text("changed, still not a photo")
    third = run(cli.app, args)
    assert f"not an image: {photos / 'notes.txt'}" in third.stderr
    # a phone's export: its videos and sidecars counted by kind, not a line each
    for i in range(12):
        (photos / f"IMG_{i:04d}.MOV").write_bytes(b"")
        (photos / f"IMG_{i:04d}.AAE").write_bytes(b"")
    fourth = run(cli.app, args)
    said = [line for line in fourth.stderr.splitlines() if "not an image:" in line or "not images:" in line]
    assert said == [f"  24 files that are not images: 12 .aae, 12 .mov (e.g. {photos / 'IMG_0000.AAE'})"], said


def test_watch_names_a_failed_file_once(terminal, monkeypatch):
    """`watch` runs again at every change of its folder: a bad file is named the first time, then
    only counted (named again once it changes and fails anew); so is a file that is not an image
    (it was only counted)."""
    from layerseek.cli.indexing import watch_reporter
    from layerseek.ingest import IndexReport

    monkeypatch.setattr(cli.base, "err_console", terminal)
    reported = watch_reporter(Path("w.lsx"))
    reported(IndexReport(added=1, failed=["/p/bad.jpg: not an image"]))
    reported(IndexReport(added=1, unchanged=1, failed=["/p/bad.jpg: not an image (unchanged since it failed)"]))
    reported(IndexReport(unchanged=2, failed=["/p/bad.jpg: not an image (unchanged since it failed)",
                                              "/p/new.jpg: truncated"]))
    reported(IndexReport(unchanged=2, failed=["/p/bad.jpg: not an image", "/p/new.jpg: truncated (unchanged since "
                                                                          "it failed)"]))  # bad.jpg changed, read again
    # a file that is not an image, named when the index first meets it (a notes.txt dropped in)
    reported(IndexReport(unchanged=3, skipped=["/p/notes.txt"]))
    reported(IndexReport(unchanged=3, skipped=["/p/notes.txt"], skipped_before={"/p/notes.txt"}))
    lines = terminal.export_text().splitlines()
    assert [ln for ln in lines if "failed:" in ln] == ["  failed: /p/bad.jpg: not an image", "  failed: /p/new.jpg: truncated",
                                                       "  failed: /p/bad.jpg: not an image"]
    assert sum("w.lsx: " in ln for ln in lines) == 6 and lines[3].endswith("2 failed, 0 not images")
    assert [ln for ln in lines if "not an image:" in ln] == ["  not an image: /p/notes.txt"]
    assert lines[-1].endswith("1 not an image")


def test_failures_are_named_once_and_many_are_counted(tmp_path, data_dir):
    """A file that failed is named on the run that reads it; later runs (the file unchanged, not
    read again) count it and say where the list is; more than 20 new failures at once: 20 named,
    the rest counted."""
    import shutil

    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(data_dir / "smvs-dvd-covers" / "Reference" / "001.jpg", photos / "001.jpg")
    for i in range(23):
        (photos / f"bad{i:02d}.jpg").write_bytes(b"not a jpeg %d" % i)
    run = CliRunner().invoke
    args = ["index", str(photos), "--index", str(tmp_path / "idx"), "--max-side", "256"]
    first = run(cli.app, args)
    named = [ln for ln in first.stderr.splitlines() if ln.startswith("  failed: ")]
    assert first.exit_code == 3 and len(named) == 20 and named[0] == f"  failed: {photos / 'bad00.jpg'}: not an image"
    assert f"  ... and 3 more failed; `layerseek info {tmp_path / 'idx'}` lists every failure" in first.stderr
    second = run(cli.app, args)
    assert second.exit_code == 3 and "failed: " not in second.stderr, second.stderr
    assert (f"  (23 files that failed before are unchanged since, not read again: `layerseek info {tmp_path / 'idx'}` "
            "lists them)") in second.stderr
    assert len(run(cli.app, ["info", str(tmp_path / "idx")]).stderr.splitlines()) == 23  # every one


def test_duplicates_of_an_index_without_features_is_one_line(copy_paris, tmp_path):
    """An index made with --no-verify cannot give a duplicates report: said at once, before any
    progress bar."""
    photos = copy_paris(tmp_path / "photos", 2)
    run = CliRunner().invoke
    assert run(cli.app, ["index", str(photos), "--index", str(tmp_path / "nv.lsx"), "--no-verify",
                         "--max-side", "256"]).exit_code == 0
    r = run(cli.app, ["duplicates", str(tmp_path / "nv.lsx")])
    assert r.exit_code == 1 and "verifying" not in r.output, r.output
    assert r.output.strip() == (f"error: {tmp_path / 'nv.lsx'}: a duplicates report needs a global index made with "
                                "verification (the default of `layerseek index`)"), r.output


def test_counts_are_said_in_good_english():
    from layerseek.errors import plural
    from layerseek.ingest import IndexReport

    assert [plural(n, "image") for n in (0, 1, 2, 12345)] == ["0 images", "1 image", "2 images", "12,345 images"]
    assert plural(1, "query", "queries") == "1 query" and plural(3, "query", "queries") == "3 queries"
    one = IndexReport(unchanged=12345, skipped=["a.txt"], unreadable=["x: gone"], followed=["/d"]).summary()
    assert one == ("0 added, 0 updated, 0 removed, 12,345 unchanged; 0 failed, 1 not an image, 1 folder unreadable "
                   "(its entries kept), 1 linked folder followed")
    two = IndexReport(skipped=["a", "b"], unreadable=["x", "y"], followed=["/d", "/e"]).summary()
    assert "2 not images, 2 folders unreadable (their entries kept), 2 linked folders followed" in two


def test_brackets_in_names_are_text(copy_paris, tmp_path):
    """A folder named "trip [old]" and an index "i [b].lsx": Rich took "[old]" and "[b]" for style
    tags and dropped them from the summary, `info`, the progress bar and errors."""
    photos = copy_paris(tmp_path / "trip [old]", 2)
    idx = tmp_path / "i [b].lsx"
    run = CliRunner().invoke
    r = run(cli.app, ["index", str(photos), "--index", str(idx), "--max-side", "320"])
    assert r.exit_code == 0 and f"{idx}: 2 added, " in r.output, r.output
    assert run(cli.app, ["info", str(idx)]).output.splitlines()[:2] == [f"{idx}: 2 images, 0 failed", f"indexed: {photos}"]
    r = run(cli.app, ["index", str(photos / "gone [red].jpg"), "--index", str(idx)])
    assert r.exit_code == 1 and f"error: {photos / 'gone [red].jpg'}: no such folder or photo" in r.output, r.output
    r = run(cli.app, ["search", str(idx), str(tmp_path / "[i]nope.jpg")])
    assert r.exit_code == 1 and f"{tmp_path / '[i]nope.jpg'}: missing" in r.output, r.output
    from layerseek.progress import progress_bar

    con = Console(force_terminal=True, width=200, color_system=None, record=True)
    bar, update = progress_bar("indexing trip [old]", con)
    with bar:
        update(1, 2)
    text = con.export_text()
    assert "indexing trip [old] " in text and " 1/2 " in text and "50%" in text, text  # the counts too


def test_an_empty_folder_and_an_empty_index_are_said(tmp_path, data_dir):
    """Indexing a folder with no photo says so (and which kinds are photos); searching an index
    that holds none says how to fill it, instead of an empty table."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    run = CliRunner().invoke
    r = run(cli.app, ["index", str(tmp_path / "empty"), "--index", str(tmp_path / "e.lsx"), "--max-side", "320"])
    said = " ".join(r.output.split())
    assert r.exit_code == 0 and f"no photo under {tmp_path / 'empty'} (JPEG, PNG," in said, r.output
    assert "HEIC, AVIF, cameras' RAW: DNG, CR2" in said, r.output  # the kinds a reader may have
    r = run(cli.app, ["search", str(tmp_path / "e.lsx"), str(data_dir / "smvs-dvd-covers" / "Palm" / "001.jpg")])
    assert r.exit_code == 1 and f"{tmp_path / 'e.lsx'}: holds no photo yet" in r.output, r.output


def test_sizes_in_human_units():
    assert [cli.human_bytes(n) for n in (0, 999, 82443, 2174512653, 3 * 10**15)] == [
        "0 bytes", "999 bytes", "82.4 KB", "2.2 GB", "3000.0 TB"]


def test_help_reads_as_sentences():
    """Issue 29: the command list gives whole short sentences (not cut with "..."), and a plain
    flag shows no "<bool>" beside it."""
    run = CliRunner().invoke
    listed = run(cli.app, ["--help"]).output.split("Commands:")[1].splitlines()
    rows = [ln.strip() for ln in listed if ln.strip()]
    assert len(rows) >= 14 and all(r.endswith(".") and not r.endswith("...") for r in rows), rows
    search = run(cli.app, ["search", "--help"]).output
    assert "<bool>" not in search and "--same-only" in search and "-n, --top" in search
    # values named in words, as help has long named them: not Typer 0.29's {INDEX}, <path>, <int range>
    assert search.splitlines()[0].endswith(" search [OPTIONS] INDEX IMAGE...")
    assert "  -n, --top N " in search and "  --word-filter X " in search and "  --rerank-with PATH " in search
    assert "\n  INDEX  the index directory  [required]" in search and "<" not in search.split("Arguments:")[1].split("Options:")[0]
    index = run(cli.app, ["index", "--help"]).output
    assert index.splitlines()[0].endswith(" index [OPTIONS] FOLDER") and "\n  --exclude TEXT " in index
    assert "--precision float|int8 " in index
    assert run(cli.app, ["models", "pull", "--help"]).output.splitlines()[0].endswith(" models pull [OPTIONS] [NAMES]...")
    r = run(cli.app, ["index"])
    assert r.exit_code == 2 and "Missing argument 'FOLDER'" in r.output, r.output


def test_index_and_watch_given_an_index_for_a_folder_say_what_to_run(copy_paris, tmp_path):
    """`layerseek index photos.lsx` (an index where the folder goes, as `search` and `info` take
    one) and a missing --index: one line each, the command to run named, nothing created."""
    from layerseek.index import Index

    photos = copy_paris(tmp_path / "photos", 1)
    with Index.create(tmp_path / "p.lsx", "gem", backbone="mobilenet_v2", layers=("last",), max_side=128) as idx:
        idx.add_folder(photos)
    run = CliRunner().invoke
    for command in ("index", "watch"):
        r = run(cli.app, [command, str(tmp_path / "p.lsx")])
        assert r.exit_code == 2 and r.output.strip() == (
            f"error: {tmp_path / 'p.lsx'} is an index, not a folder of photos: "
            f"`layerseek {command} {photos} --index {tmp_path / 'p.lsx'}`"), r.output
        r = run(cli.app, [command, str(photos)])
        assert r.exit_code == 2 and r.output.strip() == (
            f"error: missing --index: where the index of {photos} is kept (created if new), e.g. "
            f"`layerseek {command} {photos} --index photos.lsx`"), r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.lsx", "photos"]


def test_help_names_each_value_as_its_option_shows_it():
    """An option's help speaks of its value by the name its help line shows (`--word-filter X`:
    "at most X", not "at most T"; `--hubness N`: "its N nearest", not "its K nearest")."""
    import re

    run = CliRunner().invoke
    names = [r.split()[0] for r in run(cli.app, ["--help"]).output.split("Commands:")[1].splitlines() if r.strip()]
    names += [f"models {r.split()[0]}" for r in run(cli.app, ["models", "--help"]).output.split("Commands:")[1]
              .splitlines() if r.strip()]
    wrong, seen = [], 0
    for name in names:
        text = run(cli.app, [*name.split(), "--help"], terminal_width=200).output.split("Options:")[-1]
        for block in re.split(r"\n(?=  -)", text):
            head, _, help_ = block.strip().partition("  ")
            shown = set(re.findall(r"\b[A-Z]+\b", head))
            letters = set(re.findall(r"(?<![\w-])([B-HJ-Z])(?![\w'-])", " ".join(help_.split())))
            seen += bool(letters)
            if letters - shown:
                wrong.append(f"{name} {head}: speaks of {sorted(letters - shown)}")
    assert seen >= 5 and not wrong, wrong  # (seen: the parsing found the help lines)


def test_duplicates_at_a_terminal_say_what_each_photo_is(terminal):
    from layerseek.duplicates import Group, Member, Pair

    keep = Member(1, "/p/cover.jpg", 120_000, 1000, 800, 1, "keep")
    copy = Member(2, "/p/cover-small.jpg", 30_000, 500, 400, 2, "copy", copy_of=1, via=1)
    other = Member(3, "/p/phone.jpg", 90_000, 640, 480, 3, "same")
    pairs = [Pair(1, 2, "copy", 300, (1.0, 1.0), 0.998, 0.05), Pair(1, 3, "same", 80, (0.9, 0.5), 0.4, 2.0)]
    cli.print_groups([Group("same", [keep, copy, other], pairs)])
    lines = terminal.export_text().splitlines()
    assert lines[0] == "Group 1: same object or place (3 images)"
    assert lines[1].split()[:2] == ["keep", "/p/cover.jpg"]
    assert "copy" in lines[2] and "copy of cover.jpg" in lines[2] and "pixels 0.998" in lines[2]
    assert "same object (kept)" in lines[3] and "80 inliers" in lines[3] and "500x400, 30.0 KB" in lines[2]


def test_the_short_path_reads_only_what_it_knows(tmp_path):
    """shell.parse_quick_search: `search INDEX PHOTO` with the options it reads (in range) is
    taken; a folder, a second photo, an option only the full command line reads, a value out of
    range or two output forms go to the full command line (None), which explains them."""
    photo = tmp_path / "q.jpg"
    photo.write_bytes(b"x")
    idx = tmp_path / "idx"
    got = shell.parse_quick_search([str(idx), str(photo), "-n", "3", "--word-filter=-1", "--same-only", "--json"])
    assert got == (idx, photo, {"top": 3, "word_filter": -1.0, "same_only": True, "json": True})
    assert shell.parse_quick_search([str(idx), str(photo)])[2] == {"top": 10}
    for args in ([str(idx), str(tmp_path)],                          # a folder of photos
                 [str(idx), str(photo), str(photo)],                 # a batch
                 [str(idx), str(tmp_path / "nope.jpg")],             # a mistyped name: the full error
                 [str(idx), str(photo), "--here"],                   # read only by the full command line
                 [str(idx), str(photo), "--top", "0"],               # out of range
                 [str(idx), str(photo), "--top", "many"],
                 [str(idx), str(photo), "--top"],
                 [str(idx), str(photo), "--json", "--csv"],
                 [str(idx), str(photo), "-n5"],
                 [str(idx), str(photo), "--min-inliers", "0"]):
        assert shell.parse_quick_search(args) is None, args
