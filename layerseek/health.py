"""`layerseek check` and `layerseek repair`: an index directory examined against its own catalog.

The catalog (SQLite) is the truth: every file's row, vector and local features, a copy of the
manifest it was created with and the hashes of the learned files (whitening, MOF model). All else
in the directory is derived from it — the manifest (a copy kept for people and tools), the matrix,
HNSW graph, k-NN graph and MOF inverted files in `cache/`, and a Milvus store's collection — and
can be rebuilt from it. `check` reads without changing anything; `repair` writes the manifest back
from the catalog's copy, drops rows that cannot be read (so the next `index` adds those files
again) and rebuilds every cache (and the Milvus collection).
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .errors import LayerseekError, plural
from .ingest import MASS_REMOVAL_MIN, MASS_REMOVAL_SHARE
from .store.catalog import CATALOG, MANIFEST, SCHEMA_VERSION, Catalog, from_db, read_only_place, write_atomic
from .store.manifest import file_hashes, first_difference, made_with, validate

PROBLEM, NOTE = "problem", "note"
SAMPLE = 64  # HNSW rows whose stored vector is compared with the catalog's


@dataclass
class Finding:
    level: str  # PROBLEM: answers are wrong or the index is refused until repaired; NOTE: worth knowing
    where: str  # the file concerned
    what: str

    def line(self) -> str:
        return f"{self.level}: {self.where}: {self.what}"


def _examples(paths: list[str], n: int = 3) -> str:
    shown = ", ".join(repr(p) for p in paths[:n])
    return shown + (f" and {len(paths) - n} more" if len(paths) > n else "")


def _open_readonly(root: Path) -> sqlite3.Connection:
    if read_only_place(root):  # a read-only drive: WAL needs a -shm file it cannot make there
        return Catalog.connect_read_only(root / CATALOG)
    return sqlite3.connect(f"file:{root / CATALOG}?mode=ro", uri=True, timeout=30)


def _integrity(conn: sqlite3.Connection) -> list[str]:
    """SQLite's own check of the catalog: [] when sound, else its first messages."""
    rows = [r[0] for r in conn.execute("PRAGMA integrity_check(20)")]
    return [] if rows == ["ok"] else rows


def check(path: str | Path) -> list[Finding]:
    """Everything wrong with the index at `path`, and what is worth knowing (stale caches,
    files gone from disk); changes nothing."""
    root = Path(path)
    cat_file, man_file = root / CATALOG, root / MANIFEST
    if not cat_file.is_file():
        raise LayerseekError(f"{root}: no index here ({CATALOG} missing)")
    out: list[Finding] = []

    def problem(where, what):
        out.append(Finding(PROBLEM, str(where), what))

    def note(where, what):
        out.append(Finding(NOTE, str(where), what))

    try:
        conn = _open_readonly(root)
        bad = _integrity(conn)
        version = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    except sqlite3.DatabaseError as e:
        problem(cat_file, f"not a readable SQLite database ({e}); re-create the index")
        return out
    try:
        if bad:
            problem(cat_file, "SQLite integrity_check: " + "; ".join(bad[:3]))
        if not version or str(version[0]) != str(SCHEMA_VERSION):
            problem(cat_file, f"schema version {version[0] if version else None}, this layerseek reads "
                              f"{SCHEMA_VERSION}; re-create the index")
            return out
        recorded = Catalog.recorded_manifest(conn)
        manifest = None
        try:
            manifest = validate(json.loads(man_file.read_text()), man_file)
        except FileNotFoundError:
            problem(man_file, "missing")
        except (OSError, ValueError, LayerseekError) as e:
            problem(man_file, str(e).removeprefix(f"{man_file}: "))
        if recorded is None:
            note(cat_file, "keeps no copy of the manifest (made by an older layerseek); the next open records one")
        elif manifest is not None:
            diff = first_difference(made_with(manifest), made_with(recorded))
            if diff:
                problem(man_file, f"disagrees with the catalog: {diff}")
        manifest = recorded or manifest
        learned = Catalog.recorded_learned(conn)
        if learned is not None:
            now = file_hashes(root)
            for name, digest in sorted(learned.items()):
                if name not in now:
                    problem(root / name, "learned file missing; build the index again")
                elif now[name] != digest:
                    problem(root / name, "learned file changed since the index was made; build the index again")
        if manifest is None:
            return out
        _check_rows(conn, root, manifest, problem, note)
        _check_caches(conn, root, manifest, problem, note)
        if (manifest.get("store") or {}).get("kind") == "milvus":
            _check_milvus(conn, root, manifest, problem, note)
        _check_files(conn, root, note)
    finally:
        conn.close()
    return out


