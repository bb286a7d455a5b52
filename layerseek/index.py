"""A searchable index of a photo collection: its life cycle (create, open, close) and what it holds;
indexing is in `ingest.py`, searching in `query.py`.

    from layerseek.index import Index
    idx = Index.create("photos.lsx", method="fcrow", backbone="mobilenet_v2")   # or Index.open(...)
    report = idx.add_folder("~/Photos")          # new, changed and deleted files found
    hits = idx.search("query.jpg", top=10)       # [Hit(id, path, score), ...]
"""
from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import IndexBusy, LayerseekError, storage_error_line
from .images import is_image_name
from .ingest import MASS_REMOVAL_MIN, MASS_REMOVAL_SHARE, Ingest, IndexReport, absolute  # noqa: F401 (re-exported)
from .progress import versions
from .query import Hit, Query  # noqa: F401 (re-exported)
from .store.catalog import Catalog
from .store.vectors import ANN_MODES, ANN_THRESHOLD, MilvusStore, open_store, parse_store, store_address  # noqa: F401 (re-exported)

if TYPE_CHECKING:
    from .local.method import LocalMethod
    from .methods import GlobalMethod


def learn_whitening(method: GlobalMethod, collection: str, threads: int | None = None,
                    progress: Callable[[int, int], None] | None = None) -> list[str]:
    """Fit `method`'s per-layer whitening on a collection's images (descriptors cached as for
    `eval`). Returns the images that failed."""
    from .datasets import get_dataset
    from .describe import describe_dataset

    ds = get_dataset(collection)
    db, _, errors = describe_dataset(ds, method.backbone, method.layers, method.max_side, threads, progress,
                                     [method.pooling], queries=False, precision=method.precision)
    vecs = [v for v in db if v is not None]
    if len(vecs) < 2:
        raise LayerseekError(f"{collection}: whitening needs at least 2 readable images, found {len(vecs)}")
    method.fit_whitening([np.stack([v[f"{method.pooling}/{layer}"] for v in vecs]) for layer in method.layers])
    return errors


def verify_settings(verify: bool | dict | None, global_method: bool = True) -> dict | None:
    """The local features an index stores for verification, as written in its manifest; on a
    global index also the diffusion from verified images over the graph of its vectors
    (`verify.diffusion`; {"diffusion": False} leaves it out)."""
    from .verify import diffusion as dif
    from .verify.features import DEFAULT_FEATURE_SIDE, DEFAULT_FEATURES

    if not verify:
        return None
    given = verify if isinstance(verify, dict) else {}
    n, side = int(given.get("features", DEFAULT_FEATURES)), int(given.get("side", DEFAULT_FEATURE_SIDE))
    if not (16 <= n <= 20000 and 64 <= side <= 4096):
        raise LayerseekError(f"verification features {n} at {side} px: out of range (16-20000 features, 64-4096 px)")
    from .verify.geometry import DEFAULT_FUNDAMENTAL, DEFAULT_SHARED_PART, Verifier

    v = Verifier()
    out = {"kind": "sift", "features": n, "side": side, "ratio": v.ratio, "threshold": v.threshold,
           "min_inliers": int(given.get("min_inliers", v.min_inliers)), "expand": int(given.get("expand", 1)),
           "fundamental": int(given.get("fundamental", DEFAULT_FUNDAMENTAL)),
           "shared_part": float(given.get("shared_part", DEFAULT_SHARED_PART))}
    diffusion = given.get("diffusion", True)
    if global_method and diffusion:
        given_rule = diffusion if isinstance(diffusion, dict) else {}
        unknown = sorted(set(given_rule) - {"k", "gamma", "alpha"})
        if unknown:
            raise LayerseekError(f"diffusion: unknown setting {unknown[0]!r} (k, gamma, alpha)")
        rule = dif.settings(**given_rule)
        if not (1 <= rule["k"] <= 1000 and 0 < rule["alpha"] < 1):
            raise LayerseekError(f"diffusion k {rule['k']}, alpha {rule['alpha']}: out of range (k 1-1000, "
                                 "0 < alpha < 1)")
        out["diffusion"] = rule
    words = given.get("words", True)
    # word features verify 3-6x faster in a ninth of the bytes, but the SMVS phone photos whose
    # descriptors barely verify do not (docs/RESULTS.md, issue 26): descriptors stay the default
    geometry = given.get("geometry", "descriptors")
    if geometry not in ("words", "descriptors"):
        raise LayerseekError(f"geometry {geometry!r}: words or descriptors")
    if geometry == "words" and not (global_method and words):
        raise LayerseekError("geometry words: stored word features come with the word candidates of a global index")
    if global_method and words:
        from .verify.words import DEFAULT_WORD_CANDIDATES, DEFAULT_WORD_FILTER, shipped

        given_words = words if isinstance(words, dict) else {}
        top = int(given_words.get("top", DEFAULT_WORD_CANDIDATES))
        if not 1 <= top <= 1000:
            raise LayerseekError(f"word candidates {top}: out of range (1-1000)")
        word_filter = float(given_words.get("filter", DEFAULT_WORD_FILTER))
        if not -1 <= word_filter < 1:
            raise LayerseekError(f"word filter {word_filter}: out of range (-1 to 1; negative: off)")
        # the second source of candidates (verify.words): the shipped vocabulary, named by its hash;
        # `filter`: candidates whose word score is at most this go unverified
        out["words"] = {"vocabulary": shipped().fingerprint(), "top": top, "filter": word_filter}
    if geometry == "words":
        # the catalog stores each feature's position, word and signature (14 bytes), not its SIFT
        # descriptor (132): verification matches shared words (docs/RESULTS.md, issue 26)
        from .verify.words import GEOMETRY_QUERY_WORDS

        out["kind"], out["hamming"] = "sift-words", int(given.get("hamming", v.hamming))
        out["query_words"] = int(given.get("query_words", GEOMETRY_QUERY_WORDS))
    return out


