"""The embedded FAISS store: the catalog's vectors as rows that change in place, for exact
search (`FlatRows`: one matrix on disk, new images in a small recent one) and for a FAISS HNSW
graph (`HnswGraph`: additions linked into it); removals are tombstones, and the rows are rebuilt
only when too many are dead (`store.vectors` says where each store fits)."""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from .ann import ANN_THRESHOLD, HNSW_EF_CONSTRUCTION, HNSW_M, hnsw_ef
from .catalog import Catalog

#: a graph with more than this share of removed (tombstoned) rows is rebuilt without them
HNSW_COMPACT_SHARE = 0.2
#: rows added in memory since the graph files were written, above which they are written again
#: (max of this and 1 % of the graph); below, the next process re-applies them from the catalog
HNSW_SAVE_ROWS = 1000
#: the recent graph is merged into the main one when it holds more than this share of its rows
HNSW_RECENT_SHARE = 0.05

#: the exact store's recent rows are folded into its main matrix past this share of it
FLAT_RECENT_SHARE = 0.05


def write_new(folder: Path, prefix: str, suffix: str, write) -> str:
    """A file written whole under a new random name (`prefix`-<tag>`suffix`) and renamed into
    place: a file that a rows' file names is never overwritten. `write(path)` writes it."""
    name = f"{prefix}-{os.urandom(6).hex()}{suffix}"
    tmp = folder / f"{name}.{os.getpid()}.tmp"
    write(str(tmp))
    os.replace(tmp, folder / name)
    return name


def own_name(name: str, prefix: str, suffix: str) -> bool:
    """Whether a file name read from a rows' file is one `write_new` makes (or an older version's
    fixed one): never a path elsewhere."""
    return bool(re.fullmatch(re.escape(prefix) + r"(-[0-9a-f]{12})?" + re.escape(suffix), name))


def remove_others(folder: Path, pattern: str, keep) -> None:
    """The files matching `pattern` that are not in `keep` (replaced ones, older versions' names)."""
    for old in folder.glob(pattern):
        if old.name not in keep:
            old.unlink(missing_ok=True)


def hashes_of(ids: np.ndarray, cids: np.ndarray, hashes: np.ndarray) -> np.ndarray:
    """The content hashes of `ids` from the catalog's (ids sorted, hashes), read apart from them:
    an id the catalog no longer held then gets -1, so the next `diff_rows` takes its row again."""
    if not len(cids):
        return np.full(len(ids), -1, np.int64)
    pos = np.minimum(np.searchsorted(cids, ids), len(cids) - 1)
    return np.where(cids[pos] == ids, hashes[pos], -1)


