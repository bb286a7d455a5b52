"""The HTTP API of `layerseek serve`, through FastAPI's test client on a real index of real photos."""
from __future__ import annotations

import io

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
    with TestClient(create_app(index_dir / "idx", max_upload=2_000_000)) as c:
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


@pytest.mark.parametrize("files,status,text", [
    (None, 422, "file"),
    ({"file": ("notes.txt", b"hello, not an image", "text/plain")}, 415, "notes.txt: not an image"),
    ({"file": ("x.jpg", b"hello, not an image", "image/jpeg")}, 415, "x.jpg: not an image"),
    ({"file": ("empty.jpg", b"", "image/jpeg")}, 400, "empty.jpg: empty"),
    ({"file": ("big.jpg", b"\xff" * 2_000_001, "image/jpeg")}, 413, "too large"),
    ({"file": ("huge.jpg", b"\xff" * 3_000_000, "image/jpeg")}, 413, "upload too large: "),  # refused unread
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
    with TestClient(create_app(index_dir / "idx")) as c:
        r = c.post("/images", files={"file": ("louvre.jpg", new, "image/jpeg")})
        assert r.status_code == 403 and "LAYERSEEK_TOKEN" in r.json()["detail"]
    monkeypatch.setenv("LAYERSEEK_TOKEN", "s3cret")
    with TestClient(create_app(index_dir / "idx")) as c:
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