def _check_rows(conn, root: Path, manifest: dict, problem, note) -> None:
    cat_file = root / CATALOG
    dim = int(manifest["dim"])
    if dim:
        wrong = [r[0] for r in conn.execute("SELECT path FROM images WHERE length(vector) != ?", (4 * dim,))]
        if wrong:
            problem(cat_file, f"{len(wrong)} vectors of the wrong length ({_examples(wrong)}); `repair` drops them")
        nonfinite = []
        for path, blob in conn.execute("SELECT path, vector FROM images WHERE length(vector) = ?", (4 * dim,)):
            if not np.isfinite(np.frombuffer(blob, np.float32)).all():
                nonfinite.append(path)
        if nonfinite:
            problem(cat_file, f"{len(nonfinite)} vectors with NaN or infinity ({_examples(nonfinite)}); "
                              "`repair` drops them")
    orphans = conn.execute("SELECT COUNT(*) FROM features WHERE id NOT IN (SELECT id FROM images)").fetchone()[0]
    if orphans:
        problem(cat_file, f"{orphans} local-feature rows of no image; `repair` drops them")
    if manifest.get("verify"):
        without = conn.execute("SELECT COUNT(*) FROM images WHERE id NOT IN (SELECT id FROM features)").fetchone()[0]
        if without:
            note(cat_file, f"{plural(without, 'image has', 'images have')} no local features (verified as 0 inliers)")


def _check_caches(conn, root: Path, manifest: dict, problem, note) -> None:
    """The derived files against the catalog: behind is normal (brought up to date at the next
    search); unreadable is repaired by itself at the next search; different content with the
    catalog's generation on it would give wrong answers."""
    cache = root / "cache"
    if not cache.is_dir():
        return
    cat = Catalog(root, conn, manifest)  # its readers, on the read-only connection
    ids, hashes = cat.id_hashes()
    shas = cat.shas()
    dim = int(manifest["dim"])
    for f in sorted(cache.glob("vectors-*.npz")):
        note(f, "the matrix file of an older version (removed at the next search)")
    from .store.vectors import FaissStore

    hnsw_now = FaissStore(cat).uses_hnsw(len(ids))
    if (cache / "flat.npz").exists() or any(cache.glob("flat-*.npy")):
        if hnsw_now:  # an `auto` index that grew past ANN_THRESHOLD
            note(cache / "flat.npz", "kept from when the index was searched exactly (taken up again if it is)")
        else:
            _check_flat(conn, cache, ids, hashes, dim, problem, note)
    if (cache / "hnsw.npz").exists() or any(cache.glob("hnsw*.faiss")):
        if not hnsw_now:
            note(cache / "hnsw.npz", "kept from when the index was searched by its HNSW graph (taken up again if "
                                     "it is)")
        else:
            _check_hnsw(conn, cache, ids, hashes, problem, note)
    for f in sorted([*cache.glob("graph-*.npz"), *cache.glob("hubs-*.npz")]):  # diffusion, hubness correction
        from .verify.diffusion import KnnGraph

        try:
            graph, extra = KnnGraph.load(f)
            held = dict(zip((int(i) for i in graph.ids), (str(s) for s in extra["shas"])))
        except (OSError, ValueError, KeyError) as e:
            note(f, f"unreadable ({str(e).split('.')[0]}); rebuilt at the next search")
            continue
        if len(graph.ids) != len(held) or not np.isin(graph.neighbours[graph.neighbours >= 0], graph.ids).all():
            problem(f, "neighbour lists name images the graph does not hold; `repair` rebuilds it")
        behind = sum(1 for i, s in held.items() if shas.get(i) != s) + sum(1 for i in shas if i not in held)
        if behind:
            note(f, f"{plural(behind, 'image')} behind the catalog (brought up to date at the next search)")
    for d in sorted([*cache.glob("mof-*"), *cache.glob("words-*")]):
        try:
            held = {int(k): v for k, v in json.loads((d / "held.json").read_text()).items()}
        except (OSError, ValueError, AttributeError) as e:
            note(d, f"unreadable ({str(e).split('.')[0]}); rebuilt at the next search")
            continue
        behind = sum(1 for i, s in held.items() if shas.get(i) != s) + sum(1 for i in shas if i not in held)
        if behind:
            note(d, f"{plural(behind, 'image')} behind the catalog (brought up to date at the next search)")


