"""The index: the fused vector equals WMFF, incremental and resumable indexing of real photos,
search, removal, bad files, the CLI."""
from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from layerseek.cli import app
from layerseek.errors import LayerseekError
from layerseek.fusion import l2n
from layerseek.globaldesc import GlobalConfig, score
from layerseek.index import Index
from layerseek.methods import make_method
from layerseek.postprocess import average_query_expansion

OPTS = {"backbone": "mobilenet_v2", "layers": ("s32", "last"), "max_side": 256}
PARIS = ["paris_defense_000000.jpg", "paris_eiffel_000000.jpg", "paris_invalides_000002.jpg",
         "paris_louvre_000004.jpg", "paris_moulinrouge_000003.jpg", "paris_eiffel_000004.jpg"]


def _pooled(seed, n):
    rng = np.random.default_rng(seed)
    return [rng.random((n, 320)).astype(np.float32), rng.random((n, 1280)).astype(np.float32)]


@pytest.mark.parametrize("similarity", ["cosine", "correlation"])
def test_fused_vector_inner_product_is_wmff(similarity):
    m = make_method("gem", weights="1:3", similarity=similarity, **OPTS)
    q, d = _pooled(0, 3), _pooled(1, 5)
    ip = m.encode_pooled(q) @ m.encode_pooled(d).T
    qd = [{"gem/s32": q[0][i], "gem/last": q[1][i]} for i in range(3)]
    dd = [{"gem/s32": d[0][i], "gem/last": d[1][i]} for i in range(5)]
    ref = score(GlobalConfig("gem", ("s32", "last"), "1:3", similarity), qd, dd)
    np.testing.assert_allclose(ip, ref, rtol=1e-5, atol=1e-6)


def test_expand_is_per_layer_average_qe():
    m = make_method("fcrow", weights="1:2", **OPTS)
    q, d = _pooled(2, 1), _pooled(3, 4)
    fused_q, fused_d = m.encode_pooled(q)[0], m.encode_pooled(d)
    got = m.expand(fused_q, fused_d[[2, 0]])
    ranks = np.array([[2, 0]])
    ref = m.encode_pooled([average_query_expansion(l2n(a), l2n(b), ranks, 2) for a, b in zip(q, d)])[0]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def _photos(data_dir, folder):
    folder.mkdir(parents=True, exist_ok=True)
    for n in PARIS:
        shutil.copy(data_dir / "paris6k-subset" / "jpg" / n, folder / n)
    return folder


