"""A searchable index of a photo collection: incremental, resumable indexing, search, removal.

    from layerseek.index import Index
    idx = Index.create("photos.lsx", method="fcrow", backbone="mobilenet_v2")   # or Index.open(...)
    report = idx.add_folder("~/Photos")          # new, changed and deleted files found
    hits = idx.search("query.jpg", top=10)       # [Hit(id, path, score), ...]
"""
from __future__ import annotations

import json
import os
import shutil
import threading
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .describe import file_sha256
from .errors import ImageError, LayerseekError
from .images import is_image_name, load_image
from .methods import GlobalMethod, make_method, method_from_params
from .progress import versions
from .local.mof import rerank_head
from .store.catalog import Catalog, is_under
from .store.vectors import ANN_MODES, ANN_THRESHOLD, MilvusStore, open_store, parse_store, store_address  # noqa: F401 (re-exported)

if TYPE_CHECKING:
    from .local.method import LocalMethod


#: Share of a folder's indexed files that one `index` run may forget without --allow-mass-removal.
MASS_REMOVAL_SHARE = 0.5
#: ... counted only from this many files on (deleting one photo of two is not a lost drive).
MASS_REMOVAL_MIN = 3


def absolute(path: str | Path) -> Path:
    """An absolute path with its folders resolved but not its last component: a symlink keeps
    its own name (as a folder walk from a resolved root names it)."""
    p = Path(path).expanduser()
    return Path(os.path.realpath(p.parent)) / p.name


@dataclass
class Hit:
    id: int
    path: str
    score: float


@dataclass
class IndexReport:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    reused: int = 0  # same content already indexed under another name: vector copied
    failed: list[str] = field(default_factory=list)  # "path: reason"
    skipped: list[str] = field(default_factory=list)  # not image files
    unreadable: list[str] = field(default_factory=list)  # "folder: reason": not listed, entries kept

    def summary(self) -> str:
        return (f"{self.added} added, {self.updated} updated, {self.removed} removed, {self.unchanged} unchanged"
                + (f", {self.reused} copied from identical files" if self.reused else "")
                + f"; {len(self.failed)} failed, {len(self.skipped)} not images"
                + (f", {len(self.unreadable)} folders unreadable (their entries kept)" if self.unreadable else ""))


def learn_whitening(method: GlobalMethod, collection: str, threads: int | None = None,
                    progress: Callable[[int, int], None] | None = None) -> list[str]:
    """Fit `method`'s per-layer whitening on a collection's images (descriptors cached as for
    `eval`). Returns the images that failed."""
    from .eval.datasets import get_dataset
    from .eval.runner import describe_dataset

    ds = get_dataset(collection)
    db, _, errors = describe_dataset(ds, method.backbone, method.layers, method.max_side, threads, progress,
                                     [method.pooling], queries=False)
    vecs = [v for v in db if v is not None]
    if len(vecs) < 2:
        raise LayerseekError(f"{collection}: whitening needs at least 2 readable images, found {len(vecs)}")
    method.fit_whitening([np.stack([v[f"{method.pooling}/{layer}"] for v in vecs]) for layer in method.layers])
    return errors