def _check_flat(conn, cache: Path, ids: np.ndarray, hashes: np.ndarray, dim: int, problem, note) -> None:
    """The exact store's rows: every row of an image unchanged since is compared with the catalog."""
    from .store.vectors import FlatRows

    rows = FlatRows.load(cache, dim)
    if rows is None:
        note(cache / "flat.npz", "unreadable, or its matrix file is; rebuilt at the next search")
        return
    removed, added = rows.diff(ids, hashes)
    if len(removed) or len(added):
        note(cache / "flat.npz", f"{len(removed)} rows to drop and {len(added)} to add (applied at the next search)")
    hash_of = dict(zip(ids.tolist(), hashes.tolist()))
    row_of = {int(label): r for r, (label, h) in enumerate(zip(rows.labels.tolist(), rows.hashes.tolist()))
              if label >= 0 and hash_of.get(label) == h}  # a changed or removed image: pending, not damage
    n, wrong = len(rows.main), 0
    for image_id, vector in conn.execute("SELECT id, vector FROM images ORDER BY id"):
        r = row_of.get(image_id)
        if r is not None and (rows.main[r] if r < n else rows.recent[r - n]).tobytes() != bytes(vector):
            wrong += 1
    if wrong:
        problem(cache / rows.main_file,
                f"{wrong} of {len(row_of)} rows hold another vector than the catalog; `repair` rebuilds them")


def _check_milvus(conn, root: Path, manifest: dict, problem, note) -> None:
    """The Milvus collection against the catalog: changes not yet applied (a note: the next search
    applies them), the number of vectors, and a sample of them compared with the catalog's."""
    from .store.vectors import MilvusStore, store_address

    cat = Catalog(root, conn, manifest)
    store = MilvusStore(cat, manifest["store"])
    where, name = store_address(store.spec), store.spec["collection"]
    try:
        try:
            c = store.client
            if not c.has_collection(name):
                note(where, "collection missing; rebuilt from the catalog at the next search")
                return
            c.load_collection(name)
            held = store.count()
            _, up, gone = cat.changes_after(cat.store_seq())
            pending = set(up) | set(gone)
            ids = cat.id_hashes()[0]
            if pending:
                note(where, f"{len(pending)} changes not yet applied (applied at the next search)")
            elif held != len(ids):
                problem(where, f"holds {plural(held, 'vector')}, the catalog {len(ids):,}; `repair` rebuilds the collection")
            settled = ids[~np.isin(ids, list(pending))] if pending else ids
            if not len(settled):
                return
            sample = np.random.default_rng(0).choice(settled, min(SAMPLE, len(settled)), replace=False)
            got = {int(r["id"]): np.asarray(r["vec"], np.float32)
                   for r in c.get(name, ids=[int(i) for i in sample], output_fields=["vec"])}
        except LayerseekError as e:
            note(where, f"not checked: {str(e).split(': ', 1)[-1]}")
            return
        except Exception as e:  # pymilvus raises its own types
            note(where, f"not checked: Milvus failed ({str(e).splitlines()[0] if str(e) else type(e).__name__})")
            return
        want = cat.vectors(sample.tolist())
        wrong = sum(1 for i, v in zip(sample.tolist(), want) if i not in got or not np.allclose(got[i], v, atol=1e-6))
        if wrong:
            problem(where, f"{wrong} of {len(sample)} sampled images are missing or hold another vector; "
                           "`repair` rebuilds the collection")
    finally:
        store.close()


