"""Indexing: walking a folder, planning what is new, changed or gone, decoding and encoding in
parallel, committing in batches, forgetting files (only on evidence)."""
from __future__ import annotations

import contextlib
import errno
import fnmatch
import functools
import hashlib
import os
import stat
import threading
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ImageError, LayerseekError, plural
from .images import is_image_name, load_image, read_snapshot
from .store.catalog import UPLOADS, is_index_dir, is_under

#: said after a failure recorded by an earlier run, the file not changed since (not read again)
UNCHANGED_SINCE_FAILED = " (unchanged since it failed)"
#: Share of a folder's indexed files that one `index` run may forget without --allow-mass-removal.
MASS_REMOVAL_SHARE = 0.5
#: ... counted only from this many files on (deleting one photo of two is not a lost drive).
MASS_REMOVAL_MIN = 3


def absolute(path: str | Path) -> Path:
    """An absolute path with its folders resolved but not its last component: a symlink keeps
    its own name (as a folder walk from a resolved root names it)."""
    p = Path(path).expanduser()
    return Path(os.path.realpath(p.parent)) / p.name


def _exclusive(method):
    """Run an Index method that changes the index under `Index.writing()` (one writer at a time)."""
    @functools.wraps(method)
    def run(self, *args, **kwargs):
        with self.writing():
            return method(self, *args, **kwargs)
    return run


@dataclass
class IndexReport:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    reused: int = 0  # same content already indexed under another name: vector copied
    restored: int = 0  # of those, content `remove` had forgotten: its vector and features taken back
    moved: int = 0  # of those, files whose old name is gone in the same run: renamed or moved
    added_sha256: set[str] = field(default_factory=set)  # contents newly indexed this run
    failed: list[str] = field(default_factory=list)  # "path: reason"
    skipped: list[str] = field(default_factory=list)  # not image files
    skipped_before: set[str] = field(default_factory=set)  # of those, the ones an earlier run reported, unchanged
    unreadable: list[str] = field(default_factory=list)  # "folder: reason": not listed, entries kept
    excluded: int = 0  # left out: removed by the user, or matching an --exclude pattern
    missing_roots: list[tuple[str, int]] = field(default_factory=list)  # other indexed folders gone from the disk
    followed: list[str] = field(default_factory=list)  # real paths of the linked folders the walk went into

    def summary(self) -> str:
        # a moved file normally copies its vector (Ray may not)
        reused = max(0, self.reused - self.restored - self.moved)
        unreadable = len(self.unreadable)
        # a photo removed before and named again is restored, not added: its vector and features
        # are taken back (the --include or `index FILE` that undoes a `remove`)
        return (f"{max(0, self.added - self.moved - self.restored):,} added, {self.updated:,} updated, "
                f"{self.removed - self.moved:,} removed, " + (f"{self.moved:,} moved, " if self.moved else "")
                + (f"{self.restored:,} restored, " if self.restored else "") + f"{self.unchanged:,} unchanged"
                + (f", {reused:,} copied from identical files" if reused else "")
                + f"; {len(self.failed):,} failed, {plural(len(self.skipped), 'not an image', 'not images')}"
                + (f", {plural(unreadable, 'folder')} unreadable ({'its' if unreadable == 1 else 'their'} entries kept)"
                   if unreadable else "")
                + (f", {self.excluded:,} excluded" if self.excluded else "")
                + (f", {plural(len(self.followed), 'linked folder')} followed" if self.followed else ""))


