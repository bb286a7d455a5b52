"""Data safety: `index` forgets files only on evidence, the server serves only what was indexed,
every request is bounded, and the event loop stays free while the network works."""
from __future__ import annotations

import asyncio
import os
import shutil
import struct
import threading
import time
import zlib

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from conftest import PARIS
from layerseek.cli import EXIT_SOME_FAILED, app
from layerseek.errors import LayerseekError
from layerseek.index import Index
from layerseek.server.app import create_app

OPTS = {"backbone": "mobilenet_v2", "layers": ("s32", "last"), "max_side": 192}
INDEX_ARGS = ["--backbone", "mobilenet_v2", "--layers", "s32,last", "--max-side", "192"]


@pytest.fixture(scope="module")
def indexed(copy_paris, tmp_path_factory):
    """A folder of 6 photos, one of them reached through a symlink, indexed with gem."""
    root = tmp_path_factory.mktemp("safety")
    photos = copy_paris(root / "photos")
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    shutil.move(photos / PARIS[5], elsewhere / PARIS[5])
    os.symlink(elsewhere / PARIS[5], photos / "linked.jpg")
    with Index.create(root / "idx", "gem", **OPTS) as idx:
        assert idx.add_folder(photos).added == 6
    return root


def _copy_index(indexed, tmp_path):
    shutil.copytree(indexed / "idx", tmp_path / "idx")
    return tmp_path / "idx"


# -- 1. deletions need evidence ---------------------------------------------------------------
def test_empty_or_missing_folder_is_not_taken_for_deleted_photos(copy_paris, tmp_path):
    photos = copy_paris(tmp_path / "photos")
    run = CliRunner().invoke
    args = ["index", str(photos), "--index", str(tmp_path / "idx"), *INDEX_ARGS]
    assert run(app, args).exit_code == 0
    for f in photos.iterdir():  # the drive is not mounted: the folder is there, empty
        f.unlink()
    r = run(app, args)
    assert r.exit_code == 1 and "empty" in r.output and "holds 6 files" in r.output and "--allow-mass-removal" in r.output
    with Index.open(tmp_path / "idx") as idx:
        assert idx.catalog.count() == 6
    photos.rmdir()
    r = run(app, args)
    assert r.exit_code == 1 and "missing" in r.output and "nothing was removed" in r.output
    with Index.open(tmp_path / "idx") as idx:
        assert idx.catalog.count() == 6
    r = run(app, args + ["--prune"])  # confirmed: forgotten
    assert r.exit_code == 0 and "6 removed" in r.output, r.output
    with Index.open(tmp_path / "idx") as idx:
        assert idx.catalog.count() == 0


def test_more_than_half_gone_needs_confirmation(copy_paris, tmp_path):
    photos = copy_paris(tmp_path / "photos")
    with Index.create(tmp_path / "idx", "gem", **OPTS) as idx:
        idx.add_folder(photos)
        (photos / PARIS[0]).unlink()  # one of six: an ordinary deletion
        assert idx.add_folder(photos).removed == 1
        for name in PARIS[1:5]:  # four of the five left
            (photos / name).unlink()
        with pytest.raises(LayerseekError, match=r"4 of the 5 indexed files under it are gone; nothing was removed"):
            idx.add_folder(photos)
        assert idx.catalog.count() == 5
        assert idx.add_folder(photos, allow_mass_removal=True).removed == 4
        assert idx.catalog.count() == 1


