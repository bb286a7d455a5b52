"""MOF behind an index: vocabularies learned on another collection at creation, payloads in the
catalog, inverted files kept in step with adds, changes and removals, the CLI."""
from __future__ import annotations

import json
import os
import shutil
import warnings

import numpy as np
import pytest
from typer.testing import CliRunner

from layerseek.cli import app
from layerseek.errors import LayerseekError
from layerseek.index import Index
from layerseek.local.method import unpack
from layerseek.local.mof import MOFEngine

PARIS = ["paris_defense_000000.jpg", "paris_eiffel_000000.jpg", "paris_invalides_000002.jpg",
         "paris_louvre_000004.jpg", "paris_moulinrouge_000003.jpg"]
OPTS = {"backbone": "mobilenet_v2", "layers": ("s16", "s32"), "max_side": 384, "words": 24}


@pytest.fixture(scope="module")
def folders(data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("mof")
    photos, train = root / "photos", root / "train"
    photos.mkdir(), train.mkdir()
    for n in PARIS:
        shutil.copy(data_dir / "paris6k-subset" / "jpg" / n, photos / n)
    for i in range(1, 41):  # another collection: 40 SMVS camera-phone photos
        shutil.copy(data_dir / "smvs-dvd-covers" / "Canon" / f"{i:03d}.jpg", train / f"{i:03d}.jpg")
    return root, photos, train


def _fresh_scores(idx, encoded):
    """Scores from inverted files built from scratch out of the catalog's payloads."""
    engine = MOFEngine(idx.method.model)
    for i, _, payload in idx.catalog.payloads(idx.catalog.shas()):
        engine.add(i, unpack(payload))
    return engine.search(encoded)


def test_mof_index_lifecycle(folders, tmp_path):
    root, shared_photos, train = folders
    photos = shutil.copytree(shared_photos, tmp_path / "photos")  # this test changes its photos
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        idx = Index.create(tmp_path / "idx", "mof", train_on=str(train), **OPTS)
    assert (tmp_path / "idx" / "mof" / "vocabulary-s16.npz").is_file()
    r = idx.add_folder(photos)
    assert r.added == 5 and not r.failed
    hits = idx.search(photos / PARIS[2], top=5)
    assert hits[0].path.endswith(PARIS[2]) and hits[0].score > 2 * hits[1].score
    info = idx.info()
    assert info["params"]["method"] == "mof" and info["dim"] == 0 and info["vector_bytes_per_image"] > 1000
    assert "inverted files" in info["search"]

    # remove one, change one's content, add one: the inverted files follow without a rebuild
    engine = idx.engine()
    base_file = next((tmp_path / "idx" / "cache").glob("mof-*/invfile-s16/ids.npy"))
    inode = base_file.stat().st_ino
    idx.remove([photos / PARIS[0]])
    shutil.copy(train / "005.jpg", photos / PARIS[4])
    shutil.copy(train / "007.jpg", photos / "new.jpg")
    r = idx.add_folder(photos)
    assert (r.added, r.updated, r.excluded) == (1, 1, 1)  # PARIS[0] stays out of the folder's runs ...
    r = idx.add_files([photos / PARIS[0]])  # ... until it is added back by name
    assert r.added == 1
    assert idx.engine() is engine and len(engine) == 6
    # saved again without rewriting the lists: the base file is the same file under the new generation
    (now,) = (tmp_path / "idx" / "cache").glob("mof-*/invfile-s16/ids.npy")
    assert now != base_file and now.stat().st_ino == inode
    q = idx.method.encode_query(idx.fx(np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(photos / "new.jpg").convert("RGB"))))
    got, ref = idx.engine().search(q), _fresh_scores(idx, q)
    assert [i for i, _ in got] == [i for i, _ in ref]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in ref], rtol=1e-9)
    assert idx.search(photos / PARIS[4], top=1)[0].path.endswith(PARIS[4])
    idx.close()

    # a new process reads the saved inverted files and gets the same answers
    again = Index.open(tmp_path / "idx")
    a = [(h.id, round(h.score, 9)) for h in again.search(photos / PARIS[3], top=6)]
    held = again._engine[2]
    assert set(held) == set(again.catalog.shas())
    # its lists are read from the saved files, memory-mapped, not loaded into memory
    assert all(inv.on_disk for inv in again._engine[1].files.values())
    assert a[0][0] == again.catalog.by_path(str((photos / PARIS[3]).resolve())).id
    with pytest.raises(LayerseekError, match="query expansion is for the global methods"):
        again.search(photos / PARIS[3], qe=2)
    again.close()


def test_vocabularies_learned_on_several_collections_are_those_of_their_union(folders, tmp_path):
    """--train-on A,B learns on both: the same words as learning on one folder that holds A's
    photos and then B's; `others` names every shared collection but the one searched."""
    from layerseek.datasets import SHARED, training_collections
    from layerseek.local.method import LocalMethod

    _, _, train = folders
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    for i, f in enumerate(sorted(train.glob("*.jpg"))):
        shutil.copy(f, (a if i < 20 else b) / f.name)

    def words(on):
        m = LocalMethod("mobilenet_v2", ("s16", "s32"), 384, words=24, train_on=on)
        m.fit(on)
        return {n: v.centroids_ for n, v in m.model.vocabularies.items()}

    both, union, one = words(f"{a},{b}"), words(str(train)), words(str(a))
    assert all(np.array_equal(both[n], union[n]) for n in ("s16", "s32"))
    assert not np.array_equal(one["s16"], union["s16"])  # what A alone learns differs
    assert training_collections("others", "smvs-all") == ["rparis6k-subset", "corel1k"]
    assert training_collections("others") == list(SHARED)
    assert training_collections("smvs, corel1k") == ["smvs", "corel1k"]
    with pytest.raises(LayerseekError, match="name a collection"):
        training_collections(" , ")