def diff_rows(labels: np.ndarray, row_hashes: np.ndarray, ids: np.ndarray, hashes: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    """Rows held (`labels`: their image ids, -1 dead; `row_hashes`: their content hashes) against
    the catalog's (ids sorted, their content hashes): the live rows to tombstone (image gone or
    changed) and the ids to add (new or changed)."""
    rows = np.flatnonzero(labels >= 0)
    held = labels[rows]
    pos = np.minimum(np.searchsorted(ids, held), max(len(ids) - 1, 0))
    same = (ids[pos] == held) & (hashes[pos] == row_hashes[rows]) if len(ids) else np.zeros(len(rows), bool)
    removed = rows[~same]
    kept = np.sort(held[same])
    where = np.minimum(np.searchsorted(kept, ids), max(len(kept) - 1, 0))
    added = ids[~((kept[where] == ids) if len(kept) else np.zeros(len(ids), bool))]
    return removed, added


def _hnsw(dim: int):
    import faiss

    index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    return index


class HnswGraph:
    """FAISS HNSW graphs that follow the catalog in place: a main graph and a small recent one.
    New and changed images are linked into the recent graph (adding to the main one would copy
    its whole flat storage, 5 GB at 1M rows, at the first addition after each load); the recent
    graph is merged into the main one when it passes HNSW_RECENT_SHARE of it. Removed images
    become tombstones skipped at search time (an IDSelector per graph), and everything is rebuilt
    only when more than HNSW_COMPACT_SHARE of the rows are dead. Rows are numbered across both
    graphs — the main graph's first, then the recent one's — and keep their numbers when merged;
    they map to image ids through `labels` (-1: dead); `hashes` (each row's content hash, first 8
    bytes as int64, as `Catalog.id_hashes` gives them) tell a changed file. On disk: each graph in
    a file of its own random name (hnsw-<tag>.faiss, hnsw-recent-<tag>.faiss) and the rows in
    hnsw.npz, which names them."""

    def __init__(self, main, recent, labels: np.ndarray, hashes: np.ndarray, saved_rows: int, saved_main: int,
                 files: tuple[str | None, str | None] = (None, None)):
        self.main, self.recent, self.labels, self.hashes = main, recent, labels, hashes
        self.saved_rows = saved_rows  # rows in the files on disk (the rest are in memory only)
        self.saved_main = saved_main  # rows of the main graph's file on disk
        self.files = files  # (main, recent) graph files on disk, as hnsw.npz names them
        self._refresh()

    @property
    def ntotal(self) -> int:
        return self.main.ntotal + self.recent.ntotal

    def _refresh(self) -> None:
        import faiss

        dead = np.flatnonzero(self.labels < 0).astype(np.int64)
        self.dead = len(dead)
        n = self.main.ntotal
        self._selectors = []  # (IDSelectorNot, the batch it wraps: kept alive with it) per graph
        for rows in (dead[dead < n], dead[dead >= n] - n):
            batch = faiss.IDSelectorBatch(rows) if len(rows) else None
            self._selectors.append((faiss.IDSelectorNot(batch) if batch is not None else None, batch))

    @classmethod
    def build(cls, ids: np.ndarray, hashes: np.ndarray, mat: np.ndarray) -> HnswGraph:
        main = _hnsw(mat.shape[1])
        if len(mat):
            main.add(np.ascontiguousarray(mat, dtype=np.float32))
        return cls(main, _hnsw(mat.shape[1]), np.asarray(ids, np.int64).copy(), np.asarray(hashes, np.int64).copy(),
                   0, 0)

    def diff(self, ids: np.ndarray, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`diff_rows` of this graph's rows."""
        return diff_rows(self.labels, self.hashes, ids, hashes)

    def apply(self, removed_rows: list[int], add_ids: np.ndarray, add_hashes: np.ndarray, add_mat: np.ndarray) -> None:
        """Tombstone these rows and link the new images' vectors into the recent graph (merged
        into the main one once it passes HNSW_RECENT_SHARE of it)."""
        if removed_rows:
            self.labels[np.asarray(removed_rows, np.int64)] = -1
        if len(add_ids):
            self.recent.add(np.ascontiguousarray(add_mat, dtype=np.float32))
            self.labels = np.concatenate([self.labels, np.asarray(add_ids, np.int64)])
            self.hashes = np.concatenate([self.hashes, np.asarray(add_hashes, np.int64)])
            if self.recent.ntotal > HNSW_RECENT_SHARE * self.main.ntotal:
                self.merge()
        self._refresh()

    def merge(self) -> None:
        """Link the recent graph's rows into the main graph (same row numbers) and empty it."""
        if self.recent.ntotal:
            self.main.add(self.recent.reconstruct_n(0, self.recent.ntotal))
            self.recent = _hnsw(self.main.d)
        self._refresh()

    def reconstruct(self, row: int) -> np.ndarray:
        """The vector held at this row."""
        n = self.main.ntotal
        return self.main.reconstruct(row) if row < n else self.recent.reconstruct(row - n)

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, scores) of the k best live rows of both graphs, best first (the main graph's
        first among equal scores)."""
        import faiss

        found_rows, found_scores, offset = [], [], 0
        for index, (selector, _) in zip((self.main, self.recent), self._selectors):
            if index.ntotal:
                params = faiss.SearchParametersHNSW()
                params.efSearch = hnsw_ef(k)
                if selector is not None:
                    params.sel = selector
                scores, rows = index.search(np.ascontiguousarray(q[None], dtype=np.float32), k, params=params)
                keep = rows[0] >= 0
                found_rows.append(rows[0][keep] + offset)
                found_scores.append(scores[0][keep])
            offset += index.ntotal
        if not found_rows:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        rows, scores = np.concatenate(found_rows), np.concatenate(found_scores)
        if len(found_rows) > 1:
            best = np.argsort(-scores, kind="stable")[:k]
            rows, scores = rows[best], scores[best]
        return self.labels[rows], scores

    def save(self, folder: Path) -> None:
        """The graphs, each in a new file (the main one only when it changed), then the rows
        (hnsw.npz, naming the graphs' files, with both graphs' row counts), each written whole and
        renamed into place, the rows last; the graph files hnsw.npz no longer names are removed
        after. A crash between the writes leaves hnsw.npz naming the old, intact files."""
        import faiss

        folder.mkdir(exist_ok=True)
        main_file = self.files[0]
        if self.saved_main != self.main.ntotal or main_file is None or not (folder / main_file).exists():
            main_file = write_new(folder, "hnsw", ".faiss", lambda p: faiss.write_index(self.main, p))
        recent_file = (write_new(folder, "hnsw-recent", ".faiss", lambda p: faiss.write_index(self.recent, p))
                       if self.recent.ntotal else None)
        self.saved_rows, self.saved_main, self.files = self.ntotal, self.main.ntotal, (main_file, recent_file)
        self.save_rows(folder)
        remove_others(folder, "hnsw*.faiss", self.files)

    def save_rows(self, folder: Path) -> None:
        """Only the rows' labels (tombstones) of the graphs on disk: cheap, and consistent with them
        (the graphs written again first if their files are gone)."""
        if any(f is not None and not (folder / f).exists() for f in self.files) or self.files[0] is None:
            return self.save(folder)
        n = self.saved_rows
        tmp = folder / f"hnsw.npz.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            np.savez(f, labels=self.labels[:n], hashes=self.hashes[:n], ntotal=n, nmain=self.saved_main,
                     main=self.files[0] or "", recent=self.files[1] or "")
        os.replace(tmp, folder / "hnsw.npz")

    @staticmethod
    def files_of(folder: Path) -> tuple[str, str | None] | None:
        """(main, recent or None) graph files that hnsw.npz names, if it can be read (the fixed
        names hnsw.faiss and hnsw-recent.faiss for files written by older versions)."""
        try:
            with np.load(folder / "hnsw.npz") as z:
                if "main" not in z:
                    return "hnsw.faiss", "hnsw-recent.faiss"
                main, recent = str(z["main"]), (str(z["recent"]) or None)
        except (OSError, ValueError, KeyError, EOFError):
            return None
        if not own_name(main, "hnsw", ".faiss") or not own_name(recent or "hnsw-recent.faiss", "hnsw-recent", ".faiss"):
            return None
        return main, recent

    @classmethod
    def load(cls, folder: Path) -> HnswGraph | None:
        import faiss

        files = cls.files_of(folder)
        try:
            with np.load(folder / "hnsw.npz") as z:
                labels, hashes, n = z["labels"], z["hashes"], int(z["ntotal"])
                n_main = int(z["nmain"]) if "nmain" in z else n  # files of older versions: one graph
            main = faiss.read_index(str(folder / files[0]))
            recent = faiss.read_index(str(folder / files[1])) if n > n_main else _hnsw(main.d)
        except (OSError, RuntimeError, ValueError, KeyError, TypeError, EOFError):
            return None
        if n_main != main.ntotal or n != n_main + recent.ntotal or len(labels) != n:
            return None  # not what hnsw.npz says of them: not to be trusted
        return cls(main, recent, labels.astype(np.int64), hashes.astype(np.int64), n, n_main,
                   (files[0], files[1] if n > n_main else None))


class FlatRows:
    """The exact store's vectors, following the catalog in place: a main matrix (flat-<tag>.npy,
    read memory-mapped) and the rows of new and changed images after it (`recent`, in flat.npz
    with every row's image id and content hash and the name of the main matrix's file). Removed
    and changed images become tombstones (label -1) left out at search time. A change costs the changed rows, not a rewrite of the matrix
    (339 MB at 49k images of the default 1728 dimensions); the recent rows are folded into the
    main matrix, without the dead ones, once they pass FLAT_RECENT_SHARE of it or the dead pass
    HNSW_COMPACT_SHARE of all rows. Rows are numbered main first, then recent."""

    def __init__(self, main: np.ndarray, recent: np.ndarray, labels: np.ndarray, hashes: np.ndarray,
                 main_file: str | None):
        self.main, self.recent, self.labels, self.hashes = main, recent, labels, hashes
        self.main_file = main_file  # the main matrix's file in the folder (None: not written yet)

    @property
    def ntotal(self) -> int:
        return len(self.main) + len(self.recent)

    @property
    def dead(self) -> int:
        return int(np.count_nonzero(self.labels < 0))

    @classmethod
    def build(cls, ids: np.ndarray, hashes: np.ndarray, mat: np.ndarray) -> FlatRows:
        return cls(np.ascontiguousarray(mat, dtype=np.float32), np.zeros((0, mat.shape[1]), np.float32),
                   np.asarray(ids, np.int64).copy(), np.asarray(hashes, np.int64).copy(), None)

    def diff(self, ids: np.ndarray, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`diff_rows` of these rows."""
        return diff_rows(self.labels, self.hashes, ids, hashes)

    def apply(self, removed_rows: np.ndarray, add_ids: np.ndarray, add_hashes: np.ndarray,
              add_mat: np.ndarray | None) -> None:
        """Tombstone these rows and append the new images' vectors to the recent rows; fold the
        recent rows into the main matrix when they or the dead grow past their shares."""
        self.labels[np.asarray(removed_rows, np.int64)] = -1
        if len(add_ids):
            self.recent = np.concatenate([self.recent, np.asarray(add_mat, np.float32)])
            self.labels = np.concatenate([self.labels, np.asarray(add_ids, np.int64)])
            self.hashes = np.concatenate([self.hashes, np.asarray(add_hashes, np.int64)])
        if (len(self.recent) > FLAT_RECENT_SHARE * len(self.main)
                or self.dead > HNSW_COMPACT_SHARE * self.ntotal):
            self.compact()

    def compact(self) -> None:
        """One main matrix of the live rows, by image id; no recent rows."""
        ids, mat = self.matrix()
        order = np.flatnonzero(self.labels >= 0)
        hashes = self.hashes[order][np.argsort(self.labels[order], kind="stable")]
        self.main = np.ascontiguousarray(mat)
        self.recent = np.zeros((0, self.main.shape[1]), np.float32)
        self.labels, self.hashes = ids.copy(), hashes
        self.main_file = None  # to be written

    def matrix(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids sorted, vectors) of the live rows: the main matrix itself (read-only) while it is all
        there is. The ids are always a copy: the rows' labels change in place (tombstones)."""
        if not len(self.recent) and not self.dead and np.all(self.labels[1:] > self.labels[:-1]):
            view = self.main.view()
            view.flags.writeable = False
            return self.labels.copy(), view
        live = np.flatnonzero(self.labels >= 0)
        live = live[np.argsort(self.labels[live], kind="stable")]
        n = len(self.main)
        mat = np.empty((len(live), self.main.shape[1]), np.float32)
        in_main = live < n
        mat[in_main] = self.main[live[in_main]]
        mat[~in_main] = self.recent[live[~in_main] - n]
        return self.labels[live], mat

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, scores) of the k best live rows, best first; ties by image id."""
        sims = np.asarray(self.main @ q)
        if len(self.recent):
            sims = np.concatenate([sims, self.recent @ q])
        return self._best(sims, k)

    def search_many(self, queries: np.ndarray, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """`search` of each row of `queries`, from one matrix product for all of them (at 10,000
        rows of 1728: 0.6 ms a query against 4.3 ms one product each, on one thread; the scores
        may differ from `search`'s in the last bits, about 1e-6, as the sums run in another order)."""
        sims = np.asarray(self.main @ queries.T)
        if len(self.recent):
            sims = np.concatenate([sims, self.recent @ queries.T])
        return [self._best(np.ascontiguousarray(sims[:, b]), k) for b in range(len(queries))]

    def _best(self, sims: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, scores) of the k best live rows by `sims` (one a row: overwritten), best first;
        ties by image id."""
        dead = self.labels < 0
        sims[dead] = -np.inf
        k = min(k, len(sims) - int(np.count_nonzero(dead)))
        if k <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        top = np.argpartition(-sims, k - 1)[:k] if k < len(sims) else np.flatnonzero(~dead)
        top = top[np.lexsort((self.labels[top], -sims[top]))]
        return self.labels[top], sims[top]

    def save(self, folder: Path) -> None:
        """A new main matrix's file (flat-<random tag>.npy) when it changed, then flat.npz (every
        row's id and hash, the recent rows, the main file's name), each written whole and renamed
        into place, flat.npz last, the main files it no longer names removed after. A crash or
        another process between the two writes leaves flat.npz naming the old, intact file: a
        main matrix is never read with rows it was not written with."""
        folder.mkdir(exist_ok=True)
        if self.main_file is None or not (folder / self.main_file).exists():
            def write(path):
                with open(path, "wb") as f:
                    np.save(f, self.main)

            self.main_file = write_new(folder, "flat", ".npy", write)
        tmp = folder / f"flat.npz.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            np.savez(f, labels=self.labels, hashes=self.hashes, recent=self.recent, nmain=len(self.main),
                     main=self.main_file)
        os.replace(tmp, folder / "flat.npz")
        remove_others(folder, "flat-*.npy", {self.main_file})

    @classmethod
    def main_file_of(cls, folder: Path) -> str | None:
        """The name of the main matrix's file that flat.npz names, if it can be read."""
        try:
            with np.load(folder / "flat.npz") as z:
                return str(z["main"])
        except (OSError, ValueError, KeyError, EOFError):
            return None

    @classmethod
    def load(cls, folder: Path, dim: int) -> FlatRows | None:
        """The rows on disk, or None where they are missing, unreadable or do not fit together."""
        try:
            with np.load(folder / "flat.npz") as z:
                labels, hashes, recent = z["labels"], z["hashes"], z["recent"]
                n_main, name = int(z["nmain"]), str(z["main"])
            if not own_name(name, "flat", ".npy"):
                return None
            main = np.load(folder / name, mmap_mode="r")
        except (OSError, ValueError, KeyError, EOFError):
            return None
        if (main.dtype != np.float32 or main.ndim != 2 or main.shape != (n_main, dim)
                or recent.shape != (len(labels) - n_main, dim) or len(hashes) != len(labels)):
            return None
        return cls(main, recent.astype(np.float32), labels.astype(np.int64), hashes.astype(np.int64), name)


