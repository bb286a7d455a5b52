"""Beyond one machine: extraction on a local Ray (same descriptors and the same incremental and
resume behaviour as the local path) and the Milvus store (milvus-lite here; same answers as the
embedded FAISS store for search, query expansion, add, remove and two-stage search)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
from typer.testing import CliRunner

from layerseek.cli import app, bare_flag_values
from layerseek.distributed import has_prefix, sha_prefixes
from layerseek.errors import LayerseekError
from layerseek.index import Index
from layerseek.local.method import unpack
from layerseek.store.vectors import default_collection, parse_store

GLOBAL = {"backbone": "mobilenet_v2", "max_side": 384}
MOF = {"backbone": "mobilenet_v2", "layers": ("s16", "s32"), "max_side": 384, "words": 24}


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def photos(copy_paris, tmp_path_factory):
    folder = copy_paris(tmp_path_factory.mktemp("scale") / "photos")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return folder


@pytest.fixture(scope="module")
def train(data_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("train")
    for i in range(1, 41):
        shutil.copy(data_dir / "smvs-dvd-covers" / "Canon" / f"{i:03d}.jpg", folder / f"{i:03d}.jpg")
    return folder


def vectors_by_path(idx: Index) -> dict[str, np.ndarray]:
    ids, mat = idx.catalog.matrix()
    return {idx.catalog.by_id(i).path: v for i, v in zip(ids, mat)}


# -- Ray -----------------------------------------------------------------------------------------
def test_content_prefixes_and_bare_ray_flag():
    shas = ["ab" * 32, "00" * 32, "ab" * 8 + "cd" * 24]
    p = sha_prefixes(shas)
    assert p.dtype == np.uint64 and len(p) == 2  # the two "ab..." share their first 64 bits
    assert has_prefix(p, "ab" * 8 + "ee" * 24) and has_prefix(p, "00" * 32) and not has_prefix(p, "01" * 32)
    assert bare_flag_values(["index", "f", "--index", "i", "--ray"]) == ["index", "f", "--index", "i", "--ray", "local"]
    assert bare_flag_values(["index", "--ray", "--index", "i"]) == ["index", "--ray", "local", "--index", "i"]
    assert bare_flag_values(["index", "--ray", "ray://h:10001"]) == ["index", "--ray", "ray://h:10001"]


def test_ray_extraction_matches_local_and_is_incremental(ray_local, photos, tmp_path):
    local = Index.create(tmp_path / "local", "fcrow", **GLOBAL)
    r_local = local.add_folder(photos)
    on_ray = Index.create(tmp_path / "ray", "fcrow", **GLOBAL)
    r_ray = on_ray.add_folder(photos, ray="local", ray_workers=2)
    assert (r_ray.added, len(r_ray.failed)) == (r_local.added, len(r_local.failed)) == (6, 1)
    assert r_ray.failed == r_local.failed and "broken.jpg: unsupported" in r_ray.failed[0]
    assert on_ray.catalog.failures() == local.catalog.failures()
    a, b = vectors_by_path(local), vectors_by_path(on_ray)
    assert sorted(a) == sorted(b)
    for path in a:  # one image per forward pass on CPUs, as locally: equal up to thread-order rounding
        np.testing.assert_allclose(b[path], a[path], atol=2e-6)
    assert {e.path: e.sha256 for e in local.catalog.entries()} == {e.path: e.sha256 for e in on_ray.catalog.entries()}

    # again: nothing to do; then one new file, one changed, one identical copy, one deleted
    again = on_ray.add_folder(photos, ray="local")
    assert (again.added, again.unchanged, len(again.failed)) == (0, 6, 1)
    work = shutil.copytree(photos, tmp_path / "work")
    on_ray.add_folder(work, ray="local")
    shutil.copy(photos / "paris_eiffel_000004.jpg", work / "copy_of_eiffel.jpg")
    shutil.copy(photos / "paris_defense_000000.jpg", work / "paris_louvre_000004.jpg")
    (work / "paris_invalides_000002.jpg").unlink()
    r = on_ray.add_folder(work, ray="local")
    assert (r.added, r.updated, r.removed, r.reused) == (1, 1, 1, 2)
    v = vectors_by_path(on_ray)
    np.testing.assert_array_equal(v[str(work / "paris_louvre_000004.jpg")], b[str(photos / "paris_defense_000000.jpg")])
    local.close(), on_ray.close()


def test_worker_batched_forward_path_matches_one_at_a_time(photos, tmp_path):
    """The GPU workers' path (same-size images batched through the network) run here on the CPU,
    in-process, against the CPU workers' one-image-at-a-time path; bad files become error rows."""
    from layerseek.distributed import _Encoder, learned_state

    idx = Index.create(tmp_path / "idx", "fcrow", **GLOBAL)
    files = sorted(str(p) for p in photos.iterdir()) + [str(photos / "missing.jpg")]
    batch = {"path": np.array(files, dtype=object), "size": np.zeros(len(files), np.int64),
             "mtime": np.zeros(len(files), np.int64)}
    known = sha_prefixes([])
    args = dict(params=idx.catalog.manifest["params"], state=learned_state(idx.catalog.root), known=known,
                threads=2, device="cpu")
    one, batched = _Encoder(**args, forward_batch=1)(batch), _Encoder(**args, forward_batch=8)(batch)
    assert list(one["reason"]) == list(batched["reason"])
    assert one["reason"][-1] == "missing"  # named as the local path names it
    assert sum(1 for r in one["reason"] if r) == 2  # broken.jpg and missing.jpg
    for a, b in zip(one["payload"], batched["payload"]):
        if a:
            np.testing.assert_allclose(np.frombuffer(b, np.float32), np.frombuffer(a, np.float32), atol=1e-5)
    idx.close()