def test_index_search_update_remove(data_dir, tmp_path):
    photos = _photos(data_dir, tmp_path / "photos")
    (photos / "sub").mkdir()
    shutil.move(photos / PARIS[5], photos / "sub" / PARIS[5])
    good = (photos / PARIS[0]).read_bytes()
    (photos / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (photos / "empty.png").write_bytes(b"")
    (photos / "notes.txt").write_text("not a photo")
    idx = Index.create(tmp_path / "idx", "fcrow", **OPTS)
    r = idx.add_folder(photos)
    assert (r.added, r.removed) == (6, 0)
    assert len(r.failed) == 2 and any("empty.png: empty" in f for f in r.failed)
    assert any("truncated.jpg" in f for f in r.failed)
    assert r.skipped == [str((photos / "notes.txt").resolve())]
    assert idx.catalog.count() == 6

    # a photo of an indexed place (a crop, made smaller) finds it first
    src = Image.open(photos / PARIS[3])
    w, h = src.size
    src.crop((w // 6, h // 6, w - w // 6, h - h // 6)).resize((300, 200)).save(tmp_path / "query.jpg")
    hits = idx.search(tmp_path / "query.jpg", top=3)
    assert hits[0].path.endswith(PARIS[3]) and hits[0].score > hits[1].score
    assert [h.path for h in idx.search(tmp_path / "query.jpg", top=3, qe=1)][0].endswith(PARIS[3])

    # nothing changed: nothing re-done (the failures stay reported)
    r = idx.add_folder(photos)
    assert (r.added, r.updated, r.unchanged, len(r.failed)) == (0, 0, 6, 2)

    # delete one, add one, touch one, change one's content, copy one under a new name
    (photos / PARIS[1]).unlink()
    shutil.copy(data_dir / "paris6k-subset" / "jpg" / "paris_louvre_000015.jpg", photos / "new.jpg")
    os.utime(photos / PARIS[2], ns=(1, 1))
    shutil.copy(data_dir / "paris6k-subset" / "jpg" / "paris_defense_000002.jpg", photos / PARIS[4])
    shutil.copy(photos / PARIS[0], photos / "copy.jpg")
    before = idx.catalog.generation()
    r = idx.add_folder(photos)
    assert (r.added, r.removed, r.updated, r.reused) == (2, 1, 1, 1)
    assert idx.catalog.count() == 7 and idx.catalog.generation() > before
    assert idx.catalog.by_path(str((photos / PARIS[2]).resolve())).mtime_ns == 1
    ids, mat = idx.catalog.matrix()
    row = {idx.catalog.by_id(i).path: v for i, v in zip(ids, mat)}
    np.testing.assert_array_equal(row[str((photos / "copy.jpg").resolve())], row[str((photos / PARIS[0]).resolve())])

    # remove from the index only
    missing = idx.remove([photos / PARIS[3], photos / "never.jpg"])
    assert missing == [str(photos / "never.jpg")] and idx.catalog.count() == 6
    assert (photos / PARIS[3]).exists()
    assert not any(h.path.endswith(PARIS[3]) for h in idx.search(tmp_path / "query.jpg", top=10))
    with pytest.raises(LayerseekError, match="notes.txt: not an image"):
        idx.search(photos / "notes.txt")
    # a failed file that is deleted is forgotten, and not counted as a removed image
    (photos / "empty.png").unlink()
    r = idx.add_folder(photos)
    assert r.removed == 0 and len(r.failed) == 1 and len(idx.catalog.failures()) == 1
    idx.close()


def test_hnsw_agrees_with_exact(data_dir, tmp_path):
    photos = _photos(data_dir, tmp_path / "photos")
    exact = Index.create(tmp_path / "exact", "gem", ann="exact", **OPTS)
    exact.add_folder(photos)
    hnsw = Index.create(tmp_path / "hnsw", "gem", ann="hnsw", **OPTS)
    hnsw.add_folder(photos)
    q = photos / PARIS[4]
    a, b = exact.search(q, top=6), hnsw.search(q, top=6)
    assert [h.path for h in a] == [h.path for h in b]
    np.testing.assert_allclose([h.score for h in a], [h.score for h in b], rtol=1e-4)
    from layerseek.store.vectors import HnswGraph

    assert (tmp_path / "hnsw" / "cache" / HnswGraph.files_of(tmp_path / "hnsw" / "cache")[0]).is_file()


def test_method_mismatch_and_missing_index(data_dir, tmp_path):
    Index.create(tmp_path / "idx", "fcrow", **OPTS).close()
    with pytest.raises(LayerseekError, match="built with method 'fcrow', not 'gem'"):
        Index.open_or_create(tmp_path / "idx", "gem")
    with pytest.raises(LayerseekError, match="built with backbone 'mobilenet_v2', not 'vgg16'"):
        Index.open_or_create(tmp_path / "idx", None, backbone="vgg16")
    with pytest.raises(LayerseekError, match="searches with --ann auto, fixed when it was created"):
        Index.open_or_create(tmp_path / "idx", None, ann="hnsw")
    Index.open_or_create(tmp_path / "idx", None, ann="auto").close()
    with pytest.raises(LayerseekError, match="no index here"):
        Index.open(tmp_path / "nothing")
    with pytest.raises(LayerseekError, match="valid: crow, fcrow, gem, mac, mof, rmac, spoc"):
        Index.create(tmp_path / "x", "avg")
    with pytest.raises(LayerseekError, match="inner-product similarity"):
        Index.create(tmp_path / "y", "gem", similarity="kl", **OPTS)


def test_killed_indexer_resumes_without_loss_or_duplicates(data_dir, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(0, 1000, 10):  # 100 small real photos
        shutil.copy(data_dir / "corel1k" / "jpg" / f"{i}.jpg", photos / f"{i}.jpg")
    cmd = [sys.executable, "-m", "layerseek.cli", "index", str(photos), "--index", str(tmp_path / "idx"),
           "--method", "gem", "--backbone", "mobilenet_v2", "--layers", "last", "--max-side", "128",
           "--batch", "4", "--threads", "1", "--workers", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = tmp_path / "idx" / "catalog.sqlite"
    n_at_kill = 0
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if db.exists():
            try:
                with sqlite3.connect(db, timeout=5) as c:
                    n_at_kill = c.execute("SELECT COUNT(*) FROM images").fetchone()[0]
            except sqlite3.OperationalError:
                n_at_kill = 0
            if n_at_kill >= 8:
                proc.send_signal(signal.SIGKILL)
                break
        time.sleep(0.02)
    proc.wait(30)
    assert 8 <= n_at_kill < 100, "the indexer was not caught mid-run"
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "0 failed" in done.stdout
    with sqlite3.connect(db) as c:
        paths = [r[0] for r in c.execute("SELECT path FROM images")]
    assert len(paths) == len(set(paths)) == 100
    # the resumed index holds the same vectors as an uninterrupted one
    clean = Index.create(tmp_path / "clean", "gem", backbone="mobilenet_v2", layers=("last",), max_side=128)
    clean.add_folder(photos)
    resumed = Index.open(tmp_path / "idx")
    vec = lambda ix: {ix.catalog.by_id(i).path: v for i, v in zip(*ix.catalog.matrix())}  # noqa: E731
    a, b = vec(clean), vec(resumed)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-5)


def test_cli_index_search_info_remove(data_dir, tmp_path):
    photos = _photos(data_dir, tmp_path / "photos")
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    run = CliRunner().invoke
    args = ["index", str(photos), "--index", str(tmp_path / "idx"), "--backbone", "mobilenet_v2",
            "--layers", "s32,last", "--max-side", "256"]
    r = run(app, args)
    assert r.exit_code == 3, r.output  # done, but a file failed (EXIT_SOME_FAILED)
    assert "6 added" in r.output and "1 failed" in r.output and "broken.jpg" in r.output
    (photos / "broken.jpg").unlink()
    r = run(app, args)
    assert r.exit_code == 0 and "0 failed" in r.output, r.output
    r = run(app, ["search", str(tmp_path / "idx"), str(photos / PARIS[1]), "--top", "3", "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    assert res["results"][0]["path"].endswith(PARIS[1]) and len(res["results"]) == 3
    assert res["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)  # itself: unit-norm fused vector
    # piped (CliRunner's stdout is not a terminal): tab-separated, one line per result; --paths-only
    r = run(app, ["search", str(tmp_path / "idx"), str(photos / PARIS[1]), "--top", "3"])
    lines = r.output.splitlines()
    assert lines[0] == "rank\tscore\tinliers\tverified\tpath" and len(lines) == 4
    assert lines[1].split("\t")[0] == "1" and lines[1].split("\t")[4] == res["results"][0]["path"]
    r = run(app, ["search", str(tmp_path / "idx"), str(photos / PARIS[1]), "--top", "3", "--paths-only"])
    assert r.output.splitlines() == [h["path"] for h in res["results"]]
    assert run(app, ["--version"]).output.startswith("layerseek ") and "Usage" in run(app, ["-h"]).output
    # `models` and `info` in a pipe: tab-separated rows, and lines never wrapped
    rows = [line.split("\t") for line in run(app, ["models"]).output.splitlines()]
    assert rows[0] == ["name", "layers", "normalisation", "weights"] and {len(r) for r in rows} == {4}
    assert any(r[0] == "mobilenet_v2" and "s32:320/32" in r[1] for r in rows)
    lines = run(app, ["info", str(tmp_path / "idx")]).output.splitlines()
    # issue 29: plain words and human units first; the method and its settings behind -v
    assert lines[1] == f"indexed: {photos.resolve()}" and " KB per image)" in lines[2] and len(lines) == 3
    assert "method" not in " ".join(lines) and "bytes on disk" not in " ".join(lines)
    lines = run(app, ["info", str(tmp_path / "idx"), "-v"]).output.splitlines()
    assert lines[3].startswith("method rmac on mobilenet_v2 ") and lines[-1].split()[1:4] == ["bytes", "on", "disk,"]
    r = run(app, ["search", str(tmp_path / "idx"), str(photos / PARIS[1]), "--backbone", "vgg16"])
    assert r.exit_code == 1 and "built with backbone 'mobilenet_v2'" in " ".join(r.output.split())
    # a batch: a folder of queries (one of them broken) and a file, the network loaded once
    queries = tmp_path / "queries"
    queries.mkdir()
    shutil.copy(photos / PARIS[2], queries / "a.jpg")
    (queries / "bad.jpg").write_bytes(b"not a jpeg")
    (queries / "notes.txt").write_text("not an image name: skipped")
    r = run(app, ["search", str(tmp_path / "idx"), str(queries), str(photos / PARIS[1]),
                  "--top", "2", "--json", "--exclude-self"])
    assert r.exit_code == 1 and "1 of 3 queries failed" in " ".join(r.stderr.split()) and "bad.jpg" in r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert [Path(x["query"]).name for x in lines] == ["a.jpg", "bad.jpg", PARIS[1]]
    assert "error" in lines[1] and len(lines[0]["results"]) == 2
    assert lines[0]["results"][0]["path"].endswith(PARIS[2])  # a copy is not itself: kept
    assert not any(h["path"].endswith(PARIS[1]) for h in lines[2]["results"])  # itself: excluded
    r = run(app, ["search", str(tmp_path / "idx"), str(photos / PARIS[1]), str(photos / PARIS[2]), "--top", "2", "--csv"])

    rows = list(csv.reader(r.output.splitlines()))
    assert r.exit_code == 0 and rows[0] == ["query", "rank", "score", "inliers", "verified", "path"] and len(rows) == 5
    assert rows[1][0].endswith(PARIS[1]) and rows[1][5].endswith(PARIS[1]) and rows[3][0].endswith(PARIS[2])
    r = run(app, ["search", str(tmp_path / "idx"), str(photos / PARIS[1]), str(photos / PARIS[2]), "--top", "1"])
    assert r.output.splitlines()[0] == "query\trank\tscore\tinliers\tverified\tpath" and len(r.output.splitlines()) == 3
    r = run(app, ["info", str(tmp_path / "idx"), "--json"])
    info = json.loads(r.output)
    assert info["images"] == 6 and info["dim"] == 320 + 1280 and info["failed"] == 0
    assert info["vector_bytes_per_image"] == 4 * 1600 and info["bytes_per_image"] > 4 * 1600
    r = run(app, ["remove", str(tmp_path / "idx"), str(photos / PARIS[0])])
    assert r.exit_code == 0 and "1 removed, 5 left" in r.output
    r = run(app, ["remove", str(tmp_path / "idx"), str(photos / "zzz.jpg")])
    assert r.exit_code == 1 and "not in the index" in r.output


def test_whitened_fused_vector_is_wmff_of_whitened_layers():
    from layerseek.globaldesc import fit_whitenings

    m = make_method("gem", weights="1:3", whiten_on="train", **OPTS)
    train = _pooled(4, 400)
    m.fit_whitening(train)
    q, d = _pooled(0, 3), _pooled(1, 5)
    ip = m.encode_pooled(q) @ m.encode_pooled(d).T
    cfg = GlobalConfig("gem", ("s32", "last"), "1:3")
    as_dicts = lambda p: [{"gem/s32": p[0][i], "gem/last": p[1][i]} for i in range(len(p[0]))]  # noqa: E731
    ref = score(cfg, as_dicts(q), as_dicts(d), fit_whitenings(cfg, as_dicts(train)))
    np.testing.assert_allclose(ip, ref, rtol=1e-4, atol=1e-5)
    # without whitening the scores are different: the test would notice it being skipped
    assert not np.allclose(ip, make_method("gem", weights="1:3", **OPTS).encode_pooled(q)
                           @ make_method("gem", weights="1:3", **OPTS).encode_pooled(d).T, atol=1e-3)
    with pytest.raises(LayerseekError, match="not learned yet"):
        make_method("gem", whiten_on="train", **OPTS).encode_pooled(q)


def test_index_whiten_on_a_folder(data_dir, tmp_path):
    photos = _photos(data_dir, tmp_path / "photos")
    train = tmp_path / "train"
    train.mkdir()
    for i in range(0, 1000, 50):  # 20 Corel photos: another collection
        shutil.copy(data_dir / "corel1k" / "jpg" / f"{i}.jpg", train / f"{i}.jpg")
    run = CliRunner().invoke
    args = ["index", str(photos), "--index", str(tmp_path / "idx"), "--backbone", "mobilenet_v2",
            "--layers", "s32,last", "--max-side", "256", "--whiten-on", str(train)]
    r = run(app, args)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "idx" / "whitening-s32.npz").is_file() and (tmp_path / "idx" / "whitening-last.npz").is_file()
    info = json.loads(run(app, ["info", str(tmp_path / "idx"), "--json"]).output)
    assert info["params"]["whiten_on"] == str(train.resolve())
    assert info["dim"] == 19 + 19  # whitening keeps the rank of 20 training vectors per layer
    idx = Index.open(tmp_path / "idx")
    hits = idx.search(photos / PARIS[2], top=3)
    assert hits[0].path.endswith(PARIS[2]) and hits[0].score == pytest.approx(1.0, abs=1e-4)
    # the same whitening is used at search time as at index time
    ids, mat = idx.catalog.matrix()
    np.testing.assert_allclose(idx.encode_query(photos / PARIS[2]), mat[list(ids).index(hits[0].id)], atol=1e-5)
    idx.close()
    # asking for another whitening, or none, on the existing index fails clearly
    r = run(app, args[:-1] + [str(photos)])
    assert r.exit_code == 1 and "built with whiten_on" in " ".join(r.output.split())
    (tmp_path / "idx" / "whitening-last.npz").unlink()
    with pytest.raises(LayerseekError, match="whitening-last.npz: missing"):
        Index.open(tmp_path / "idx")


def test_hnsw_graph_changes_in_place(tmp_path, monkeypatch):
    """Additions go into the existing graph, removals become tombstones that are never returned,
    a changed file's old vector is never found again, and too many tombstones rebuild the graph."""
    import hashlib

    from layerseek.store import faiss_store, vectors as V

    rng = np.random.default_rng(0)
    idx = Index.create(tmp_path / "idx", "gem", ann="hnsw", **OPTS)
    dim = idx.catalog.dim

    def rows(names, vecs):
        return [(f"/x/{n}.jpg", 1, 1, hashlib.sha256(v.tobytes()).hexdigest(), 1, 1, v) for n, v in zip(names, vecs)]

    X = rng.standard_normal((200, dim)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    idx._commit(rows(range(200), X))
    first = idx.store.graph()
    assert first.ntotal == 200 and first.dead == 0
    by_name = {e.path: e.id for e in idx.catalog.entries()}
    top = lambda v: list(idx.store.search(v, 5)[0])  # noqa: E731
    assert top(X[7])[0] == by_name["/x/7.jpg"]
    # remove 10 and change 1 in place: tombstones, the same graph object, never returned
    idx._commit(deletes=[f"/x/{i}.jpg" for i in range(10)])
    Y = rng.standard_normal(dim).astype(np.float32)
    Y /= np.linalg.norm(Y)
    idx._commit(rows([20], [Y]))
    g = idx.store.graph()
    assert g is first and g.dead == 11 and g.ntotal == 201 and g.recent.ntotal == 1  # linked into the recent graph
    for i in range(10):
        assert by_name[f"/x/{i}.jpg"] not in top(X[i])
    assert top(Y)[0] == by_name["/x/20.jpg"] and top(X[20])[0] != by_name["/x/20.jpg"]
    # additions are found without a rebuild; a new process re-applies what was not written
    Z = rng.standard_normal((5, dim)).astype(np.float32)
    Z /= np.linalg.norm(Z, axis=1, keepdims=True)
    monkeypatch.setattr(faiss_store, "HNSW_SAVE_ROWS", 1)  # written: the recent graph's own file, not the main one
    cache = tmp_path / "idx" / "cache"
    main_file = V.HnswGraph.files_of(cache)[0]
    idx._commit(rows(range(300, 305), Z))
    g = idx.store.graph()
    assert g is first and g.ntotal == 206 and (g.main.ntotal, g.recent.ntotal) == (200, 6)
    main_now, recent_file = V.HnswGraph.files_of(cache)
    assert main_now == main_file and recent_file and sorted(p.name for p in cache.glob("hnsw*.faiss")) == \
        sorted([main_file, recent_file])  # the recent graph in its own file; the main one not written again
    loaded = V.HnswGraph.load(cache)
    assert (loaded.main.ntotal, loaded.recent.ntotal, loaded.dead) == (200, 6, 11)
    monkeypatch.undo()
    new_ids = {e.path: e.id for e in idx.catalog.entries()}
    assert all(top(Z[j])[0] == new_ids[f"/x/{300 + j}.jpg"] for j in range(5))
    other = Index.open(tmp_path / "idx")
    assert all(other.store.search(Z[j], 1)[0][0] == new_ids[f"/x/{300 + j}.jpg"] for j in range(5))
    assert all(by_name[f"/x/{i}.jpg"] not in list(other.store.search(X[i], 5)[0]) for i in range(10))
    other.close()
    # the recent graph past HNSW_RECENT_SHARE of the main one: merged, rows keep their numbers
    W = rng.standard_normal((5, dim)).astype(np.float32)
    W /= np.linalg.norm(W, axis=1, keepdims=True)
    labels = g.labels.copy()
    idx._commit(rows(range(400, 405), W))
    g = idx.store.graph()
    assert g is first and (g.main.ntotal, g.recent.ntotal) == (211, 0) and np.array_equal(g.labels[:206], labels)
    assert all(np.allclose(g.reconstruct(r), v) for r, v in zip(range(206, 211), W))
    new_ids = {e.path: e.id for e in idx.catalog.entries()}
    assert all(top(W[j])[0] == new_ids[f"/x/{400 + j}.jpg"] for j in range(5))
    assert all(top(Z[j])[0] == new_ids[f"/x/{300 + j}.jpg"] for j in range(5))
    assert all(by_name[f"/x/{i}.jpg"] not in top(X[i]) for i in range(10))
    # more than HNSW_COMPACT_SHARE dead: rebuilt with the live rows only
    idx._commit(deletes=[f"/x/{i}.jpg" for i in range(10, 10 + int(V.HNSW_COMPACT_SHARE * 211) + 1)])
    g = idx.store.graph()
    assert g is not first and g.dead == 0 and g.ntotal == idx.catalog.count()
    idx.close()


def test_exact_rows_change_in_place(tmp_path):
    """The exact store follows the catalog without rewriting its matrix: each round of removals,
    additions and changed files gives the same answers as a search of the catalog's vectors read
    whole; a new process picks the rows up from disk; past their shares they are compacted."""
    import hashlib

    from layerseek.store import vectors as V

    rng = np.random.default_rng(3)
    idx = Index.create(tmp_path / "idx", "gem", ann="exact", **OPTS)
    dim = idx.catalog.dim

    def unit(n):
        x = rng.standard_normal((n, dim)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    def rows(names, vecs):
        return [(f"/x/{n}.jpg", 1, 1, hashlib.sha256(v.tobytes()).hexdigest(), 1, 1, v) for n, v in zip(names, vecs)]

    def agrees(store) -> None:  # against the slow, obvious search: the catalog read whole
        ids, mat = idx.catalog.matrix()
        got_ids, got_mat = store.matrix()
        assert np.array_equal(got_ids, ids) and np.array_equal(got_mat, mat)
        queries = unit(5)
        many = store.search_many(queries, 10)  # one product for all five (duplicates' neighbours)
        for q, (found_many, scores_many) in zip(queries, many):
            want = np.argsort(-(mat @ q))[:10]
            found, scores = store.search(q, 10)
            assert found.tolist() == ids[want].tolist() == found_many.tolist()
            assert np.allclose(scores, (mat @ q)[want], atol=1e-5) and np.allclose(scores_many, scores, atol=1e-5)

    idx._commit(rows(range(200), unit(200)))
    first = idx.store.flat()
    cache = tmp_path / "idx" / "cache"
    written = V.FlatRows.main_file_of(cache)
    assert [p.name for p in cache.glob("flat-*.npy")] == [written]
    agrees(idx.store)
    held_ids, held_mat = idx.store.matrix()  # what a caller keeps (the diffusion's graph) is not changed under it
    kept_ids = held_ids.copy()
    with pytest.raises(ValueError, match="read-only"):
        held_mat[0, 0] = 1.0
    names = list(range(200))
    for r in range(2):  # 3 removed, 2 added and 2 changed a round: under both shares
        gone = [names.pop(int(rng.integers(0, len(names)))) for _ in range(3)]
        changed = [names[int(i)] for i in rng.choice(len(names), 2, replace=False)]
        new = [1000 + 2 * r, 1001 + 2 * r]
        names += new
        idx._commit(rows(new + changed, unit(4)), deletes=[f"/x/{n}.jpg" for n in gone])
        g = idx.store.flat()
        assert g is first and g.dead == 5 * (r + 1) and len(g.recent) == 4 * (r + 1)
        agrees(idx.store)
    assert [p.name for p in cache.glob("flat-*.npy")] == [written]  # the matrix was not written again
    assert np.array_equal(held_ids, kept_ids)
    with Index.open(tmp_path / "idx") as again:  # a new process: the rows from disk, nothing to apply
        loaded = V.FlatRows.load(cache, dim)
        assert (len(loaded.main), len(loaded.recent), loaded.dead) == (200, 8, 10)
        agrees(again.store)
    # more recent rows than FLAT_RECENT_SHARE of the main matrix: one matrix again, the dead left out
    many = [2000 + i for i in range(int(V.FLAT_RECENT_SHARE * 200))]
    idx._commit(rows(many, unit(len(many))))
    g = idx.store.flat()
    assert g is first and len(g.recent) == 0 and g.dead == 0 and len(g.main) == idx.catalog.count() == 198 + len(many)
    now = V.FlatRows.main_file_of(cache)
    assert now != written and [p.name for p in cache.glob("flat-*.npy")] == [now]  # the old file removed
    agrees(idx.store)
    # a matrix file that does not fit what flat.npz says of it, then a flat.npz that is not one:
    # read from the catalog again
    np.save(cache / now, np.zeros((3, dim), np.float32))
    with Index.open(tmp_path / "idx") as again:
        assert V.FlatRows.load(cache, dim) is None
        agrees(again.store)
    (cache / "flat.npz").write_bytes(b"not an npz file at all")
    with Index.open(tmp_path / "idx") as again:
        assert V.FlatRows.load(cache, dim) is None
        agrees(again.store)
    assert V.FlatRows.load(cache, dim) is not None  # written again whole
    with np.load(cache / "flat.npz") as z:  # a rows' file naming a file elsewhere is not followed
        bad = {k: z[k] for k in z.files} | {"main": "../../catalog.sqlite"}
    np.savez(cache / "flat.npz", **bad)
    assert V.FlatRows.load(cache, dim) is None
    assert V.own_name("flat-0123456789ab.npy", "flat", ".npy") and not V.own_name("../flat-0123456789ab.npy", "flat", ".npy")
    idx.close()


@pytest.mark.parametrize("kind", ["hnsw", "flat"])
def test_store_files_written_apart_are_never_paired(tmp_path, monkeypatch, kind):
    """A rebuild to as many rows, killed after its new matrix or graph file and before the rows'
    file: the rows' file still names the old file, so the old rows are read whole with their own
    vectors (a count check alone would have paired the old labels with the new vectors)."""
    from layerseek.store.vectors import FlatRows, HnswGraph

    cls = {"hnsw": HnswGraph, "flat": FlatRows}[kind]
    rows_file = {"hnsw": "save_rows", "flat": None}[kind]
    rng = np.random.default_rng(2)
    old_mat, new_mat = rng.standard_normal((2, 30, 8)).astype(np.float32)
    cls.build(np.arange(30), np.arange(30), old_mat).save(tmp_path)

    def killed(*a, **k):
        raise KeyboardInterrupt

    if rows_file:
        monkeypatch.setattr(cls, rows_file, killed)
    else:  # FlatRows writes flat.npz through np.savez, after np.save of its matrix
        monkeypatch.setattr(np, "savez", killed)
    with pytest.raises(KeyboardInterrupt):
        cls.build(np.arange(100, 130), np.arange(30), new_mat).save(tmp_path)
    monkeypatch.undo()
    loaded = cls.load(tmp_path) if kind == "hnsw" else cls.load(tmp_path, 8)
    assert loaded.labels.tolist() == list(range(30))
    got = np.stack([loaded.reconstruct(r) for r in range(30)]) if kind == "hnsw" else np.asarray(loaded.main)
    assert np.allclose(got, old_mat)
    loaded.save(tmp_path)  # the next write removes the stray file
    assert len(list(tmp_path.glob("hnsw*.faiss" if kind == "hnsw" else "flat-*.npy"))) == 1


def test_hnsw_files_of_older_versions_still_load(tmp_path):
    """Graphs written under the fixed names of earlier versions (hnsw.faiss, an hnsw.npz that
    names no file) load; hnsw.npz names the file from the next write on."""
    import faiss

    from layerseek.store.vectors import HnswGraph

    rng = np.random.default_rng(4)
    g = HnswGraph.build(np.arange(20), np.arange(20), rng.standard_normal((20, 8)).astype(np.float32))
    faiss.write_index(g.main, str(tmp_path / "hnsw.faiss"))
    np.savez(tmp_path / "hnsw.npz", labels=g.labels, hashes=g.hashes, ntotal=20, nmain=20)
    loaded = HnswGraph.load(tmp_path)
    assert loaded is not None and loaded.labels.tolist() == list(range(20))
    assert np.allclose(loaded.reconstruct(7), g.reconstruct(7))
    loaded.save(tmp_path)
    with np.load(tmp_path / "hnsw.npz") as z:
        assert str(z["main"]) == "hnsw.faiss" and str(z["recent"]) == ""
    assert HnswGraph.load(tmp_path).labels.tolist() == list(range(20))


@pytest.mark.parametrize("ann", ["exact", "hnsw"])
def test_two_processes_take_up_each_others_files(tmp_path, monkeypatch, ann):
    """Two stores on one index (a server and an indexer): when one rewrites the big file (a
    compaction, a merge), the other reads it at its next refresh instead of writing its own
    copy over it, and neither leaves the rows' file naming a file that is gone."""
    import hashlib

    from layerseek.store import faiss_store, vectors as V

    monkeypatch.setattr(faiss_store, "HNSW_SAVE_ROWS", 1)
    rng = np.random.default_rng(8)
    idx = Index.create(tmp_path / "idx", "gem", ann=ann, **OPTS)
    dim, cache = idx.catalog.dim, tmp_path / "idx" / "cache"

    def rows(names):
        x = rng.standard_normal((len(names), dim)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return [(f"/x/{n}.jpg", 1, 1, hashlib.sha256(v.tobytes()).hexdigest(), 1, 1, v) for n, v in zip(names, x)], x

    def big_files():
        return sorted(p.name for p in cache.glob("flat-*.npy" if ann == "exact" else "hnsw-*.faiss")
                      if "recent" not in p.name)

    def refresh(store):
        return store.flat() if ann == "exact" else store.graph()

    batch, _ = rows(range(100))
    idx._commit(batch)
    server, indexer = V.FaissStore(idx.catalog), V.FaissStore(idx.catalog)
    refresh(server), refresh(indexer)
    first = big_files()
    assert len(first) == 1
    batch, added = rows(range(100, 130))  # past both shares of recent rows: the indexer rewrites the big file
    idx._commit(batch)
    refresh(indexer)
    second = big_files()
    assert len(second) == 1 and second != first
    batch, more = rows(range(130, 132))  # a small change: the server reads the indexer's file, writes no new one
    idx._commit(batch)
    got = refresh(server)
    assert big_files() == second and (got.main_file if ann == "exact" else got.files[0]) == second[0]
    for v, n in [(added[3], 103), (more[1], 131)]:
        ids, _ = server.search(v, 1)
        assert idx.catalog.by_id(int(ids[0])).path == f"/x/{n}.jpg"
    loaded = V.FlatRows.load(cache, dim) if ann == "exact" else V.HnswGraph.load(cache)
    assert loaded is not None and loaded.ntotal == 132
    idx.close()


def test_hashes_of_ids_read_apart_from_the_catalog():
    """Rows read from the catalog after its ids and hashes (another process committed between):
    an id the hashes do not hold gets -1, so that the next comparison takes its row again."""
    from layerseek.store.vectors import diff_rows, hashes_of

    cids, hashes = np.array([1, 2, 5]), np.array([10, 20, 50])
    got = hashes_of(np.array([1, 5, 9]), cids, hashes)
    assert got.tolist() == [10, 50, -1]
    assert hashes_of(np.array([3]), np.zeros(0, np.int64), np.zeros(0, np.int64)).tolist() == [-1]
    removed, added = diff_rows(np.array([1, 5, 9]), got, np.array([1, 2, 5, 9]), np.array([10, 20, 50, 90]))
    assert removed.tolist() == [2] and added.tolist() == [2, 9]  # row 2 (id 9) taken again, id 2 new


def test_hnsw_diff_matches_a_set_reference():
    from layerseek.store.vectors import HnswGraph

    rng = np.random.default_rng(5)
    g = HnswGraph.build(np.arange(0, 40, 2), rng.integers(-9, 9, 20), rng.standard_normal((20, 4)).astype(np.float32))
    g.apply([3, 4], np.array([100, 101]), np.array([7, 8]), rng.standard_normal((2, 4)).astype(np.float32))
    live = {int(g.labels[r]): (r, int(g.hashes[r])) for r in range(len(g.labels)) if g.labels[r] >= 0}
    ids = np.array(sorted(set(range(0, 40, 4)) | {100, 200}), np.int64)  # some kept, some gone, 200 new
    hashes = np.array([live[i][1] if i in live and i != 12 else 99 for i in ids], np.int64)  # 12 changed
    removed, added = g.diff(ids, hashes)
    want_removed = sorted(r for i, (r, h) in live.items() if i not in set(ids.tolist()) or i == 12)
    want_added = sorted(i for i in ids.tolist() if i not in live or i == 12)
    assert sorted(removed.tolist()) == want_removed and sorted(added.tolist()) == want_added


def test_an_index_whose_creation_fails_leaves_nothing_behind(data_dir, tmp_path):
    run = CliRunner().invoke
    r = run(app, ["index", str(tmp_path / "Photoz"), "--index", str(tmp_path / "x.lsx")])
    assert r.exit_code == 1 and "no such folder" in r.output and not (tmp_path / "x.lsx").exists()
    photos = _photos(data_dir, tmp_path / "photos")
    r = run(app, ["index", str(photos), "--index", str(tmp_path / "x.lsx"), "--whiten-on", "no-such-collection"])
    assert r.exit_code == 1 and "unknown dataset" in r.output and not (tmp_path / "x.lsx").exists()
    # an index that exists is never removed for a failed run
    (tmp_path / "kept.lsx").mkdir()
    (tmp_path / "kept.lsx" / "mine.txt").write_text("a user's file")
    r = run(app, ["index", str(photos), "--index", str(tmp_path / "kept.lsx"), "--whiten-on", "no-such-collection"])
    assert r.exit_code == 1 and (tmp_path / "kept.lsx" / "mine.txt").is_file()


def test_removed_files_and_patterns_stay_out_until_added_back(data_dir, tmp_path):
    run = CliRunner().invoke
    photos = _photos(data_dir, tmp_path / "photos")
    args = ["index", str(photos), "--index", str(tmp_path / "idx"), "--backbone", "mobilenet_v2",
            "--layers", "s32,last", "--max-side", "256", "--no-verify"]
    assert run(app, args).exit_code == 0

    def held():
        with Index.open(tmp_path / "idx") as idx:
            return sorted(Path(e.path).name for e in idx.catalog.entries())

    assert run(app, ["remove", str(tmp_path / "idx"), str(photos / PARIS[0])]).exit_code == 0
    r = run(app, args)  # the next run does not bring the removed file back
    assert r.exit_code == 0 and "1 excluded" in r.output and PARIS[0] not in held() and len(held()) == 5
    r = run(app, args[:1] + [str(photos / PARIS[0])] + args[2:])  # added back by name: not described again
    assert r.exit_code == 0 and "0 added, 0 updated, 0 removed, 1 restored, 0 unchanged;" in r.output
    assert PARIS[0] in held()
    r = run(app, args)
    assert "excluded" not in r.output and len(held()) == 6
    # a pattern: matching files are left out now (indexed ones forgotten) and in later runs
    r = run(app, args + ["--exclude", "*eiffel*"])
    assert r.exit_code == 0 and "2 removed" in r.output and not any("eiffel" in n for n in held())
    info = json.loads(run(app, ["info", str(tmp_path / "idx"), "--json"]).output)
    assert info["excluded"] == [{"pattern": "*eiffel*", "kind": "glob"}]
    assert "2 excluded" in run(app, args).output and len(held()) == 4
    r = run(app, args + ["--include", "*eiffel*"])
    assert r.exit_code == 0 and "0 added, 0 updated, 0 removed, 2 restored, 4 unchanged;" in r.output
    assert len(held()) == 6
    assert "not excluded: *nothing*" in run(app, args + ["--include", "*nothing*"]).output
    # a removed folder stays out of its parent's runs, and comes back when it is named itself
    sub = photos / "sub"
    sub.mkdir()
    shutil.move(photos / PARIS[3], sub / PARIS[3])
    assert run(app, args).exit_code == 0 and PARIS[3] in held()
    assert run(app, ["remove", str(tmp_path / "idx"), str(sub)]).exit_code == 0 and PARIS[3] not in held()
    assert "1 excluded" in run(app, args).output and PARIS[3] not in held()
    r = run(app, args[:1] + [str(sub)] + args[2:])
    assert r.exit_code == 0 and "0 added, 0 updated, 0 removed, 1 restored" in r.output and PARIS[3] in held()
    assert "excluded" not in run(app, args).output and PARIS[3] in held()
    # a folder by its name, or by its path (relative: made absolute), leaves out all under it, as
    # .gitignore does; never the folder indexed itself nor what lies above it
    (sub / "deeper").mkdir()
    shutil.move(photos / PARIS[4], sub / "deeper" / PARIS[4])
    assert run(app, args).exit_code == 0 and PARIS[4] in held()
    for pattern, kept in (("sub", 4), ("deeper", 5), (os.path.relpath(sub, os.getcwd()), 4), (photos.name, 6)):
        r = run(app, args + ["--exclude", pattern])
        assert r.exit_code == 0 and len(held()) == kept, (pattern, r.output)
        info = json.loads(run(app, ["info", str(tmp_path / "idx"), "--json"]).output)
        stored = info["excluded"][0]["pattern"]
        assert stored == (str(sub.resolve()) if os.sep in pattern else pattern)  # a path named: absolute
        assert f"excluded: {stored} (--exclude)" in run(app, ["info", str(tmp_path / "idx")]).output
        r = run(app, args + ["--include", stored])
        assert r.exit_code == 0 and len(held()) == 6, (pattern, r.output)
    assert stored == photos.name
    # a file of an excluded folder named by itself: said, not indexed (the next walk would forget it)
    r = run(app, args + ["--exclude", "deeper"])
    assert r.exit_code == 0 and PARIS[4] not in held()
    r = run(app, args[:1] + [str(sub / "deeper" / PARIS[4])] + args[2:])
    assert r.exit_code == 3 and PARIS[4] not in held(), r.output
    assert (f"{sub.resolve() / 'deeper' / PARIS[4]}: left out by --exclude 'deeper' (--include 'deeper' takes it "
            "back)") in " ".join(r.output.split()), r.output


def test_a_file_gone_from_the_disk_is_left_out_of_results(data_dir, tmp_path):
    photos = _photos(data_dir, tmp_path / "photos")
    with Index.create(tmp_path / "idx", "rmac", backbone="mobilenet_v2", layers=("s32", "last"), max_side=256) as idx:
        idx.add_folder(photos)
        query = tmp_path / "query.jpg"
        shutil.copy(photos / PARIS[1], query)
        assert idx.search(query, top=6)[0].path == str(photos / PARIS[1])
        (photos / PARIS[1]).rename(photos / "renamed.jpg")
        hits = idx.search(query, top=6)
        assert len(hits) == 5 and str(photos / PARIS[1]) not in [h.path for h in hits]
        assert str(photos / PARIS[1]) in [h.path for h in idx.ranked(query, top=6)]  # still indexed until...
        rep = idx.add_folder(photos)  # ... the next run: forgotten, and the new name indexed
        # issue 29: the new name copies the stored vector (not extracted again) and is said as moved
        assert (rep.removed, rep.added, rep.reused, rep.moved) == (1, 1, 1, 1)
        assert rep.summary().startswith("0 added, 0 updated, 0 removed, 1 moved, 5 unchanged;")
        assert idx.search(query, top=1)[0].path == str(photos / "renamed.jpg")


def _catalogued(index_dir: Path) -> dict[str, str]:
    """path -> SHA-256 of what an index's catalog holds, read apart from the Index that writes it."""
    con = sqlite3.connect(index_dir / "catalog.sqlite")
    try:
        return dict(con.execute("SELECT path, sha256 FROM images"))
    finally:
        con.close()


def _wait_for(cond, failure: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    pytest.fail(failure)


@contextlib.contextmanager
def _watching(index_dir: Path, photos: Path):
    """A new index at `index_dir` that `watch` keeps in step with `photos` in a thread, while
    the block runs: (its reports, until(condition, what it should have done))."""
    import threading

    from layerseek.watch import watch

    reports, stop = [], threading.Event()

    def until(cond, what):
        _wait_for(cond, f"the watch did not {what}: {reports}")

    with Index.create(index_dir, "rmac", backbone="mobilenet_v2", layers=("s32", "last"), max_side=256) as idx:
        t = threading.Thread(target=watch, args=(idx, photos, 0.3, stop, reports.append))
        t.start()
        try:
            yield reports, until
        finally:
            stop.set()
            t.join(timeout=30)
        assert not t.is_alive() and all(r.failed == [] for r in reports)


def test_watch_keeps_the_index_in_step_with_the_folder(data_dir, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in PARIS[:2]:
        shutil.copy(data_dir / "paris6k-subset" / "jpg" / name, photos / name)

    def held():
        return {Path(p).name: sha for p, sha in _catalogued(tmp_path / "idx").items()}

    with _watching(tmp_path / "idx", photos) as (_, until):
        until(lambda: len(held()) == 2, "index the folder at its start")
        shutil.copy(data_dir / "paris6k-subset" / "jpg" / PARIS[2], photos / PARIS[2])  # added
        until(lambda: PARIS[2] in held(), "add a new file")
        before = held()[PARIS[0]]
        shutil.copy(data_dir / "paris6k-subset" / "jpg" / PARIS[3], photos / PARIS[0])  # changed
        until(lambda: held().get(PARIS[0]) not in (None, before), "re-index a changed file")
        (photos / PARIS[1]).unlink()  # deleted
        until(lambda: PARIS[1] not in held(), "forget a deleted file")
        (photos / "sub").mkdir()
        (photos / PARIS[2]).rename(photos / "sub" / PARIS[2])  # moved
        until(lambda: set(held()) == {PARIS[0], PARIS[2]} and len(held()) == 2, "follow a moved file")


def test_watch_says_once_when_its_folder_goes_and_indexes_it_when_back(data_dir, tmp_path, monkeypatch):
    """The watched folder moved away: said once (it said nothing: inotify followed the folder to its
    new place), its photos kept; moved back, watched anew and what changed meanwhile indexed."""
    import threading

    from layerseek import watch as watch_module

    monkeypatch.setattr(watch_module, "THERE_CHECK", 0.2)
    photos, away = tmp_path / "photos", tmp_path / "away"
    photos.mkdir()
    shutil.copy(data_dir / "paris6k-subset" / "jpg" / PARIS[0], photos / PARIS[0])
    errors, reports, stop, bars = [], [], threading.Event(), []

    def run_bar():  # each run's progress bar: what it was told
        bars.append([])
        return contextlib.nullcontext(), lambda done, total: bars[-1].append((done, total))

    with Index.create(tmp_path / "idx", "gem", backbone="mobilenet_v2", layers=("last",), max_side=128) as idx:
        t = threading.Thread(target=watch_module.watch, args=(idx, photos, 0.3, stop, reports.append, errors.append),
                             kwargs={"run_bar": run_bar})
        t.start()
        try:
            _wait_for(lambda: reports, "the watch did not index the folder at its start")
            assert bars[0][-1] == (1, 1)  # the run's progress shown
            photos.rename(away)
            _wait_for(lambda: errors, "the watch did not say its folder went")
            shutil.copy(data_dir / "paris6k-subset" / "jpg" / PARIS[1], away / PARIS[1])  # a change over there
            time.sleep(1.5)
            assert len(errors) == 1 and errors[0].startswith(f"{photos.resolve()}: gone (moved, renamed, deleted")
            assert len(reports) == 1 and list(_catalogued(tmp_path / "idx")) == [str(photos.resolve() / PARIS[0])]
            away.rename(photos)
            _wait_for(lambda: len(reports) == 2, "the watch did not index its folder when it came back")
            assert reports[1].added == 1 and str(photos.resolve() / PARIS[1]) in _catalogued(tmp_path / "idx")
            shutil.copy(data_dir / "paris6k-subset" / "jpg" / PARIS[2], photos / PARIS[2])  # watched anew
            _wait_for(lambda: str(photos.resolve() / PARIS[2]) in _catalogued(tmp_path / "idx"),
                      "the watch did not see a change in its folder back")
            assert len(errors) == 1
        finally:
            stop.set()
            t.join(timeout=30)


def test_watch_sees_a_linked_folder_too(data_dir, tmp_path):
    """Events do not follow links: the watch also watches each linked folder the walk went into,
    so a photo added there is indexed (under the link's name)."""
    photos, trip = tmp_path / "photos", tmp_path / "drive" / "trip"
    photos.mkdir()
    trip.mkdir(parents=True)
    shutil.copy(data_dir / "paris6k-subset" / "jpg" / PARIS[0], photos / PARIS[0])
    shutil.copy(data_dir / "paris6k-subset" / "jpg" / PARIS[1], trip / PARIS[1])
    os.symlink(trip, photos / "trip")

    def held():
        return sorted(os.path.relpath(p, photos.resolve()) for p in _catalogued(tmp_path / "idx"))

    with _watching(tmp_path / "idx", photos) as (reports, until):
        until(lambda: held() == [PARIS[0], f"trip/{PARIS[1]}"], "index the folder and the linked one")
        shutil.copy(data_dir / "paris6k-subset" / "jpg" / PARIS[2], trip / PARIS[2])
        until(lambda: f"trip/{PARIS[2]}" in held(), "see a photo added in the linked folder")
    assert reports[0].followed == [str(trip.resolve())]


def test_info_remove_check_and_help_start_without_torch(data_dir, tmp_path):
    """Commands that run no network never import torch (seconds of start-up saved)."""
    photos = _photos(data_dir, tmp_path / "photos")
    with Index.create(tmp_path / "idx", "rmac", backbone="mobilenet_v2", layers=("s32", "last"), max_side=256,
                      verify=True) as idx:
        idx.add_folder(photos)
    idx_path = str(tmp_path / "idx")
    script = (
        "import sys, json\n"
        "from typer.testing import CliRunner\n"
        "from layerseek.cli import app\n"
        "out = []\n"
        "for args in json.loads(sys.argv[1]):\n"
        "    r = CliRunner().invoke(app, args)\n"
        "    out.append([r.exit_code, 'torch' in sys.modules])\n"
        "print(json.dumps(out))\n")
    runs = [["info", idx_path], ["info", idx_path, "--json"], ["check", idx_path],
            ["remove", idx_path, str(photos / PARIS[0])], ["--help"], ["search", "--help"]]
    r = subprocess.run([sys.executable, "-c", script, json.dumps(runs)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.splitlines()[-1]) == [[0, False]] * len(runs)


def test_watch_retries_when_another_writer_holds_the_index(data_dir, tmp_path, monkeypatch):
    """Issue 27: a watch that met "index busy" printed it and never tried again, so a new photo
    stayed out of the index after the other run ended."""
    import threading

    from layerseek import watch as watch_module

    monkeypatch.setattr(watch_module, "BUSY_RETRY", 0.3)
    photos = _photos(data_dir, tmp_path / "photos")
    with Index.create(tmp_path / "idx", "gem", backbone="mobilenet_v2", layers=("last",), max_side=128) as idx:
        idx.add_folder(photos)
    other, idx = Index.open(tmp_path / "idx"), Index.open(tmp_path / "idx")
    errors, reports, stop = [], [], threading.Event()
    t = threading.Thread(target=watch_module.watch, args=(idx, photos, 0.3, stop, reports.append, errors.append))
    try:
        with other.writing():  # another `index` run holds the lock ...
            t.start()
            shutil.copy(data_dir / "paris6k-subset" / "jpg" / "paris_louvre_000239.jpg", photos / "new.jpg")
            time.sleep(2.5)  # ... through the watch's first run and the burst after it
            assert reports == [] and len(errors) == 1 and "index busy" in errors[0] and "try again every" in errors[0]
        deadline = time.monotonic() + 60  # ... and then lets go
        while time.monotonic() < deadline and not reports:
            time.sleep(0.1)
        assert reports and reports[-1].added == 1 and other.catalog.by_path(str(photos / "new.jpg")) is not None
        assert len(errors) == 1
    finally:
        stop.set()
        t.join(timeout=30)
        other.close(), idx.close()
