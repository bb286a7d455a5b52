"""Searching an index: encoding a query, the global store or MOF's inverted files, two stages,
and geometric verification of the head of a ranking."""
from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import LayerseekError
from .hits import SEARCH_LIMITS, Hit, first_photos  # noqa: F401 (Hit re-exported)
from .images import crop_region, load_image
from .local.mof import rerank_head
from .stages import HUB_POOL, Expansion, Hubness, Stages

if TYPE_CHECKING:
    from .index import Index


@functools.cache
def _beside() -> ThreadPoolExecutor:
    """Threads for the part of a search taken beside its network (`Query.local_side`)."""
    return ThreadPoolExecutor(max_workers=2, thread_name_prefix="layerseek-beside")


def _one_blas_thread(method):
    """`method` run with BLAS on one thread: a search's matrices are small and its own threads
    spread it over the cores, while OpenBLAS's workers, once a product wakes them, spin beside
    the network and verification (docs/BENCHMARKS.md, "Sixth round": the query's network 82 ->
    100-111 ms, a search at 10,000 images 0.40 -> 0.50 s)."""
    @functools.wraps(method)
    def run(*args, **kwargs):
        from .verify.geometry import one_blas_thread

        with one_blas_thread():
            return method(*args, **kwargs)
    return run


#: seconds a cache catching up with the catalog works before it tells `Index.catching_up` (the word
#: codes of stored SIFT features: 90-150 photos a second on 2 cores)
CATCH_UP_TOLD = 1.0