class FaissStore:
    """The embedded store: the catalog's vectors as one matrix (exact search), or a FAISS HNSW
    graph kept in step with the catalog in place (`HnswGraph`)."""

    kind = "faiss"

    def __init__(self, catalog: Catalog, spec: dict | None = None):
        self.catalog = catalog
        self._flat = None  # (generation, FlatRows)
        self._ann = None  # (generation, HnswGraph)

    @property
    def mode(self) -> str:
        return self.catalog.manifest.get("ann", "auto")

    def uses_hnsw(self, n: int) -> bool:
        return self.mode == "hnsw" or (self.mode == "auto" and n >= ANN_THRESHOLD)

    def describe(self, n: int) -> str:
        return self.mode if self.mode != "auto" else ("hnsw" if self.uses_hnsw(n) else "exact") + " (auto)"

    def sync(self) -> None:
        """Nothing to do: the matrix and graph are brought in step when the catalog's generation moves."""

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def matrix(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids sorted, vectors) of everything indexed: the exact store's rows (`flat`); an HNSW
        index's read from the catalog (the graph is what is kept)."""
        if self.uses_hnsw(self.catalog.count()):
            return self.catalog.matrix()
        return self.flat().matrix()

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, scores) of the k best images for one query vector, best first."""
        n = self.catalog.count()
        if n == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        if self.uses_hnsw(n):
            return self.graph().search(q, k)
        return self.flat().search(np.asarray(q, np.float32), k)

    def search_many(self, queries: np.ndarray, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """`search` of each row of `queries` (the exact store: one matrix product for all)."""
        queries = np.asarray(queries, np.float32)
        if self.catalog.count() == 0 or self.uses_hnsw(self.catalog.count()):
            return [self.search(q, k) for q in queries]
        return self.flat().search_many(queries, k)

    def flat(self, rebuild: bool = False) -> FlatRows:
        """The exact store's rows in step with the catalog: loaded (or kept from the last call),
        the catalog's changes since applied in place (`FlatRows.apply`), and read whole from the
        catalog only on first use, when the files are unusable, or with `rebuild`."""
        gen = self.catalog.generation()
        if self._flat is not None and self._flat[0] == gen and not rebuild:
            return self._flat[1]
        folder = self.catalog.root / "cache"
        rows = None
        if not rebuild:
            rows = self._flat[1] if self._flat is not None else None
            if rows is not None and rows.main_file != FlatRows.main_file_of(folder):
                rows = None  # another process wrote a new matrix since: its files are taken up, not written over
            if rows is None:
                rows = FlatRows.load(folder, self.catalog.dim)
        cids, hashes = self.catalog.id_hashes()
        if rows is not None:
            removed, added = rows.diff(cids, hashes)
            if len(removed) or len(added):
                at = np.searchsorted(cids, added)
                rows.apply(removed, added, hashes[at], self.catalog.vectors(added.tolist()) if len(added) else None)
                self.catalog.keep_cache(lambda: rows.save(folder))  # read-only or full: in memory only
        if rows is None:
            ids, mat = self.catalog.matrix()
            rows = FlatRows.build(ids, hashes_of(ids, cids, hashes), mat)
            self.catalog.keep_cache(lambda: rows.save(folder))
        if not self.catalog.read_only:
            remove_others(folder, "vectors-*.npz", ())  # the per-generation matrices of older versions
        self._flat = (gen, rows)
        return rows

    def graph(self) -> HnswGraph:
        """The HNSW graph in step with the catalog: loaded (or kept from the last call), the
        catalog's changes since applied in place — removed and changed images tombstoned, new and
        changed ones added, their vectors read by id — and rebuilt whole only on first use or when
        more than HNSW_COMPACT_SHARE of its rows would be dead."""
        gen = self.catalog.generation()
        if self._ann is not None and self._ann[0] == gen:
            return self._ann[1]
        folder = self.catalog.root / "cache"
        g = self._ann[1] if self._ann is not None else None
        if g is not None and g.saved_rows and (HnswGraph.files_of(folder) or (None,))[0] != g.files[0]:
            g = None  # another process wrote a new main graph since (a merge, a rebuild): read it
        if g is None:
            g = HnswGraph.load(folder)
        cids, hashes = self.catalog.id_hashes()
        if g is not None:
            removed, added = g.diff(cids, hashes)
            if g.dead + len(removed) > HNSW_COMPACT_SHARE * (g.ntotal + len(added)):
                g = None  # compaction: too many tombstones
            else:
                at = np.searchsorted(cids, added)
                g.apply(removed.tolist(), added, hashes[at],
                        self.catalog.vectors(added.tolist()) if len(added) else None)
        if g is None:
            ids, mat = self.catalog.matrix()
            g = HnswGraph.build(ids, hashes_of(ids, cids, hashes), mat)
        unsaved = g.ntotal - g.saved_rows
        if unsaved >= max(HNSW_SAVE_ROWS, g.ntotal // 100) or (g.saved_rows == 0 and g.ntotal):
            self.catalog.keep_cache(lambda: g.save(folder))  # read-only or full: in memory only
        elif g.saved_rows:
            self.catalog.keep_cache(lambda: g.save_rows(folder))
        if not self.catalog.read_only:
            remove_others(folder, "vectors-*.npz", ())  # the per-generation matrices of older versions
        self._ann = (gen, g)
        return g