def _check_hnsw(conn, cache: Path, ids: np.ndarray, hashes: np.ndarray, problem, note) -> None:
    from .store.vectors import HnswGraph

    g = HnswGraph.load(cache)
    if g is None:
        note(cache / "hnsw.npz", "unreadable, or a graph file it names is; rebuilt at the next search")
        return
    hash_of = dict(zip(ids.tolist(), hashes.tolist()))
    removed, added = g.diff(ids, hashes)
    if len(removed) or len(added):
        note(cache / "hnsw.npz", f"{len(removed)} rows to drop and {len(added)} to add (applied at the next search)")
    live = np.flatnonzero(g.labels >= 0)
    if not len(live):
        return
    sample = np.random.default_rng(0).choice(live, min(SAMPLE, len(live)), replace=False)
    wrong = 0
    for row in sample:
        label = int(g.labels[row])
        if hash_of.get(label) != int(g.hashes[row]):
            continue  # an image changed or removed since: a pending change, not damage
        got = conn.execute("SELECT vector FROM images WHERE id=?", (label,)).fetchone()
        if not np.allclose(g.reconstruct(int(row)), np.frombuffer(got[0], np.float32), atol=1e-5):
            wrong += 1
    if wrong:
        problem(cache / g.files[0],
                f"{wrong} of {len(sample)} sampled rows hold another vector than the catalog; `repair` rebuilds it")


def _check_files(conn, root: Path, note) -> None:
    missing, changed = [], []
    for path, size, mtime in conn.execute("SELECT path, size, mtime_ns FROM images"):
        try:
            st = os.stat(path.encode("utf-8") if isinstance(path, str) else path)  # the bytes to_db stored
        except OSError:
            missing.append(path)
            continue
        if st.st_size != size or st.st_mtime_ns != mtime:
            changed.append(path)
    if missing:
        total = conn.execute("SELECT count(*) FROM images").fetchone()[0]
        many = len(missing) >= MASS_REMOVAL_MIN and len(missing) > MASS_REMOVAL_SHARE * total
        note(root / CATALOG, f"{len(missing)} indexed files are gone from disk ({_examples(missing)}); " +
             ("so many that the next `index` of their folder refuses to forget them (a moved or unmounted folder?): "
              "`index` the folder where they are now, or run it with --allow-mass-removal to forget them"
              if many else "the next `index` of their folder drops them"))
    if changed:
        note(root / CATALOG, f"{len(changed)} indexed files changed on disk since ({_examples(changed)}); "
                             "the next `index` of their folder indexes them again")