class Query:
    """The searching half of `Index` (a mixin: it uses the index's catalog, method, lock and store)."""

    # -- encoding ------------------------------------------------------------------------------
    @property
    def fx(self):
        if self._fx is None:
            from .backbones.runtime import make_extractor

            self._fx = make_extractor(self.method.backbone, self.method.layers, threads=self.threads,
                                      precision=getattr(self.method, "precision", "float"))
        return self._fx

    def encode_array(self, img: np.ndarray) -> np.ndarray:
        return self.method.encode(self.fx(img))[0]

    def query_image(self, image: str | Path | np.ndarray, data: bytes | None = None,
                    region: tuple[float, float, float, float] | None = None) -> np.ndarray:
        """A query as an H x W x 3 array, decoded as the index's images were; `region` (x, y, w, h,
        shares of its width and height: `hits.parse_region`) the part of it searched with, cropped
        from the photo at full resolution (an array: from the array)."""
        if isinstance(image, np.ndarray):
            return image if region is None else crop_region(image, region)
        return load_image(image, max_side=self.method.max_side, data=data, region=region)

    def local_features(self, img: np.ndarray, query: bool = False):
        """The image's local features for verification, in the form the index stores them: SIFT
        descriptors, or (kind "sift-words") their visual words and HE signatures
        (`verify.features.WordFeatures`; a `query`'s features each take their `query_words`
        nearest words); None when the index stores none."""
        from .verify.features import WordFeatures, sift_features

        v = self.verify_settings
        if not v:
            return None
        f = sift_features(img, v["features"], v["side"])
        if v["kind"] != "sift-words":
            return f
        return WordFeatures.of(f, self.vocabulary().encode(f, int(v.get("query_words", 1)) if query else 1))

    def prefetch_words(self) -> None:
        """Load the word vocabulary and its assignment graph in a background thread, beside the
        query's decoding and network on the other core (0.15 s of a cold search); a search that
        needs them first waits for it. Nothing on an index without word candidates."""
        if not (self.verify_settings or {}).get("words"):
            return
        from .verify.words import shipped

        def load():
            with contextlib.suppress(Exception):  # the search itself says what is wrong
                shipped().warm()

        threading.Thread(target=load, name="layerseek-words", daemon=True).start()

    def vocabulary(self):
        """The word vocabulary the index was made with (`verify.words`); an error naming both when
        this installation ships another one."""
        from .verify.words import shipped

        w = (self.verify_settings or {}).get("words")
        vocabulary = shipped()
        if w and vocabulary.fingerprint() != w["vocabulary"]:
            off = ("its stored word features need it to verify" if self.verify_settings["kind"] == "sift-words"
                   else "search with --word-candidates 0")
            raise LayerseekError(f"{self.catalog.root}: made with word vocabulary {w['vocabulary']}, this "
                                 f"installation has {vocabulary.fingerprint()}; {off}")
        return vocabulary

    @property
    def verifier(self):
        from .verify.geometry import Verifier

        v = self.verify_settings or {}
        return Verifier(**{k: v[k] for k in ("ratio", "threshold", "min_inliers", "fundamental", "spread", "hamming",
                                             "shared_part") if k in v})

    def encode_query(self, image: str | Path | np.ndarray, data: bytes | None = None):
        """A query image (file, its bytes or an H x W x 3 array) as this index's method encodes
        queries: a fused vector (global) or words and signatures with multiple assignment (mof)."""
        with self._net_lock:
            img = self.query_image(image, data)
            if self.kind == "local":
                return self.method.encode_query(self.fx(img))
            return self.encode_array(img)

    # -- search -------------------------------------------------------------------------------
    def _top(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            self.store.sync()  # another process may have changed the catalog
            return self.store.search(q, k)

    def _first(self, q: np.ndarray, k: int, hubness: Hubness | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The first stage: the store's `k` best for `q`, re-scored by `hubness` (`stages.Hubness`,
        over the store's HUB_POOL best) where given."""
        if hubness is None:
            return self._top(q, k)
        ids, scores = self._top(q, max(k, HUB_POOL))
        return hubness.rescore(self, ids, scores, k)

    def search_vector(self, q: np.ndarray, top: int = 10, qe: int = 0, exclude_id: int | None = None,
                      hubness: Hubness | None = None) -> list[Hit]:
        """The `top` best images for a vector of this index's method, from its store (FAISS or
        Milvus); with `qe`, average query expansion over the first `qe` (vectors from the catalog);
        with `hubness` (`stages.Hubness`), ordered by the hubness-aware similarity instead of the
        cosine (each hit's score stays its cosine)."""
        q = np.asarray(q, dtype=np.float32)  # a float64 query would upcast the whole matrix (10x slower)
        extra = 1 if exclude_id is not None else 0
        ids, scores = self._first(q, top + extra, hubness)
        if qe > 0:
            first = [i for i in ids if i != exclude_id][:qe]
            if len(first) < qe:
                first = [i for i in self._first(q, qe + extra, hubness)[0] if i != exclude_id][:qe]
            q = self.method.expand(q, self.catalog.vectors(first))
            ids, scores = self._first(q, top + extra, hubness)
        hits = []
        for i, s in zip(ids, scores):
            if i == exclude_id:
                continue
            e = self.catalog.by_id(int(i))
            hits.append(Hit(int(i), e.path if e else "?", float(s)))
        return hits[:top]

    #: results asked for beyond `top`, so that files gone from the disk can be left out
    MISSING_SLACK = 10
    #: files ranked to find `top` photos where identical files count once (`search(distinct=True)`):
    #: at least this many, which cost a search no more than 20 (docs/BENCHMARKS.md, "Ninth round")
    DISTINCT_FILES = 200

    def search(self, image: str | Path | np.ndarray, top: int = 10, qe: int = 0, data: bytes | None = None,
               verify: int | None = None, expand: int | None = None, diffusion: bool | None = None,
               matches: bool = False, words: int | None = None, word_filter: float | None = None,
               hubness: int | None = None, distinct: bool = False,
               region: tuple[float, float, float, float] | None = None) -> list[Hit]:
        """`ranked` less the results whose file is gone from the disk (moved, renamed, deleted:
        the next `index` run forgets them), `top` of them. `matches`: each verified result also
        carries the correspondences that verified it (`Hit.matches`, to draw them). `distinct`:
        `top` counts photos, identical files (the same content) one, each of their files returned
        (`hits.first_photos`: a terminal's table and the page show them as one). `region`: the
        part of the photo searched with (`query_image`); the matches stay in the whole photo's
        shares."""
        drawn: dict | None = {} if matches else None  # id -> a verified image's correspondences
        files = min(max(top * 4, self.DISTINCT_FILES), SEARCH_LIMITS["top"][1]) if distinct else top
        if region is not None:
            image, data = self.query_image(image, data, region), None
        hits = self.ranked(image, files + self.MISSING_SLACK, qe, data, verify, expand, diffusion, drawn, words,
                           word_filter, hubness)
        hits = [h for h in hits if os.path.lexists(h.path)]
        hits = first_photos(hits, top, self.catalog.contents(h.id for h in hits)) if distinct else hits[:top]
        for h in hits:
            if drawn and h.verified and h.id in drawn:
                m = np.asarray(drawn[h.id])
                if region is not None and len(m):  # the crop's shares as the whole photo's
                    m = np.array(m, np.float64)
                    m[:, 0], m[:, 1] = region[0] + region[2] * m[:, 0], region[1] + region[3] * m[:, 1]
                h.matches = np.round(m, 4).tolist()
        return hits

    @_one_blas_thread
    def ranked(self, image: str | Path | np.ndarray, top: int = 10, qe: int = 0, data: bytes | None = None,
               verify: int | None = None, expand: int | None = None, diffusion: bool | None = None,
               drawn: dict | None = None, words: int | None = None, word_filter: float | None = None,
               hubness: int | None = None) -> list[Hit]:
        """The `top` most similar indexed images to an image file, its bytes or an H x W x 3 array:
        the first stage's ranking, then the stages after it (`stages.Stages.of` takes `verify`,
        `expand`, `diffusion`, `words`, `word_filter` and `hubness`, each None for the index's own
        setting): the first stage re-scored by the `hubness` correction (global indexes);
        `verify` of the first stage's best (default DEFAULT_VERIFY on an index that stores local
        features, else 0: off) re-ordered by geometric verification, beside the word engine's
        `words` best (`verify.words`) unless their word score is at most `word_filter`; `expand`
        rounds of verified query expansion (global methods); a `diffusion` from the verified
        images that orders everything after them. `drawn`: as `verify_hits` takes it."""
        if self.kind == "local" and qe:
            raise LayerseekError("query expansion is for the global methods; a mof index has none")
        stages = Stages.of(self, verify, expand, diffusion, words, word_filter, hubness)
        img = self.query_image(image, data)
        shortlist = stages.verification.shortlist if stages.verification else 0
        # what needs no network (SIFT, the word engine's candidates) is taken on another core
        # while the network runs (docs/BENCHMARKS.md, "Sixth round")
        local = _beside().submit(self.local_side, img, stages) if shortlist else None
        try:
            q = self.encode_query(img)
        finally:
            if local:
                wait([local])  # never left running past an error
        side = local.result() if local else None
        n = max(top, shortlist)
        if self.kind == "local":
            hits = self.search_local(q, n)
            return (self.verify_hits(img, hits, stages, drawn=drawn, side=side) if shortlist else hits)[:top]
        if not shortlist:
            return self.search_vector(q, n, qe, hubness=stages.hubness)[:top]
        return self.verify_hits(img, lambda v: self.search_vector(v, n, qe, hubness=stages.hubness), stages, q, top,
                                drawn, side)[:top]

    def local_side(self, img: np.ndarray, stages: Stages) -> tuple:
        """(the query's local features, the word engine's candidates and every image's word score
        as `stages.WordCandidates.find` gives them, unscored by the first stage): the part of a
        verified search that needs no network."""
        qf = self.local_features(img, query=True)
        return qf, (stages.words.find(self, qf) if stages.words else ([], None))

    def verify_hits(self, img: np.ndarray, hits, stages: Stages, q: np.ndarray | None = None,
                    top: int | None = None, drawn: dict | None = None, side: tuple | None = None) -> list[Hit]:
        """The `stages` of a verified search run on a first-stage ranking: `hits` (a list of Hit,
        or for a global index a function from a query vector `q` to one) has its first
        `stages.verification.shortlist` and the word candidates re-ordered by RANSAC inliers
        between the query image and their stored features, after the expansion's rounds (each
        ranked and verified again); the diffusion orders the images after the verified ones (their
        score stays the first stage's similarity to `q`). `top`: how many hits a diffusion needs
        to return. `drawn`: a dict that receives each verified image's correspondences
        (`Verifier.pairs`, from the verification itself: nothing is matched twice). `side`: what
        `local_side` gave for `img`, if taken already."""
        qf, (extra, scores) = side or self.local_side(img, stages)
        verification = stages.verification
        ranked: dict[int, Hit] = {}

        def rank(v) -> list[int]:
            found = hits(v) if callable(hits) else hits
            ranked.update((h.id, h) for h in found)
            return [h.id for h in found]

        worth = None
        if stages.words:
            extra = stages.words.scored(self, extra, q)
            worth = stages.words.worth_verifying(scores)
        for h in extra:
            ranked.setdefault(h.id, h)
        order, counts = (stages.expansion or Expansion()).run(
            self, q, rank, lambda ids: verification.inliers(self, qf, ids, worth, drawn), verification,
            [h.id for h in extra])
        if stages.diffusion and self.kind == "global" and q is not None:
            order = stages.diffusion.order(self, q, order, counts, verification.verifier.min_inliers)
            order = order[:max(len(ranked), verification.shortlist, top or 0)]
            entries = {i: self.catalog.by_id(i) for i in order if i not in ranked}
            entries = {i: e for i, e in entries.items() if e is not None}  # gone since the graph was read
            order = [i for i in order if i in ranked or i in entries]
            if entries:
                sims = self.catalog.vectors(list(entries)) @ np.asarray(q, np.float32)
                for (i, e), s in zip(entries.items(), sims):
                    ranked[i] = Hit(i, e.path, float(s))
        out = [ranked[i] for i in order]
        min_inliers = verification.verifier.min_inliers
        for h in out:
            if h.id in counts:
                h.inliers, h.verified = counts[h.id], counts[h.id] >= min_inliers
        return out

    def update_graph(self) -> None:
        """Bring the diffusion graph, the hubness correction's neighbourhoods and the word engine up
        to date with the catalog now (a search would otherwise do it first); nothing on an index
        without them."""
        from .verify.diffusion import FULL_GRAPH_MAX

        if (self.verify_settings or {}).get("words"):
            with self._lock:
                self.words_engine()

        d = (self.verify_settings or {}).get("diffusion")
        n = self.catalog.count()
        if d and self.kind == "global" and 0 < n <= FULL_GRAPH_MAX:
            self.graph(int(d["k"]), float(d["gamma"]))
        elif n > FULL_GRAPH_MAX:  # each query builds its own graph now: a whole one kept would only go stale
            self._graph = None
            self._knns.pop("graph", None)
            for old in (self.catalog.root / "cache").glob("graph-*.npz"):
                old.unlink(missing_ok=True)
        h = self.catalog.manifest.get("hubness")
        if h and self.kind == "global" and n:
            self.neighbourhood(int(h["k"]))

    def graph(self, k: int, gamma: float):
        """(KnnGraph, its affinity) of the index's global vectors for the diffusion, in step with
        the catalog (`_knn`, kept in cache/graph-<generation>.npz)."""
        with self._lock:
            gen = self.catalog.generation()
            if self._graph is not None and self._graph[0] == gen and self._graph[1].k == k and self._graph[2] == gamma:
                return self._graph[1], self._graph[3]
            graph = self._knn("graph", k)
            S = graph.affinity(gamma)
            self._graph = (gen, graph, gamma, S)
            return graph, S

    def neighbourhood(self, k: int) -> np.ndarray:
        """r, each image's mean cosine to its own k nearest indexed images, as an array indexed by
        image id (0 for an id not held): the term the hubness-aware first stage takes away
        (`postprocess.csls`). From the diffusion's graph where the index keeps a whole one of at
        least k neighbours, else from a graph of its own (cache/hubs-<generation>.npz)."""
        from .verify.diffusion import FULL_GRAPH_MAX

        with self._lock:
            gen = self.catalog.generation()
            if self._hubs is not None and self._hubs[:2] == (gen, k):
                return self._hubs[2]
            d = (self.verify_settings or {}).get("diffusion")
            whole = d and int(d["k"]) >= k and self.catalog.count() <= FULL_GRAPH_MAX
            graph = self._knn("graph", int(d["k"])) if whole else self._knn("hubs", k)
            sims = graph.sims[:, :k].astype(np.float64)
            ok = np.isfinite(sims)  # an image with fewer than k others: the mean of those it has
            r_rows = np.where(ok, sims, 0).sum(axis=1) / np.maximum(ok.sum(axis=1), 1)
            r = np.zeros(int(graph.ids.max()) + 1 if len(graph.ids) else 0, np.float32)
            r[graph.ids] = r_rows
            self._hubs = (gen, k, r)
            return r

    def _knn(self, prefix: str, k: int):
        """The k-NN graph (`verify.diffusion.KnnGraph`) of the index's global vectors, in step with
        the catalog: kept in memory and in cache/<prefix>-<generation>.npz, and brought up to date
        by `KnnGraph.update` (only the images added, changed or removed since, and the lists they
        touch, are computed). The caller holds the lock."""
        from .verify.diffusion import KnnGraph
        from .verify.geometry import all_blas_threads

        gen = self.catalog.generation()
        kept = self._knns.get(prefix)
        if kept is not None and kept[0] == gen and kept[1].k == k:
            return kept[1]
        cache = self.catalog.root / "cache"
        graph, held = None, {}
        if kept is not None and kept[1].k == k:
            graph, held = kept[1], kept[2]
        else:
            saved = sorted(cache.glob(f"{prefix}-*.npz"), key=lambda p: int(p.stem.split("-")[1]))
            if saved:
                try:
                    graph, extra = KnnGraph.load(saved[-1])
                    held = dict(zip((int(i) for i in graph.ids), (str(s) for s in extra["shas"])))
                    if graph.k != k:
                        graph, held = None, {}
                    elif saved[-1].name == f"{prefix}-{gen}.npz":
                        # saved at this generation: made from the catalog as it is now (a change
                        # makes a new generation), so neither the vectors nor a save are needed
                        self._knns[prefix] = (gen, graph, held)
                        return graph
                except (OSError, ValueError, KeyError):
                    graph, held = None, {}
        ids, mat = self.store.matrix()
        now = self.catalog.shas()
        changed = [i for i in held if i in now and now[i] != held[i]]
        with all_blas_threads():  # a search runs on one BLAS thread (`ranked`); this is one large product
            graph = (graph or KnnGraph(k)).update(ids, mat, changed)
        shas = [now[int(i)] for i in ids]

        def save():
            cache.mkdir(exist_ok=True)
            tmp = cache / f"{prefix}-{gen}.npz.{os.getpid()}.tmp"
            graph.save(tmp, shas=np.array(shas, dtype="U64"))
            os.replace(tmp, cache / f"{prefix}-{gen}.npz")
            for old in cache.glob(f"{prefix}-*.npz"):
                if old.name != f"{prefix}-{gen}.npz":
                    old.unlink(missing_ok=True)

        self.catalog.keep_cache(save)  # read-only or full: kept in memory only
        self._knns[prefix] = (gen, graph, dict(zip((int(i) for i in ids), shas)))
        return graph

    def search_two_stage(self, image: str | Path | np.ndarray, local: Index, top: int = 10, shortlist: int = 100,
                         data: bytes | None = None, distinct: bool = False,
                         region: tuple[float, float, float, float] | None = None) -> list[Hit]:
        """Two stages: this (global) index shortlists its `shortlist` best images, the MOF index
        `local` of the same photos re-scores them. Returns the re-ordered head with MOF scores;
        a shortlisted file the MOF index lacks keeps its place after the scored ones. `distinct`:
        `top` counts photos, `region` the part of the photo searched with (as `search` takes them;
        each index cuts it from the photo as it decodes its images)."""
        if self.kind != "global" or local.kind != "local":
            raise LayerseekError("two-stage search needs a global index first and a mof index second")
        first = self.search(image, top=max(shortlist, top), data=data, verify=0, distinct=distinct, region=region)
        scores = dict(local.engine().search(local.encode_query(local.query_image(image, data, region))))
        local_id = {}
        for h in first[:shortlist]:
            e = local.catalog.by_path(h.path)
            local_id[h.id] = e.id if e else None
        # a shortlisted file the MOF index lacks scores nan and goes after the scored ones
        mof_score = {i: (scores.get(j, 0.0) if j is not None else float("nan")) for i, j in local_id.items()}
        by_id = {h.id: h for h in first}
        order = rerank_head([h.id for h in first], mof_score, shortlist)
        hits = [Hit(i, by_id[i].path, mof_score[i] if i in mof_score else by_id[i].score) for i in order]
        return first_photos(hits, top, self.catalog.contents(order)) if distinct else hits[:top]

    # -- MOF ----------------------------------------------------------------------------------
    def engine(self):
        """The MOF inverted files, in step with the catalog: images added, changed or removed
        since they were last saved are added to or removed from them, never rebuilt whole."""
        from .local.method import unpack
        from .local.mof import MOFEngine

        def encoded(ids):
            for i, sha, payload in self.catalog.payloads(ids):
                yield i, sha, unpack(payload)

        return self._in_step("_engine", "mof", lambda: MOFEngine(self.method.model), encoded)

    def words_engine(self):
        """The word engine of the index's stored features (`verify.words`), in step with the
        catalog as `engine` is; None on an index without word candidates (made before them, or
        with them off). Stored word features are its lists as they are; SIFT descriptors (an
        index made before word features) are encoded first."""
        from .verify.features import WordFeatures, unpack_features
        from .verify.words import WordsEngine, WordsParams

        w = (self.verify_settings or {}).get("words")
        if not w:
            return None
        vocabulary = self.vocabulary()
        params = WordsParams()

        def encoded(ids):
            ids = list(ids)
            now = self.catalog.shas()
            for at in range(0, len(ids), 256):  # the features of a few hundred images at a time
                stored = {i: unpack_features(d) for i, d in self.catalog.features(ids[at:at + 256]).items()}
                sift = [i for i, f in stored.items() if not isinstance(f, WordFeatures)]
                codes = dict(zip(sift, vocabulary.encode_many([stored[i] for i in sift], 1))) if sift else {}
                for i, f in stored.items():
                    yield i, now[i], codes[i] if i in codes else f.nearest()

        return self._in_step("_words", "words", lambda: WordsEngine(vocabulary, params), encoded)

    def _in_step(self, attr: str, prefix: str, fresh, encoded):
        """An engine of inverted files (`fresh()` makes an empty one) in step with the catalog,
        kept in `self.<attr>` and saved in cache/<prefix>-<generation>/: the images added, changed
        or removed since it was last saved are added (`encoded(ids)` gives (id, sha, what `add`
        takes)) or removed, never rebuilt whole."""
        gen = self.catalog.generation()
        kept = getattr(self, attr)
        if kept is not None and kept[0] == gen:
            return kept[1]
        cache = self.catalog.root / "cache"
        if kept is None:
            engine, held = fresh(), {}
            # a killed save leaves <prefix>-<gen>.<pid>.tmp: not a saved engine
            saved = [p for p in cache.glob(f"{prefix}-*") if p.is_dir() and p.name.split("-", 1)[1].isdigit()]
            saved.sort(key=lambda p: int(p.name.split("-", 1)[1]))
            if saved:
                try:
                    engine.load_files(saved[-1])
                    held = json.loads((saved[-1] / "held.json").read_text())
                    held = {int(k): v for k, v in held.items()}
                    if saved[-1].name == f"{prefix}-{gen}":  # saved at this generation: in step (as `_knn`)
                        setattr(self, attr, (gen, engine, held))
                        return engine
                except (OSError, ValueError, KeyError):
                    engine, held = fresh(), {}
        else:
            _, engine, held = kept
        now = self.catalog.shas()
        for i in [i for i, sha in held.items() if now.get(i) != sha]:
            engine.remove(i)
            del held[i]
        todo = [i for i in now if i not in held]
        what = {"words": "word codes for searching", "mof": "MOF's inverted files"}.get(prefix, prefix)
        t0, telling = time.monotonic(), False
        for done, (i, sha, item) in enumerate(encoded(todo), 1):
            engine.add(i, item)
            held[i] = sha
            if self.catching_up and (done % 64 == 0 or done == len(todo)):
                telling = telling or time.monotonic() - t0 > CATCH_UP_TOLD
                if telling:
                    self.catching_up(what, done, len(todo), time.monotonic() - t0)
        if todo or not (cache / f"{prefix}-{gen}").is_dir():
            self.catalog.keep_cache(lambda: self._save_engine(engine, held, prefix, gen))
        setattr(self, attr, (gen, engine, held))
        return engine

    def _save_engine(self, engine, held: dict, prefix: str, gen: int) -> None:
        cache = self.catalog.root / "cache"
        tmp = cache / f"{prefix}-{gen}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        engine.save(tmp)
        (tmp / "held.json").write_text(json.dumps(held))
        final = cache / f"{prefix}-{gen}"
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        # read from the files under their final name: the next save links their unchanged bases
        engine.load_files(final)
        for old in cache.glob(f"{prefix}-*"):
            if old != final:
                shutil.rmtree(old, ignore_errors=True)

    def search_local(self, encoded: dict, top: int = 10) -> list[Hit]:
        hits = []
        for i, s in self.engine().search(encoded, top):
            e = self.catalog.by_id(i)
            hits.append(Hit(i, e.path if e else "?", float(s)))
        return hits
