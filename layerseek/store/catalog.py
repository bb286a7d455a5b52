"""The index directory: an SQLite catalog of the indexed files with their vectors, and a manifest
of the method that made them.

Vectors live in the catalog beside their file's row, so adding, changing or removing an image is
one SQLite transaction: a process killed at any moment (even SIGKILL) leaves either the old or the
new state, never half of one. Search structures (the exact store's rows, a FAISS HNSW graph) are
derived from the catalog: they follow its changes (image ids and content hashes) in place and are
rebuilt from it when missing or unusable.
"""
from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import LayerseekError, shown, storage_error_line
from .manifest import canonical, file_hashes, first_difference, made_with, validate

SCHEMA_VERSION = 1
CATALOG = "catalog.sqlite"
MANIFEST = "manifest.json"
UPLOADS = "uploads"  # images added over HTTP are stored in the index directory, under this folder

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    vector BLOB NOT NULL,
    added REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS images_sha ON images (sha256);
CREATE TABLE IF NOT EXISTS failures (path TEXT PRIMARY KEY, reason TEXT NOT NULL, size INTEGER, mtime_ns INTEGER);
"""

# Where each file really is, and the folders the user indexed: the server opens a file only when
# its real path is still the one recorded and lies under an indexed root (a symlink swapped in
# later serves nothing). `flag` marks an entry found changed on disk since it was indexed.
# Added in place to catalogs made before them (same schema version: the columns may be NULL).
_PROVENANCE = """
CREATE TABLE IF NOT EXISTS roots (path TEXT PRIMARY KEY, added REAL NOT NULL);
"""

# What `index` leaves out: files and folders the user removed ('file', 'folder': kept out until
# re-added by name) and `--exclude` patterns ('glob', on the path and on the name).
_EXCLUDED = """
CREATE TABLE IF NOT EXISTS excluded (pattern TEXT PRIMARY KEY, kind TEXT NOT NULL, added REAL NOT NULL);
"""
EXCLUSION_KINDS = ("file", "folder", "glob")

# Local features for geometric verification (`verify.features.LocalFeatures.pack`), one row per
# image of an index made with verification; written and deleted in the image's own transaction.
_FEATURES = """
CREATE TABLE IF NOT EXISTS features (id INTEGER PRIMARY KEY, data BLOB NOT NULL);
"""
_IMAGE_COLUMNS = {"real_path": "TEXT", "flag": "TEXT"}

# What `remove` forgot, by content: a file added back (by name, or `index --include`) takes its
# vector and features from here instead of being read and described again. The FORGOTTEN_MAX
# most recent are kept (a vector and about 80 KB of features each).
_FORGOTTEN = """
CREATE TABLE IF NOT EXISTS forgotten (sha256 TEXT PRIMARY KEY, vector BLOB NOT NULL, width INTEGER NOT NULL,
                                      height INTEGER NOT NULL, features BLOB, forgotten REAL NOT NULL);
"""
FORGOTTEN_MAX = 2000

# Changes to the vectors, logged in the same transaction as the change itself when the vectors are
# also searched outside the catalog (a Milvus collection): the store applies the log after each
# commit and again at the next open, so a process killed between the two never leaves it behind.
_CHANGES = """
CREATE TABLE IF NOT EXISTS changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, image_id INTEGER NOT NULL,
                                    op TEXT NOT NULL CHECK (op IN ('up', 'del')));