def test_unreadable_subfolder_keeps_its_entries(copy_paris, tmp_path, monkeypatch):
    photos = copy_paris(tmp_path / "photos")
    (photos / "sub").mkdir()
    for name in PARIS[:3]:
        shutil.move(photos / name, photos / "sub" / name)
    run = CliRunner().invoke
    args = ["index", str(photos), "--index", str(tmp_path / "idx"), *INDEX_ARGS]
    assert run(app, args).exit_code == 0
    real_scandir = os.scandir
    sub = str((photos / "sub").resolve())

    def scandir(path="."):  # root reads everything here, so the refusal is simulated
        if os.fspath(path) == sub:
            raise PermissionError(13, "Permission denied", sub)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    r = run(app, args)
    assert r.exit_code == EXIT_SOME_FAILED, r.output
    assert "0 removed" in r.output and "folder not read (its entries kept)" in r.output and "Permission denied" in r.output
    with Index.open(tmp_path / "idx") as idx:
        assert idx.catalog.count() == 6


def test_an_index_kept_in_its_folder_is_not_indexed(copy_paris, tmp_path):
    """Beside the photos is a natural place for an index, and `serve` writes thumbnails into it:
    a walk passes over it (and over another index there), says none of its files is 'not an
    image', keeps what this index holds of its own uploads, and forgets thumbnails an older walk
    indexed without the mass-removal guard taking them for a lost drive. A folder search passes
    over them too, and an index is no folder to index."""
    from layerseek.cli.searching import query_images

    photos = copy_paris(tmp_path / "photos", 3)
    with Index.create(photos / "photos.lsx", "gem", **OPTS) as idx:
        r = idx.add_folder(photos)
        assert (r.added, r.skipped) == (3, [])
        thumbs = photos / "photos.lsx" / "cache" / "thumbs"
        thumbs.mkdir(parents=True)
        for k in range(4):  # four thumbnails, as the page asks for them
            shutil.copy(photos / PARIS[k % 3], thumbs / f"{k}-256.jpg")
        Index.create(photos / "old" / "other.lsx", "gem", **OPTS).close()
        shutil.copy(photos / PARIS[0], photos / "old" / "other.lsx" / "inside.jpg")
        shutil.copy(photos / PARIS[1], photos / "old" / "kept.jpg")
        uploads = photos / "photos.lsx" / "uploads"
        uploads.mkdir()
        shutil.copy(photos / PARIS[2], uploads / "f00d-upload.jpg")
        assert idx.add_files([uploads / "f00d-upload.jpg"]).reused == 1  # as the server adds an upload
        assert idx.add_files(sorted(thumbs.iterdir())).reused == 4  # as a walk did before this one
        assert idx.catalog.count() == 8
        r = idx.add_folder(photos)  # 4 of the 8 go: without the rule the guard would refuse
        assert (r.added, r.removed, r.skipped) == (1, 4, []), r.summary()
        names = sorted(os.path.relpath(e.path, photos.resolve()) for e in idx.catalog.entries())
        assert names == sorted(PARIS[:3] + ["old/kept.jpg", "photos.lsx/uploads/f00d-upload.jpg"])
        with pytest.raises(LayerseekError, match="photos.lsx: a layerseek index, not a folder of photos"):
            idx.add_folder(photos / "photos.lsx")
    (photos / ".hidden").mkdir()
    shutil.copy(photos / PARIS[0], photos / ".hidden" / "x.jpg")
    shutil.copy(photos / PARIS[0], photos / ".dot.jpg")
    found = query_images([photos])
    assert [os.path.relpath(p, photos) for p in found] == sorted(PARIS[:3] + ["old/kept.jpg"])


