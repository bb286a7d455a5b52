"""An index that checks itself (issue 16, item 3): the manifest against a typed model and the
catalog's copy, `layerseek check` on damaged copies, `layerseek repair` back to the same answers."""
from __future__ import annotations

import json
import shutil
import sqlite3

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import PARIS
from layerseek.cli import app
from layerseek.errors import LayerseekError
from layerseek.health import NOTE, PROBLEM, check, repair
from layerseek.index import Index

OPTS = {"backbone": "mobilenet_v2", "layers": ("last",), "max_side": 128}


@pytest.fixture(scope="module")
def made(tmp_path_factory, data_dir):
    """Two small indexes of the same 6 photos (exact search with diffusion; HNSW without), the
    photos, and each index's top-6 paths for every photo as the answers to keep."""
    root = tmp_path_factory.mktemp("health")
    photos = root / "photos"
    photos.mkdir()
    for name in PARIS:
        shutil.copy(data_dir / "paris6k-subset" / "jpg" / name, photos / name)
    answers = {}
    for name, kw in (("exact", {"verify": True}), ("hnsw", {"ann": "hnsw"})):
        with Index.create(root / name, "gem", **kw, **OPTS) as idx:
            idx.add_folder(photos)
            answers[name] = _answers(idx, photos)
    return root, photos, answers


def _answers(idx, photos):
    return [[h.path for h in idx.search(photos / n, top=6)] for n in PARIS]


def _copy(made, name, tmp_path):
    root = made[0]
    shutil.copytree(root / name, tmp_path / name)
    return tmp_path / name


def _edit_manifest(path, change):
    m = json.loads((path / "manifest.json").read_text())
    change(m)
    (path / "manifest.json").write_text(json.dumps(m))


def _set(keys, value):
    def change(m):
        d = m
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value
    return change


@pytest.mark.parametrize("change, message", [
    (lambda m: m.clear() or m.update({"a": 1}), r"damaged manifest: schema_version: field required|index schema version"),
    (lambda m: m.pop("params"), r"damaged manifest: params: field required"),
    (_set(["params", "max_side"], "128"), r"params\.max_side: input should be a valid integer \(found \"128\"\)"),
    (_set(["params", "max_side"], -5), r"params\.max_side: input should be greater than or equal to 32 \(found -5\)"),
    (_set(["params", "method"], "vlad"), r"params: input tag 'vlad' found using 'method' does not match"),
    (_set(["params", "colour"], "red"), r"params\.colour: extra inputs are not permitted"),
    (_set(["dim"], 12.5), r"dim: input should be a valid integer"),
    (_set(["verify", "diffusion", "alpha"], 1.5), r"verify\.diffusion\.alpha: input should be less than 1"),
    (_set(["params", "method"], "mac"), r"disagrees with the catalog: params\.method \"mac\" \(the vectors were made "
                                        r"with \"gem\"\)"),
    (_set(["params", "max_side"], 512), r"disagrees with the catalog: params\.max_side 512 \(the vectors were made "
                                        r"with 128\)"),
])
def test_a_tampered_manifest_is_refused_in_one_line(made, tmp_path, change, message):
    idx = _copy(made, "exact", tmp_path)
    _edit_manifest(idx, change)
    with pytest.raises(LayerseekError, match=message):
        Index.open(idx)


def test_search_settings_may_change_but_not_what_made_the_vectors(made, tmp_path):
    """The diffusion's k is a search setting: a manifest that changes it opens; the features'
    size made the stored features: changing it is refused."""
    idx = _copy(made, "exact", tmp_path)
    _edit_manifest(idx, _set(["verify", "diffusion", "k"], 3))
    Index.open(idx).close()
    _edit_manifest(idx, _set(["verify", "features"], 500))
    with pytest.raises(LayerseekError, match=r"features\.features 500 \(the vectors were made with 1000\)"):
        Index.open(idx)


def test_check_and_repair_a_tampered_manifest(made, tmp_path):
    root, photos, answers = made
    idx = _copy(made, "exact", tmp_path)
    assert check(idx) == []
    _edit_manifest(idx, _set(["params", "method"], "mac"))
    r = CliRunner().invoke(app, ["check", str(idx)])
    assert r.exit_code == 1 and 'params.method "mac"' in r.output and "1 problem" in r.output
    r = CliRunner().invoke(app, ["repair", str(idx)])
    assert r.exit_code == 0 and "wrote manifest.json back" in r.output and "sound" in r.output, r.output
    with Index.open(idx) as i:
        assert i.catalog.manifest["params"]["method"] == "gem"
        assert _answers(i, photos) == answers["exact"]
    (idx / "manifest.json").write_text("{ not json")  # damaged beyond reading: also written back
    assert [f.level for f in check(idx)] == [PROBLEM]
    repair(idx)
    assert check(idx) == []


