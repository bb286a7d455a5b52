"""Files and names that once stopped or hung `index`, and two writers on one index (issue 16)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from conftest import PARIS, in_time
from layerseek.cli import EXIT_SOME_FAILED, app
from layerseek.errors import ImageError, IndexBusy
from layerseek.index import Index
from layerseek.ingest import UNCHANGED_SINCE_FAILED

OPTS = {"backbone": "mobilenet_v2", "layers": ("last",), "max_side": 128}


def test_a_fifo_named_like_a_photo_is_reported_not_waited_on(copy_paris, tmp_path):
    photos = copy_paris(tmp_path / "photos")
    os.mkfifo(photos / "y.jpg")
    os.mkdir(photos / "folder.jpg")  # a folder named like a photo: walked into, not opened
    with Index.create(tmp_path / "idx", "gem", **OPTS) as idx:
        r = in_time(lambda: idx.add_folder(photos))
        assert r.added == 6 and len(r.failed) == 1, r.failed
        assert r.failed[0] == f"{photos / 'y.jpg'}: a FIFO (named pipe), not a regular file"
        r = in_time(lambda: idx.add_files([photos / "y.jpg", photos / "folder.jpg"]))
        assert [f.split(": ", 1)[1] for f in r.failed] == ["a FIFO (named pipe), not a regular file",
                                                           "a folder, not a regular file"]
        # a walk says it once: the next one counts it among the files unchanged since they failed
        assert idx.add_folder(photos).failed == [f"{photos / 'y.jpg'}: a FIFO (named pipe), not a regular file"
                                                 + UNCHANGED_SINCE_FAILED]


def test_a_broken_link_says_where_it_points(copy_paris, tmp_path):
    """A link whose target is gone (a photo moved, a drive renamed) is named with its target, not
    as an unreadable file; the run goes on."""
    photos = copy_paris(tmp_path / "photos")
    os.symlink(tmp_path / "gone" / "IMG_1.jpg", photos / "z.jpg")
    with Index.create(tmp_path / "idx", "gem", **OPTS) as idx:
        r = idx.add_folder(photos)
        said = f"{photos / 'z.jpg'}: a link to {tmp_path / 'gone' / 'IMG_1.jpg'}, which is not there"
        assert r.added == 6 and r.failed == [said], r.failed
        # said once: the next run counts it among the files unchanged since they failed
        assert idx.add_folder(photos).failed == [said + UNCHANGED_SINCE_FAILED]
        os.remove(photos / "z.jpg")  # pointed elsewhere, still nowhere: said again
        os.symlink(tmp_path / "gone" / "IMG_2.jpg", photos / "z.jpg")
        assert idx.add_folder(photos).failed == [said.replace("IMG_1", "IMG_2")]
        (tmp_path / "gone").mkdir()  # the target back (a drive mounted again): indexed
        shutil.copy(next(p for p in photos.iterdir() if p.suffix == ".jpg" and not p.is_symlink()),
                    tmp_path / "gone" / "IMG_2.jpg")
        r = idx.add_folder(photos)
        assert r.added == 1 and r.failed == [] and idx.catalog.failures() == []


def test_a_name_that_is_not_utf8_round_trips(copy_paris, tmp_path):
    """Bytes from an old disk or zip archive in a file name: indexed, found, shown as \\xNN,
    removed by name; a damaged one is reported the same way. Nothing stops the run."""
    photos = copy_paris(tmp_path / "photos")
    raw = os.fsencode(photos) + b"/caf\xe9-\xff.jpg"  # Latin-1 bytes, as old disks and zip files hold them
    shutil.copyfile(os.fsencode(photos / PARIS[0]), raw)
    bad = os.fsencode(photos) + b"/broken-\xfe.jpg"
    with open(bad, "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 not the rest of a jpeg")
    run = CliRunner().invoke
    r = run(app, ["index", str(photos), "--index", str(tmp_path / "idx"), "--method", "gem", "--backbone",
                  "mobilenet_v2", "--layers", "last", "--max-side", "128", "--no-verify"])
    assert r.exit_code == EXIT_SOME_FAILED, r.output
    assert "7 added" in r.output and "broken-\\xfe.jpg: " in r.output and "Traceback" not in r.output
    name = os.fsdecode(raw)
    with Index.open(tmp_path / "idx") as idx:
        assert idx.catalog.count() == 7 and idx.catalog.by_path(name) is not None
        assert [p for p, _ in idx.catalog.failures()] == [os.fsdecode(bad)]
        top = idx.search(name, top=2)
        assert top[0].path == name and top[1].path == str(photos / PARIS[0])  # the same photo twice
        assert os.fsencode(top[0].path) == raw  # the bytes on disk, back from the catalog
        assert len(list(idx.catalog.entries(under=str(photos)))) == 7  # folder queries see it too
        r2 = idx.add_folder(photos)  # a second run: nothing re-read, the same one failure
        assert r2.unchanged == 7 and len(r2.failed) == 1
    r = run(app, ["search", str(tmp_path / "idx"), name, "--top", "1", "--paths-only"])
    assert r.exit_code == 0 and r.output.strip() == str(photos) + "/caf\\xe9-\\xff.jpg", r.output
    r = run(app, ["search", str(tmp_path / "idx"), name, "--top", "1", "--json"])
    assert json.loads(r.output)["results"][0]["path"] == name  # JSON escapes it; a reader gets the name back
    r = run(app, ["remove", str(tmp_path / "idx"), name])
    assert r.exit_code == 0 and "1 removed, 6 left" in r.output, r.output
    # the server: paths shown escaped, never a 500
    from fastapi.testclient import TestClient

    from layerseek.server.app import create_app

    with Index.open(tmp_path / "idx") as idx:
        idx.add_files([name])
    client = TestClient(create_app(tmp_path / "idx"), base_url="http://localhost")
    with open(raw, "rb") as f:
        resp = client.post("/search?top=1", files={"file": ("q.jpg", f, "image/jpeg")})
    assert resp.status_code == 200 and resp.json()["results"][0]["name"] in ("caf\\xe9-\\xff.jpg", PARIS[0])


def test_an_emoji_name_is_one_file_under_any_locale(copy_paris, tmp_path):
    """Issue 27: under a non-UTF-8 locale (Python then names "🐱.jpg" with surrogates) a photo
    indexed under a UTF-8 one missed its own search and was added again under a new id."""
    photos = copy_paris(tmp_path / "photos", 2)
    emoji = photos / "🐱 cat.jpg"
    os.rename(photos / PARIS[0], emoji)
    with Index.create(tmp_path / "idx", "gem", **OPTS) as idx:
        assert idx.add_folder(photos).added == 2
    c_locale = {**os.environ, "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0", "LC_ALL": "C",
                "LAYERSEEK_LOG_DIR": str(tmp_path / "logs")}
    script = ("import json, os, sys\nfrom layerseek.index import Index\n"
              "assert sys.getfilesystemencoding() == 'ascii'\n"
              "photos = os.fsdecode(sys.argv[2].encode('utf-8'))\n"  # as this locale names the folder
              "with Index.open(sys.argv[1]) as idx:\n"
              "    r = idx.add_folder(photos)\n"
              "    name = [n for n in os.listdir(photos) if n.endswith(' cat.jpg')][0]\n"
              "    top = idx.search(os.path.join(photos, name), top=1)\n"
              "    print(json.dumps([r.added, r.unchanged, idx.catalog.count(), os.fsencode(top[0].path).hex()]))\n")
    r = subprocess.run([sys.executable, "-c", script, str(tmp_path / "idx"), str(photos)], capture_output=True,
                       text=True, env=c_locale, timeout=300)
    assert r.returncode == 0, r.stderr
    added, unchanged, count, top = json.loads(r.stdout.strip().splitlines()[-1])
    assert (added, unchanged, count) == (0, 2, 2)  # the same two files, nothing re-added
    assert bytes.fromhex(top) == os.fsencode(emoji)  # its own search finds it, by the bytes on disk
    with Index.open(tmp_path / "idx") as idx:  # and back under UTF-8: still one row
        assert idx.add_folder(photos).unchanged == 2 and idx.catalog.by_path(str(emoji)) is not None
    from layerseek.errors import escape_output

    escape_output()  # on an ASCII terminal the name is written as Python writes it, not as \u1f431
    assert "🐱 é".encode("ascii", "layerseek.escape") == b"\\U0001f431 \\u00e9"


def test_a_file_written_while_it_is_read_is_not_stored_half_seen(copy_paris, tmp_path, monkeypatch):
    """Issue 27: a file appended to during indexing got its size and hash from different moments.
    The file's status is taken on the open file before and after the read; here the file grows
    in between (a copy still being written), for real, on disk."""
    import hashlib

    from layerseek import images

    photos = copy_paris(tmp_path / "photos", 3)
    growing = photos / PARIS[1]
    real_fstat, calls = os.fstat, []

    def fstat(fd):
        if os.readlink(f"/proc/self/fd/{fd}") == str(growing):
            calls.append(fd)
            if len(calls) == 2:  # after the read, before the second look: more bytes arrive
                with open(growing, "ab") as f:
                    f.write(b"\0" * 4096)
        return real_fstat(fd)

    monkeypatch.setattr(images.os, "fstat", fstat)
    with Index.create(tmp_path / "idx", "gem", **OPTS) as idx:
        r = idx.add_folder(photos)
        assert r.added == 2 and r.failed == [f"{growing}: changed while being read (indexed on the next run, "
                                             "once it is written)"], r.failed
        assert idx.catalog.by_path(str(growing)) is None
        monkeypatch.setattr(images.os, "fstat", real_fstat)
        r = idx.add_folder(photos)  # written now: read whole, and stored as it is on disk
        assert r.added == 1 and not r.failed, r.failed
        e, st = idx.catalog.by_path(str(growing)), growing.stat()
        assert (e.size, e.mtime_ns) == (st.st_size, st.st_mtime_ns)
        assert e.sha256 == hashlib.sha256(growing.read_bytes()).hexdigest()


def test_two_writers_one_index(copy_paris, tmp_path):
    photos = copy_paris(tmp_path / "photos")
    with Index.create(tmp_path / "idx", "gem", **OPTS) as idx:
        idx.add_folder(photos)
    a, b = Index.open(tmp_path / "idx"), Index.open(tmp_path / "idx")
    try:
        with a.writing():
            with pytest.raises(IndexBusy, match=rf"index busy: layerseek pid {os.getpid()} \(since .*\) is changing it"):
                b.add_folder(photos)
            with pytest.raises(IndexBusy):
                b.remove([photos / PARIS[0]])
            with a.writing():  # re-entrant for its holder
                pass
            r = CliRunner().invoke(app, ["index", str(photos), "--index", str(tmp_path / "idx")])
            assert r.exit_code == 1 and "index busy" in r.output and "Traceback" not in r.output
        assert b.add_folder(photos).unchanged == 6  # free again
    finally:
        a.close(), b.close()
    # a holder killed with SIGKILL leaves no stale lock: the kernel drops it with the process
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from layerseek.index import Index\n"
                               f"idx = Index.open({str(tmp_path / 'idx')!r})\nwith idx.writing():\n"
                               "    print('held', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with Index.open(tmp_path / "idx") as c:
            with pytest.raises(IndexBusy):
                c.remove([photos / PARIS[0]])
            holder.send_signal(signal.SIGKILL)
            holder.wait(10)
            assert c.remove([photos / PARIS[0]]) == [] and c.catalog.count() == 5
    finally:
        holder.kill()


def test_a_newer_schema_is_named_as_the_manifest_says(copy_paris, tmp_path):
    import json

    from layerseek.errors import LayerseekError
    from layerseek.store.catalog import SCHEMA_VERSION

    with Index.create(tmp_path / "idx", "gem", **OPTS):
        pass
    m = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    m["schema_version"] = SCHEMA_VERSION + 1
    (tmp_path / "idx" / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(LayerseekError, match=rf"index schema version {SCHEMA_VERSION + 1} \(catalog {SCHEMA_VERSION}, "
                                             rf"manifest {SCHEMA_VERSION + 1}\), this layerseek reads {SCHEMA_VERSION}"):
        Index.open(tmp_path / "idx")


def test_no_traceback_reaches_a_user(copy_paris, tmp_path, monkeypatch):
    """Anything unexpected: one line naming the command and the exception, exit status 2, and the
    traceback in a log file whose path the line gives (here: a bug planted in `Index.info`)."""
    from fastapi.testclient import TestClient

    from layerseek.server.app import create_app

    with Index.create(tmp_path / "idx", "gem", **OPTS) as idx:
        idx.add_folder(copy_paris(tmp_path / "photos", 2))
    client = TestClient(create_app(tmp_path / "idx"), raise_server_exceptions=False, base_url="http://localhost")
    env = {**os.environ, "LAYERSEEK_LOG_DIR": str(tmp_path / "logs")}
    planted = ("import sys, layerseek.index as i; from layerseek.cli import run_cli\n"
               "i.Index.info = lambda self: {}['no such key']\nrun_cli(sys.argv[1:])")
    r = subprocess.run([sys.executable, "-c", planted, "info", str(tmp_path / "idx")], env=env,
                       capture_output=True, text=True, timeout=120)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0].startswith("error: layerseek info") and "unexpected error" in lines[0]
    log = next((tmp_path / "logs").glob("error-*.log"))
    assert str(log) in " ".join(lines[0].split()) and "Traceback" in log.read_text()
    # the server: a 500 with one line and no paths; the traceback logged
    import layerseek.query as q

    def broken(self, *a, **k):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(q.Query, "search", broken)
    monkeypatch.setenv("LAYERSEEK_LOG_DIR", str(tmp_path / "srvlogs"))
    with open(tmp_path / "photos" / PARIS[0], "rb") as f:
        resp = client.post("/search", files={"file": ("q.jpg", f, "image/jpeg")})
    assert resp.status_code == 500 and resp.json() == {"detail": "unexpected server error (logged on the server)"}
    assert "ZeroDivisionError: boom" in next((tmp_path / "srvlogs").glob("error-*.log")).read_text()


def test_remove_takes_a_folder(copy_paris, tmp_path):
    photos = copy_paris(tmp_path / "photos" / "a", 3)
    for name in PARIS[3:6]:
        (tmp_path / "photos" / "ab").mkdir(exist_ok=True)
        shutil.copy(photos / PARIS[0], tmp_path / "photos" / "ab" / name)
    with Index.create(tmp_path / "idx", "gem", **OPTS) as idx:
        assert idx.add_folder(tmp_path / "photos").added == 6
    r = CliRunner().invoke(app, ["remove", str(tmp_path / "idx"), str(tmp_path / "photos" / "a"),
                                 str(tmp_path / "photos" / "none")])
    assert "3 removed" in r.output and "3 left" in r.output and "none" in r.output, r.output
    with Index.open(tmp_path / "idx") as idx:  # "ab" shares the prefix "a" but is another folder
        assert sorted(e.path.rsplit("/", 2)[1] for e in idx.catalog.entries()) == ["ab"] * 3


def test_serve_picks_up_what_an_index_run_commits(copy_paris, tmp_path):
    """A running server answers from what another process committed, without a restart."""
    from fastapi.testclient import TestClient

    from layerseek.server.app import create_app

    photos = copy_paris(tmp_path / "photos", 2)
    with Index.create(tmp_path / "idx", "gem", **OPTS) as idx:
        idx.add_folder(photos)
    client = TestClient(create_app(tmp_path / "idx"), base_url="http://localhost")

    def names():
        with open(tmp_path / "photos" / PARIS[0], "rb") as f:
            r = client.post("/search?top=10", files={"file": ("q.jpg", f, "image/jpeg")})
        assert r.status_code == 200, r.text
        return sorted(h["name"] for h in r.json()["results"])

    assert names() == sorted(PARIS[:2])
    copy_paris(photos, 4)  # two more photos, indexed by another process (here: another Index)
    with Index.open(tmp_path / "idx") as other:
        assert other.add_folder(photos).added == 2
    assert names() == sorted(PARIS[:4])
    with Index.open(tmp_path / "idx") as other:
        other.remove([photos / PARIS[1]])
    assert names() == sorted([PARIS[0], *PARIS[2:4]])


def test_no_file_of_the_index_stays_open_after_close(copy_paris, tmp_path):
    """The decoding threads' catalog connections are closed with the run, not left to the garbage
    collector (an open one kept the catalog and its WAL held, and wrote the WAL back later)."""
    import gc

    def held():
        out = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue
            if target.startswith(str(tmp_path / "idx")):
                out.append(target)
        return out

    gc.disable()  # what the collector would close is not counted as closed
    try:
        with Index.create(tmp_path / "idx", "gem", **OPTS) as idx:
            idx.add_folder(copy_paris(tmp_path / "photos", 4))
            idx.search(tmp_path / "photos" / PARIS[0], top=2)
        assert held() == []
    finally:
        gc.enable()


def test_two_creators_at_once_lose_nothing(copy_paris, tmp_path):
    """Issue 27: a second `index` that meets a creation under way gets "index busy" and removes
    nothing; before, its clean-up deleted the first run's new index. The first creator here is
    held inside its creation (after the directory and before the manifest)."""
    photos = copy_paris(tmp_path / "photos", 2)
    target = tmp_path / "race.lsx"
    creator = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom layerseek.store import catalog\n"
                                "real = catalog.Catalog.create.__func__\n"
                                "def slow(cls, root, manifest):\n    print('creating', flush=True); time.sleep(3)\n"
                                "    return real(cls, root, manifest)\n"
                                "catalog.Catalog.create = classmethod(slow)\nfrom layerseek.index import Index\n"
                                f"Index.create({str(target)!r}, 'gem', backbone='mobilenet_v2', layers=('last',)).close()\n"
                                "print('made', flush=True)"], stdout=subprocess.PIPE, text=True)
    try:
        assert creator.stdout.readline().strip() == "creating"
        r = CliRunner().invoke(app, ["index", str(photos), "--index", str(target), "--method", "gem"])
        assert r.exit_code == 1 and "index busy" in r.output and "is creating it" in r.output, r.output
        assert target.is_dir()  # left alone
        assert creator.stdout.readline().strip() == "made" and creator.wait(30) == 0
    finally:
        creator.kill()
    with Index.open(target) as idx:
        assert idx.add_folder(photos).added == 2
    r = CliRunner().invoke(app, ["index", str(photos), "--index", str(target)])
    assert r.exit_code == 0 and "2 unchanged" in r.output, r.output


def test_a_failed_creation_removes_only_what_it_made(tmp_path, monkeypatch):
    from layerseek.index import claimed_for_creation

    with pytest.raises(RuntimeError):
        with claimed_for_creation(tmp_path / "new" / "idx"):
            (tmp_path / "new" / "idx" / "half.npz").write_bytes(b"x")
            raise RuntimeError("learning failed")
    assert not (tmp_path / "new" / "idx").exists() and (tmp_path / "new").is_dir()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("a user's file")
    with pytest.raises(RuntimeError):
        with claimed_for_creation(tmp_path / "mine"):
            (tmp_path / "mine" / "half.npz").write_bytes(b"x")
            raise RuntimeError("learning failed")
    assert sorted(os.listdir(tmp_path / "mine")) == ["notes.txt"]
    with Index.create(tmp_path / "idx", "gem", **OPTS):
        pass
    with pytest.raises(Exception, match="already holds an index"):
        with claimed_for_creation(tmp_path / "idx"):
            pass
    assert Index.open(tmp_path / "idx").catalog.count() == 0


def test_a_full_disk_is_said_as_such_and_loses_nothing(copy_paris, tmp_path):
    """Issue 27: disk full during `index` said "cannot rollback - no transaction is active" (an
    unconditional ROLLBACK masked SQLite's "database or disk is full"). SQLite's own full-disk
    condition is made with a page cap on the catalog (PRAGMA max_page_count)."""
    import sqlite3

    photos = copy_paris(tmp_path / "photos", 2)
    with Index.create(tmp_path / "idx", "gem", verify=True, **OPTS) as idx:
        assert idx.add_folder(photos).added == 2
    pages = sqlite3.connect(tmp_path / "idx" / "catalog.sqlite").execute("PRAGMA page_count").fetchone()[0]
    copy_paris(photos)  # 4 more photos, each with its SIFT features (~100 KB): more than the cap allows
    planted = ("import sys\nfrom layerseek.store import catalog\nreal = catalog.Catalog._connect\n"
               f"def capped(path):\n    c = real(path)\n    c.execute('PRAGMA max_page_count = {pages + 8}')\n"
               "    return c\ncatalog.Catalog._connect = staticmethod(capped)\n"
               "from layerseek.cli import run_cli\nrun_cli(sys.argv[1:])")
    env = {**os.environ, "LAYERSEEK_LOG_DIR": str(tmp_path / "logs")}
    r = subprocess.run([sys.executable, "-c", planted, "index", str(photos), "--index", str(tmp_path / "idx"),
                        "--batch", "1"], capture_output=True, text=True, env=env, timeout=300)
    err = " ".join(r.stderr.split())
    assert r.returncode == 1 and f"{tmp_path / 'idx' / 'catalog.sqlite'}: disk full: free some space" in err, r.stderr
    assert "rollback" not in err and "unexpected" not in err and "Traceback" not in err
    with Index.open(tmp_path / "idx") as idx:  # what was indexed before is all there
        assert idx.catalog.count() >= 2 and len(idx.search(str(photos / PARIS[0]), top=2)) == 2
    r = CliRunner().invoke(app, ["check", str(tmp_path / "idx")])
    assert r.exit_code == 0, r.output


FULL_DISK_RUN = r"""
import os, subprocess, sys, json
disk, photos2, photos6 = sys.argv[1:4]
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "none", disk], check=True)
ls = [sys.executable, "-m", "layerseek.cli"]
small = ["--method", "gem", "--backbone", "mobilenet_v2", "--layers", "last", "--max-side", "128"]
def run(*args):
    r = subprocess.run([*ls, *args], capture_output=True, text=True)
    return [r.returncode, " ".join((r.stdout + r.stderr).split())]