def test_a_linked_folder_is_followed_once_and_a_missing_one_keeps_its_photos(copy_paris, tmp_path):
    """A folder linked into the photos (another drive) is indexed under the link's name; a second
    link to it, a link back up (a loop) and a link into the folder itself are each walked once;
    while the link's target is missing (the drive not mounted) its photos stay indexed and the
    run says so."""
    from layerseek.cli.searching import query_images

    src = copy_paris(tmp_path / "src", 5)
    photos, trip = tmp_path / "photos", tmp_path / "drive" / "trip"
    (photos / "sub").mkdir(parents=True)
    (trip / "deeper").mkdir(parents=True)
    for name, where in zip(PARIS[:5], [photos, photos / "sub", trip, trip, trip / "deeper"]):
        shutil.move(src / name, where / name)
    os.symlink(trip, photos / "trip")
    os.symlink(trip, photos / "trip-copy")  # the same folder again
    os.symlink(photos, trip / "back")  # a loop
    os.symlink(photos / "sub", photos / "inside")  # walked under its own name
    want = sorted([PARIS[0], f"sub/{PARIS[1]}", f"trip/{PARIS[2]}", f"trip/{PARIS[3]}", f"trip/deeper/{PARIS[4]}"])
    with Index.create(tmp_path / "idx", "gem", **OPTS) as idx:
        r = idx.add_folder(photos)
        assert (r.added, r.reused, r.unreadable) == (5, 0, []), r.summary()
        assert r.followed == [str(trip.resolve())] and r.summary().endswith(", 1 linked folder followed")
        assert sorted(os.path.relpath(e.path, photos) for e in idx.catalog.entries()) == want
        assert sorted(os.path.relpath(p, photos) for p in query_images([photos])) == want
        shutil.move(tmp_path / "drive", tmp_path / "unmounted")
        r = idx.add_folder(photos)
        assert (r.removed, r.unchanged) == (0, 2) and idx.catalog.count() == 5, r.summary()
        assert r.unreadable == [f"{photos / 'trip'}: a link to {trip}, which is missing"]
        assert "1 folder unreadable (its entries kept)" in r.summary()
        shutil.move(tmp_path / "unmounted", tmp_path / "drive")
        r = idx.add_folder(photos)
        assert (r.added, r.removed, r.unchanged, r.unreadable) == (0, 0, 5, [])
        # removed by the target's path: the files under the link's name go, and stay out
        assert idx.remove([trip]) == [] and idx.catalog.count() == 2
        assert (str(photos.resolve() / "trip"), "folder") in idx.catalog.exclusions()
        r = idx.add_folder(photos)
        assert (r.added, r.excluded) == (0, 3) and idx.catalog.count() == 2, r.summary()


def test_a_file_in_a_linked_folder_is_one_entry_by_any_name(copy_paris, tmp_path):
    """A photo under a linked folder, indexed by name (through the link or by its real path) after
    the folder, is the folder's entry; indexed by name first, the folder's walk takes it over (moved,
    its own root dropped): one file, one entry, whichever comes first."""
    src = copy_paris(tmp_path / "src", 3)
    photos, drive = tmp_path / "photos", tmp_path / "drive"
    photos.mkdir(), drive.mkdir()
    shutil.move(src / PARIS[0], photos / PARIS[0])
    for name in PARIS[1:3]:
        shutil.move(src / name, drive / name)
    os.symlink(drive, photos / "trip")
    walked = sorted([str(photos / PARIS[0]), *(str(photos / "trip" / n) for n in PARIS[1:3])])
    with Index.create(tmp_path / "idx", "gem", **OPTS) as idx:
        assert idx.add_folder(photos).added == 3
        for name in (photos / "trip" / PARIS[1], drive / PARIS[2]):  # the link's name, the real path
            r = idx.add_files([name])
            assert (r.added, r.unchanged) == (0, 1), r.summary()
        assert sorted(e.path for e in idx.catalog.entries()) == walked
        assert idx.catalog.roots() == [str(photos)]
    with Index.create(tmp_path / "idx2", "gem", **OPTS) as idx:
        assert idx.add_files([photos / "trip" / PARIS[1]]).added == 1
        assert [e.path for e in idx.catalog.entries()] == [str(drive / PARIS[1])]  # named by its real path
    info = CliRunner().invoke(app, ["info", str(tmp_path / "idx2")]).output.splitlines()
    assert info[:2] == [f"{tmp_path / 'idx2'}: 1 image, 0 failed", f"indexed: {drive / PARIS[1]}"], info
    with Index.open(tmp_path / "idx2") as idx:
        r = idx.add_folder(photos)
        assert (r.added - r.moved, r.moved, r.removed - r.moved) == (2, 1, 0), r.summary()
        assert sorted(e.path for e in idx.catalog.entries()) == walked
        assert idx.catalog.roots() == [str(photos)]
        assert idx.add_folder(photos).unchanged == 3