def test_check_finds_caches_that_disagree_and_repair_rebuilds_them(made, tmp_path, monkeypatch):
    root, photos, answers = made
    idx = _copy(made, "hnsw", tmp_path)
    import faiss

    from layerseek.store.vectors import HnswGraph

    main_file = HnswGraph.files_of(idx / "cache")[0]
    g = faiss.read_index(str(idx / "cache" / main_file))
    vecs = np.stack([g.reconstruct(i) for i in range(g.ntotal)])
    wrong = faiss.IndexHNSWFlat(vecs.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    wrong.add(np.ascontiguousarray(vecs[::-1]))  # the rows' vectors swapped: loads fine, answers wrong
    faiss.write_index(wrong, str(idx / "cache" / main_file))
    with Index.open(idx) as i:
        assert _answers(i, photos) != answers["hnsw"]  # what the damage would do unnoticed
    found = check(idx)
    assert [(f.level, f.where.rsplit("/", 1)[1]) for f in found] == [(PROBLEM, main_file)]
    assert "6 of 6 sampled rows hold another vector" in found[0].what
    done = repair(idx)
    assert "rebuilt the HNSW graph" in done and check(idx) == []
    with Index.open(idx) as i:
        assert _answers(i, photos) == answers["hnsw"]
    # the exact index's matrix cache, rows shuffled but shaped right
    idx = _copy(made, "exact", tmp_path)
    cache = next((idx / "cache").glob("flat-*.npy"))
    v = np.load(cache)
    np.save(cache, np.roll(v, 1, axis=0))
    assert [f.what for f in check(idx)] == [f"{len(v)} of {len(v)} rows hold another vector than the catalog; "
                                            "`repair` rebuilds them"]
    from layerseek import query

    monkeypatch.setattr(query, "CATCH_UP_TOLD", 0.0)
    told = []  # the word codes built again are told (`repair` shows them as a bar: a minute at 10,000)
    assert "rebuilt the vector matrix (6 images)" in repair(idx, lambda *a: told.append(a))
    assert told[-1][:3] == ("word codes for searching", 6, 6)
    assert check(idx) == []
    with Index.open(idx) as i:
        assert _answers(i, photos) == answers["exact"]


def test_files_of_the_other_search_mode_and_older_versions_are_notes(made, tmp_path):
    """An `auto` index that crossed the HNSW threshold keeps the other mode's files: a note, not
    checked as if in use; an older version's matrix file is a note, and the next search removes it."""
    root, photos, answers = made
    idx = _copy(made, "exact", tmp_path)
    hnsw = _copy(made, "hnsw", tmp_path)
    for f in (hnsw / "cache").glob("hnsw*"):
        shutil.copy(f, idx / "cache" / f.name)
    np.savez(idx / "cache" / "vectors-3.npz", ids=np.arange(2), vectors=np.zeros((2, 4), np.float32))
    found = check(idx)
    assert sorted((f.level, f.where.rsplit("/", 1)[1], f.what.split(" (")[0]) for f in found) == [
        (NOTE, "hnsw.npz", "kept from when the index was searched by its HNSW graph"),
        (NOTE, "vectors-3.npz", "the matrix file of an older version")]
    with Index.open(idx) as i:
        assert _answers(i, photos) == answers["exact"]
    assert not (idx / "cache" / "vectors-3.npz").exists()
    assert [f.what.split(" (")[0] for f in check(idx)] == ["kept from when the index was searched by its HNSW graph"]


def test_damaged_rows_are_dropped_and_indexed_again(made, tmp_path):
    root, photos, answers = made
    idx = _copy(made, "exact", tmp_path)
    with sqlite3.connect(idx / "catalog.sqlite") as c:
        c.execute("UPDATE images SET vector = zeroblob(7) WHERE path LIKE ?", (f"%{PARIS[0]}",))
        c.execute("INSERT INTO features VALUES (9999, x'00')")  # local features of no image
    found = check(idx)
    assert sorted(f.what.split(" (")[0] for f in found if f.level == PROBLEM) == [
        "1 local-feature rows of no image; `repair` drops them",
        "1 of 6 rows hold another vector than the catalog; `repair` rebuilds them", "1 vectors of the wrong length"]  # the matrix cache still holds the old row
    r = CliRunner().invoke(app, ["repair", str(idx)])
    assert r.exit_code == 0 and "dropped 1 damaged row " in r.output, r.output
    with Index.open(idx) as i:
        assert i.catalog.count() == 5
        assert i.add_folder(photos).added == 1
        assert _answers(i, photos) == answers["exact"]
    assert check(idx) == []


def test_check_notes_files_gone_and_refuses_a_catalog_that_is_no_database(made, tmp_path):
    root, photos, answers = made
    idx = _copy(made, "exact", tmp_path)
    moved = tmp_path / "moved.jpg"
    shutil.copy(photos / PARIS[1], moved)
    with Index.open(idx) as i:
        i.add_files([moved])
    moved.unlink()
    found = check(idx)  # also: the caches are one change behind (brought up to date at the next search)
    assert {f.level for f in found} == {"note"}
    assert [f.what.split(" (")[0] for f in found if "disk" in f.what] == ["1 indexed files are gone from disk"]
    (idx / "catalog.sqlite").write_bytes(b"not a database, only text" * 100)
    for p in idx.glob("catalog.sqlite-*"):
        p.unlink()
    assert "not a readable SQLite database" in check(idx)[0].what
    r = CliRunner().invoke(app, ["info", str(idx)])
    assert r.exit_code == 1 and "catalog.sqlite: damaged or not a layerseek catalog" in r.output
    with pytest.raises(LayerseekError, match="not a readable SQLite database"):
        repair(idx)