def hubness_settings(hubness: bool | dict | None, global_method: bool = True) -> dict | None:
    """The first stage's hubness correction as a manifest keeps it (None: off, and always on a
    MOF index): {"k", "beta"} (`stages.DEFAULT_HUBNESS` where not given)."""
    from .stages import DEFAULT_HUBNESS

    if not hubness or not global_method:
        return None
    given = hubness if isinstance(hubness, dict) else {}
    unknown = sorted(set(given) - set(DEFAULT_HUBNESS))
    if unknown:
        raise LayerseekError(f"hubness: unknown setting {unknown[0]!r} (k, beta)")
    out = {"k": int(given.get("k", DEFAULT_HUBNESS["k"])), "beta": float(given.get("beta", DEFAULT_HUBNESS["beta"]))}
    if not (1 <= out["k"] <= 1000 and 0 <= out["beta"] <= 1):
        raise LayerseekError(f"hubness k {out['k']}, beta {out['beta']}: out of range (k 1-1000, beta 0-1)")
    return out


def _hold_lock(fd: int, root: Path, doing: str) -> None:
    """Take the exclusive `flock` on the open lock file `fd` of index `root`, or raise IndexBusy
    naming its holder; then write this process into it, for the message the next one gets."""
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
        raise IndexBusy(f"{root}: index busy: {holder} is {doing} it; try again when it has finished") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"layerseek pid {os.getpid()} (since {time.strftime('%Y-%m-%d %H:%M:%S')})".encode(), 0)