def test_ctrl_c_keeps_what_was_indexed_and_says_how_to_go_on(copy_paris, tmp_path, monkeypatch):
    """Ctrl-C during `index`: the photos done so far are committed (fewer than a batch of 16 were
    waiting, and were lost), the run says how many and how to go on, exit status 130; the next run
    goes on from there."""
    import layerseek.progress

    photos = copy_paris(tmp_path / "photos", 6)
    real = layerseek.progress.progress_bar

    def bar_stopped_at(n):
        def made(label, console=None):
            bar, update = real(label, console)

            def update_then_stop(done, total):
                update(done, total)
                if done == n:
                    raise KeyboardInterrupt
            return bar, update_then_stop
        return made

    monkeypatch.setattr(layerseek.progress, "progress_bar", bar_stopped_at(4))
    args = ["index", str(photos), "--index", str(tmp_path / "idx"), *INDEX_ARGS]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 130, r.output
    assert (f"interrupted: 4 photos added to {tmp_path / 'idx'} and kept; `layerseek index {photos} --index "
            f"{tmp_path / 'idx'}` goes on from there") in " ".join(r.output.split()), r.output
    with Index.open(tmp_path / "idx") as idx:
        assert idx.catalog.count() == 4
    monkeypatch.setattr(layerseek.progress, "progress_bar", real)
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0 and "2 added, 0 updated, 0 removed, 4 unchanged" in r.output, r.output


def test_a_renamed_folder_is_said_and_forgotten_by_its_old_name(copy_paris, tmp_path):
    """A folder renamed is new to the index (its vectors copied from the identical contents),
    while the old name's entries stay: `index` and `info` say the old folder is missing and how to
    forget it; `--prune` on the old name forgets it, the folder included."""
    old = copy_paris(tmp_path / "2023", 3)
    run = CliRunner().invoke
    idx_path = tmp_path / "idx"
    assert run(app, ["index", str(old), "--index", str(idx_path), *INDEX_ARGS]).exit_code == 0
    new = old.rename(tmp_path / "2023-trip")
    r = run(app, ["index", str(new), "--index", str(idx_path)])
    assert r.exit_code == 0 and "3 copied from identical files" in r.output, r.output
    assert (f"missing: {old} (3 indexed files under it kept; moved or renamed? `layerseek index {old} --index "
            f"{idx_path} --prune` forgets them)") in " ".join(r.output.split())
    with Index.open(idx_path) as idx:
        assert idx.info()["missing_roots"] == [str(old)] and idx.catalog.count() == 6
    info = run(app, ["info", str(idx_path)]).output
    assert f"{old} (missing: moved, renamed or not mounted?), {new}" in " ".join(info.split())
    r = run(app, ["index", str(old), "--index", str(idx_path), "--prune"])
    assert r.exit_code == 0 and "3 removed" in r.output and "missing:" not in r.output, r.output
    with Index.open(idx_path) as idx:
        assert idx.catalog.roots() == [str(new)] and idx.catalog.count() == 3 and idx.info()["missing_roots"] == []


def test_the_photos_folder_is_not_made_an_index(copy_paris, tmp_path):
    """`--index` naming the photos' own folder is refused before anything is written there."""
    photos = copy_paris(tmp_path / "photos", 2)
    before = sorted(os.listdir(photos))
    r = CliRunner().invoke(app, ["index", str(photos), "--index", str(photos), *INDEX_ARGS])
    assert r.exit_code == 1 and (f"{photos}: holds photos ({PARIS[0]}, ...); an index needs a directory of its "
                                 f"own, e.g. {photos / 'photos.lsx'}") in " ".join(r.output.split()), r.output
    assert sorted(os.listdir(photos)) == before