class Exclusions:
    """What a folder walk leaves out, from the catalog's list: `--exclude` patterns (matched on
    the whole path and on the name: every file that matches, indexed or not, and every file under
    a folder that matches, as .gitignore does) and the files and folders the user removed (only
    while they are not in the index: re-added by name, a file is kept and updated like any other)."""

    def __init__(self, rows: Iterable[tuple[str, str]]):
        rows = list(rows)
        self.files = {p for p, k in rows if k == "file"}
        self.folders = [p for p, k in rows if k == "folder"]
        self.globs = [p for p, k in rows if k == "glob"]

    def by_pattern(self, path: str) -> bool:
        return self.pattern_of(path) is not None

    def pattern_of(self, path: str) -> str | None:
        """The first --exclude pattern that matches `path` (its whole path or its name), if any."""
        name = os.path.basename(path)
        return next((g for g in self.globs if fnmatch.fnmatchcase(path, g) or fnmatch.fnmatchcase(name, g)), None)

    def folder_pattern_of(self, folder: str, root: str) -> str | None:
        """The pattern that names `folder` or a folder between it and the walk's `root` (by path or
        by name: `--exclude private`, `--exclude ~/Photos/private`), if any; `root` itself and the
        folders above it are not matched (a pattern that names the folder indexed would leave out all)."""
        while self.globs and folder != root and is_under(folder, root):
            found = self.pattern_of(folder)
            if found is not None:
                return found
            folder = os.path.dirname(folder)
        return None

    def removed(self, path: str) -> bool:
        return path in self.files or any(is_under(path, f) for f in self.folders)