class Index:
    def __init__(self, catalog: Catalog, method: GlobalMethod | LocalMethod, threads: int | None = None):
        self.catalog = catalog
        self.method = method
        self.threads = threads
        self._fx = None
        self._store = None  # where the global vectors are searched (opened on first use)
        self._engine = None  # MOF: (generation, MOFEngine, {id: sha256} of what it holds)
        self._lock = threading.Lock()  # the extractor and SQLite connection are used one at a time

    # -- life cycle ---------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, method: str = "fcrow", threads: int | None = None, ann: str = "auto",
               learn_progress: Callable[[int, int], None] | None = None, store: str | None = None,
               **options) -> Index:
        """A new, empty index. With `whiten_on` (a dataset name, ground-truth file or folder) a PCA
        whitening per layer is learned on that collection first and stored in the index. `store`
        says where the global vectors are searched: "faiss" (default, embedded) or a Milvus
        address (see `layerseek.store.vectors`)."""
        if ann not in ANN_MODES:
            raise LayerseekError(f"unknown search mode {ann!r}; valid: {', '.join(ANN_MODES)}")
        if Catalog.exists(path):
            raise LayerseekError(f"{path}: already holds an index")
        store_spec = parse_store(store, path)
        m = make_method(method, **options)
        if m.kind == "local" and store_spec["kind"] != "faiss":
            raise LayerseekError("the Milvus store holds global vectors; a mof index keeps its inverted files "
                                 "in the index directory (leave out --store)")
        # Learned state is written before the manifest: a directory without one is not an index yet.
        if m.kind == "local":
            if not m.train_on:
                raise LayerseekError("mof learns its vocabularies on another collection: give --train-on "
                                     "(a dataset name, ground-truth .json or folder of photos)")
            m.fit(m.train_on, threads, learn_progress)
            Path(path).mkdir(parents=True, exist_ok=True)
            m.save_model(path)
            dim = 0  # the catalog holds each image's words and signatures as bytes
        else:
            if m.whiten_on:
                learn_whitening(m, m.whiten_on, threads, learn_progress)
                Path(path).mkdir(parents=True, exist_ok=True)
                m.save_whitening(path)
            dim = sum(s.stop - s.start for s in m.segments())
        if store_spec["kind"] != "faiss":
            Path(path).mkdir(parents=True, exist_ok=True)
            milvus = MilvusStore(None, store_spec)
            try:
                milvus.create(dim, ann)
            finally:
                milvus.close()
        cat = Catalog.create(path, {"params": m.params(), "dim": dim, "ann": ann, "store": store_spec,
                                    "versions": versions()})
        return cls(cat, m, threads)

    @classmethod
    def open(cls, path: str | Path, threads: int | None = None) -> Index:
        cat = Catalog.open(path)
        m = method_from_params(cat.manifest["params"])
        m = m.load_model(cat.root) if m.kind == "local" else m.load_whitening(cat.root)
        return cls(cat, m, threads)

    @classmethod
    def open_or_create(cls, path: str | Path, method: str | None = None, threads: int | None = None,
                       ann: str | None = None, learn_progress: Callable[[int, int], None] | None = None,
                       store: str | None = None, **options) -> Index:
        """Open an existing index (checking that the method asked for is its method) or create one."""
        if Catalog.exists(path):
            idx = cls.open(path, threads)
            idx.check_method(method, **options)
            have = idx.catalog.manifest.get("ann", "auto")
            have_store = idx.catalog.store_settings
            problem = None
            if ann is not None and ann != have:
                problem = f"searches with --ann {have}"
            elif store is not None and parse_store(store, path) != have_store:
                problem = f"keeps its vectors in --store {store_address(have_store)}"
            if problem:
                idx.close()
                raise LayerseekError(f"{path}: this index {problem}, fixed when it was created; build another index "
                                     "for another setting")
            return idx
        return cls.create(path, method or "fcrow", threads, ann or "auto", learn_progress, store, **options)

    def check_method(self, method: str | None = None, **options) -> None:
        """Fail clearly when a method or option asked for differs from the index's."""
        have = self.catalog.manifest["params"]
        asked = {"method": method, **options}
        for key, value in asked.items():
            if value is None:
                continue
            mine = have.get(key)
            if key == "layers":
                value = list(value)
            if value != mine:
                raise LayerseekError(f"{self.catalog.root}: this index was built with {key} {mine!r}, not {value!r}; "
                                     "search it with its own settings or build another index")

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
        self.catalog.close()

    @property
    def store(self):
        """Where the global vectors are searched: FaissStore or MilvusStore, in step with the catalog."""
        if self._store is None:
            self._store = open_store(self.catalog)
        return self._store

    def _commit(self, upserts=(), touches=(), failures=(), deletes=()) -> None:
        """One catalog transaction, then the vector store brought in step (under the lock)."""
        with self._lock:
            self.catalog.commit_batch(upserts, touches, failures, deletes)
            self.store.sync()

    def _seal(self) -> None:
        """After a run of work: the store indexes what was written (Milvus flushes; FAISS: nothing)."""
        with self._lock:
            self.store.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- encoding ------------------------------------------------------------------------------
    @property
    def fx(self):
        if self._fx is None:
            from .backbones import FeatureExtractor

            self._fx = FeatureExtractor(self.method.backbone, self.method.layers, threads=self.threads)
        return self._fx

    def encode_array(self, img: np.ndarray) -> np.ndarray:
        return self.method.encode(self.fx(img))[0]

    def encode_query(self, image: str | Path | np.ndarray, data: bytes | None = None):
        """A query image (file, its bytes or an H x W x 3 array) as this index's method encodes
        queries: a fused vector (global) or words and signatures with multiple assignment (mof)."""
        with self._lock:
            img = image if isinstance(image, np.ndarray) else load_image(image, max_side=self.method.max_side, data=data)
            if self.method.kind == "local":
                return self.method.encode_query(self.fx(img))
            return self.encode_array(img)

    # -- indexing -----------------------------------------------------------------------------
    def add_folder(self, folder: str | Path, batch: int = 16, workers: int = 2,
                   progress: Callable[[int, int], None] | None = None, remove_missing: bool = True,
                   ray: str | None = None, ray_workers: int | None = None,
                   allow_mass_removal: bool = False) -> IndexReport:
        """Index every image under `folder` (recursively) that is new or changed, and forget the
        indexed files under it that are gone. Work is committed every `batch` images, so a killed
        run loses at most one batch and a rerun goes on from there. With `ray` (an address, or
        "local" for a Ray started here) decoding and the network run as a Ray Data pipeline of
        `ray_workers` actors (default: one per GPU, else one per CPU).

        Forgetting needs evidence: a folder that is missing, unreadable or empty while the index
        holds files under it, or a run that would forget more than MASS_REMOVAL_SHARE of them, is
        refused (LayerseekError, nothing changed) unless `allow_mass_removal`. Entries under
        subfolders that cannot be listed are kept, and those folders reported."""
        folder = Path(folder).expanduser()
        root = folder.resolve()
        held = sum(1 for _ in self.catalog.entries(under=str(root))) if remove_missing else 0
        confirm = "run again with --allow-mass-removal (or --prune) to forget them"
        if not folder.is_dir():
            if not held:
                raise LayerseekError(f"{folder}: not a folder")
            if not allow_mass_removal:
                raise LayerseekError(f"{folder}: missing or not a folder, and the index holds {held} files under it; "
                                     f"nothing was removed ({confirm})")
            report = IndexReport()
            self._forget_under(root, set(), [], report)
            return report
        report = IndexReport()
        seen: set[str] = set()
        todo: list[tuple[str, int, int]] = []
        unreadable: list[str] = []

        def cannot_list(err: OSError) -> None:
            unreadable.append(err.filename or str(err))
            report.unreadable.append(f"{err.filename}: {err.strerror or err}")

        listed = 0
        for dirpath, dirnames, filenames in os.walk(root, onerror=cannot_list):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                listed += 1
                p = Path(dirpath) / name
                if not is_image_name(p):
                    report.skipped.append(str(p))
                    continue
                seen.add(str(p))
                self._plan(p, report, todo)
        if held and not allow_mass_removal:
            if str(root) in unreadable:
                raise LayerseekError(f"{folder}: cannot be read, and the index holds {held} files under it; nothing "
                                     f"was removed ({confirm})")
            if not listed:
                raise LayerseekError(f"{folder}: empty (a drive not mounted?), and the index holds {held} files under "
                                     f"it; nothing was removed ({confirm})")
        self.catalog.add_root(str(root))
        if remove_missing:
            self._forget_under(root, seen, unreadable, report, held if not allow_mass_removal else None)
        self._index_files(todo, report, batch, workers, progress, ray, ray_workers)
        return report

    def _forget_under(self, root: Path, seen: set[str], unreadable: list[str], report: IndexReport,
                      held: int | None = None) -> None:
        """Forget the entries (and failure records) under `root` not `seen`, except those under an
        `unreadable` folder. With `held` (entries under root), refuse to forget more than
        MASS_REMOVAL_SHARE of them (and at least MASS_REMOVAL_MIN)."""
        def kept(p: str) -> bool:
            return p in seen or any(is_under(p, u) for u in unreadable)

        gone = [e.path for e in self.catalog.entries(under=str(root)) if not kept(e.path)]
        if held is not None and len(gone) >= MASS_REMOVAL_MIN and len(gone) > MASS_REMOVAL_SHARE * held:
            raise LayerseekError(f"{root}: {len(gone)} of the {held} indexed files under it are gone; nothing was "
                                 f"removed (run again with --allow-mass-removal, or --prune, to forget them)")
        gone_failures = [p for p, _ in self.catalog.failures() if is_under(p, str(root)) and not kept(p)]
        if gone or gone_failures:
            self._commit(deletes=gone + gone_failures)
            report.removed = len(gone)

    def add_files(self, paths: Iterable[str | Path], batch: int = 16, workers: int = 2,
                  progress: Callable[[int, int], None] | None = None, ray: str | None = None,
                  ray_workers: int | None = None) -> IndexReport:
        """Index these image files (new or changed ones; unchanged ones are left as they are)."""
        report, todo = IndexReport(), []
        for p in paths:
            p = absolute(p)
            if not p.is_file():
                report.failed.append(f"{p}: missing")
            else:
                real = os.path.realpath(p)
                if self.catalog.root_of(real) is None:
                    self.catalog.add_root(real)  # a file indexed on its own is its own root
                self._plan(p, report, todo)
        self._index_files(todo, report, batch, workers, progress, ray, ray_workers)
        return report

    def _plan(self, p: Path, report: IndexReport, todo: list) -> None:
        """Queue file p unless it is indexed and unchanged, or failed and unchanged since."""
        try:
            st = p.stat()
        except OSError as e:
            report.failed.append(f"{p}: unreadable ({e.strerror})")
            return
        key = str(p)
        e = self.catalog.by_path(key)
        if e is not None and (e.size, e.mtime_ns) == (st.st_size, st.st_mtime_ns):
            report.unchanged += 1
            return
        failed = self.catalog.failure_record(key)
        if failed is not None and failed[:2] == (st.st_size, st.st_mtime_ns):
            report.failed.append(f"{key}: {failed[2]} (unchanged since it failed)")
            return
        todo.append((key, st.st_size, st.st_mtime_ns))

    def _prepare(self, item):
        """In a worker thread: hash the file and, unless its content is already indexed, decode it."""
        path, size, mtime = item
        try:
            sha = file_sha256(path)
        except OSError as e:
            return item, None, None, ImageError(path, "unreadable", e.strerror or str(e))
        existing = self.catalog_sha_known(sha, path)
        if existing:
            return item, sha, None, None
        try:
            return item, sha, load_image(path, max_side=self.method.max_side), None
        except ImageError as e:
            return item, sha, None, e

    def catalog_sha_known(self, sha: str, path: str) -> bool:
        # A separate read-only connection per thread: sqlite3 connections are not shared across threads.
        import sqlite3

        local = getattr(self, "_tl", None)
        if local is None:
            local = self._tl = threading.local()
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = sqlite3.connect(self.catalog.root / "catalog.sqlite", timeout=30)
        return conn.execute("SELECT 1 FROM images WHERE sha256=? LIMIT 1", (sha,)).fetchone() is not None

    def _encode_image(self, img: np.ndarray) -> tuple:
        with self._lock:
            return self.encode_array(img), img.shape[1], img.shape[0]

    def _local_results(self, todo, workers: int):
        """Yield ((path, size, mtime_ns), sha256, (vector, width, height) or None when the content
        is indexed already, ImageError or None): threads hash and decode ahead, the network runs here."""
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            window: deque = deque()
            it = iter(todo)
            for item in it:  # keep a bounded number of decoded images in flight
                window.append(pool.submit(self._prepare, item))
                if len(window) >= 2 * max(1, workers):
                    break
            while window:
                item, sha, img, err = window.popleft().result()
                nxt = next(it, None)
                if nxt is not None:
                    window.append(pool.submit(self._prepare, nxt))
                yield item, sha, (None if img is None else self._encode_image(img)), err

    def _index_files(self, todo, report: IndexReport, batch: int, workers: int, progress,
                     ray: str | None = None, ray_workers: int | None = None) -> None:
        self._encode_and_commit(todo, report, batch, workers, progress, ray, ray_workers)
        if todo:  # a run cut short is sealed by the next one
            self._seal()

    def _encode_and_commit(self, todo, report: IndexReport, batch: int, workers: int, progress,
                           ray: str | None = None, ray_workers: int | None = None) -> None:
        """Encode `todo` (locally, or on Ray when `ray` is an address) and commit the results
        every `batch` files."""
        total = len(todo)
        if progress:
            progress(0, total)
        if not todo:
            return
        if ray:
            from .distributed import ray_results

            results = ray_results(self, todo, ray, ray_workers)
        else:
            results = self._local_results(todo, workers)
        ups, touches, fails = [], [], []

        def flush():
            self._commit(ups, touches, fails)
            ups.clear(), touches.clear(), fails.clear()

        for done, ((path, size, mtime), sha, enc, err) in enumerate(results, 1):
            old = self.catalog.by_path(path)
            if err is None and old is not None and old.sha256 == sha:
                touches.append((path, size, mtime))
                report.unchanged += 1
            elif err is None and enc is None:  # identical content indexed under another name: copy its vector
                enc = self.catalog.indexed_content(sha)
                if enc is None:  # Ray's content filter tests a 64-bit prefix: rarely, a false match
                    try:
                        enc = self._encode_image(load_image(path, max_side=self.method.max_side))
                    except ImageError as e:
                        err = e
                else:
                    report.reused += 1
            if err is not None:
                fails.append((path, f"{err.reason}" + (f" ({err.detail})" if err.detail else ""), size, mtime))
                report.failed.append(str(err))
            elif enc is not None:
                vec, width, height = enc
                ups.append((path, size, mtime, sha, width, height, vec))
                report.updated += old is not None
                report.added += old is None
            if len(ups) + len(touches) + len(fails) >= batch:
                flush()
            if progress:
                progress(done, total)
        flush()

    def find(self, path: str | Path) -> list:
        """The catalog entries a user's path names: the indexed file itself, or (for a symlink
        indexed under its own name) the link or the file it points to."""
        named = self.catalog.by_path(str(absolute(path)))
        if named is not None:
            return [named]
        return self.catalog.by_real_path(os.path.realpath(Path(path).expanduser()))

    def remove(self, paths: Iterable[str | Path]) -> list[str]:
        """Forget these files (the files themselves are not touched); a symlink may be named by
        its own path or its target's. Returns the paths that were not in the index."""
        keys, missing = [], []
        for p in paths:
            found = self.find(p)
            keys += [e.path for e in found]
            if not found:
                missing.append(str(p))
        self._commit(deletes=keys)
        self._seal()
        return missing

    # -- search -------------------------------------------------------------------------------
    def _top(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            self.store.sync()  # another process may have changed the catalog
            return self.store.search(q, k)

    def search_vector(self, q: np.ndarray, top: int = 10, qe: int = 0, exclude_id: int | None = None) -> list[Hit]:
        """The `top` best images for a vector of this index's method, from its store (FAISS or
        Milvus); with `qe`, average query expansion over the first `qe` (vectors from the catalog)."""
        q = np.asarray(q, dtype=np.float32)  # a float64 query would upcast the whole matrix (10x slower)
        extra = 1 if exclude_id is not None else 0
        ids, scores = self._top(q, top + extra)
        if qe > 0:
            first = [i for i in ids if i != exclude_id][:qe]
            if len(first) < qe:
                first = [i for i in self._top(q, qe + extra)[0] if i != exclude_id][:qe]
            q = self.method.expand(q, self.catalog.vectors(first))
            ids, scores = self._top(q, top + extra)
        hits = []
        for i, s in zip(ids, scores):
            if i == exclude_id:
                continue
            e = self.catalog.by_id(int(i))
            hits.append(Hit(int(i), e.path if e else "?", float(s)))
        return hits[:top]

    def search(self, image: str | Path | np.ndarray, top: int = 10, qe: int = 0, data: bytes | None = None) -> list[Hit]:
        """The `top` most similar indexed images to an image file, its bytes or an H x W x 3 array."""
        if self.method.kind == "local" and qe:
            raise LayerseekError("query expansion is for the global methods; a mof index has none")
        q = self.encode_query(image, data)
        if self.method.kind == "local":
            return self.search_local(q, top)
        return self.search_vector(q, top, qe)

    def search_two_stage(self, image: str | Path | np.ndarray, local: Index, top: int = 10, shortlist: int = 100,
                         data: bytes | None = None) -> list[Hit]:
        """Two stages: this (global) index shortlists its `shortlist` best images, the MOF index
        `local` of the same photos re-scores them. Returns the re-ordered head with MOF scores;
        a shortlisted file the MOF index lacks keeps its place after the scored ones."""
        if self.method.kind != "global" or local.method.kind != "local":
            raise LayerseekError("two-stage search needs a global index first and a mof index second")
        first = self.search(image, top=max(shortlist, top), data=data)
        scores = dict(local.engine().search(local.encode_query(image, data)))
        local_id = {}
        for h in first[:shortlist]:
            e = local.catalog.by_path(h.path)
            local_id[h.id] = e.id if e else None
        # a shortlisted file the MOF index lacks scores nan and goes after the scored ones
        mof_score = {i: (scores.get(j, 0.0) if j is not None else float("nan")) for i, j in local_id.items()}
        by_id = {h.id: h for h in first}
        order = rerank_head([h.id for h in first], mof_score, shortlist)
        return [Hit(i, by_id[i].path, mof_score[i] if i in mof_score else by_id[i].score) for i in order][:top]

    # -- MOF ----------------------------------------------------------------------------------
    def engine(self):
        """The MOF inverted files, in step with the catalog: images added, changed or removed
        since they were last saved are added to or removed from them, never rebuilt whole."""
        from .local.method import unpack
        from .local.mof import MOFEngine

        gen = self.catalog.generation()
        if self._engine is not None and self._engine[0] == gen:
            return self._engine[1]
        cache = self.catalog.root / "cache"
        if self._engine is None:
            engine, held = MOFEngine(self.method.model), {}
            saved = sorted(cache.glob("mof-*"), key=lambda p: int(p.name.split("-")[1]))
            if saved:
                try:
                    engine.load_files(saved[-1])
                    held = json.loads((saved[-1] / "held.json").read_text())
                    held = {int(k): v for k, v in held.items()}
                except (OSError, ValueError, KeyError):
                    engine, held = MOFEngine(self.method.model), {}
        else:
            _, engine, held = self._engine
        now = self.catalog.shas()
        for i in [i for i, sha in held.items() if now.get(i) != sha]:
            engine.remove(i)
            del held[i]
        todo = [i for i in now if i not in held]
        for i, sha, payload in self.catalog.payloads(todo):
            engine.add(i, unpack(payload))
            held[i] = sha
        if todo or not (cache / f"mof-{gen}").is_dir():
            self._save_engine(engine, held, gen)
        self._engine = (gen, engine, held)
        return engine

    def _save_engine(self, engine, held: dict, gen: int) -> None:
        cache = self.catalog.root / "cache"
        tmp = cache / f"mof-{gen}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        engine.save(tmp)
        (tmp / "held.json").write_text(json.dumps(held))
        final = cache / f"mof-{gen}"
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        # read from the files under their final name: the next save links their unchanged bases
        engine.load_files(final)
        for old in cache.glob("mof-*"):
            if old != final:
                shutil.rmtree(old, ignore_errors=True)

    def search_local(self, encoded: dict, top: int = 10) -> list[Hit]:
        hits = []
        for i, s in self.engine().search(encoded, top):
            e = self.catalog.by_id(i)
            hits.append(Hit(i, e.path if e else "?", float(s)))
        return hits

    # -- information ---------------------------------------------------------------------------
    def info(self) -> dict:
        root = self.catalog.root
        size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
        n = self.catalog.count()
        return {"path": str(root), "images": n, "failed": len(self.catalog.failures()),
                "params": self.catalog.manifest["params"], "dim": self.catalog.dim,
                "search": "inverted files (BoW + HE)" if self.method.kind == "local" else self.store.describe(n),
                "store": store_address(self.catalog.store_settings),
                "bytes_on_disk": size, "bytes_per_image": round(size / n) if n else None,
                "vector_bytes_per_image": 4 * self.catalog.dim if self.catalog.dim else self.catalog.payload_bytes(), "generation": self.catalog.generation(),
                "schema_version": self.catalog.manifest["schema_version"], "versions": self.catalog.manifest["versions"]}