@contextmanager
def claimed_for_creation(path: str | Path) -> Iterator[None]:
    """The right to create an index at `path`, held until the block ends: the directory made here
    by an exclusive `mkdir` (or an existing one without an index), its `lock` held, so a second
    creator at the same moment gets "index busy" instead of writing into the first one's files.
    If the block fails, what this run made is removed (the directory, or only the entries it
    added to one that was there before) and nothing else: never another run's index."""
    path = Path(path)
    made = False
    try:
        path.mkdir(parents=True)
        made = True
    except FileExistsError:
        if not path.is_dir():
            raise LayerseekError(f"{path}: exists and is not a directory") from None
    before = set() if made else set(os.listdir(path))
    photos = sorted(n for n in before if not n.startswith(".") and is_image_name(n))
    if photos and not Catalog.exists(path):  # the photos' own folder given as the index
        raise LayerseekError(f"{path}: holds photos ({photos[0]}{', ...' if len(photos) > 1 else ''}); an index "
                             f"needs a directory of its own, e.g. {path / 'photos.lsx'}")
    fd = os.open(path / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _hold_lock(fd, path, "creating")
        held = os.fstat(fd)
        here = os.stat(path / "lock", follow_symlinks=False)
        if (held.st_dev, held.st_ino) != (here.st_dev, here.st_ino):  # a failed creator removed it meanwhile
            raise IndexBusy(f"{path}: index busy: another process is creating it; try again when it has finished")
        if Catalog.exists(path):  # the first creator finished while this one started
            raise LayerseekError(f"{path}: already holds an index")
        try:
            yield
        except BaseException:
            # still under the lock: nobody else can have written here since
            if made:
                shutil.rmtree(path, ignore_errors=True)
            else:
                for name in set(os.listdir(path)) - before:
                    p = path / name
                    shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
            raise
    finally:
        os.close(fd)  # releases the lock


class Index(Ingest, Query):
    """An index directory opened for work: its life cycle here, indexing in `ingest.Ingest`,
    searching in `query.Query`."""

    def __init__(self, catalog: Catalog, method: GlobalMethod | LocalMethod | None, threads: int | None = None):
        self.catalog = catalog
        self._method = method  # None: made from the manifest when first needed (see `method`)
        self.threads = threads
        self._fx = None
        self._store = None  # where the global vectors are searched (opened on first use)
        self._engine = None  # MOF: (generation, MOFEngine, {id: sha256} of what it holds)
        self._graph = None  # diffusion: (generation, KnnGraph, gamma, affinity)
        self._knns = {}  # k-NN graphs by cache prefix ("graph", "hubs"): (generation, KnnGraph, {id: sha256} held)
        self._hubs = None  # hubness correction: (generation, k, each id's neighbourhood similarity)
        self._words = None  # word candidates: (generation, WordsEngine, {id: sha256} of what it holds)
        self._lock = threading.Lock()  # the SQLite connection and the caches built from it, one user at a time
        self._net_lock = threading.Lock()  # the extractor (made on first use), one image at a time
        self._writing = 0  # depth of `writing()` held by this Index
        # told (what, done, total, seconds so far) while a search's caches catch up with the catalog
        # (the word codes of photos added since they were kept: a minute at 10,000 photos without
        # them), so that a command can show it; None: nothing told
        self.catching_up: Callable[[str, int, int, float], None] | None = None

    # -- life cycle ---------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, method: str = "fcrow", threads: int | None = None, ann: str = "auto",
               learn_progress: Callable[[int, int], None] | None = None, store: str | None = None,
               verify: bool | dict = False, hubness: bool | dict = True, **options) -> Index:
        """A new, empty index. With `whiten_on` (a dataset name, ground-truth file or folder) a PCA
        whitening per layer is learned on that collection first and stored in the index. `store`
        says where the global vectors are searched: "faiss" (default, embedded) or a Milvus
        address (see `layerseek.store.vectors`). `verify` (True, or {"features": n, "side": px})
        stores local features of every image, so searches can verify their head geometrically.
        `hubness` (a global index): the first stage's hubness correction (`stages.Hubness`; True:
        `stages.DEFAULT_HUBNESS`, {"k": n} another k, False: none)."""
        if ann not in ANN_MODES:
            raise LayerseekError(f"unknown search mode {ann!r}; valid: {', '.join(ANN_MODES)}")
        if Catalog.exists(path):
            raise LayerseekError(f"{path}: already holds an index")
        from .methods import make_method

        store_spec = parse_store(store, path)
        m = make_method(method, **options)
        if m.kind == "local" and store_spec["kind"] != "faiss":
            raise LayerseekError("the Milvus store holds global vectors; a mof index keeps its inverted files "
                                 "in the index directory (leave out --store)")
        if m.kind == "local" and not m.train_on:
            raise LayerseekError("mof learns its vocabularies on another collection: give --train-on "
                                 "(a dataset name, ground-truth .json or folder of photos)")
        with claimed_for_creation(path):  # held until the manifest is written; a failure removes what it made
            # Learned state is written before the manifest: a directory without one is not an index yet.
            if m.kind == "local":
                m.fit(m.train_on, threads, learn_progress)
                m.save_model(path)
                dim = 0  # the catalog holds each image's words and signatures as bytes
            else:
                if m.whiten_on:
                    learn_whitening(m, m.whiten_on, threads, learn_progress)
                    m.save_whitening(path)
                dim = sum(s.stop - s.start for s in m.segments())
            if store_spec["kind"] != "faiss":
                milvus = MilvusStore(None, store_spec)
                try:
                    milvus.create(dim, ann)
                finally:
                    milvus.close()
            cat = Catalog.create(path, {"params": m.params(), "dim": dim, "ann": ann, "store": store_spec,
                                        "verify": verify_settings(verify, m.kind == "global"),
                                        "hubness": hubness_settings(hubness, m.kind == "global"),
                                        "versions": versions()})
        return cls(cat, m, threads)

    @classmethod
    def open(cls, path: str | Path, threads: int | None = None) -> Index:
        cat = Catalog.open(path)
        params = cat.manifest["params"]
        if params.get("whiten_on"):  # checked now, though the method itself is made on first use
            missing = [p for p in (cat.root / f"whitening-{layer}.npz" for layer in params["layers"]) if not p.is_file()]
            if missing:
                cat.close()
                raise LayerseekError(f"{missing[0]}: missing; this index was built with whitening on "
                                     f"{params['whiten_on']!r}; build it again")
        return cls(cat, None, threads)

    @property
    def method(self) -> GlobalMethod | LocalMethod:
        """The index's method with its learned state, made from the manifest on first use: `info`,
        `remove` and `check` never need it, and so never import torch."""
        if self._method is None:
            from .methods import method_from_params

            m = method_from_params(self.catalog.manifest["params"])
            self._method = m.load_model(self.catalog.root) if m.kind == "local" else m.load_whitening(self.catalog.root)
        return self._method

    @property
    def kind(self) -> str:
        """"global" or "local" (MOF), from the manifest."""
        return "local" if self.catalog.manifest["params"]["method"] == "mof" else "global"

    @classmethod
    def open_or_create(cls, path: str | Path, method: str | None = None, threads: int | None = None,
                       ann: str | None = None, learn_progress: Callable[[int, int], None] | None = None,
                       store: str | None = None, verify: bool | dict = False, **options) -> Index:
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
        return cls.create(path, method or "fcrow", threads, ann or "auto", learn_progress, store, verify, **options)

    def check_method(self, method: str | None = None, **options) -> None:
        """Fail clearly when a method or option asked for differs from the index's."""
        from .methods import SETTINGS_BEFORE

        have = self.catalog.manifest["params"]
        before = SETTINGS_BEFORE.get(have.get("method"), {})
        asked = {"method": method, **options}
        for key, value in asked.items():
            if value is None:
                continue
            mine = have.get(key, before.get(key))
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
    def verify_settings(self) -> dict | None:
        """The local features this index stores for verification (None: it stores none)."""
        return self.catalog.manifest.get("verify")

    @property
    def store(self):
        """Where the global vectors are searched: FaissStore or MilvusStore, in step with the catalog."""
        if self._store is None:
            self._store = open_store(self.catalog)
        return self._store

    def _commit(self, upserts=(), touches=(), failures=(), deletes=(), keep_deleted: bool = False) -> None:
        """One catalog transaction, then the vector store brought in step (under the lock)."""
        with self._lock:
            self.catalog.commit_batch(upserts, touches, failures, deletes, keep_deleted)
            self.store.sync()

    def upgrade(self) -> list[str]:
        """Give this index the search-time settings a new index of its kind gets and it lacks
        (nothing stored is changed or extracted again); what was added, one line each. Today
        (issue 26): the first stage's hubness correction on a global index made before it, and
        the word candidates and their filter on one that stores SIFT descriptors, made before
        them (the word engine is built from those on the next search); (issue 29) the
        shared-part rule of verification."""
        import copy

        from .verify.words import DEFAULT_WORD_CANDIDATES, DEFAULT_WORD_FILTER, shipped

        manifest, said = copy.deepcopy(self.catalog.manifest), []
        if self.kind == "global" and not manifest.get("hubness"):
            manifest["hubness"] = hubness_settings(True)
            said.append(f"hubness correction: the first stage ranks by CSLS over each image's "
                        f"{manifest['hubness']['k']} nearest (an image near everything no longer crowds it)")
        v = manifest.get("verify")
        if v and "shared_part" not in v:
            from .verify.geometry import DEFAULT_SHARED_PART

            v["shared_part"] = DEFAULT_SHARED_PART
            said.append(f"shared-part rule: beside a match that fills the photo (inliers spread over "
                        f"{DEFAULT_SHARED_PART:g} of it), a weaker one confined to less, or with under a tenth of "
                        "its inliers, is not marked the same object (a shared band or logo)")
        if self.kind == "global" and v:
            words = v.get("words")
            if not words:
                v["words"] = {"vocabulary": shipped().fingerprint(), "top": DEFAULT_WORD_CANDIDATES,
                              "filter": DEFAULT_WORD_FILTER}
                said.append(f"word candidates: the {DEFAULT_WORD_CANDIDATES} best of the word engine (vocabulary "
                            f"{v['words']['vocabulary']}) are verified beside the CNN's shortlist; candidates "
                            f"with a word score of at most {DEFAULT_WORD_FILTER:g} are not")
            elif words.get("filter") is None:
                words["filter"] = DEFAULT_WORD_FILTER
                said.append(f"word filter: candidates with a word score of at most {DEFAULT_WORD_FILTER:g} "
                            "are not verified")
        if said:
            with self.writing():
                self.catalog.rewrite_manifest(manifest)
            self._words = self._hubs = None  # made again from the new settings when a search needs them
        return said

    @contextmanager
    def writing(self) -> Iterator[None]:
        """The right to change this index, one process at a time: an exclusive `flock` on the
        file `lock` in the index directory, which holds the holder's PID and start time for the
        message a second writer gets ("index busy"). The kernel drops the lock when its process
        ends, however it ends, so a killed run leaves no stale lock behind. Re-entrant per Index."""
        if self._writing:
            self._writing += 1
            try:
                yield
            finally:
                self._writing -= 1
            return
        try:
            fd = os.open(self.catalog.root / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:  # a read-only drive, a folder this user may not write
            raise LayerseekError(storage_error_line(e, self.catalog.root)) from None
        try:
            _hold_lock(fd, self.catalog.root, "changing")
            self._writing = 1
            try:
                yield
            finally:
                self._writing = 0
        finally:
            os.close(fd)  # releases the lock

    def _seal(self) -> None:
        """After a run of work: the store indexes what was written (Milvus flushes; FAISS: nothing)."""
        with self._lock:
            self.store.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- information ---------------------------------------------------------------------------
    def info(self) -> dict:
        root = self.catalog.root
        size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
        n = self.catalog.count()
        return {"path": str(root), "images": n, "failed": len(self.catalog.failures()),
                "params": self.catalog.manifest["params"], "dim": self.catalog.dim,
                "search": "inverted files (BoW + HE)" if self.kind == "local" else self.store.describe(n),
                "store": store_address(self.catalog.store_settings),
                "bytes_on_disk": size, "bytes_per_image": round(size / n) if n else None,
                "vector_bytes_per_image": 4 * self.catalog.dim if self.catalog.dim else self.catalog.payload_bytes(),
                "verify": self.verify_settings, "hubness": self.catalog.manifest.get("hubness"),
                "feature_bytes_per_image": self.catalog.feature_bytes(),
                "generation": self.catalog.generation(), "roots": self.catalog.roots(),
                "missing_roots": [r for r, _ in self.catalog.missing_roots()],
                "excluded": [{"pattern": pat, "kind": k} for pat, k in self.catalog.exclusions()],
                "schema_version": self.catalog.manifest["schema_version"], "versions": self.catalog.manifest["versions"]}