"""


@dataclass
class Entry:
    id: int
    path: str
    size: int
    mtime_ns: int
    sha256: str
    width: int
    height: int
    real_path: str | None = None  # the file a symlink pointed to when it was indexed (else path)
    flag: str | None = None  # why the file on disk no longer matches, once found so


_ENTRY_SQL = "SELECT id, path, size, mtime_ns, sha256, width, height, real_path, flag FROM images"


def to_db(path: str | None) -> str | bytes | None:
    """A path as the catalog stores it: the name's bytes as UTF-8 text, or the bytes themselves
    when they are not UTF-8 (from an old disk or archive; SQLite text cannot hold them). A blob
    never equals a text in SQLite, so the two kinds cannot collide. Taken from the bytes, not from
    Python's string: under a non-UTF-8 locale Python names "🐱.jpg" with surrogates, and the
    same file must have the same key whatever the locale of the run that indexed it."""
    if path is None:
        return None
    raw = os.fsencode(path)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


def from_db(value: str | bytes | None) -> str | None:
    """The path `to_db` stored, as this process names the file (its locale's decoding of the
    bytes: surrogates for those it cannot decode)."""
    if value is None:
        return None
    return os.fsdecode(value if isinstance(value, bytes) else value.encode("utf-8"))


def _entry(row: tuple) -> Entry:
    e = Entry(*row)
    e.path, e.real_path = from_db(e.path), from_db(e.real_path)
    return e


def is_index_dir(path: str | Path) -> bool:
    """Whether a directory holds a layerseek index (its manifest and catalog): what it keeps
    (thumbnails, uploads, caches) is never a folder's photos."""
    return (Path(path) / MANIFEST).is_file() and (Path(path) / CATALOG).is_file()


def is_under(path: str, root: str) -> bool:
    """Whether `path` is `root` or lies below it (both absolute, normalised)."""
    return path == root or path.startswith(root.rstrip("/") + "/")


def read_only_place(folder: Path) -> bool:
    """Whether nothing may be written in `folder`: a read-only file system (a read-only drive or
    bind mount), or a folder this user may not write."""
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY) or not os.access(folder, os.W_OK)
    except OSError:
        return False


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _paths_as_text(conn: sqlite3.Connection) -> None:
    """Rows that earlier versions stored as blobs although their bytes are UTF-8 (a run under a
    non-UTF-8 locale) get the text key `to_db` gives now. One whose text key is taken already (the
    same file indexed again by such a version under a UTF-8 locale) is left as it is."""
    for table, column in (("images", "path"), ("images", "real_path"), ("failures", "path"),
                          ("roots", "path"), ("excluded", "pattern")):
        rows = conn.execute(f"SELECT rowid, {column} FROM {table} WHERE typeof({column}) = 'blob'").fetchall()
        for rowid, raw in rows:
            try:
                text = bytes(raw).decode("utf-8")
            except UnicodeDecodeError:
                continue
            conn.execute(f"UPDATE OR IGNORE {table} SET {column} = ? WHERE rowid = ?", (text, rowid))


#: how much of a catalog SQLite reads through a memory map (its builds cap it at 2 GB): a search
#: reads the local features of ~170 candidates, 10-15 MB of blobs in 4 KB overflow pages, in
#: 26-70 ms through read calls and 5-11 ms through the map (docs/BENCHMARKS.md)
MMAP_BYTES = 1 << 31


def mapped(conn: sqlite3.Connection) -> sqlite3.Connection:
    """`conn`, reading its database through a memory map."""
    conn.execute(f"PRAGMA mmap_size={MMAP_BYTES}")
    return conn