def repair(path: str | Path, catching_up: Callable[[str, int, int, float], None] | None = None) -> list[str]:
    """Bring the index at `path` back to what its catalog says; returns what was done. Fails (one
    line) when the catalog itself is beyond repair or learned files are lost: then only building
    the index again helps. `catching_up`: `Index.catching_up` while the caches are built again."""
    root = Path(path)
    found = check(root)
    problems = [f for f in found if f.level == PROBLEM]
    done: list[str] = []
    cat_file, man_file = root / CATALOG, root / MANIFEST
    fatal = [f for f in problems if f.where == str(cat_file) and ("SQLite" in f.what or "schema" in f.what)]
    if any("integrity_check" in f.what for f in fatal):
        conn = sqlite3.connect(cat_file, timeout=30)
        try:
            conn.execute("REINDEX")  # a damaged index b-tree is rebuilt from its table
            if _integrity(conn):
                raise LayerseekError(f"{cat_file}: damaged beyond repair ({'; '.join(_integrity(conn)[:2])}); "
                                     "re-create the index")
        finally:
            conn.close()
        done.append("rebuilt the catalog's SQLite indexes (REINDEX)")
    elif fatal:
        raise LayerseekError(f"{fatal[0].where}: {fatal[0].what}")
    lost = [f for f in problems if "learned file" in f.what]
    if lost:
        raise LayerseekError(f"{lost[0].where}: {lost[0].what}")
    conn = sqlite3.connect(cat_file, timeout=30)
    try:
        recorded = Catalog.recorded_manifest(conn)
        if any(f.where == str(man_file) for f in problems):
            if recorded is None:
                raise LayerseekError(f"{man_file}: damaged, and the catalog keeps no copy of it (made by an older "
                                     "layerseek); re-create the index")
            write_atomic(man_file, json.dumps(recorded, indent=2))
            done.append(f"wrote {MANIFEST} back from the catalog's copy")
    finally:
        conn.close()
    idx = _open_index(root)
    idx.catching_up = catching_up
    try:
        with idx.writing():
            dropped = _drop_damaged_rows(idx)
            if dropped:
                done.append(f"dropped {plural(dropped, 'damaged row')} (the next `index` of their folder adds the files again)")
            shutil.rmtree(root / "cache", ignore_errors=True)
            done.extend(_rebuild_caches(idx))
    finally:
        idx.close()
    return done


def _open_index(root: Path):
    from .index import Index

    return Index.open(root)


def _drop_damaged_rows(idx) -> int:
    cat = idx.catalog
    dim = cat.dim
    bad = []  # paths
    if dim:
        bad = [from_db(r[0]) for r in cat.conn.execute("SELECT path FROM images WHERE length(vector) != ?", (4 * dim,))]
        bad += [from_db(p) for p, blob in cat.conn.execute("SELECT path, vector FROM images WHERE length(vector) = ?",
                                                  (4 * dim,)) if not np.isfinite(np.frombuffer(blob, np.float32)).all()]
    orphans = cat.conn.execute("SELECT COUNT(*) FROM features WHERE id NOT IN (SELECT id FROM images)").fetchone()[0]
    if bad:
        idx._commit(deletes=bad)
    if orphans:
        cat.conn.execute("DELETE FROM features WHERE id NOT IN (SELECT id FROM images)")
    return len(bad)


def _rebuild_caches(idx) -> list[str]:
    """Every derived structure built again from the catalog."""
    done = []
    n = idx.catalog.count()
    if idx.kind == "local":
        idx.engine()
        done.append(f"rebuilt the MOF inverted files ({plural(n, 'image')})")
        return done
    if idx.store.kind == "milvus":  # the catalog holds every vector: the collection is made again from it
        idx.store.drop()
        idx.store.rebuild()
        done.append(f"rebuilt the Milvus collection ({plural(n, 'vector')})")
    elif idx.store.kind == "faiss" and idx.store.uses_hnsw(n):
        idx.store.graph()
        done.append("rebuilt the HNSW graph")
    elif idx.store.kind == "faiss":
        idx.store.flat(rebuild=True)
        done.append(f"rebuilt the vector matrix ({plural(n, 'image')})")
    if (idx.verify_settings or {}).get("diffusion"):
        from .verify.diffusion import FULL_GRAPH_MAX

        idx.update_graph()
        if n <= FULL_GRAPH_MAX:  # larger: each query builds its own, nothing is kept
            done.append("rebuilt the k-nearest-neighbour graph of the diffusion")
    elif idx.catalog.manifest.get("hubness"):
        idx.update_graph()
        done.append("rebuilt the neighbourhoods of the hubness correction")
    return done


def report(findings: list[Finding]) -> dict:
    return {"problems": [asdict(f) for f in findings if f.level == PROBLEM],
            "notes": [asdict(f) for f in findings if f.level == NOTE]}

