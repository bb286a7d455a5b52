"""The HTTP API of `layerseek serve`, through FastAPI's test client on a real index of real photos."""
from __future__ import annotations

import io
import os
import shutil

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from conftest import PARIS
from layerseek.index import Index
from layerseek.server.app import create_app

OPTS = {"backbone": "mobilenet_v2", "layers": ("s32", "last"), "max_side": 256}


@pytest.fixture(scope="module")
def index_dir(copy_paris, tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    photos = copy_paris(root / "photos")
    with Index.create(root / "idx", "gem", **OPTS) as idx:
        assert idx.add_folder(photos).added == 6
    return root


def _jpeg(path, crop=True) -> bytes:
    img = Image.open(path)
    w, h = img.size
    if crop:  # a different photo of the same place: cropped and smaller
        img = img.crop((w // 6, h // 6, w - w // 6, h - h // 6)).resize((320, 220))
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture
def client(index_dir, monkeypatch):
    monkeypatch.delenv("LAYERSEEK_TOKEN", raising=False)
    with TestClient(create_app(index_dir / "idx", max_upload=2_000_000), base_url="http://localhost") as c:
        yield c


def test_health_page_and_openapi(client):
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["images"] == 6 and h["method"] == "gem" and h["adding"] is False
    page = client.get("/")
    assert page.status_code == 200 and 'id="drop"' in page.text and "/search" in page.text
    spec = client.get("/openapi.json").json()
    assert {"/search", "/images/{image_id}", "/thumbnails/{image_id}", "/health", "/images"} <= set(spec["paths"])
    assert client.get("/docs").status_code == 200


def test_search_finds_the_photographed_place_first(client, index_dir):
    q = _jpeg(index_dir / "photos" / PARIS[3])
    r = client.post("/search?top=4", files={"file": ("q.jpg", q, "image/jpeg")})
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert len(res) == 4 and res[0]["name"] == PARIS[3] and res[0]["rank"] == 1
    assert res[0]["score"] > res[1]["score"] >= res[2]["score"]
    # the served file is the catalogued one, byte for byte
    img = client.get(res[0]["image"])
    assert img.status_code == 200 and img.headers["content-type"] == "image/jpeg"
    assert img.content == (index_dir / "photos" / PARIS[3]).read_bytes()
    th = client.get(res[0]["thumbnail"] + "?size=128")
    assert th.status_code == 200 and max(Image.open(io.BytesIO(th.content)).size) == 128
    again = client.get(res[0]["thumbnail"] + "?size=128")  # from the thumbnail cache now
    assert again.content == th.content


def test_photos_counts_identical_files_once(copy_paris, tmp_path):
    """`photos=true`: `top` counts photos, every file of each returned with its content (a photo
    with three identical copies is one of the two asked for); without it, `top` files."""
    photos = copy_paris(tmp_path / "photos", 3)
    for k in range(3):
        shutil.copy(photos / PARIS[0], photos / f"copy{k}.jpg")
    with Index.create(tmp_path / "idx", "gem", **OPTS) as idx:
        assert idx.add_folder(photos).added == 6
    q = {"file": ("q.jpg", (photos / PARIS[0]).read_bytes(), "image/jpeg")}
    with TestClient(create_app(tmp_path / "idx"), base_url="http://localhost") as c:
        files = c.post("/search?top=2", files=q).json()["results"]
        assert len(files) == 2 and len({h["content"] for h in files}) == 1
        res = c.post("/search?top=2&photos=true", files=q).json()["results"]
        assert len(res) == 5 and len({h["content"] for h in res}) == 2
        assert sum(h["name"] in (PARIS[0], "copy0.jpg", "copy1.jpg", "copy2.jpg") for h in res) == 4
        assert [h["rank"] for h in res] == [1, 2, 3, 4, 5]
        # the photo searched with left out ("search with this photo"), and its identical files with it
        own = next(h for h in res if h["name"] == PARIS[0])
        left = c.post(f"/search?top=2&photos=true&exclude={own['id']}", files=q).json()["results"]
        assert {h["name"] for h in left} == set(PARIS[1:3]) and own["content"] not in {h["content"] for h in left}
        files = c.post(f"/search?top=2&exclude={own['id']}", files=q).json()["results"]
        assert {h["name"] for h in files} == set(PARIS[1:3])  # two files asked for: two others


def test_a_part_of_the_photo_is_searched_with(client, index_dir):
    """`region=X,Y,W,H`: the search reads that part of the photo alone (two places side by side:
    each half finds its own first); a region that is no part of a photo is refused in one line."""
    a, b = (Image.open(index_dir / "photos" / PARIS[i]).convert("RGB").resize((400, 300)) for i in (1, 3))
    both = Image.new("RGB", (800, 300))
    both.paste(a, (0, 0))
    both.paste(b, (400, 0))
    buf = io.BytesIO()
    both.save(buf, "JPEG", quality=92)
    q = {"file": ("both.jpg", buf.getvalue(), "image/jpeg")}
    first = {part: client.post(f"/search?top=1&region={part}", files=q).json()["results"][0]["name"]
             for part in ("0,0,0.5,1", "0.5,0,0.5,1")}
    assert first == {"0,0,0.5,1": PARIS[1], "0.5,0,0.5,1": PARIS[3]}
    for bad in ("0.5,0,0.6,1", "1,2", "x"):
        r = client.post(f"/search?region={bad}", files=q)
        assert r.status_code == 400 and r.json()["detail"].startswith(f"region '{bad}': "), r.text


def test_a_heic_thumbnail_is_made_from_the_one_it_embeds(tmp_path, data_dir, monkeypatch):
    """Issue 28: the page's thumbnail of an iPhone-style HEIC decodes the 320 px thumbnail the file
    holds (about 9 ms) rather than the photo (about 0.9 s at 12 MP); the viewer's 1024 px one,
    larger than it, the photo. Both come back as JPEG, which every browser shows (a HEIC original
    many do not)."""
    from pillow_heif.as_plugin import HeifImageFile

    chosen = []
    draft = HeifImageFile.draft
    monkeypatch.setattr(HeifImageFile, "draft", lambda im, mode, size: chosen.append(draft(im, mode, size)) or chosen[-1])
    monkeypatch.delenv("LAYERSEEK_TOKEN", raising=False)
    (tmp_path / "photos").mkdir()
    Image.open(data_dir / "smvs-dvd-covers" / "Canon" / "001.jpg").save(tmp_path / "photos" / "cover.heic",
                                                                        thumbnails=[320])
    with Index.create(tmp_path / "idx", "gem", **OPTS) as idx:
        assert idx.add_folder(tmp_path / "photos").added == 1
    assert chosen == []  # indexing decodes the photo
    with TestClient(create_app(tmp_path / "idx"), base_url="http://localhost") as c:
        small = c.get("/thumbnails/1")
        assert chosen == [("RGB", (0, 0, 320, 240))]
        large = c.get("/thumbnails/1?size=1024")
        assert chosen[-1] is None
    for r, side in ((small, 256), (large, 1024)):
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        assert max(Image.open(io.BytesIO(r.content)).size) == side


def test_a_dropped_heic_is_previewed_from_the_thumbnail_it_embeds(client, data_dir, tmp_path, monkeypatch):
    """POST /preview: a photo the browser cannot show comes back as a small JPEG, upright, made from
    the HEIC's embedded thumbnail where that covers the size (the page shows it while the search
    runs); what is no image is refused as a search refuses it."""
    from pillow_heif.as_plugin import HeifImageFile

    chosen = []
    draft = HeifImageFile.draft
    monkeypatch.setattr(HeifImageFile, "draft", lambda im, mode, size: chosen.append(draft(im, mode, size)) or chosen[-1])
    buf = io.BytesIO()
    photo = Image.open(data_dir / "smvs-dvd-covers" / "Canon" / "001.jpg")
    photo.save(buf, "HEIF", thumbnails=[320])
    assert max(photo.size) >= 1024
    r = client.post("/preview", files={"file": ("IMG_0001.HEIC", buf.getvalue(), "image/heic")})
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg", r.text
    assert Image.open(io.BytesIO(r.content)).size == (256, 192) and chosen == [("RGB", (0, 0, 320, 240))]
    big = client.post("/preview?size=1024", files={"file": ("IMG_0001.HEIC", buf.getvalue(), "image/heic")})
    assert max(Image.open(io.BytesIO(big.content)).size) == 1024 and chosen[-1] is None  # the photo itself
    bad = client.post("/preview", files={"file": ("notes.txt", b"hello, not an image", "text/plain")})
    assert bad.status_code == 415 and "notes.txt: not an image" in bad.json()["detail"]
    assert client.post("/preview", files={"file": ("e.jpg", b"", "image/jpeg")}).status_code == 400
    assert client.post("/preview?size=5000", files={"file": ("q.heic", buf.getvalue(), "image/heic")}).status_code == 422


def test_the_shell_names_its_photo_by_path_and_the_server_reads_it(index_dir, tmp_path, monkeypatch):
    """With serve.json's key a search may name its photo by its path on this machine (nothing
    uploaded): the same results as the upload; not for anyone else (the token included); a file
    the server does not see as the client did (size, time, not a regular file) is 409, and the
    shell's client then sends the photo itself."""
    from layerseek.server import client as shell_client

    monkeypatch.setenv("LAYERSEEK_TOKEN", "tok")
    photo = index_dir / "photos" / PARIS[2]
    st = photo.stat()
    named = {"path": str(photo), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "top": 3}
    key = {"Authorization": "Bearer the-key"}
    small = 10_000  # uploads of at most 10 KB: a photo named by its path is read whatever its size (a RAW file's 20-60 MB)
    assert st.st_size > small
    with TestClient(create_app(index_dir / "idx", local_key="the-key", max_upload=small), base_url="http://localhost") as c:
        by_path = c.post("/search/local", params=named, headers=key)
        assert by_path.status_code == 200 and by_path.json()["query"] == PARIS[2]
    with TestClient(create_app(index_dir / "idx", local_key="the-key"), base_url="http://localhost") as c:
        uploaded = c.post("/search?top=3", files={"file": (PARIS[2], photo.read_bytes(), "image/jpeg")}, headers=key)
        assert by_path.json()["results"] == uploaded.json()["results"]
        for headers in ({}, {"Authorization": "Bearer tok"}):
            r = c.post("/search/local", params=named, headers=headers)
            assert r.status_code == 403 and "send the photo to /search" in r.json()["detail"]
        fifo = tmp_path / "pipe.jpg"
        os.mkfifo(fifo)
        for odd in ({**named, "size": st.st_size + 1}, {**named, "mtime_ns": 1},
                    {**named, "path": str(tmp_path / "gone.jpg")}, {**named, "path": str(fifo)}):
            r = c.post("/search/local", params=odd, headers=key)
            assert r.status_code == 409 and "send the photo" in r.json()["detail"], odd
        assert c.post("/search/local", params={"path": str(photo)}, headers=key).status_code == 422
    calls = []

    def answered(url, method, path, body=None, timeout=120.0, headers=None):
        calls.append((path, body))
        if len(calls) == 1:
            return 409, b'{"detail": "the server does not see this file as the client does; send the photo"}'
        return 200, b'{"results": [{"id": 3, "path": "/p/x.jpg", "score": 0.9, "inliers": 40, "verified": true}]}'

    monkeypatch.setattr(shell_client, "_request", answered)
    hits, _ = shell_client.search(shell_client.Server("http://127.0.0.1:1", 1, "k"), photo, {"top": 3})
    assert [h.path for h in hits] == ["/p/x.jpg"] and hits[0].verified
    assert calls[0][0].startswith("/search/local?") and calls[0][1] is None
    assert calls[1][0].startswith("/search?") and photo.read_bytes() in calls[1][1]  # then uploaded
    # a photo larger than the server takes as an upload is not sent to be cut off: searched here
    calls.clear()
    with pytest.raises(shell_client.RemoteError) as e:
        shell_client.search(shell_client.Server("http://127.0.0.1:1", 1, "k", small), photo, {"top": 3})
    assert not e.value.refused and f"{photo}: " in str(e.value) and "more than the server takes as an upload" in str(e.value)
    assert len(calls) == 1  # the path only


def test_a_search_can_return_the_query_as_it_read_it(client, index_dir):
    """`preview=N`: the query as the search decoded it (upright, at most N px) comes back as a JPEG
    data: URI, for a photo a browser cannot show; without it, nothing more is sent."""
    import base64

    photo = Image.open(index_dir / "photos" / PARIS[3])
    buf = io.BytesIO()
    photo.save(buf, "TIFF")
    r = client.post("/search?top=3&preview=200", files={"file": ("q.tif", buf.getvalue(), "image/tiff")})
    assert r.status_code == 200 and r.json()["results"][0]["path"].endswith(PARIS[3])
    uri = r.json()["query_image"]
    assert uri.startswith("data:image/jpeg;base64,")
    shown = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert shown.format == "JPEG" and max(shown.size) == 200
    assert abs(shown.size[0] / shown.size[1] - photo.size[0] / photo.size[1]) < 0.02
    plain = client.post("/search?top=3", files={"file": ("q.tif", buf.getvalue(), "image/tiff")})
    assert "query_image" not in plain.json()
    assert client.post("/search?preview=5000", files={"file": ("q.tif", buf.getvalue(), "image/tiff")}).status_code == 422


@pytest.mark.parametrize("files,status,text", [
    (None, 422, "file"),
    ({"file": ("notes.txt", b"hello, not an image", "text/plain")}, 415, "notes.txt: not an image"),
    ({"file": ("x.jpg", b"hello, not an image", "image/jpeg")}, 415, "x.jpg: not an image"),
    ({"file": ("empty.jpg", b"", "image/jpeg")}, 400, "empty.jpg: empty"),
    ({"file": ("big.jpg", b"\xff" * 2_000_001, "image/jpeg")}, 413,
     "big.jpg: upload too large: more than this server takes (2.0 MB; serve --max-upload-mb)"),
    ({"file": ("huge.jpg", b"\xff" * 3_000_000, "image/jpeg")}, 413,  # refused unread
     "upload too large: 3.0 MB, more than this server takes (2.0 MB; serve --max-upload-mb)"),
])
def test_search_rejects_bad_uploads(client, files, status, text):
    r = client.post("/search", files=files) if files else client.post("/search", data={"x": "1"})
    assert r.status_code == status, r.text
    assert text in str(r.json()["detail"])


def test_truncated_upload_and_bad_parameters(client, index_dir):
    good = (index_dir / "photos" / PARIS[0]).read_bytes()
    r = client.post("/search", files={"file": ("cut.jpg", good[: len(good) // 3], "image/jpeg")})
    assert r.status_code in (400, 415) and "cut.jpg" in r.json()["detail"]
    r = client.post("/search?top=0", files={"file": ("q.jpg", good, "image/jpeg")})
    assert r.status_code == 422


def test_only_catalogued_files_are_served(client):
    assert client.get("/images/999999").status_code == 404
    assert client.get("/thumbnails/999999").status_code == 404
    for path in ("/images/..%2F..%2Fetc%2Fpasswd", "/images/../../etc/passwd", "/images/-1abc", "/thumbnails/%2Fetc%2Fpasswd"):
        r = client.get(path)
        assert r.status_code in (404, 422) and b"root:" not in r.content
    assert client.get("/thumbnails/1?size=5000").status_code == 422


def test_adding_and_removing_need_the_token(index_dir, data_dir, monkeypatch):
    new = (data_dir / "paris6k-subset" / "jpg" / "paris_louvre_000015.jpg").read_bytes()
    monkeypatch.delenv("LAYERSEEK_TOKEN", raising=False)
    with TestClient(create_app(index_dir / "idx"), base_url="http://localhost") as c:
        r = c.post("/images", files={"file": ("louvre.jpg", new, "image/jpeg")})
        assert r.status_code == 403 and "LAYERSEEK_TOKEN" in r.json()["detail"]
    monkeypatch.setenv("LAYERSEEK_TOKEN", "s3cret")
    with TestClient(create_app(index_dir / "idx"), base_url="http://localhost") as c:
        assert c.get("/health").json()["adding"] is True
        r = c.post("/images", files={"file": ("louvre.jpg", new, "image/jpeg")}, headers={"Authorization": "Bearer nope"})
        assert r.status_code == 401
        r = c.post("/images", files={"file": ("bad.jpg", b"GIF89a broken", "image/jpeg")},
                   headers={"Authorization": "Bearer s3cret"})
        assert r.status_code == 415 and c.get("/health").json()["images"] == 6
        r = c.post("/images", files={"file": ("../../louvre new.jpg", new, "image/jpeg")},
                   headers={"Authorization": "Bearer s3cret"})
        assert r.status_code == 201, r.text
        added = r.json()
        assert added["path"].startswith(str((index_dir / "idx" / "uploads").resolve()))
        assert added["path"].endswith("-louvre_new.jpg")
        assert c.get("/health").json()["images"] == 7
        hits = c.post("/search?top=1", files={"file": ("q.jpg", new, "image/jpeg")}).json()["results"]
        assert hits[0]["id"] == added["id"] and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
        assert c.delete(f"/images/{added['id']}").status_code == 401
        r = c.delete(f"/images/{added['id']}", headers={"Authorization": "Bearer s3cret"})
        assert r.status_code == 200 and r.json()["images"] == 6
        assert not (index_dir / "idx" / "uploads").exists() or not any((index_dir / "idx" / "uploads").iterdir())
        assert c.delete(f"/images/{added['id']}", headers={"Authorization": "Bearer s3cret"}).status_code == 404
        # deleting an image of the user's folder forgets it but never deletes the user's file
        first = c.post("/search?top=1", files={"file": ("q.jpg", _jpeg(index_dir / "photos" / PARIS[5], crop=False),
                                                         "image/jpeg")}).json()["results"][0]
        assert c.delete(f"/images/{first['id']}", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert (index_dir / "photos" / PARIS[5]).is_file()
    with Index.open(index_dir / "idx") as idx:  # put it back for the other tests
        idx.add_folder(index_dir / "photos")  # a removed file stays out of the folder's runs ...
        idx.add_files([index_dir / "photos" / PARIS[5]])  # ... until it is added back by name
        assert idx.catalog.count() == 6


def test_foreign_hosts_are_refused_and_every_response_is_hardened(client):
    """Issue 27: any web page could read a local server's photos by rebinding a name to 127.0.0.1
    (the server answered any Host header)."""
    for host in ("evil.example:8765", "evil.example", "127.0.0.1.evil.example", "localhost.evil.example", ""):
        r = client.get("/images/1", headers={"Host": host})
        assert r.status_code == 400 and "unknown host" in r.json()["detail"] and r.headers["connection"] == "close", host
    for host in ("localhost:8765", "LOCALHOST", "127.0.0.1:80", "[::1]:8000"):
        assert client.get("/health", headers={"Host": host}).status_code == 200, host
    for path in ("/", "/health", "/images/1", "/thumbnails/1", "/docs", "/openapi.json", "/images/999"):
        h = client.get(path).headers
        assert h["x-content-type-options"] == "nosniff" and h["referrer-policy"] == "no-referrer", path
        assert "frame-ancestors 'none'" in h["content-security-policy"] and h["x-frame-options"] == "DENY", path
    page = client.get("/").headers["content-security-policy"]
    assert "'unsafe-inline'" not in page and "script-src 'sha256-" in page and "img-src 'self' blob:" in page
    assert client.get("/images/1").headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
    assert "/" not in client.get("/openapi.json").json()["info"]["description"].split(" (")[0]  # no server path


def test_allowed_host_names():
    from layerseek.server.app import allowed_host_names, host_name

    assert allowed_host_names() == {"localhost", "127.0.0.1", "::1"}
    assert allowed_host_names("192.168.1.5", ["photos.lan"]) == {"localhost", "127.0.0.1", "::1", "192.168.1.5",
                                                                 "photos.lan"}
    assert "*ip" in allowed_host_names("0.0.0.0")  # every interface: any address literal
    assert [host_name(h) for h in ("a.b:80", "[::1]:8000", "::1", "A.B")] == ["a.b", "::1", "::1", "a.b"]


def _serve(index, *args):
    """`layerseek serve INDEX --port 0 ARGS` in its own process; (process, URL) once it listens."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "layerseek.cli", "serve", str(index), "--port", "0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = proc.stdout.readline()
    assert "serving" in line, line + proc.stdout.read()
    return proc, line.split(" at ")[1].split("/ ")[0].rstrip("/")


def test_on_every_interface_serve_says_the_address_another_device_opens(index_dir):
    """`--host 0.0.0.0` printed http://0.0.0.0:PORT/, which a phone cannot open: the next line
    gives this machine's address on its network (and its name), which the server answers."""
    import urllib.request

    from layerseek.cli.serving import reachable_at

    assert reachable_at("127.0.0.1", 8000) == [] and reachable_at("::1", 8000) == []
    if not reachable_at("0.0.0.0", 8000):  # a machine with no route out and no name: nothing to say
        pytest.skip("this machine has no address on a network")
    proc, url = _serve(index_dir / "idx", "--host", "0.0.0.0")
    try:
        port = int(url.rsplit(":", 1)[1])
        line = proc.stdout.readline()
        assert line.startswith("  from another device on this network: http://"), line
        urls = line.split(": ", 1)[1].strip().split(" or ")
        assert urls == reachable_at("0.0.0.0", port) and all(u.endswith(f":{port}/") for u in urls)
        assert "0.0.0.0" not in line
        address = urls[0].split("//")[1].rsplit(":", 1)[0]
        if address.replace(".", "").isdigit():  # an address literal: the server answers its Host
            with urllib.request.urlopen(urls[0] + "health", timeout=30) as r:
                assert r.status == 200
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_past_the_cap_the_oldest_waiting_connections_are_closed(index_dir):
    """Issue 27: past --max-connections the server closed "the oldest waiting" connection, but a
    closed one stays listed until the event loop forgets it, so the same one was picked again
    and again and all 500 of a flood stayed open. With deadlines far away only the cap closes:
    of 60 idle connections (40 slow headers, then 20 slow multipart bodies) at most 20 are left."""
    import socket
    import time
    import urllib.request

    proc, url = _serve(index_dir / "idx", "--header-timeout", "60", "--body-timeout", "60", "--max-connections", "20")
    port = int(url.rsplit(":", 1)[1])
    socks = []
    try:
        for i in range(60):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: " if i < 40 else
                      b"POST /search HTTP/1.1\r\nHost: localhost\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                      b"Content-Length: 100000\r\n\r\n--b\r\n")
            socks.append(s)
        assert b'"status":"ok"' in urllib.request.urlopen(url + "/health", timeout=10).read()
        time.sleep(1)
        still = []
        for i, s in enumerate(socks):
            s.setblocking(False)
            try:
                if s.recv(4096) == b"":
                    continue
            except BlockingIOError:
                still.append(i)
            except ConnectionResetError:
                continue
        # the cap: every slow header went first (oldest first), then the oldest body for the
        # /health probe; the newest connections are the ones kept
        assert len(still) in (19, 20) and min(still) >= 40 and 59 in still, still
    finally:
        for s in socks:
            s.close()
        proc.terminate()
        proc.wait(20)


def test_slow_clients_are_dropped_and_health_still_answers(index_dir, tmp_path):
    """Issue 27: 300 slow-header / slow-body connections were still open after 28 s. Here 400 that
    never finish their header and 100 that never finish their body are all closed by their
    deadlines, while /health answers a new client throughout (the cap of 200 closes the oldest
    waiting ones, not the newcomer). A port in use is said before any "serving at"."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    proc, url = _serve(index_dir / "idx", "--header-timeout", "1", "--body-timeout", "2", "--max-connections", "200")
    port = int(url.rsplit(":", 1)[1])
    socks = []
    try:
        for i in range(500):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            if i % 5:
                s.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")  # the header never ends
            else:
                s.sendall(b"POST /search HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n"
                          b"Content-Type: application/octet-stream\r\n\r\nxx")  # nor does this body
            socks.append(s)
        t0 = time.monotonic()
        body = urllib.request.urlopen(url + "/health", timeout=10).read()
        assert b'"status":"ok"' in body
        t_end = time.monotonic() + 8
        closed = 0
        for s in socks:
            s.settimeout(max(0.01, t_end - time.monotonic()))
            try:
                while s.recv(4096):  # a 4xx, then the close; or the close alone
                    pass
                closed += 1
            except ConnectionResetError:
                closed += 1
            except TimeoutError:
                pass
        assert closed == 500 and time.monotonic() - t0 < 8
        other = tmp_path / "other"  # another index on the port in use (this index's own is said served already)
        shutil.copytree(index_dir / "idx", other, ignore=shutil.ignore_patterns("serve.json"))
        busy = subprocess.run([sys.executable, "-m", "layerseek.cli", "serve", str(other), "--port",
                               str(port)], capture_output=True, text=True, timeout=120)
        assert busy.returncode == 1 and "serving" not in busy.stdout
        assert f"127.0.0.1:{port}: cannot listen there" in busy.stderr and "Traceback" not in busy.stderr
    finally:
        for s in socks:
            s.close()
        proc.terminate()
        proc.wait(20)


def _guarded(limit: int = 10 << 20):
    """RequestGuard around an app that records when it is entered and what body it reads."""
    from layerseek.server.app import RequestGuard

    seen = {"entered": False, "body": b""}

    async def inner(scope, receive, send):
        seen["entered"] = True
        while True:
            message = await receive()
            seen["body"] += message.get("body", b"")
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return RequestGuard(inner, limit=limit, check_write=lambda *a: None), seen


def _post(length: int) -> dict:
    return {"type": "http", "method": "POST", "path": "/search",
            "headers": [(b"content-length", str(length).encode()), (b"host", b"localhost")]}


def test_a_slow_body_does_not_enter_the_app_until_it_is_in():
    """Issue 27: 250 slow bodies each entered FastAPI's routing and form parser (0.4 ms each) and
    held the next /health back; the guard now reads a body's first PREREAD bytes itself."""
    import asyncio

    from layerseek.server.app import PREREAD

    async def scenario(parts: list[bytes]):
        app, seen = _guarded()
        queue: asyncio.Queue = asyncio.Queue()
        sent = []

        async def send(message):
            sent.append(message)

        task = asyncio.create_task(app(_post(sum(map(len, parts))), queue.get, send))
        states = []
        for i, part in enumerate(parts):
            await queue.put({"type": "http.request", "body": part, "more_body": i < len(parts) - 1})
            await asyncio.sleep(0.01)
            states.append(seen["entered"])
        await asyncio.wait_for(task, 5)
        return states, seen["body"], sent[0]["status"]

    small = [b"--b\r\n", b"x" * 1000, b"--b--\r\n"]
    states, body, status = asyncio.run(scenario(small))
    assert states == [False, False, True] and body == b"".join(small) and status == 200
    big = [b"y" * (PREREAD // 2), b"y" * (PREREAD // 2), b"z" * 10, b"end"]  # past PREREAD it streams on
    states, body, status = asyncio.run(scenario(big))
    assert states == [False, True, True, True] and body == b"".join(big) and status == 200


def test_the_preread_refuses_an_oversized_body_and_a_client_gone_is_not_answered():
    import asyncio

    async def scenario(messages, declared):
        app, seen = _guarded(limit=100)
        queue: asyncio.Queue = asyncio.Queue()
        for m in messages:
            queue.put_nowait(m)
        sent = []

        async def send(message):
            sent.append(message)

        await asyncio.wait_for(app(_post(declared), queue.get, send), 5)
        return seen["entered"], [m.get("status") for m in sent if m["type"] == "http.response.start"]

    # Content-Length says 50 but 150 bytes come: refused while it streams, never entering the app
    assert asyncio.run(scenario([{"type": "http.request", "body": b"a" * 80, "more_body": True},
                                 {"type": "http.request", "body": b"a" * 70, "more_body": False}], 50)) == (False, [413])
    assert asyncio.run(scenario([{"type": "http.request", "body": b"a", "more_body": True},
                                 {"type": "http.disconnect"}], 50)) == (False, [])


def test_the_local_key_shows_full_paths_and_grants_nothing_else(index_dir, monkeypatch):
    monkeypatch.delenv("LAYERSEEK_TOKEN", raising=False)
    app = create_app(index_dir / "idx", max_upload=2_000_000, local_key="k" * 32)
    q = _jpeg(index_dir / "photos" / PARIS[3])
    with TestClient(app, base_url="http://localhost") as c:
        plain = c.post("/search?top=2", files={"file": ("q.jpg", q, "image/jpeg")}).json()["results"]
        keyed = c.post("/search?top=2", files={"file": ("q.jpg", q, "image/jpeg")},
                       headers={"Authorization": "Bearer " + "k" * 32}).json()["results"]
        wrong = c.post("/search?top=2", files={"file": ("q.jpg", q, "image/jpeg")},
                       headers={"Authorization": "Bearer " + "j" * 32}).json()["results"]
        assert plain[0]["path"] == PARIS[3] and wrong[0]["path"] == PARIS[3]
        assert keyed[0]["path"] == str((index_dir / "photos" / PARIS[3]).resolve())
        adding = c.post("/images", files={"file": ("q.jpg", q, "image/jpeg")},
                        headers={"Authorization": "Bearer " + "k" * 32})
        assert adding.status_code == 403  # adding needs LAYERSEEK_TOKEN, whatever the key


def _cli(*args, entry="layerseek"):
    """The command as a user runs it (`layerseek`: a search a server answers is sent before the
    command line loads, `shell`), or with entry="layerseek.cli" the full command line alone."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", entry, *map(str, args)], capture_output=True, text=True, timeout=120)


def test_search_from_the_shell_goes_through_a_running_server(index_dir, tmp_path):
    """Issue 28: `layerseek search` finds `layerseek serve` of the same index in serve.json (mode
    0600), sends its photo there and prints what a search in its own process prints; a photo the
    server refuses is the same one-line error; once the server stops, the file is gone and the
    search runs in its own process again (and a stale file of a dead process is ignored)."""
    import json
    import time

    idx = index_dir / "idx"
    query = tmp_path / "q.jpg"
    query.write_bytes(_jpeg(index_dir / "photos" / PARIS[3]))
    here = _cli("search", idx, query, "--json", "--top", "4", "--here")
    assert here.returncode == 0 and "searched by the server" not in here.stderr
    proc, url = _serve(idx)
    try:
        announced = idx / "serve.json"
        for _ in range(100):
            if announced.exists():
                break
            time.sleep(0.1)
        info = json.loads(announced.read_text())
        assert info["url"] == url and info["pid"] == proc.pid and (os.stat(announced).st_mode & 0o777) == 0o600
        want = json.loads(here.stdout)
        for entry in ("layerseek", "layerseek.cli"):  # the shell's short path, and the full command line's
            served = _cli("search", idx, query, "--json", "--top", "4", entry=entry)
            assert served.returncode == 0, served.stderr
            assert f"searched by the server at {url} (pid {proc.pid})" in served.stderr
            got = json.loads(served.stdout)
            assert [r["path"] for r in got["results"]] == [r["path"] for r in want["results"]]
            assert [r["score"] for r in got["results"]] == pytest.approx([r["score"] for r in want["results"]], abs=1e-4)
        # into a pipe: the same tab-separated lines either way, -n and --exclude-self read by both
        piped = [_cli("search", idx, index_dir / "photos" / PARIS[3], "-n", "3", "--exclude-self", entry=e)
                 for e in ("layerseek", "layerseek.cli")]
        assert piped[0].stdout == piped[1].stdout, piped[0].stderr + piped[1].stderr
        lines = piped[0].stdout.splitlines()
        assert lines[0] == "rank\tscore\tinliers\tverified\tpath" and len(lines) == 4
        assert all(not ln.endswith(PARIS[3]) for ln in lines)
        # the short path, its table on a terminal, loads neither numpy nor Typer (nor Rich, nor dataclasses)
        probe = ("import sys; sys.stdout.isatty = lambda: True; from layerseek import shell; "
                 f"ok = shell.quick_search([{str(idx)!r}, {str(query)!r}]); "
                 "print(ok, sorted(m for m in ('numpy', 'typer', 'PIL', 'rich', 'http.client', 'email', 'dataclasses', "
                 "'inspect') if m in sys.modules))")
        import subprocess
        import sys

        loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
        assert loaded.stdout.splitlines()[-1] == "True []", loaded.stdout + loaded.stderr
        bad = tmp_path / "notes.jpg"
        bad.write_text("not a photo")
        refused = _cli("search", idx, bad)
        assert refused.returncode == 1 and f"{bad}: not an image" in refused.stderr
        # started twice (another terminal): said, with the address to open, before any network loads
        twice = _cli("serve", idx, "--port", "0")
        assert twice.returncode == 1 and f"{idx}: served already at {url}/ (pid {proc.pid})" in twice.stderr, twice.stderr
        assert json.loads(announced.read_text())["pid"] == proc.pid  # still the first's
        # a photo piped in (`-`) is uploaded to the server
        import subprocess
        import sys

        piped_in = subprocess.run([sys.executable, "-m", "layerseek", "search", str(idx), "-", "--json", "--top", "4"],
                                  input=query.read_bytes(), capture_output=True, timeout=120)
        assert piped_in.returncode == 0 and b"searched by the server" in piped_in.stderr, piped_in.stderr
        assert [r["path"] for r in json.loads(piped_in.stdout)["results"]] == [r["path"] for r in want["results"]]
        # `info` says where it is served
        said = _cli("info", idx)
        assert f"served at {url}/ (pid {proc.pid})" in said.stdout, said.stdout + said.stderr
        assert json.loads(_cli("info", idx, "--json").stdout)["served"] == {"url": url, "pid": proc.pid}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert not (idx / "serve.json").exists()
    (idx / "serve.json").write_text(json.dumps({"url": url, "pid": proc.pid, "key": "x"}))  # a dead server's
    try:
        assert "served at" not in _cli("info", idx).stdout
        again = _cli("search", idx, query, "--json", "--top", "4")
        assert again.returncode == 0 and "searched by the server" not in again.stderr
        assert [r["path"] for r in json.loads(again.stdout)["results"]] == [r["path"] for r in want["results"]]
    finally:
        (idx / "serve.json").unlink()


def test_the_shells_client_reads_whole_answers_and_refuses_what_is_not_one():
    """The short path's HTTP client (a socket: http.client's imports were 23 ms of a 0.5 s
    search) reads a body by its Content-Length or its chunks, and says when an answer is cut
    short or is not HTTP."""
    from layerseek.server.client import parse_answer

    assert parse_answer(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello") == (200, b"hello")
    assert parse_answer(b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}trailing") == (404, b"{}")
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n6;x=1\r\npedia \r\n0\r\n\r\n"
    assert parse_answer(chunked) == (200, b"Wikipedia ")
    assert parse_answer(b"HTTP/1.0 503 Busy\r\n\r\nuntil the end") == (503, b"until the end")
    for bad, says in ((b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhalf", "cut short"),
                      (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nhalf", "cut short"),
                      (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "not an HTTP answer"), (b"", "not an HTTP answer")):
        with pytest.raises(ValueError, match=says):
            parse_answer(bad)


def test_a_server_searches_once_at_start_and_changes_nothing(index_dir, monkeypatch):
    """Issue 28: with `warm` (as `layerseek serve` starts it) the server runs one search of a
    made-up photo before the first user's (the network's first run, the word scorer, the
    verification threads: the first search after a start took 1.4 s, the next 0.6); the index
    is left as it was, and the first real search answers as usual."""
    import numpy as np

    from layerseek.server.app import warm_up_photo

    monkeypatch.delenv("LAYERSEEK_TOKEN", raising=False)
    seen = []
    real = Index.search

    def search(self, image, *args, **kwargs):
        seen.append(image.shape)
        return real(self, image, *args, **kwargs)

    monkeypatch.setattr(Index, "search", search)
    before = Index.open(index_dir / "idx")
    gen, count = before.catalog.generation(), before.catalog.count()
    before.close()
    photo = warm_up_photo()
    assert photo.shape == (768, 1024, 3) and photo.dtype == np.uint8
    with TestClient(create_app(index_dir / "idx", max_upload=2_000_000, warm=True), base_url="http://localhost") as c:
        r = c.post("/search?top=2", files={"file": ("q.jpg", _jpeg(index_dir / "photos" / PARIS[3]), "image/jpeg")})
        assert r.status_code == 200 and r.json()["results"][0]["path"] == PARIS[3]
    assert seen == [(768, 1024, 3), (176, 256, 3)], seen  # the made-up photo first, then the upload (decoded)
    after = Index.open(index_dir / "idx")
    assert (after.catalog.generation(), after.catalog.count()) == (gen, count)
    after.close()


def test_a_camera_raw_photo_is_searched_with_and_shown(client, index_dir):
    """A RAW file dropped on the page (a DNG from a phone or a camera) is searched with and sent back
    as a JPEG (no browser shows RAW); the page's file picker offers every kind that is indexed."""
    import base64

    import numpy as np

    from layerseek.images import IMAGE_SUFFIXES
    from rawfiles import dng_bytes

    photo = np.asarray(Image.open(io.BytesIO(_jpeg(index_dir / "photos" / PARIS[3]))).convert("RGB"))[:220, :320]
    dng = dng_bytes(np.ascontiguousarray(photo))
    r = client.post("/search?top=2&preview=256", files={"file": ("IMG_0042.DNG", dng, "image/x-adobe-dng")})
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["name"] == PARIS[3]
    shown = base64.b64decode(r.json()["query_image"].split(",", 1)[1])
    assert Image.open(io.BytesIO(shown)).size == (256, 176)
    shown = client.post("/preview", files={"file": ("IMG_0042.DNG", dng, "image/x-adobe-dng")})
    assert shown.status_code == 200 and Image.open(io.BytesIO(shown.content)).size == (256, 176)
    bad = client.post("/search", files={"file": ("IMG_0043.NEF", b"not a photo" * 40, "image/x-nikon-nef")})
    assert bad.status_code == 415 and "IMG_0043.NEF: not an image" in bad.json()["detail"]
    accept = client.get("/").text.split('id="file" type="file" accept="', 1)[1].split('"', 1)[0].split(",")
    assert accept[0] == "image/*" and set(accept[1:]) == set(IMAGE_SUFFIXES)