def test_ray_run_killed_midway_resumes(ray_local, photos, tmp_path):
    idx = Index.create(tmp_path / "idx", "fcrow", **GLOBAL)
    seen = []

    def stop_after_three(done, total):
        seen.append(done)
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        idx.add_folder(photos, batch=1, progress=stop_after_three, ray="local")
    # one result per transaction, committed before the progress callback hears of it: 3 kept
    assert idx.catalog.count() + len(idx.catalog.failures()) == 3 and seen == [0, 1, 2, 3]
    before = idx.catalog.count()
    r = idx.add_folder(photos, batch=1, ray="local")
    assert (r.added, r.unchanged, len(r.failed)) == (6 - before, before, 1) and idx.catalog.count() == 6
    idx.close()


def test_ray_mof_payloads_match_local(ray_local, photos, train, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        local = Index.create(tmp_path / "local", "mof", train_on=str(train), **MOF)
    local.add_folder(photos)
    on_ray = Index.create(tmp_path / "ray", "mof", train_on=str(train), **MOF)  # the same model (cached by content)
    assert all(np.array_equal(a.centroids_, b.centroids_) for a, b in
               zip(local.method.model.vocabularies.values(), on_ray.method.model.vocabularies.values()))
    on_ray.add_folder(photos, ray="local")
    for e in local.catalog.entries():
        mine = unpack(local.catalog.indexed_content(e.sha256)[0])
        theirs = unpack(on_ray.catalog.indexed_content(e.sha256)[0])
        for layer in MOF["layers"]:
            same_words = np.mean(mine[layer][0] == theirs[layer][0])
            assert same_words > 0.99, (e.path, layer, same_words)
    q = photos / "paris_eiffel_000004.jpg"
    assert [h.path for h in local.search(q, top=3)] == [h.path for h in on_ray.search(q, top=3)]
    local.close(), on_ray.close()


# -- Milvus ------------------------------------------------------------------------------------
def test_store_addresses(tmp_path):
    root = tmp_path / "my index"
    assert parse_store(None, root) == {"kind": "faiss"} == parse_store("faiss", root)
    lite = parse_store("milvus:", root)
    assert lite["uri"] == str(root.resolve() / "milvus.db") and lite["collection"] == default_collection(root.resolve())
    assert lite["collection"].startswith("layerseek_my_index_")
    assert parse_store("milvus:///data/v.db?collection=photos", root) == {
        "kind": "milvus", "uri": "/data/v.db", "collection": "photos", "db": ""}
    assert parse_store("milvus://milvus.local:19530?collection=c&db=prod", root)["uri"] == "http://milvus.local:19530"
    assert parse_store("milvus+https://m.example:443", root)["uri"] == "https://m.example:443"
    for bad, why in [("redis://x", "unknown store"), ("milvus://h:1/path", "has no path"),
                     ("milvus:///data/v.sqlite", "ends in .db"), ("milvus:relative.db", "absolute path"),
                     ("milvus:?colection=x", "unknown setting 'colection'"), ("milvus:?collection=9x", "must be letters")]:
        with pytest.raises(LayerseekError, match=why):
            parse_store(bad, root)


#: where the Milvus tests run: milvus-lite here; LAYERSEEK_TEST_MILVUS=milvus://HOST:19530 runs
#: them against a Milvus server too
MILVUS = os.environ.get("LAYERSEEK_TEST_MILVUS", "milvus:")


def test_milvus_store_answers_like_faiss(photos, train, tmp_path):
    faiss_idx = Index.create(tmp_path / "faiss", "gem", **GLOBAL)
    address = MILVUS if MILVUS == "milvus:" else f"{MILVUS}?collection=t{os.getpid()}_{tmp_path.name[-6:]}"
    milvus_idx = Index.create(tmp_path / "milvus", "gem", store=address, **GLOBAL)
    faiss_idx.add_folder(photos)
    milvus_idx.add_folder(photos)
    assert milvus_idx.store.count() == 6 and milvus_idx.info()["search"].startswith("milvus ")
    queries = sorted(photos.glob("paris_*.jpg"))

    def answers(idx, **kw):
        return [[(h.path, h.score) for h in idx.search(q, top=4, **kw)] for q in queries]

    for kw in ({}, {"qe": 2}):
        for f, m in zip(answers(faiss_idx, **kw), answers(milvus_idx, **kw)):
            assert [p for p, _ in m] == [p for p, _ in f]
            np.testing.assert_allclose([s for _, s in m], [s for _, s in f], atol=1e-5)

    # remove and add go to Milvus too
    gone = photos / "paris_eiffel_000000.jpg"
    for idx in (faiss_idx, milvus_idx):
        assert idx.remove([gone]) == []
    assert milvus_idx.store.count() == 5
    for f, m in zip(answers(faiss_idx), answers(milvus_idx)):
        assert str(gone) not in [p for p, _ in m] and [p for p, _ in m] == [p for p, _ in f]

    # two stages: the Milvus index shortlists, a MOF index re-scores, as with FAISS
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mof = Index.create(tmp_path / "mof", "mof", train_on=str(train), **MOF)
    mof.add_folder(photos)
    q = photos / "paris_eiffel_000004.jpg"
    two_f = faiss_idx.search_two_stage(q, mof, top=4, shortlist=3)
    two_m = milvus_idx.search_two_stage(q, mof, top=4, shortlist=3)
    assert [h.path for h in two_m] == [h.path for h in two_f]
    milvus_idx.store.drop()
    for idx in (faiss_idx, milvus_idx, mof):
        idx.close()


def test_milvus_catches_up_after_a_kill_and_rebuilds_a_lost_collection(photos, tmp_path):
    idx = Index.create(tmp_path / "idx", "gem", store="milvus:", **GLOBAL)
    idx.add_folder(photos)
    # a change committed to the catalog by a process that died before telling Milvus
    victim = str(photos / "paris_louvre_000004.jpg")
    idx.catalog.commit_batch([], deletes=[victim])
    assert idx.store.count() == 6 and idx.catalog.store_seq() < idx.catalog.last_change()
    idx.store.client.release_collection(idx.store.spec["collection"])  # as after a Milvus restart
    idx.close()
    again = Index.open(tmp_path / "idx")
    hits = again.search(photos / "paris_louvre_000004.jpg", top=6)
    assert victim not in [h.path for h in hits] and len(hits) == 5 and again.store.count() == 5
    # the collection dropped behind the index's back: rebuilt from the catalog at the next search
    again.store.client.drop_collection(again.store.spec["collection"])  # by another tool, unknown to the store
    hits = again.search(photos / "paris_defense_000000.jpg", top=1)
    assert hits[0].path.endswith("paris_defense_000000.jpg") and again.store.count() == 5
    again.close()


def test_check_compares_the_milvus_collection_and_repair_rebuilds_it(photos, tmp_path):
    from layerseek.health import NOTE, PROBLEM, check, repair

    root = tmp_path / "idx"
    with Index.create(root, "gem", store="milvus:", **GLOBAL) as idx:
        idx.add_folder(photos)
        name, ids = idx.store.spec["collection"], sorted(e.id for e in idx.catalog.entries())
        assert check(root) == []
        # a vector changed, then one deleted, behind the index's back (another tool on the collection)
        c = idx.store.client
        c.upsert(name, [{"id": ids[0], "vec": -idx.catalog.vectors([ids[0]])[0]}])
        assert [(f.level, f.what) for f in check(root)] == [
            (PROBLEM, "1 of 6 sampled images are missing or hold another vector; `repair` rebuilds the collection")]
        c.delete(name, ids=[ids[1]])
        assert [(f.level, f.what) for f in check(root)] == [
            (PROBLEM, "holds 5 vectors, the catalog 6; `repair` rebuilds the collection"),
            (PROBLEM, "2 of 6 sampled images are missing or hold another vector; `repair` rebuilds the collection")]
    assert "rebuilt the Milvus collection (6 vectors)" in repair(root) and check(root) == []
    with Index.open(root) as idx:
        q = photos / "paris_louvre_000004.jpg"
        assert idx.search(q, top=1)[0].path == str(q) and idx.store.count() == 6
        # a change the catalog holds and Milvus not yet (a process killed in between): a note
        idx.catalog.commit_batch([], deletes=[str(q)])
        found = check(root)
        assert [(f.level, f.what) for f in found] == [  # the search's hubness neighbourhoods are behind too
            (NOTE, "1 image behind the catalog (brought up to date at the next search)"),
            (NOTE, "1 changes not yet applied (applied at the next search)")]
    # a Milvus that cannot be reached is named, not checked, and is not a problem of the index
    import json
    import sqlite3

    with sqlite3.connect(root / "catalog.sqlite") as conn:
        m = json.loads(conn.execute("SELECT value FROM meta WHERE key='manifest'").fetchone()[0])
        m["store"] = {"kind": "milvus", "uri": "http://127.0.0.1:1", "collection": "c", "db": ""}
        conn.execute("UPDATE meta SET value=? WHERE key='manifest'", (json.dumps(m),))
    (root / "manifest.json").write_text(json.dumps(m))
    found = check(root)
    assert [(f.level, f.where) for f in found] == [(NOTE, str(root / "cache" / "hubs-1.npz")),  # still behind
                                                   (NOTE, "milvus://127.0.0.1:1?collection=c")]
    assert found[1].what.startswith("not checked: cannot open Milvus") and "server unavailable" in found[1].what


def test_milvus_errors_are_one_line(photos, tmp_path):
    with pytest.raises(LayerseekError, match="a mof index keeps its inverted files"):
        Index.create(tmp_path / "m", "mof", store="milvus:", train_on=str(photos), **MOF)
    with pytest.raises(LayerseekError, match="http://127.0.0.1:1: cannot open Milvus"):
        Index.create(tmp_path / "nowhere", "gem", store="milvus://127.0.0.1:1", **GLOBAL)
    assert not (tmp_path / "nowhere" / "manifest.json").exists()
    idx = Index.create(tmp_path / "idx", "gem", store="milvus:", **GLOBAL)
    idx.close()
    with pytest.raises(LayerseekError, match="keeps its vectors in --store milvus:"):
        Index.open_or_create(tmp_path / "idx", "gem", store="faiss")
    # a collection of that name that holds vectors is never taken over
    shared = f"milvus://{tmp_path / 'shared.db'}?collection=taken"
    first = Index.create(tmp_path / "first", "gem", store=shared, **GLOBAL)
    first.add_folder(photos)
    first.close()
    with pytest.raises(LayerseekError, match="collection 'taken' already holds 6 vectors"):
        Index.create(tmp_path / "second", "gem", store=shared, **GLOBAL)
    # milvus-lite serves one process: a second one gets told why
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from layerseek.index import Index
        idx = Index.create({str(tmp_path / 'held')!r}, "gem", store="milvus:", backbone="mobilenet_v2")
        idx.store.sync()
        print("ready", flush=True)
        time.sleep(120)""")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        with Index.open(tmp_path / "held") as idx, pytest.raises(LayerseekError, match="one process at a time"):
            idx.search(photos / "paris_defense_000000.jpg")
    finally:
        holder.kill()


def test_cli_index_with_store_and_ray(ray_local, photos, tmp_path):
    run = CliRunner().invoke
    r = run(app, ["index", str(photos), "--index", str(tmp_path / "i"), "--method", "gem", "--backbone", "mobilenet_v2",
                  "--max-side", "384", "--store", "milvus:", "--ray", "local", "--ray-workers", "1"])
    assert r.exit_code == 3, r.output  # broken.jpg failed
    assert "6 added" in r.output and "1 failed" in r.output
    r = run(app, ["info", str(tmp_path / "i"), "--json"])
    assert '"store": "milvus://' in r.output and "milvus FLAT" in r.output
    r = run(app, ["search", str(tmp_path / "i"), str(photos / "paris_eiffel_000004.jpg"), "--top", "1", "--json"])
    assert r.exit_code == 0 and "paris_eiffel_000004.jpg" in r.output
    from fastapi.testclient import TestClient

    from layerseek.server.app import create_app

    with TestClient(create_app(tmp_path / "i"), base_url="http://localhost") as c:  # the web API searches the Milvus store too
        q = (photos / "paris_louvre_000004.jpg").read_bytes()
        got = c.post("/search?top=2", files={"file": ("q.jpg", q, "image/jpeg")}).json()
        assert got["results"][0]["path"].endswith("paris_louvre_000004.jpg")
    r = run(app, ["index", str(photos), "--index", str(tmp_path / "j"), "--store", "mongo://x"])
    assert r.exit_code != 0 and "unknown store 'mongo://x'" in r.output