def test_unwritable_index_location_is_one_line(copy_paris, tmp_path):
    photos = copy_paris(tmp_path / "photos", 1)
    (tmp_path / "afile").write_text("x")
    r = CliRunner().invoke(app, ["index", str(photos), "--index", str(tmp_path / "afile" / "idx"), *INDEX_ARGS])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "afile" in r.output and ("Not a directory" in r.output or "not a directory" in r.output), r.output


# -- 2. serve only what was indexed -----------------------------------------------------------
def test_symlinks_are_recorded_and_removable_by_either_path(indexed, tmp_path):
    idx_dir = _copy_index(indexed, tmp_path)
    photos, target = indexed / "photos", indexed / "elsewhere" / PARIS[5]
    with Index.open(idx_dir) as idx:
        e = idx.catalog.by_path(str(photos.resolve() / "linked.jpg"))
        assert e is not None and e.real_path == str(target.resolve())
        assert str(photos.resolve()) in idx.catalog.roots()
        assert idx.remove([target]) == [] and idx.catalog.count() == 5  # by the target's path
    idx_dir = _copy_index(indexed, tmp_path / "again")
    with Index.open(idx_dir) as idx:
        assert idx.remove([photos / "linked.jpg"]) == [] and idx.catalog.count() == 5  # by the link's


TOKEN = {"Authorization": "Bearer tok"}


def test_a_swapped_file_is_not_served(indexed, tmp_path, monkeypatch):
    monkeypatch.setenv("LAYERSEEK_TOKEN", "tok")
    photos = tmp_path / "photos"
    shutil.copytree(indexed / "photos", photos, symlinks=True)
    os.symlink(photos / PARIS[3], photos / "inside.jpg")
    with Index.create(tmp_path / "idx", "gem", **OPTS) as idx:
        idx.add_folder(photos)
        victim = idx.catalog.by_path(str(photos.resolve() / PARIS[1]))
        changed = idx.catalog.by_path(str(photos.resolve() / PARIS[2]))
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0 the server's own secrets")
    with TestClient(create_app(tmp_path / "idx"), base_url="http://localhost") as c:
        assert c.get(f"/images/{victim.id}").content == (photos / PARIS[1]).read_bytes()
        (photos / PARIS[1]).unlink()
        os.symlink(secret, photos / PARIS[1])
        r = c.get(f"/images/{victim.id}")
        # anonymous: no server path (it named the link's new target, an oracle for which files exist)
        assert r.status_code == 404 and b"root:" not in r.content and str(tmp_path) not in r.text
        assert r.json()["detail"] == (f"image {victim.id} is not served: its file is no longer the one indexed "
                                      "(details in the server's log)")
        r = c.get(f"/images/{victim.id}", headers=TOKEN)
        assert r.status_code == 404 and f"now points to {secret}" in r.json()["detail"]
        r = c.get(f"/thumbnails/{victim.id}")
        assert r.status_code == 404 and str(tmp_path) not in r.text
        data = bytearray((photos / PARIS[2]).read_bytes())  # same size and time, other content
        st = os.stat(photos / PARIS[2])
        data[-10] ^= 0xFF
        (photos / PARIS[2]).write_bytes(bytes(data))
        os.utime(photos / PARIS[2], ns=(st.st_atime_ns, st.st_mtime_ns))
        r = c.get(f"/images/{changed.id}", headers=TOKEN)
        assert r.status_code == 404 and "content" in r.json()["detail"]
        # a link is served only while its target lies inside an indexed folder
        linked = c.app.state.index.catalog.by_path(str(photos.resolve() / "linked.jpg"))
        r = c.get(f"/images/{linked.id}", headers=TOKEN)
        assert r.status_code == 404 and "outside the indexed folders" in r.json()["detail"]
        inside = c.app.state.index.catalog.by_path(str(photos.resolve() / "inside.jpg"))
        assert c.get(f"/images/{inside.id}").content == (photos / PARIS[3]).read_bytes()
        # results: relative paths without the token, absolute with it (a photo without a twin:
        # PARIS[3] and inside.jpg tie to the last bits of two runs of the network)
        q = {"file": ("q.jpg", (photos / PARIS[4]).read_bytes(), "image/jpeg")}
        anon = c.post("/search?top=1", files=q).json()["results"][0]
        assert anon["path"] == PARIS[4]
        full = c.post("/search?top=1", files=q, headers={"Authorization": "Bearer tok"}).json()["results"][0]
        assert full["path"] == str(photos.resolve() / PARIS[4])
        bare = c.post("/search?top=1", files=q, headers={"Authorization": "tok"}).json()["results"][0]
        assert bare["path"] == PARIS[4]  # a bare token is no token
    with Index.open(tmp_path / "idx") as idx:
        assert "now points to" in idx.catalog.by_id(victim.id).flag
        assert "content" in idx.catalog.by_id(changed.id).flag