out = {"first": run("index", photos2, "--index", disk + "/idx", *small)}
st = os.statvfs(disk)
with open(disk + "/filler", "wb") as f:  # the drive full but for 32 KB
    f.write(b"\0" * (st.f_bavail * st.f_frsize - (32 << 10)))
out["full"] = run("index", photos6, "--index", disk + "/idx")
out["search"] = run("search", disk + "/idx", photos6 + "/" + sys.argv[4], "--paths-only", "--top", "1")
out["check_full"] = run("check", disk + "/idx")
os.remove(disk + "/filler")
out["again"] = run("index", photos6, "--index", disk + "/idx")
out["check"] = run("check", disk + "/idx")
print(json.dumps(out))
"""


def test_a_full_drive_is_said_as_such_and_searched(copy_paris, tmp_path):
    """Issue 27, on a real file system that fills up (a 16 MB tmpfs in a private mount namespace):
    `index` says "disk full" in one line, what was indexed is searched (the search's caches were
    written and failed with "No space left on device") and checked sound while the drive is full,
    and once space is freed the same command goes on."""
    if subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode != 0:
        pytest.skip("no private mount namespace here (unshare -rm) to make a small file system in")
    photos2, photos6 = copy_paris(tmp_path / "two", 2), copy_paris(tmp_path / "six", 6)
    disk = tmp_path / "disk"
    disk.mkdir()
    env = {**os.environ, "LAYERSEEK_LOG_DIR": str(tmp_path / "logs")}
    r = subprocess.run(["unshare", "-rm", sys.executable, "-c", FULL_DISK_RUN, str(disk), str(photos2), str(photos6),
                        PARIS[0]], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["first"][0] == 0, out
    rc, said = out["full"]
    assert rc == 1 and ": disk full: free some space" in said, out  # an error said, not "unexpected" (2)
    assert "Traceback" not in said and "unexpected" not in said and "rollback" not in said
    assert out["search"] in ([0, str(photos2 / PARIS[0])], [0, str(photos6 / PARIS[0])]), out  # the same photo
    assert out["check_full"][0] == 0, out  # a full drive damages nothing
    assert out["again"][0] == 0 and out["check"][0] == 0, out
    assert "0 failed" in out["again"][1], out


def test_storage_errors_are_named(tmp_path):
    import errno
    import sqlite3

    from layerseek.errors import storage_error_line

    f = tmp_path / "catalog.sqlite"
    assert storage_error_line(sqlite3.OperationalError("database or disk is full"), f).startswith(f"{f}: disk full")
    assert "read-only drive" in storage_error_line(sqlite3.OperationalError("attempt to write a readonly database"), f)
    assert "locked by another process" in storage_error_line(sqlite3.OperationalError("database is locked"), f)
    assert "disk I/O error: the drive" in storage_error_line(sqlite3.OperationalError("disk I/O error"), f)
    assert "damaged or not a layerseek catalog" in storage_error_line(sqlite3.DatabaseError("file is not a database"), f)
    assert "disk full" in storage_error_line(OSError(errno.ENOSPC, "No space left on device"), f)
    (tmp_path / "idx").mkdir()
    with Index.create(tmp_path / "idx2", "gem", **OPTS):
        pass
    con = sqlite3.connect(tmp_path / "idx2" / "catalog.sqlite")
    con.execute("UPDATE meta SET value='abc' WHERE key='schema_version'")
    con.commit(), con.close()
    for cmd in ("info", "search", "check"):
        args = [cmd, str(tmp_path / "idx2")] + ([str(tmp_path / "q.jpg")] if cmd == "search" else [])
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 1 and "ValueError" not in r.output and "schema version" in r.output, (cmd, r.output)


def test_search_options_out_of_range_and_swapped_arguments(copy_paris, tmp_path):
    """Issue 27: `--top -1` gave 7 results, `--top 0` none, `--qe -3` was taken (exit 0; the server
    refused them with 422); a folder with no images, or the index and photo swapped, ended in an
    AttributeError."""
    photos = copy_paris(tmp_path / "photos", 2)
    with Index.create(tmp_path / "idx", "gem", **OPTS) as idx:
        idx.add_folder(photos)
    run = CliRunner().invoke
    for args in (["--top", "-1"], ["--top", "0"], ["--top", "1001"], ["--qe", "-3"], ["--verify", "-1"]):
        r = run(app, ["search", str(tmp_path / "idx"), str(photos / PARIS[0]), *args])
        out = " ".join(r.output.replace("│", " ").split())
        assert r.exit_code == 2 and ("or equal to" in out or "range" in out), (args, r.output)
    (tmp_path / "empty").mkdir()
    r = run(app, ["search", str(tmp_path / "idx"), str(tmp_path / "empty")])
    assert r.exit_code == 1 and f"no image in {tmp_path / 'empty'}" in r.output, r.output
    r = run(app, ["search", str(photos / PARIS[0]), str(tmp_path / "idx")])  # swapped: said so
    assert r.exit_code == 1 and "AttributeError" not in r.output and "the index comes first" in r.output, r.output
    r = run(app, ["info", str(tmp_path / "idx")])
    assert "None" not in r.output, r.output
    # a web address pasted as the photo: said as one ("//" became "/" on the way)
    r = run(app, ["search", str(tmp_path / "idx"), "https://example.com/photo.jpg"])
    assert r.exit_code == 1 and ("https:/example.com/photo.jpg: missing (a web address: layerseek reads files on this "
                                 "machine; save the photo first)") in " ".join(r.output.split()), r.output
    assert "web address" not in str(ImageError(tmp_path / "https" / "a.jpg", "missing"))  # a folder so named is not
    (tmp_path / "notes.txt").write_text("x")  # a file that is no photo makes no index
    r = run(app, ["index", str(tmp_path / "notes.txt"), "--index", str(tmp_path / "new.lsx")])
    assert r.exit_code == 1 and "notes.txt: not a photo" in r.output and not (tmp_path / "new.lsx").exists(), r.output


@pytest.fixture
def read_only_mount(tmp_path):
    """A folder and a read-only bind mount of it (root may bind-mount; chmod does not stop root)."""
    src, ro = tmp_path / "src", tmp_path / "ro"
    src.mkdir(), ro.mkdir()
    made = subprocess.run(["mount", "--bind", str(src), str(ro)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot make a read-only mount here: {made.stderr.strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], check=True, capture_output=True)
        yield src, ro
    finally:
        subprocess.run(["umount", "-l", str(ro)], capture_output=True)


def test_a_read_only_index_is_searched_and_checked_sound(copy_paris, tmp_path, read_only_mount):
    """Issue 27: on a read-only drive (a WAL catalog without its -shm file) search failed and
    `check` said "re-create the index" for a sound one."""
    src, ro = read_only_mount
    photos = copy_paris(tmp_path / "photos", 3)
    with Index.create(src / "idx", "gem", verify=True, **OPTS) as idx:
        idx.add_folder(photos)
    for f in ("catalog.sqlite-shm", "catalog.sqlite-wal"):
        assert not (src / "idx" / f).exists()  # closed cleanly: as it would be copied to a drive
    run = CliRunner().invoke
    r = run(app, ["search", str(ro / "idx"), str(photos / PARIS[1]), "--paths-only", "--top", "1"])
    assert r.exit_code == 0 and r.output.strip() == str(photos / PARIS[1]), r.output
    r = run(app, ["check", str(ro / "idx")])
    assert r.exit_code == 0 and "sound" in r.output, r.output
    r = run(app, ["index", str(photos), "--index", str(ro / "idx")])
    assert r.exit_code == 1 and f"{ro / 'idx'}: read-only: the index is on a read-only drive" in " ".join(r.output.split())
    from fastapi.testclient import TestClient

    from layerseek.server.app import create_app

    with TestClient(create_app(ro / "idx"), base_url="http://localhost") as c:
        assert c.get("/thumbnails/1").status_code == 200  # made, served, not kept
        q = {"file": ("q.jpg", (photos / PARIS[2]).read_bytes(), "image/jpeg")}
        assert c.post("/search?top=1", files=q).json()["results"][0]["name"] == PARIS[2]
    assert sorted(os.listdir(src / "idx")) == sorted(os.listdir(ro / "idx"))


def test_check_after_a_renamed_folder_says_what_index_will_do(copy_paris, tmp_path):
    """Issue 27: after a renamed folder `check` said the next `index` drops the old rows, while that
    `index` refuses (a vanished folder is not taken for deleted photos)."""
    photos = copy_paris(tmp_path / "photos", 4)
    with Index.create(tmp_path / "idx", "gem", **OPTS) as idx:
        idx.add_folder(photos)
    photos.rename(tmp_path / "renamed")
    r = CliRunner().invoke(app, ["check", str(tmp_path / "idx")])
    out = " ".join(r.output.split())
    assert r.exit_code == 0 and "4 indexed files are gone from disk" in out and "refuses to forget them" in out, out
    r = CliRunner().invoke(app, ["index", str(photos), "--index", str(tmp_path / "idx")])
    assert r.exit_code == 1 and "nothing was removed" in " ".join(r.output.split())