class Ingest:
    """The indexing half of `Index` (a mixin: it uses the index's catalog, method, lock and store)."""

    # -- indexing -----------------------------------------------------------------------------
    @_exclusive
    def add_folder(self, folder: str | Path, batch: int = 16, workers: int = 2,
                   progress: Callable[[int, int], None] | None = None, remove_missing: bool = True,
                   ray: str | None = None, ray_workers: int | None = None,
                   allow_mass_removal: bool = False) -> IndexReport:
        """Index every image under `folder` (recursively) that is new or changed, and forget the
        indexed files under it that are gone. Work is committed every `batch` images, so a killed
        run loses at most one batch and a rerun goes on from there. With `ray` (an address, or
        "local" for a Ray started here) decoding and the network run as a Ray Data pipeline of
        `ray_workers` actors (default: one per GPU, else one per CPU).

        Hidden files and folders are passed over, and so is a layerseek index kept under the
        folder (this one or another: its thumbnails and caches are not photos; what this index
        holds of its own `uploads` stays).

        Forgetting needs evidence: a folder that is missing, unreadable or empty while the index
        holds files under it, or a run that would forget more than MASS_REMOVAL_SHARE of them, is
        refused (LayerseekError, nothing changed) unless `allow_mass_removal`. Entries under
        subfolders that cannot be listed are kept, and those folders reported."""
        folder = Path(folder).expanduser()
        root = folder.resolve()
        if is_index_dir(root):
            raise LayerseekError(f"{folder}: a layerseek index, not a folder of photos (give the folder it was made of)")
        held = sum(1 for _ in self.catalog.entries(under=str(root))) if remove_missing else 0
        confirm = "run again with --allow-mass-removal (or --prune) to forget them"
        if not folder.is_dir():
            if not held:
                raise LayerseekError(f"{folder}: {'not a folder' if folder.exists() else 'no such folder or photo'}")
            if not allow_mass_removal:
                raise LayerseekError(f"{folder}: missing or not a folder, and the index holds {held} files under it; "
                                     f"nothing was removed ({confirm})")
            report = IndexReport()
            self._forget_under(root, set(), [], report)
            self.catalog.drop_root(str(root))
            report.missing_roots = self.catalog.missing_roots()
            return report
        report = IndexReport()
        seen: set[str] = set()
        todo: list[tuple[str, int, int]] = []
        unreadable: list[str] = []

        def cannot_list(err: OSError) -> None:
            unreadable.append(err.filename or str(err))
            report.unreadable.append(f"{err.filename}: {err.strerror or err}")

        listed = 0
        if (str(root), "folder") in self.catalog.exclusions():
            self.catalog.include(str(root))  # a removed folder named again: added back by name
        excluded = Exclusions(self.catalog.exclusions())
        indexes: list[str] = []  # index directories under the folder: passed over
        dangling: list[str] = []  # links whose target is gone
        for dirpath, filenames in photo_walk(root, cannot_list, indexes, dangling, report.followed):
            folder_excluded = excluded.folder_pattern_of(dirpath, str(root)) is not None
            for name in filenames:
                listed += 1
                p = Path(dirpath) / name
                if folder_excluded:
                    report.excluded += 1
                    continue
                if not is_image_name(p):
                    report.skipped.append(str(p))
                    continue
                if excluded.by_pattern(str(p)) or (excluded.removed(str(p)) and self.catalog.by_path(str(p)) is None):
                    report.excluded += 1  # not seen: an indexed file that matches a pattern is forgotten
                    continue
                seen.add(str(p))
                self._plan(p, report, todo)
        for link in dangling:  # a linked folder whose drive is not mounted: what it held is kept
            if any(True for _ in self.catalog.entries(under=link)):
                unreadable.append(link)
                report.unreadable.append(f"{link}: a link to {os.readlink(link)}, which is missing")
        if held and not allow_mass_removal:
            if str(root) in unreadable:
                raise LayerseekError(f"{folder}: cannot be read, and the index holds {held} files under it; nothing "
                                     f"was removed ({confirm})")
            if not listed:
                raise LayerseekError(f"{folder}: empty (a drive not mounted?), and the index holds {held} files under "
                                     f"it; nothing was removed ({confirm})")
        self.catalog.add_root(str(root))
        report.skipped_before = self._non_images_seen(report.skipped)
        # What is gone is found (and a mass removal refused) first, but forgotten after the new
        # files are in: a renamed or moved photo then finds its content still indexed and copies
        # its vector instead of being extracted again, and is reported as moved.
        # this index's uploads are indexed by the server, under their own paths: never gone for a walk
        gone = self._gone_under(root, seen, unreadable + [self._uploads()], held if not allow_mass_removal else None,
                                not_photos=indexes) if remove_missing else ([], [])
        renamed = self._named_by_real_path(todo) if report.followed else []
        self._index_files(todo, report, batch, workers, progress, ray, ray_workers)
        self._forget(gone, report, not_photos=indexes)
        if renamed:  # now named under the folder: the by-name entry and its root go, counted as moved
            # only those whose walk entry was indexed (a file that failed now keeps its old entry)
            done = {e.path for e in renamed if any(o.path != e.path for o in self.catalog.by_real_path(e.path))}
            self._commit(deletes=sorted(done))
            self._seal()
            for path in done:
                self.catalog.drop_root(path)
            report.removed += len(done)
            report.moved += len(done)
        # a folder renamed or moved is indexed again as new (its contents' vectors copied), while
        # the old name's entries stay until forgotten: said, not decided here (a drive may be away)
        report.missing_roots = [(r, n) for r, n in self.catalog.missing_roots() if not is_under(r, str(root))]
        return report

    def _non_images_seen(self, paths: list[str]) -> set[str]:
        """Those of `paths` (files that are not images) an earlier run listed already, unchanged
        since; the list is kept in cache/not-images.json (a lost or damaged file: all listed once
        more). Saying a text file is not an image on every run of a folder helps nobody."""
        import json

        where = self.catalog.root / "cache" / "not-images.json"
        try:
            known = json.loads(where.read_text())
        except (OSError, ValueError):
            known = {}
        now = {}
        for p in paths:
            try:
                st = os.stat(p)
            except OSError:
                continue
            now[p] = [st.st_size, st.st_mtime_ns]
        seen = {p for p, v in now.items() if known.get(p) == v}
        if now != known:
            with contextlib.suppress(OSError):
                where.parent.mkdir(exist_ok=True)
                tmp = where.with_name(f".not-images.{os.getpid()}.tmp")
                tmp.write_text(json.dumps(now))
                os.replace(tmp, where)
        return seen

    def _forget_under(self, root: Path, seen: set[str], unreadable: list[str], report: IndexReport,
                      held: int | None = None) -> None:
        self._forget(self._gone_under(root, seen, unreadable, held), report)

    def _gone_under(self, root: Path, seen: set[str], unreadable: list[str],
                    held: int | None = None, not_photos: Iterable[str] = ()) -> tuple[list, list[str]]:
        """(entries, failure records) under `root` not `seen`, except those under an `unreadable`
        folder. With `held` (entries under root), refuse to forget more than MASS_REMOVAL_SHARE of
        them (and at least MASS_REMOVAL_MIN); entries under a `not_photos` folder (an index's own
        files, which an older walk indexed) are forgotten without counting."""
        def kept(p: str) -> bool:
            return p in seen or any(is_under(p, u) for u in unreadable)

        not_photos = list(not_photos)
        gone = [e for e in self.catalog.entries(under=str(root)) if not kept(e.path)]
        lost = sum(not any(is_under(e.path, d) for d in not_photos) for e in gone)
        held = None if held is None else held - (len(gone) - lost)
        if held is not None and lost >= MASS_REMOVAL_MIN and lost > MASS_REMOVAL_SHARE * held:
            raise LayerseekError(f"{root}: {lost} of the {held} indexed files under it are gone; nothing was "
                                 f"removed (run again with --allow-mass-removal, or --prune, to forget them)")
        return gone, [p for p, _ in self.catalog.failures() if is_under(p, str(root)) and not kept(p)]

    def _forget(self, gone: tuple[list, list[str]], report: IndexReport, not_photos: Iterable[str] = ()) -> None:
        """Forget these entries and failure records; an entry whose content was newly indexed under
        another name in this run counts as moved. One still on disk was left out by an --exclude
        pattern: its content is kept, for an --include that gives it back (not one under a
        `not_photos` folder: an index's thumbnail is no photo to give back)."""
        entries, failures = gone
        not_photos = list(not_photos)
        if entries or failures:
            excluded = {e.path for e in entries
                        if os.path.isfile(e.path) and not any(is_under(e.path, d) for d in not_photos)}
            if excluded:
                self._commit(deletes=sorted(excluded), keep_deleted=True)
            self._commit(deletes=[e.path for e in entries if e.path not in excluded] + failures)
            self._seal()
            report.removed = len(entries)
            fresh = set(report.added_sha256)
            for e in entries:
                if e.sha256 in fresh:
                    fresh.discard(e.sha256)
                    report.moved += 1

    @_exclusive
    def add_files(self, paths: Iterable[str | Path], batch: int = 16, workers: int = 2,
                  progress: Callable[[int, int], None] | None = None, ray: str | None = None,
                  ray_workers: int | None = None) -> IndexReport:
        """Index these image files (new or changed ones; unchanged ones are left as they are). A
        file named here that was removed before is no longer excluded."""
        report, todo = IndexReport(), []
        excluded = Exclusions(self.catalog.exclusions())
        for p in paths:
            p = absolute(p)
            self.catalog.include(str(p))
            left_out = self._left_out(str(p), excluded)
            if left_out is not None:  # indexed now, a walk of its folder would forget it again
                report.failed.append(f"{p}: left out by --exclude {left_out!r} (--include {left_out!r} takes it back)")
            elif not p.exists():
                report.failed.append(f"{p}: missing")
            elif not p.is_file():
                report.failed.append(f"{p}: {_kind(p)}, not a regular file")
            else:
                p = self._indexed_name(p)
                real = os.path.realpath(p)
                if self.catalog.root_of(str(p)) is None and self.catalog.root_of(real) is None:
                    self.catalog.add_root(real)  # a file indexed on its own is its own root
                self._plan(p, report, todo)
        self._index_files(todo, report, batch, workers, progress, ray, ray_workers)
        return report

    def _uploads(self) -> str:
        """Where this index keeps the photos added over HTTP (absolute, resolved)."""
        return str(self.catalog.root.resolve() / UPLOADS)

    def _left_out(self, path: str, excluded: Exclusions) -> str | None:
        """The --exclude pattern that leaves `path` out of the walk of the indexed folder it lies in
        (None for a file outside every indexed folder: a server's upload, a photo added by name)."""
        root = self.catalog.root_of(path)
        if root is None or root == path or not os.path.isdir(root) or is_under(path, self._uploads()):
            return None  # (an upload: the server's own, in an index kept inside the folder)
        return excluded.pattern_of(path) or excluded.folder_pattern_of(os.path.dirname(path), root)

    def _indexed_name(self, p: Path) -> Path:
        """The name under which file `p` (given by a user, its folders resolved) is indexed already:
        a folder walk names a file under a linked folder through the link, so the same file named
        by its real path would otherwise become a second entry. `p` itself when it is not indexed,
        or is a symlink (a linked file is indexed under its own name, as a walk finds it)."""
        if p.is_symlink() or self.catalog.by_path(str(p)) is not None:
            return p
        for e in self.catalog.by_real_path(os.path.realpath(p)):
            if e.path != str(p) and not os.path.islink(e.path):
                with contextlib.suppress(OSError):
                    if os.path.samefile(e.path, p):
                        return Path(e.path)
        return p

    def _named_by_real_path(self, todo: list) -> list:
        """The entries a walk's new files replace: a file indexed by name under its real path (its
        own root) that the walk reaches through a linked folder, under the link's name. One file,
        one entry; the folder's name is the one a walk keeps."""
        roots = set(self.catalog.roots())
        out = []
        for key, *_ in todo:
            real = os.path.realpath(key)
            if real == key or os.path.islink(key) or self.catalog.by_path(key) is not None:
                continue
            out += [e for e in self.catalog.by_real_path(real) if e.path == real and real in roots]
        return out

    def _failed_before(self, key: str, st: os.stat_result, report: IndexReport, reason: str | None = None) -> bool:
        """Whether `key` failed before and is unchanged since (its size and time in `st`, and
        its `reason` when given): then it is reported so and not read again."""
        failed = self.catalog.failure_record(key)
        if failed is None or failed[:2] != (st.st_size, st.st_mtime_ns) or reason not in (None, failed[2]):
            return False
        report.failed.append(f"{key}: {failed[2]}{UNCHANGED_SINCE_FAILED}")
        return True

    def _not_readable(self, key: str, reason: str, report: IndexReport) -> None:
        """Report a file that cannot be read as a photo at all (a link whose target is gone, a
        FIFO): said once, then, while the link or node is unchanged (its own size and time),
        counted among the files unchanged since they failed, as a damaged photo is."""
        try:
            st = os.lstat(key)
        except OSError:  # gone meanwhile
            report.failed.append(f"{key}: {reason}")
            return
        if not self._failed_before(key, st, report, reason):
            report.failed.append(f"{key}: {reason}")
            self._commit(failures=[(key, reason, st.st_size, st.st_mtime_ns)])

    def _plan(self, p: Path, report: IndexReport, todo: list) -> None:
        """Queue file p unless it is indexed and unchanged, or failed and unchanged since."""
        key = str(p)
        try:
            st = p.stat()
        except OSError as e:
            gone = _broken_link(p) if e.errno == errno.ENOENT else None
            if gone:
                self._not_readable(key, gone, report)
            else:
                report.failed.append(f"{p}: unreadable ({e.strerror})")
            return
        if not stat.S_ISREG(st.st_mode):  # a FIFO would block the reader for ever
            self._not_readable(key, f"{_kind(p)}, not a regular file", report)
            return
        e = self.catalog.by_path(key)
        if e is not None and (e.size, e.mtime_ns) == (st.st_size, st.st_mtime_ns):
            report.unchanged += 1
            return
        if not self._failed_before(key, st, report):
            todo.append((key, st.st_size, st.st_mtime_ns))

    def _prepare(self, item):
        """In a worker thread: hash the file and, unless its content is already indexed, decode it
        and take its local features (index with verification), ahead of the network."""
        path, size, mtime = item
        try:
            data, size, mtime = read_snapshot(path)  # hash, pixels, size and time of one version
        except ImageError as e:
            return item, None, None, e  # recorded under the size and time planned: a changed file is read again
        item = (path, size, mtime)
        sha = hashlib.sha256(data).hexdigest()
        if self.catalog_sha_known(sha, path):
            return item, sha, None, None
        try:
            img = load_image(path, max_side=self.method.max_side, data=data)
        except ImageError as e:
            return item, sha, None, e
        return item, sha, (img, self.local_features(img)), None

    def catalog_sha_known(self, sha: str, path: str) -> bool:
        # A separate read-only connection per thread: sqlite3 connections are not shared across threads.
        import sqlite3

        local = getattr(self, "_tl", None)
        if local is None:  # called outside a run of decoding threads
            self._open_thread_connections()
            local = self._tl
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = sqlite3.connect(self.catalog.root / "catalog.sqlite", timeout=30,
                                                check_same_thread=False)
            self._tl_conns.append(conn)
        return (self.catalog.holds_content(sha, conn)
                or self.catalog.forgotten_content(sha, conn) is not None)  # removed, now added back

    def _open_thread_connections(self) -> None:
        """Where the decoding threads keep their connections; made before the threads start (two
        threads making it at once would each keep one, and one list would lose a connection)."""
        self._tl, self._tl_conns = threading.local(), []

    def _close_thread_connections(self) -> None:
        """Close the decoding threads' connections: left to the garbage collector, an open one
        keeps the catalog's file (and its WAL) held long after the run."""
        for conn in getattr(self, "_tl_conns", []):
            conn.close()
        self._tl, self._tl_conns = None, []

    def _encode_image(self, img: np.ndarray, feats=None) -> tuple:
        """(vector or payload, width, height, packed local features or None) of a decoded image;
        `feats`: its local features when a decoding thread took them already."""
        if feats is None:
            feats = self.local_features(img)  # OpenCV's SIFT, outside the network's lock
        with self._net_lock:
            return self.encode_array(img), img.shape[1], img.shape[0], None if feats is None else feats.pack()

    def _local_results(self, todo, workers: int):
        """Yield ((path, size, mtime_ns), sha256, (vector, width, height, features) or None when the content
        is indexed already, ImageError or None): threads hash and decode ahead, the network runs here."""
        self._open_thread_connections()
        try:
            with _one_opencv_thread(workers > 1):
                yield from self._decoded_ahead(todo, workers)
        finally:
            self._close_thread_connections()

    def _decoded_ahead(self, todo, workers: int):
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
                yield item, sha, (None if img is None else self._encode_image(*img)), err

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

        try:
            self._encode_each(results, report, batch, progress, total, ups, touches, fails, flush)
        except KeyboardInterrupt:  # Ctrl-C: what is done is kept (up to a batch was waiting), then stop
            flush()
            raise
        finally:  # the decoding threads and their catalog connections end now, not when collected
            close = getattr(results, "close", None)
            if close is not None:
                close()
        flush()

    def _encode_each(self, results, report: IndexReport, batch: int, progress, total: int, ups: list, touches: list,
                     fails: list, flush) -> None:
        for done, ((path, size, mtime), sha, enc, err) in enumerate(results, 1):
            old = self.catalog.by_path(path)
            if err is None and old is not None and old.sha256 == sha:
                touches.append((path, size, mtime))
                report.unchanged += 1
            elif err is None and enc is None:  # identical content indexed under another name: copy its vector
                held = self.catalog.holds_content(sha)  # else what `remove` forgot, added back
                enc = self.catalog.indexed_content(sha)
                if enc is None:  # Ray's content filter tests a 64-bit prefix: rarely, a false match
                    try:
                        enc = self._encode_image(load_image(path, max_side=self.method.max_side))
                    except ImageError as e:
                        err = e
                else:
                    report.reused += 1
                    report.restored += not held
            if err is not None:
                fails.append((path, f"{err.reason}" + (f" ({err.detail})" if err.detail else ""), size, mtime))
                report.failed.append(str(err))
            elif enc is not None:
                vec, width, height, *feats = enc  # Ray's workers send no local features
                if self.verify_settings and not (feats and feats[0] is not None):
                    try:
                        feats = [self.local_features(load_image(path, max_side=self.method.max_side)).pack()]
                    except ImageError:  # read fine a moment ago: indexed without features, verified as 0
                        feats = [None]
                ups.append((path, size, mtime, sha, width, height, vec, feats[0] if feats else None))
                report.updated += old is not None
                report.added += old is None
                if old is None:
                    report.added_sha256.add(sha)
            if len(ups) + len(touches) + len(fails) >= batch:
                flush()
            if progress:
                progress(done, total)

    def find(self, path: str | Path) -> list:
        """The catalog entries a user's path names: the indexed file itself, or (for a symlink
        indexed under its own name) the link or the file it points to."""
        named = self.catalog.by_path(str(absolute(path)))
        if named is not None:
            return [named]
        return self.catalog.by_real_path(os.path.realpath(Path(path).expanduser()))

    @_exclusive
    def forget(self, paths: Iterable[str]) -> None:
        """Forget these indexed files, which were moved out of the indexed folders (a dedupe run):
        unlike `remove`, nothing is excluded, so a file brought back is indexed again."""
        keys = [str(p) for p in paths]
        if keys:
            self._commit(deletes=keys)
            self._seal()

    @_exclusive
    def remove(self, paths: Iterable[str | Path]) -> list[str]:
        """Forget these files (the files themselves are not touched); a symlink may be named by
        its own path or its target's, and a folder forgets every indexed file under it (a linked
        folder, by its link's name or its target's). What was removed stays out of later
        `add_folder` runs until it is added by name (`add_files`). Returns the paths that were not
        in the index."""
        keys, missing, out = [], [], []
        for p in paths:
            found = self.find(p)
            if found:
                out += [(e.path, "file") for e in found]
            else:
                found = list(self.catalog.entries(under=str(absolute(p))))
                if found:
                    out.append((str(absolute(p)), "folder"))
                elif os.path.isdir(p):  # a linked folder named by its target: its files carry the link's name
                    real = os.path.realpath(p)
                    found = self.catalog.entries_really_under(real)
                    tails = {e.path: os.path.relpath(e.real_path, real) for e in found}
                    out += [(link, "folder") for link in sorted({path[: -len(tail) - 1] for path, tail in tails.items()
                                                                  if path.endswith("/" + tail)})]
            keys += [e.path for e in found]
            if not found:
                missing.append(str(p))
        self._commit(deletes=keys, keep_deleted=True)  # added back later: not described again
        for pattern, kind in out:  # after the removal is committed: a failed one excludes nothing
            self.catalog.exclude(pattern, kind)
        self._seal()
        return missing