# -- 3. bounded requests ----------------------------------------------------------------------
def _asgi_post(asgi, path: str, total: int, headers: list[tuple[bytes, bytes]], chunk: int = 1 << 20):
    """POST a multipart body of `total` bytes of file data, chunked (no Content-Length), straight
    to the ASGI app; returns (status, body, bytes the app pulled)."""
    boundary = b"xXxBOUNDARYxXx"
    head = (b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="big.jpg"\r\n'
            b"Content-Type: image/jpeg\r\n\r\n")
    pulled, sent = 0, []

    def parts():
        yield head
        left = total
        while left > 0:
            n = min(chunk, left)
            left -= n
            yield b"\xff" * n
        yield b"\r\n--" + boundary + b"--\r\n"

    it = parts()

    async def receive():
        nonlocal pulled
        part = next(it, None)
        if part is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        pulled += len(part)
        return {"type": "http.request", "body": part, "more_body": True}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "path": path,
             "raw_path": path.encode(), "query_string": b"", "root_path": "", "scheme": "http",
             "server": ("test", 80), "client": ("127.0.0.1", 1234),
             "headers": [(b"content-type", b"multipart/form-data; boundary=" + boundary),
                         (b"transfer-encoding", b"chunked"), (b"host", b"localhost"), *headers]}
    asyncio.run(asgi(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, body, pulled


def test_a_photo_in_a_linked_folder_is_served_while_it_is_the_one_indexed(copy_paris, tmp_path, monkeypatch):
    """A folder the walk followed is part of the folder indexed: its photos are served (a linked
    file leading out of the folders is not, above); when the link is turned to another folder
    holding a file of the same name, that file is not served."""
    monkeypatch.setenv("LAYERSEEK_TOKEN", "tok")
    photos, trip, other = copy_paris(tmp_path / "photos", 1), tmp_path / "drive" / "trip", tmp_path / "other"
    trip.mkdir(parents=True)
    other.mkdir()
    shutil.copy(photos / PARIS[0], trip / "x.jpg")
    (other / "x.jpg").write_bytes((photos / PARIS[0]).read_bytes()[:-100])
    os.symlink(trip, photos / "trip")
    with Index.create(tmp_path / "idx", "gem", **OPTS) as idx:
        idx.add_folder(photos)
        e = idx.catalog.by_path(str(photos.resolve() / "trip" / "x.jpg"))
    with TestClient(create_app(tmp_path / "idx"), base_url="http://localhost") as c:
        assert c.get(f"/images/{e.id}").content == (trip / "x.jpg").read_bytes()
        assert c.get(f"/thumbnails/{e.id}").status_code == 200
        (photos / "trip").unlink()
        os.symlink(other, photos / "trip")
        r = c.get(f"/images/{e.id}", headers=TOKEN)
        assert r.status_code == 404 and f"now points to {other / 'x.jpg'}" in r.json()["detail"]


def test_chunked_upload_is_cut_off_while_it_streams(indexed, tmp_path, monkeypatch):
    monkeypatch.setenv("LAYERSEEK_TOKEN", "tok")
    api = create_app(_copy_index(indexed, tmp_path), max_upload=20 * 1024 * 1024)
    status, body, pulled = _asgi_post(api, "/search", 200 * 1024 * 1024, [])
    assert status == 413 and b"upload too large" in body
    assert pulled < 25 * 1024 * 1024
    # a write route refuses a wrong token before reading any of the body
    status, body, pulled = _asgi_post(api, "/images", 200 * 1024 * 1024, [(b"authorization", b"Bearer nope")])
    assert status == 401 and pulled == 0


def _png_header_only(w: int, h: int) -> bytes:
    """A PNG that declares w x h pixels (a decompression bomb as far as its header goes)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b"")


def test_huge_pixel_counts_and_ids_are_refused(indexed, tmp_path, monkeypatch):
    monkeypatch.setenv("LAYERSEEK_TOKEN", "tok")
    with TestClient(create_app(_copy_index(indexed, tmp_path)), base_url="http://localhost") as c:
        bomb = _png_header_only(13000, 13000)
        t0 = time.perf_counter()
        r = c.post("/search", files={"file": ("bomb.png", bomb, "image/png")})
        assert r.status_code == 413 and "bomb.png: too large" in r.json()["detail"]
        assert time.perf_counter() - t0 < 5  # refused from the header, not decoded (a generous bound)
        r = c.post("/images", files={"file": ("bomb.png", bomb, "image/png")}, headers={"Authorization": "Bearer tok"})
        assert r.status_code == 413
        for bad in (2 ** 63, 2 ** 64, 0, -1):
            assert c.get(f"/images/{bad}").status_code == 422
            assert c.get(f"/thumbnails/{bad}").status_code == 422
            assert c.delete(f"/images/{bad}", headers={"Authorization": "Bearer tok"}).status_code == 422
        assert c.get(f"/images/{2 ** 63 - 1}").status_code == 404


# -- 4. a responsive server ---------------------------------------------------------------------
def test_health_answers_while_a_slow_search_runs(indexed, tmp_path):
    api = create_app(_copy_index(indexed, tmp_path), max_queue=1, token="tok")
    idx = api.state.index
    real_search, started = idx.search, threading.Event()

    def slow_search(*a, **k):
        started.set()
        time.sleep(3)
        return real_search(*a, **k)

    idx.search = slow_search
    q = {"file": ("q.jpg", (indexed / "photos" / PARIS[0]).read_bytes(), "image/jpeg")}
    with TestClient(api, base_url="http://localhost") as c:
        done = {}
        t = threading.Thread(target=lambda: done.setdefault("r", c.post("/search?top=1", files=q)))
        t.start()
        assert started.wait(30)
        h = c.get("/health")
        assert h.status_code == 200 and h.json()["queue"] == 1
        assert t.is_alive()  # /health came back while the search was still running
        busy = c.post("/search?top=1", files=q)  # the queue (1) is full
        assert busy.status_code == 503 and int(busy.headers["Retry-After"]) >= 1
        new = {"file": ("new.jpg", (indexed / "photos" / PARIS[4]).read_bytes(), "image/jpeg")}
        busy = c.post("/images", files=new, headers={"Authorization": "Bearer tok"})  # an upload refused as busy ...
        assert busy.status_code == 503 and not list((idx.catalog.root / "uploads").glob("*"))  # ... leaves no file
        first = idx.catalog.by_path(str((indexed / "photos" / PARIS[0]).resolve()))
        assert c.get(f"/images/{first.id}").status_code == 200  # files are served meanwhile too
        t.join(60)
        assert done["r"].status_code == 200 and done["r"].json()["results"][0]["name"] == PARIS[0]
