"""Every kind of input in the bad-input corpus (tests/corpus.py, 40 kinds) through `index`,
`search` (as the query), `POST /search` and `POST /images` (issue 16, item 2): each bad one
reported in one line naming it, each good one indexed and found first (or its twin), nothing
hangs, nothing already indexed is lost."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import in_time
from corpus import make_corpus
from layerseek.cli import EXIT_SOME_FAILED, app
from layerseek.errors import LayerseekError, shown
from layerseek.index import Index

ARGS = ["--method", "gem", "--backbone", "mobilenet_v2", "--layers", "last", "--max-side", "128"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("corpus")
    photos = sorted((data_dir / "paris6k-subset" / "jpg").glob("*.jpg"))[:40]
    items = make_corpus(root / "photos", photos)
    r = in_time(lambda: CliRunner().invoke(app, ["index", str(root / "photos"), "--index", str(root / "idx"), *ARGS]))
    return root, items, r


def _good(items):
    return {k: v for k, v in items.items() if v.expect == "good"}


def _bad(items):
    return {k: v for k, v in items.items() if v.expect == "bad"}


def test_the_corpus_has_at_least_30_kinds(corpus):
    root, items, _ = corpus
    assert len(items) >= 30 and len(_good(items)) >= 20 and len(_bad(items)) >= 10


def test_index_reports_each_bad_one_in_one_line_and_indexes_every_good_one(corpus):
    root, items, r = corpus
    assert r.exit_code == EXIT_SOME_FAILED, r.output
    assert "Traceback" not in r.output
    lines = r.output.splitlines()
    for kind, item in _bad(items).items():
        mine = [line for line in lines if shown(item.name) + ":" in line]
        assert len(mine) == 1, (kind, mine)
        assert item.reason in mine[0], (kind, mine[0])
    with Index.open(root / "idx") as idx:
        held = {e.path for e in idx.catalog.entries()}
        for kind, item in _good(items).items():
            assert item.name in held, kind
        assert len(held) == len(_good(items))  # nothing bad, nothing ignored got in
        # a second run: nothing re-read, the same failures, nothing lost
        again = in_time(lambda: idx.add_folder(root / "photos"))
        assert again.unchanged == len(_good(items)) and again.added == again.updated == again.removed == 0
        assert len(again.failed) == len(_bad(items))


def test_each_good_one_finds_itself_and_each_bad_query_is_one_line(corpus):
    root, items, _ = corpus
    with Index.open(root / "idx") as idx:
        by_path = {v.name: k for k, v in items.items()}
        for kind, item in _good(items).items():
            top = in_time(lambda: idx.search(item.name, top=3), 60)
            assert by_path[top[0].path] in {kind} | item.twins, (kind, [h.path for h in top])
        for kind, item in _bad(items).items():
            with pytest.raises(LayerseekError) as e:
                in_time(lambda: idx.search(item.name, top=3), 60)
            assert "\n" not in str(e.value) and item.name in str(e.value), (kind, str(e.value))


def test_the_http_api_answers_every_kind_without_a_server_error(corpus):
    from fastapi.testclient import TestClient

    from layerseek.server.app import create_app

    root, items, _ = corpus
    client = TestClient(create_app(root / "idx", token="t"), raise_server_exceptions=False, base_url="http://localhost")
    auth = {"Authorization": "Bearer t"}
    readable = {k: v for k, v in items.items() if k not in ("fifo", "dangling symlink", "symlink loop",
                                                            "symlink loop b", "folder named jpg", "unreadable")}
    with Index.open(root / "idx") as idx:
        before = idx.catalog.count()
    added = 0
    for kind, item in readable.items():
        data = open(item.path, "rb").read()
        upload = shown(Path(item.name).name)
        r = client.post("/search?top=3", files={"file": (upload, data, "application/octet-stream")})
        if item.expect == "good":
            assert r.status_code == 200, (kind, r.text)
            names = {shown(Path(items[k].name).name) for k in {kind} | item.twins}
            # an earlier kind's upload of the same content (stored as <hash>-<name>) ties with it
            first = re.sub(r"^[0-9a-f]{16}-", "", r.json()["results"][0]["name"])
            assert first in names, (kind, r.json()["results"][0])
        else:
            assert 400 <= r.status_code < 500 and "\n" not in r.json()["detail"], (kind, r.status_code, r.text)
        r = client.post("/images", files={"file": (upload, data, "application/octet-stream")}, headers=auth)
        if item.expect == "good":
            assert r.status_code == 201, (kind, r.text)
            added += 1
        else:
            assert 400 <= r.status_code < 500 and "\n" not in r.json()["detail"], (kind, r.status_code, r.text)
    with Index.open(root / "idx") as idx:
        assert idx.catalog.count() == before + added  # every good upload stored; nothing lost
    assert os.path.isdir(root / "idx" / "uploads")