def test_mof_needs_a_training_collection_and_its_own_options(folders, tmp_path):
    with pytest.raises(LayerseekError, match="--train-on"):
        Index.create(tmp_path / "a", "mof", **OPTS)
    with pytest.raises(LayerseekError, match="option 'words' does not apply to method 'gem'"):
        Index.create(tmp_path / "b", "gem", words=100)
    with pytest.raises(LayerseekError, match="MOF needs convolutional layers"):
        Index.create(tmp_path / "c", "mof", backbone="mobilenet_v2", layers=("logits",), train_on="x")
    r = CliRunner().invoke(app, ["index", str(folders[1]), "--index", str(tmp_path / "d"), "--method", "mof"])
    assert r.exit_code == 1 and "--train-on" in r.output


def test_cli_mof_index_and_search(folders, tmp_path):
    root, photos, train = folders
    run = CliRunner().invoke
    r = run(app, ["index", str(photos), "--index", str(tmp_path / "idx"), "--method", "mof", "--backbone", "mobilenet_v2",
                  "--layers", "s16,s32", "--max-side", "384", "--words", "24", "--train-on", str(train),
                  "--window-pooling", "max"])
    assert r.exit_code == 0, r.output
    r = run(app, ["info", str(tmp_path / "idx"), "-v"])
    assert "method mof on mobilenet_v2 s16+s32, max-pooled windows, 24 spherical words" in " ".join(r.output.split())
    r = run(app, ["search", str(tmp_path / "idx"), str(photos / PARIS[1]), "--json"])
    assert r.exit_code == 0 and '"path": "' + str((photos / PARIS[1]).resolve()) in r.output
    # two stages: a global index of the same photos shortlists, the mof index re-scores
    r = run(app, ["index", str(photos), "--index", str(tmp_path / "gem"), "--method", "gem", "--backbone", "mobilenet_v2",
                  "--layers", "s32,last", "--max-side", "384"])
    assert r.exit_code == 0, r.output
    with Index.open(tmp_path / "gem") as g, Index.open(tmp_path / "idx") as m:
        first = g.search(photos / PARIS[3], top=5)
        two = g.search_two_stage(photos / PARIS[3], m, top=5, shortlist=3)
        alone = {h.path: h.score for h in m.search(photos / PARIS[3], top=10)}
        # a part of the photo: each stage searches with that part, as it would alone
        part = (0.25, 0.0, 0.5, 1.0)
        two_part = g.search_two_stage(photos / PARIS[3], m, top=5, shortlist=3, region=part)
        first_part = g.search(photos / PARIS[3], top=5, verify=0, region=part)
        alone_part = {h.path: h.score for h in m.search(photos / PARIS[3], top=10, region=part)}
    assert sorted(h.path for h in two_part[:3]) == sorted(h.path for h in first_part[:3])
    assert [h.score for h in two_part[:3]] == sorted((alone_part.get(h.path, 0.0) for h in first_part[:3]), reverse=True)
    assert [h.score for h in two_part[:3]] != [h.score for h in two[:3]]  # the part, not the whole photo
    assert sorted(h.path for h in two[:3]) == sorted(h.path for h in first[:3])
    assert [h.path for h in two[3:]] == [h.path for h in first[3:]]
    assert [h.score for h in two[:3]] == sorted((alone.get(h.path, 0.0) for h in first[:3]), reverse=True)
    r = run(app, ["search", str(tmp_path / "gem"), str(photos / PARIS[3]), "--rerank-with", str(tmp_path / "idx"),
                  "--shortlist", "3", "--top", "5", "--json"])
    assert r.exit_code == 0 and [h["path"] for h in json.loads(r.output)["results"]] == [h.path for h in two]
    r = run(app, ["search", str(tmp_path / "gem"), str(photos / PARIS[3]), "--rerank-with", str(tmp_path / "idx"),
                  "--shortlist", "3", "--top", "5", "--json", "--region", "0.25,0,0.5,1"])
    assert r.exit_code == 0 and [h["path"] for h in json.loads(r.output)["results"]] == [h.path for h in two_part]
    r = run(app, ["search", str(tmp_path / "idx"), str(photos / PARIS[3]), "--rerank-with", str(tmp_path / "gem")])
    assert r.exit_code == 1 and "global index first and a mof index second" in " ".join(r.output.split())
    # the HTTP API serves a mof index the same way
    from fastapi.testclient import TestClient

    from layerseek.server.app import create_app

    with TestClient(create_app(tmp_path / "idx"), base_url="http://localhost") as c:
        assert c.get("/health").json()["method"] == "mof"
        res = c.post("/search?top=3", files={"file": ("q.jpg", (photos / PARIS[1]).read_bytes(), "image/jpeg")}).json()
        assert len(res["results"]) == 3 and res["results"][0]["score"] > 0
        assert c.post("/search?qe=2", files={"file": ("q.jpg", (photos / PARIS[1]).read_bytes(), "image/jpeg")}).status_code == 400
    with TestClient(create_app(tmp_path / "gem", rerank_with=tmp_path / "idx", shortlist=3), base_url="http://localhost") as c:
        assert c.get("/health").json()["shortlist"] == 3
        res = c.post("/search?top=5", files={"file": ("q.jpg", (photos / PARIS[3]).read_bytes(), "image/jpeg")}).json()
        # without the token, paths are shown relative to the indexed folder
        assert [h["path"] for h in res["results"]] == [os.path.relpath(h.path, photos.resolve()) for h in two]
    with pytest.raises(LayerseekError, match="a global index and a mof index"):
        create_app(tmp_path / "idx", rerank_with=tmp_path / "gem")