class Catalog:
    """One index directory. Open with `Catalog.create` (new) or `Catalog.open` (existing)."""

    def __init__(self, root: Path, conn: sqlite3.Connection, manifest: dict):
        self.root = root
        self.conn = conn
        self.manifest = manifest
        self._count = None  # (generation, images)

    # -- opening -----------------------------------------------------------------------------
    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        # explicit transactions; callers serialise use of one connection (the server across threads)
        if read_only_place(path.parent):
            return Catalog.connect_read_only(path)
        conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return mapped(conn)

    @staticmethod
    def connect_read_only(path: Path) -> sqlite3.Connection:
        """A catalog on a read-only drive or folder, opened to be read. A WAL database there has no
        -shm file and cannot make one, so SQLite cannot open it read-only as it is; it is opened as
        immutable then (nothing can change it where nothing may be written)."""
        from urllib.parse import quote

        uri = "file:" + quote(os.fsencode(os.path.abspath(path)))
        for extra in ("", "&immutable=1"):
            conn = sqlite3.connect(f"{uri}?mode=ro{extra}", uri=True, timeout=30, isolation_level=None,
                                   check_same_thread=False)
            try:
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
                return mapped(conn)
            except sqlite3.OperationalError:
                conn.close()
                if extra:
                    raise
        raise AssertionError("unreachable")

    @property
    def read_only(self) -> bool:
        """Whether this index lies where nothing may be written (a read-only drive or folder)."""
        return read_only_place(self.root)

    def keep_cache(self, save: Callable[[], object]) -> bool:
        """Run `save()`, which writes a derived structure under cache/ (through `*.<pid>.tmp` files
        renamed into place), unless nothing may be written here. A drive that refuses the write
        (full, or gone read-only) leaves the structure in memory only: a cache is rebuilt from the
        catalog when missing or behind, so the search goes on; the half-written files are removed.
        Returns whether it was kept."""
        if self.read_only:
            return False
        try:
            save()
            return True
        except OSError:
            import shutil

            for tmp in (self.root / "cache").rglob(f"*.{os.getpid()}.tmp"):  # files, or the MOF engine's folder
                shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
            return False

    @classmethod
    def exists(cls, root: str | Path) -> bool:
        return is_index_dir(root)

    @classmethod
    def create(cls, root: str | Path, manifest: dict) -> Catalog:
        root = Path(root)
        if root.exists() and not root.is_dir():
            raise LayerseekError(f"{root}: exists and is not a directory")
        root.mkdir(parents=True, exist_ok=True)
        if (root / MANIFEST).exists():
            raise LayerseekError(f"{root}: already holds an index")
        manifest = {"schema_version": SCHEMA_VERSION, "created": time.time(), **manifest}
        conn = cls._connect(root / CATALOG)
        conn.executescript(_SCHEMA + _CHANGES)
        cls._migrate(conn)
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        conn.execute("INSERT OR IGNORE INTO meta VALUES ('generation', '0')")
        cls._record_manifest(conn, root, manifest)
        # The manifest is written last: a directory without it is not an index yet.
        write_atomic(root / MANIFEST, json.dumps(manifest, indent=2))
        return cls(root, conn, manifest)

    @classmethod
    def open(cls, root: str | Path) -> Catalog:
        root = Path(root)
        if not cls.exists(root):
            raise LayerseekError(f"{root}: no index here (create one with `layerseek index DIR --index {root}`)")
        try:
            manifest = json.loads((root / MANIFEST).read_text())
        except (ValueError, OSError) as e:
            raise LayerseekError(f"{root / MANIFEST}: damaged manifest ({e}); `layerseek repair {root}` writes "
                                 "it back from the catalog") from None
        if not isinstance(manifest, dict):
            validate(manifest, root / MANIFEST)
        try:
            conn = cls._connect(root / CATALOG)
        except sqlite3.DatabaseError as e:
            raise LayerseekError(storage_error_line(e, root / CATALOG)) from None
        try:
            row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            version = int(row[0]) if row and str(row[0]).isdigit() else -1
            said = manifest.get("schema_version") if isinstance(manifest, dict) else None
            if version != SCHEMA_VERSION or said != SCHEMA_VERSION:
                found = version if version != SCHEMA_VERSION else said
                raise LayerseekError(f"{root}: index schema version {found} (catalog {version}, manifest {said}), "
                                     f"this layerseek reads {SCHEMA_VERSION}; re-create the index")
            validate(manifest, root / MANIFEST)
            recorded = cls.recorded_manifest(conn)
            if recorded is None:  # made before the catalog kept a copy: this manifest is the one
                try:
                    cls._record_manifest(conn, root, manifest)
                except sqlite3.OperationalError:  # a read-only index: searched, not recorded
                    pass
            else:
                diff = first_difference(made_with(manifest), made_with(recorded))
                if diff:
                    raise LayerseekError(f"{root / MANIFEST}: disagrees with the catalog: {diff}; `layerseek repair "
                                         f"{root}` writes the manifest back, or build another index")
            cls._migrate(conn)
        except sqlite3.DatabaseError as e:
            conn.close()
            raise LayerseekError(storage_error_line(e, root / CATALOG)) from None
        except LayerseekError:
            conn.close()
            raise
        cat = cls(root, conn, manifest)
        if cat.logs_changes:
            conn.executescript(_CHANGES)  # indexes made before the log existed
        return cat

    def rewrite_manifest(self, manifest: dict) -> None:
        """Replace the manifest (search-time settings only: what made the stored vectors and
        features must not change) in the catalog's copy and in manifest.json, the file last."""
        validate(manifest, self.root / MANIFEST)
        diff = first_difference(made_with(manifest), made_with(self.manifest))
        if diff:
            raise LayerseekError(f"{self.root}: a manifest that changes how the index was made ({diff})")
        with self.conn:
            self._record_manifest(self.conn, self.root, manifest)
        write_atomic(self.root / MANIFEST, json.dumps(manifest, indent=2))
        self.manifest = manifest

    @staticmethod
    def _record_manifest(conn: sqlite3.Connection, root: Path, manifest: dict) -> None:
        """Keep a copy of the manifest, and the hashes of the learned files, in the catalog."""
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('manifest', ?)", (canonical(manifest),))
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('learned', ?)", (canonical(file_hashes(root)),))

    @staticmethod
    def recorded_manifest(conn: sqlite3.Connection) -> dict | None:
        """The manifest the catalog was created with (None: a catalog older than the copy)."""
        row = conn.execute("SELECT value FROM meta WHERE key='manifest'").fetchone()
        return json.loads(row[0]) if row else None

    @staticmethod
    def recorded_learned(conn: sqlite3.Connection) -> dict | None:
        row = conn.execute("SELECT value FROM meta WHERE key='learned'").fetchone()
        return json.loads(row[0]) if row else None

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        have = {row[1] for row in conn.execute("PRAGMA table_info(images)")}
        for col, kind in _IMAGE_COLUMNS.items():
            if col not in have:
                conn.execute(f"ALTER TABLE images ADD COLUMN {col} {kind}")
        conn.executescript(_PROVENANCE + _EXCLUDED + _FEATURES + _FORGOTTEN
                           + "CREATE INDEX IF NOT EXISTS images_real ON images (real_path);")
        _paths_as_text(conn)

    def reader(self) -> Catalog:
        """Another connection to the same catalog, for reads beside a writer (WAL: readers never
        wait for it)."""
        return Catalog(self.root, self._connect(self.root / CATALOG), self.manifest)

    def close(self) -> None:
        self.conn.close()

    # -- reading -----------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    @property
    def store_settings(self) -> dict:
        """Where the vectors are searched (`store.vectors.parse_store`); indexes made before
        stores existed have the embedded FAISS one."""
        return self.manifest.get("store") or {"kind": "faiss"}

    @property
    def logs_changes(self) -> bool:
        """Whether changes are logged for a vector store outside the catalog."""
        return self.store_settings["kind"] != "faiss"

    def generation(self) -> int:
        return int(self.conn.execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0])

    def count(self) -> int:
        """Images indexed, counted once per generation (COUNT(*) reads every row: 10 ms at 1M).
        The generation is read first: a change committed in between leaves a newer count under an
        older generation, which the next call replaces."""
        gen = self.generation()
        if self._count is None or self._count[0] != gen:
            self._count = (gen, self.conn.execute("SELECT COUNT(*) FROM images").fetchone()[0])
        return self._count[1]

    def entries(self, under: str | None = None) -> Iterator[Entry]:
        sql = _ENTRY_SQL
        args: tuple = ()
        if under is not None:
            # compared as bytes: a name stored as a blob (not UTF-8) lies under its folder too
            sql += " WHERE path = ? OR substr(CAST(path AS BLOB), 1, ?) = ?"
            prefix = os.fsencode(under.rstrip("/") + "/")
            args = (to_db(under), len(prefix), prefix)
        for row in self.conn.execute(sql + " ORDER BY id", args):
            yield _entry(row)

    def entries_really_under(self, real: str) -> list[Entry]:
        """The entries whose file, links followed, lies under the folder `real` (a real path): a
        linked folder's files are recorded under the link's name."""
        prefix = os.fsencode(real.rstrip("/") + "/")
        return [_entry(r) for r in self.conn.execute(
            _ENTRY_SQL + " WHERE real_path IS NOT NULL AND substr(CAST(real_path AS BLOB), 1, ?) = ? ORDER BY id",
            (len(prefix), prefix))]

    def by_path(self, path: str) -> Entry | None:
        row = self.conn.execute(_ENTRY_SQL + " WHERE path=?", (to_db(path),)).fetchone()
        return _entry(row) if row else None

    def by_real_path(self, real: str) -> list[Entry]:
        """The entries whose file is `real` (itself, or through a symlink)."""
        real = to_db(real)
        return [_entry(r) for r in self.conn.execute(_ENTRY_SQL + " WHERE real_path=? OR (real_path IS NULL AND path=?)"
                                                     " ORDER BY id", (real, real))]

    def by_id(self, id_: int) -> Entry | None:
        if not 0 < int(id_) < 2 ** 63:  # SQLite's integer range
            return None
        row = self.conn.execute(_ENTRY_SQL + " WHERE id=?", (int(id_),)).fetchone()
        return _entry(row) if row else None

    def indexed_content(self, sha: str) -> tuple[np.ndarray, int, int, bytes | None] | None:
        """(vector, width, height, local features) of a file with this content already indexed, or
        removed by `remove` not long ago, if any."""
        row = self.conn.execute("SELECT i.vector, i.width, i.height, f.data FROM images i LEFT JOIN features f "
                                "ON f.id = i.id WHERE i.sha256=? LIMIT 1", (sha,)).fetchone()
        if not row:
            row = self.forgotten_content(sha, self.conn)
        if not row:
            return None
        return (np.frombuffer(row[0], dtype=np.float32).copy() if self.dim else bytes(row[0]), row[1], row[2],
                None if row[3] is None else bytes(row[3]))

    def holds_content(self, sha: str, conn: sqlite3.Connection | None = None) -> bool:
        """Whether an indexed file has this content (`conn`: another connection to this catalog,
        e.g. a decoding thread's)."""
        return (conn or self.conn).execute("SELECT 1 FROM images WHERE sha256=? LIMIT 1", (sha,)).fetchone() is not None

    @staticmethod
    def forgotten_content(sha: str, conn: sqlite3.Connection) -> tuple | None:
        """(vector, width, height, features) that `remove` kept of this content, if any (None too
        on a catalog opened read-only before the table existed)."""
        try:
            return conn.execute("SELECT vector, width, height, features FROM forgotten WHERE sha256=?",
                                (sha,)).fetchone()
        except sqlite3.OperationalError:
            return None

    def features(self, ids: Iterable[int]) -> dict[int, bytes]:
        """id -> packed local features, for the ids that have them."""
        ids = [int(i) for i in ids]
        return {i: bytes(b) for i, b in self._rows_for_ids("SELECT id, data FROM features WHERE id IN ({})", ids)}

    def feature_bytes(self) -> int | None:
        """Mean stored bytes of local features per image that has them."""
        v = self.conn.execute("SELECT AVG(LENGTH(data)) FROM features").fetchone()[0]
        return None if v is None else round(v)

    def payload_bytes(self) -> int | None:
        """Mean stored bytes per image."""
        v = self.conn.execute("SELECT AVG(LENGTH(vector)) FROM images").fetchone()[0]
        return None if v is None else round(v)

    def id_hashes(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, the first 8 bytes of each content hash as big-endian int64), by id: enough to see
        which images changed, read as two arrays (fast at a million rows)."""
        # no ORDER BY: SQLite then reads the hash index alone (the table's rows carry the vectors:
        # 2x slower at 200k rows)
        rows = self.conn.execute("SELECT id, substr(sha256, 1, 16) FROM images").fetchall()
        ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
        hashes = np.frombuffer(bytes.fromhex("".join(r[1] for r in rows)), ">i8").astype(np.int64)
        order = np.argsort(ids, kind="stable")
        return ids[order], hashes[order]

    def contents(self, ids: Iterable[int]) -> dict[int, str]:
        """id -> content hash of these images (those still indexed), in one query."""
        ids = [int(i) for i in ids if 0 < int(i) < 2 ** 63]
        out: dict[int, str] = {}
        for at in range(0, len(ids), 500):  # SQLite's bound on a statement's variables
            part = ids[at:at + 500]
            out.update(self.conn.execute(f"SELECT id, sha256 FROM images WHERE id IN ({','.join('?' * len(part))})",
                                         part))
        return out

    def same_content(self, id_: int) -> list[int]:
        """The ids of the indexed files with this image's content, its own included (none when it
        is not indexed)."""
        if not 0 < int(id_) < 2 ** 63:
            return []
        return [r[0] for r in self.conn.execute("SELECT id FROM images WHERE sha256 = (SELECT sha256 FROM images "
                                                "WHERE id=?) ORDER BY id", (int(id_),))]

    def shas(self) -> dict[int, str]:
        """id -> content hash of everything indexed."""
        return dict(self.conn.execute("SELECT id, sha256 FROM images"))

    def payloads(self, ids: Iterable[int]) -> Iterator[tuple[int, str, bytes]]:
        """(id, sha256, stored bytes) of these images: the encoded local descriptors of an index
        whose manifest has dim 0 (MOF)."""
        for i in ids:
            row = self.conn.execute("SELECT sha256, vector FROM images WHERE id=?", (int(i),)).fetchone()
            if row:
                yield int(i), row[0], bytes(row[1])

    def matrix(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, n x dim float32 matrix) of everything indexed, by id, read from the catalog (the
        FAISS store keeps its own copy that follows the changes: `store.vectors.FlatRows`)."""
        rows = self.conn.execute("SELECT id, vector FROM images ORDER BY id").fetchall()
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        vecs = (np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), self.dim)
                if rows else np.zeros((0, self.dim), np.float32))
        return ids, vecs

    def _rows_for_ids(self, sql: str, ids: list[int]) -> Iterator[tuple]:
        """The rows of `sql`, whose "IN ({})" takes the ids, 500 ids a statement (under any
        SQLite build's limit on parameters)."""
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            yield from self.conn.execute(sql.format(",".join("?" * len(chunk))), chunk)

    def vectors(self, ids: Iterable[int]) -> np.ndarray:
        """len(ids) x dim float32: the stored vectors of these images, in the order given."""
        ids = [int(i) for i in ids]
        found = dict(self._rows_for_ids("SELECT id, vector FROM images WHERE id IN ({})", ids))
        missing = [i for i in ids if i not in found]
        if missing:
            raise LayerseekError(f"{self.root}: image id {missing[0]} is not in the catalog")
        return np.frombuffer(b"".join(found[i] for i in ids), np.float32).reshape(len(ids), self.dim).copy()

    def iter_vectors(self, chunk: int = 1000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, vectors) of everything indexed, `chunk` rows at a time (never all in memory)."""
        last = -1
        while True:
            rows = self.conn.execute("SELECT id, vector FROM images WHERE id > ? ORDER BY id LIMIT ?",
                                     (last, chunk)).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield (np.array([r[0] for r in rows], np.int64),
                   np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(len(rows), self.dim))

    # -- the change log (only where logs_changes) ---------------------------------------------
    def last_change(self) -> int:
        return self.conn.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()[0]

    def changes_after(self, seq: int) -> tuple[int, list[int], list[int]]:
        """(last seq, ids to upsert, ids to delete) of the changes after `seq`: the last change of
        each image wins, and an upserted image no longer in the catalog counts as deleted."""
        rows = self.conn.execute("SELECT seq, image_id, op FROM changes WHERE seq > ? ORDER BY seq", (seq,)).fetchall()
        last = {}
        for _, i, op in rows:
            last[i] = op
        wanted = [i for i, op in last.items() if op == "up"]
        present = {i for (i,) in self._rows_for_ids("SELECT id FROM images WHERE id IN ({})", wanted)}
        up = [i for i in wanted if i in present]
        return (rows[-1][0] if rows else seq), up, [i for i in last if i not in up]

    def store_seq(self) -> int:
        row = self.conn.execute("SELECT value FROM meta WHERE key='store_seq'").fetchone()
        return int(row[0]) if row else 0

    def set_store_seq(self, seq: int) -> None:
        """Mark the log up to `seq` as applied to the store, and forget it."""
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            c.execute("INSERT OR REPLACE INTO meta VALUES ('store_seq', ?)", (str(seq),))
            c.execute("DELETE FROM changes WHERE seq <= ?", (seq,))
            c.execute("COMMIT")
        except BaseException:
            if c.in_transaction:  # a full disk may have ended it already: its error is the one to see
                c.execute("ROLLBACK")
            raise

    def roots(self) -> list[str]:
        """The folders (and single files) that were indexed, as absolute real paths."""
        return [from_db(r) for (r,) in self.conn.execute("SELECT path FROM roots ORDER BY path")]

    def root_of(self, path: str) -> str | None:
        """The longest indexed root that `path` lies under, if any."""
        best = None
        for r in self.roots():
            if is_under(path, r) and (best is None or len(r) > len(best)):
                best = r
        return best

    def add_root(self, path: str) -> None:
        self.conn.execute("INSERT OR IGNORE INTO roots VALUES (?, ?)", (to_db(path), time.time()))

    def drop_root(self, path: str) -> None:
        """No longer an indexed folder (gone from the disk, its entries forgotten)."""
        self.conn.execute("DELETE FROM roots WHERE path = ?", (to_db(path),))

    def missing_roots(self) -> list[tuple[str, int]]:
        """(root, entries under it) of each indexed folder or file that is not on the disk now
        (moved, renamed, or on a drive not mounted) while the index holds entries under it."""
        out = []
        for r in self.roots():
            if not os.path.exists(r):
                n = sum(1 for _ in self.entries(under=r))
                if n:
                    out.append((r, n))
        return out

    def exclusions(self) -> list[tuple[str, str]]:
        """(pattern, kind) of what `index` leaves out (kind: EXCLUSION_KINDS)."""
        return [(from_db(p), k) for p, k in self.conn.execute("SELECT pattern, kind FROM excluded ORDER BY kind, pattern")]

    def exclude(self, pattern: str, kind: str) -> None:
        if kind not in EXCLUSION_KINDS:
            raise ValueError(f"unknown exclusion kind {kind!r}")
        self.conn.execute("INSERT OR REPLACE INTO excluded VALUES (?, ?, ?)", (to_db(pattern), kind, time.time()))

    def include(self, pattern: str) -> bool:
        """Drop an exclusion (a path re-added by name, or a pattern given back); whether there was one."""
        return self.conn.execute("DELETE FROM excluded WHERE pattern=?", (to_db(pattern),)).rowcount > 0

    def flag(self, id_: int, reason: str) -> None:
        """Mark an entry whose file no longer matches what was indexed (the next `index` re-reads it)."""
        self.conn.execute("UPDATE images SET flag=? WHERE id=?", (shown(reason), int(id_)))

    def failures(self) -> list[tuple[str, str]]:
        return [(from_db(p), r) for p, r in self.conn.execute("SELECT path, reason FROM failures ORDER BY path")]

    # -- writing: each call one transaction ---------------------------------------------------
    def _bump(self) -> None:
        self.conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key='generation'")

    def commit_batch(self, upserts: Iterable[tuple], touches: Iterable[tuple] = (), failures: Iterable[tuple] = (),
                     deletes: Iterable[str] = (), keep_deleted: bool = False) -> None:
        """upserts: (path, size, mtime_ns, sha256, width, height, vector[, local features bytes or
        None]); touches: (path, size,
        mtime_ns) for files whose content is unchanged; failures: (path, reason, size, mtime_ns);
        deletes: paths, whose content is kept in `forgotten` with `keep_deleted` (a `remove`, which
        may be undone). All or nothing."""
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            changed = False
            for path, size, mtime, sha, w, h, vec, *feats in upserts:
                if self.dim == 0:  # a payload of bytes (MOF's encoded local descriptors)
                    vec = np.frombuffer(bytes(vec), np.uint8)
                else:
                    vec = np.ascontiguousarray(vec, dtype=np.float32)
                    if vec.shape != (self.dim,):
                        raise LayerseekError(f"{path}: vector of shape {vec.shape}, index holds {self.dim}")
                (image_id,) = c.execute(
                    "INSERT INTO images (path, size, mtime_ns, sha256, width, height, vector, added, real_path) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(path) DO UPDATE SET size=excluded.size, "
                    "mtime_ns=excluded.mtime_ns, sha256=excluded.sha256, width=excluded.width, "
                    "height=excluded.height, vector=excluded.vector, added=excluded.added, "
                    "real_path=excluded.real_path, flag=NULL RETURNING id",
                    (to_db(path), size, mtime, sha, w, h, vec.tobytes(), time.time(),
                     to_db(os.path.realpath(path)))).fetchone()
                if self.logs_changes:
                    c.execute("INSERT INTO changes (image_id, op) VALUES (?, 'up')", (image_id,))
                if feats and feats[0] is not None:
                    c.execute("INSERT OR REPLACE INTO features VALUES (?, ?)", (image_id, bytes(feats[0])))
                else:
                    c.execute("DELETE FROM features WHERE id=?", (image_id,))
                c.execute("DELETE FROM failures WHERE path=?", (to_db(path),))
                changed = True
            for path, size, mtime in touches:
                c.execute("UPDATE images SET size=?, mtime_ns=?, real_path=?, flag=NULL WHERE path=?",
                          (size, mtime, to_db(os.path.realpath(path)), to_db(path)))
            for path, reason, size, mtime in failures:
                c.execute("INSERT OR REPLACE INTO failures VALUES (?, ?, ?, ?)",
                          (to_db(path), shown(reason), size, mtime))
            for path in deletes:
                if keep_deleted:
                    c.execute("INSERT OR REPLACE INTO forgotten SELECT i.sha256, i.vector, i.width, i.height, f.data, ? "
                              "FROM images i LEFT JOIN features f ON f.id = i.id WHERE i.path=?",
                              (time.time(), to_db(path)))
                gone = c.execute("DELETE FROM images WHERE path=? RETURNING id", (to_db(path),)).fetchall()
                c.execute("DELETE FROM failures WHERE path=?", (to_db(path),))
                if gone:
                    c.execute("DELETE FROM features WHERE id=?", (gone[0][0],))
                if gone and self.logs_changes:
                    c.execute("INSERT INTO changes (image_id, op) VALUES (?, 'del')", (gone[0][0],))
                changed = changed or bool(gone)
            if keep_deleted:
                c.execute("DELETE FROM forgotten WHERE sha256 NOT IN (SELECT sha256 FROM forgotten "
                          "ORDER BY forgotten DESC LIMIT ?)", (FORGOTTEN_MAX,))
            if changed:
                self._bump()
            c.execute("COMMIT")
        except BaseException:
            if c.in_transaction:  # a full disk may have ended it already: its error is the one to see
                c.execute("ROLLBACK")
            raise

    def failure_record(self, path: str) -> tuple[int, int, str] | None:
        """(size, mtime_ns, reason) of the last failed attempt on this file, if any."""
        row = self.conn.execute("SELECT size, mtime_ns, reason FROM failures WHERE path=?", (to_db(path),)).fetchone()
        return tuple(row) if row else None