def photo_walk(root: str | Path, onerror: Callable[[OSError], None] | None = None, indexes: list | None = None,
               dangling: list | None = None, followed: list | None = None) -> Iterable[tuple[str, list[str]]]:
    """(folder, its file names) for every folder under `root`, as `index` reads a folder, in
    sorted order: hidden files and folders passed over, and layerseek indexes (their paths added
    to `indexes`: thumbnails and caches are no photos); a linked folder followed, under its link's
    name (its real path added to `followed`), unless it leads into `root` (walked under its own
    name) or to a folder walked already (a loop, a second link); a link whose target is gone added
    to `dangling` instead."""
    root = str(root)
    inside = os.path.realpath(root)
    walked = set()
    with contextlib.suppress(OSError):
        st = os.stat(root)
        walked.add((st.st_dev, st.st_ino))
    for dirpath, dirnames, filenames in os.walk(root, onerror=onerror, followlinks=True):
        kept = []
        for d in sorted(dirnames):
            full = os.path.join(dirpath, d)
            if d.startswith("."):
                continue
            if is_index_dir(full):
                if indexes is not None:
                    indexes.append(full)
                continue
            target = os.path.realpath(full) if os.path.islink(full) else None
            if target is not None and is_under(target, inside):
                continue
            try:
                st = os.stat(full)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in walked:
                continue
            walked.add((st.st_dev, st.st_ino))
            if followed is not None and target is not None:
                followed.append(target)
            kept.append(d)
        dirnames[:] = kept
        names = []
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            full = os.path.join(dirpath, name)
            if not is_image_name(name) and os.path.islink(full) and not os.path.exists(full):
                if dangling is not None:
                    dangling.append(full)
                continue
            names.append(name)
        yield dirpath, names


@contextlib.contextmanager
def _one_opencv_thread(apply: bool):
    """OpenCV on one thread while the decoding threads run SIFT side by side: its own thread pool
    on top of theirs and the network's only made them wait for each other (30 phone photos:
    about 0.5 s of 7; docs/BENCHMARKS.md). A process-wide setting, put back afterwards."""
    if not apply:
        yield
        return
    import cv2

    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


def _broken_link(p: Path) -> str | None:
    """Why a file is missing when it is a symbolic link whose target is gone ("a link to X,
    which is not there"); None for anything else."""
    try:
        return f"a link to {os.readlink(p)}, which is not there"
    except OSError:
        return None


def _kind(p: Path) -> str:
    """What a path that is not a regular file is, in words."""
    try:
        mode = p.stat().st_mode
    except OSError:
        return "unreadable"
    for test, word in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISDIR, "a folder"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return word
    return "not a plain file"
