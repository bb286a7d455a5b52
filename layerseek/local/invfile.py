"""The inverted file of one layer: per visual word, the (image id, HE signature) of every database
descriptor assigned to it; document frequencies for IDF (Eq. 4) and per-image term-frequency norms
(Eq. 8). Scoring follows Eqs. 3 (BoW) and 5-7 (BoW + HE).

Entries live in two word-sorted segments: a large base and a small recent one. Adding an image
re-sorts only the recent segment; it is merged into the base when it grows past a fraction of it,
so adding costs amortised O(log n) per entry. Removing drops the image's recent entries at once
and marks its base entries dead (they stop counting; IDF and N are updated); dead entries are
dropped at the next merge. An id may come back (a changed file keeps its catalog id): its new
entries are recent ones, its dead base entries stay dead.

On disk (`save`, `load`) the base segment is one .npy file per array, memory-mapped when loaded:
a query reads only the lists of its words, so an index larger than RAM still answers, and merges
and saves stream the base CHUNK entries at a time instead of holding it in memory.
"""
from __future__ import annotations

import os
import shutil
import sys
import threading
from pathlib import Path

import numpy as np

from .quantize import hamming

#: held while pending adds are folded in: the first scores of an inverted file may be asked by
#: several threads at once (eval's query threads), and two folds at once lose or double postings
_SETTLING = threading.Lock()

#: entries merged per step when segments are combined (bounds the memory of merges and saves)
CHUNK = 1 << 20
#: image ids are stored as int32 (4 bytes an entry, not 8: a sixth of the lists' memory and of what
#: a query reads); files written with int64 ids are read as they are
MAX_ID = np.iinfo(np.int32).max
#: a query's layer is split into parts for threads only above this much work per part (entries
#: read times signatures compared, a few milliseconds): below, a thread costs more than it saves
PART_WORK = 2_000_000


#: whether scoring runs the compiled loops (`kernels`); `few_queries` turns them off for a process
#: that answers a query or a few (their loading costs more than the numpy path's difference)
_COMPILED = [True]


def use_compiled() -> bool:
    """Whether `vote_array` and `match_counts` run the compiled loops: unless `few_queries()` was
    called, and always once they are loaded in this process."""
    return _COMPILED[0] or "layerseek.local.kernels" in sys.modules


def few_queries() -> None:
    """This process answers one query or a few (a `search` from the shell, the demo): score with
    the numpy path (`InvertedFile.vote_array_numpy`) unless the compiled loops are loaded already."""
    _COMPILED[0] = False


def sum_parts(parts) -> np.ndarray:
    """The votes of `InvertedFile.vote_tasks` parts (their arrays, in the parts' order) added in
    that order: the same floats whichever thread finished first."""
    parts = iter(parts)
    total = next(parts)
    for part in parts:
        total += part
    return total


def _as_words(codes: np.ndarray) -> np.ndarray:
    """n x nbytes packed signatures -> n x ceil(nbytes / 8) uint64 (zero-padded): XOR and popcount
    give the same Hamming distance."""
    n, nb = codes.shape
    pad = (-nb) % 8
    if pad:
        codes = np.concatenate([codes, np.zeros((n, pad), np.uint8)], axis=1)
    return np.ascontiguousarray(codes).view(np.uint64)


class _Segment:
    """Entries sorted by word, with offsets[w]:offsets[w + 1] the entries of word w."""

    def __init__(self, k: int, nbytes: int, words=None, ids=None, codes=None):
        if words is None:
            words, ids, codes = np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros((0, nbytes), np.uint8)
        order = np.argsort(words, kind="stable")
        self.ids = np.ascontiguousarray(ids[order], dtype=np.int32)
        self.nbytes = nbytes
        # the signatures are kept once, as 64-bit words (8x fewer popcounts than bytes)
        self.codes64 = _as_words(np.ascontiguousarray(codes[order]))
        self.words = np.ascontiguousarray(words[order])
        self.offsets = np.searchsorted(self.words, np.arange(k + 1)).astype(np.int64)

    @classmethod
    def presorted(cls, nbytes: int, words, ids, codes64, offsets) -> _Segment:
        """A segment of arrays already in word order (kept as they are: memory maps stay on disk)."""
        seg = cls.__new__(cls)
        seg.nbytes, seg.words, seg.ids, seg.codes64, seg.offsets = nbytes, words, ids, codes64, np.asarray(offsets)
        return seg

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def codes(self) -> np.ndarray:
        """The packed signatures, n x nbytes uint8 (a view)."""
        return self.codes64.view(np.uint8)[:, :self.nbytes]

    def gather(self, qwords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(entry index, query pair index) of every entry in the lists of `qwords`."""
        starts, ends = self.offsets[qwords], self.offsets[qwords + 1]
        lens = ends - starts
        total = int(lens.sum())
        if total == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        pair = np.repeat(np.arange(len(qwords)), lens)
        first = np.cumsum(lens) - lens
        entry = np.arange(total) - np.repeat(first, lens) + np.repeat(starts, lens)
        return entry, pair


def _in_memory(name: str, shape: tuple, dtype) -> np.ndarray:
    return np.empty(shape, dtype)


def merge_segments(segments: list[_Segment], gone: list[np.ndarray], k: int, nbytes: int, alloc=_in_memory
                   ) -> _Segment:
    """The entries of word-sorted `segments` as one segment, without the images in `gone[i]` from
    segment i; within a word, earlier segments' entries first (the order a stable sort of the
    concatenation gives). Streams CHUNK entries at a time into the arrays `alloc(name, shape,
    dtype)` returns (in memory, or memory-mapped files)."""
    def chunks(seg, gone):
        for a in range(0, len(seg), CHUNK):
            ids = np.asarray(seg.ids[a:a + CHUNK])
            keep = ~np.isin(ids, gone) if len(gone) else slice(None)
            yield np.asarray(seg.words[a:a + CHUNK])[keep], ids[keep], np.asarray(seg.codes64[a:a + CHUNK])[keep]

    counts = np.zeros(k, np.int64)
    for seg, dead in zip(segments, gone):
        for w, _, _ in chunks(seg, dead):
            counts += np.bincount(w, minlength=k)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    n, width = int(offsets[-1]), -(-nbytes // 8)
    words, ids, codes64 = alloc("words", (n,), np.int32), alloc("ids", (n,), np.int32), alloc("codes64", (n, width), np.uint64)
    cursor = offsets[:-1].copy()  # where the next entry of each word goes
    for seg, dead in zip(segments, gone):
        for w, i, c in chunks(seg, dead):  # w is sorted: any slice of a word-sorted segment is
            pos = cursor[w] + np.arange(len(w)) - np.searchsorted(w, w)
            words[pos], ids[pos], codes64[pos] = w, i, c
            cursor += np.bincount(w, minlength=k)
    return _Segment.presorted(nbytes, words, ids, codes64, offsets)


BASE_ARRAYS = ("words", "ids", "codes64")


def _link_or_copy(src: Path, dst: Path) -> None:
    """A second name for an unchanged file (a copy where links are not possible)."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _load_array(path: Path, mmap: bool) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r" if mmap else None)
    except ValueError:  # an empty array cannot be memory-mapped
        return np.load(path)


class InvertedFile:
    def __init__(self, k: int, nbytes: int, merge_fraction: float = 0.125, merge_min: int = 200_000):
        self.k = k
        self.nbytes = nbytes
        self.merge_fraction = merge_fraction
        self.merge_min = merge_min
        self.df = np.zeros(k, np.int64)  # images containing each word
        self.norms: dict[int, float] = {}  # image id -> sqrt(sum_w tf_w^2)
        # image id -> its distinct words: what a removal takes off the document frequencies,
        # without a scan of the lists (uint16 while the vocabulary fits)
        self._words_of: dict[int, np.ndarray] | None = {}
        self._words_packed = None  # (ids, concatenated words, counts) as loaded: split when first needed
        self._base = _Segment(k, nbytes)
        self._recent = _Segment(k, nbytes)
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._gone: set[int] = set()  # images whose base entries are dead
        self._ids_end = 0  # 1 + the largest image id ever held (live or dead): dense arrays' length
        self._norms_dense: np.ndarray | None = None  # norms by id, made when first needed

    @property
    def words_of(self) -> dict[int, np.ndarray]:
        """Image id -> its distinct words. Loaded packed and split on first use (a removal or a
        save; splitting 26,000 images' words costs more than a query's scoring)."""
        if self._words_of is None:
            ids, words, counts = self._words_packed
            self._words_of = dict(zip(ids.tolist(), np.split(words, np.cumsum(counts)[:-1])))
            self._words_packed = None
        return self._words_of

    @words_of.setter
    def words_of(self, value: dict[int, np.ndarray]) -> None:
        self._words_of, self._words_packed = value, None

    # -- building ------------------------------------------------------------------------------
    def add(self, image_id: int, words: np.ndarray, codes: np.ndarray) -> None:
        """One image's descriptors: words n x m (m assignments each), codes n x m x nbytes."""
        image_id = int(image_id)
        if image_id in self.norms:
            raise ValueError(f"image {image_id} is already in the inverted file")
        if not 0 <= image_id <= MAX_ID:
            raise ValueError(f"image id {image_id}: the inverted file holds ids 0..{MAX_ID}")
        words = np.asarray(words, np.int32).reshape(-1)
        codes = np.asarray(codes, np.uint8).reshape(-1, self.nbytes)
        tf = np.bincount(words, minlength=self.k)
        self.df += tf > 0
        self.words_of[image_id] = np.flatnonzero(tf).astype(self._word_dtype)
        self.norms[image_id] = float(np.sqrt(np.sum(tf.astype(np.float64) ** 2)))
        self._ids_end = max(self._ids_end, image_id + 1)
        self._norms_dense = None
        self._pending.append((words, np.full(len(words), image_id, np.int32), codes))

    def remove(self, image_id: int) -> bool:
        image_id = int(image_id)
        if image_id not in self.norms:
            return False
        self._fold_pending()
        r = self._recent
        mine = r.ids == image_id  # the recent segment is small: scanned
        self.df[self.words_of.pop(image_id).astype(np.int64)] -= 1
        del self.norms[image_id]
        self._norms_dense = None
        if mine.any():
            keep = ~mine
            w = r.words[keep]
            self._recent = _Segment.presorted(self.nbytes, w, r.ids[keep], r.codes64[keep],
                                              np.searchsorted(w, np.arange(self.k + 1)))
        self._gone.add(image_id)
        return True

    def _fold_pending(self) -> None:
        if self._pending:
            parts = [(self._recent.words, self._recent.ids, self._recent.codes)] + self._pending
            self._pending = []
            self._recent = _Segment(self.k, self.nbytes, *(np.concatenate(p) for p in zip(*parts)))

    def _needs_merge(self) -> bool:
        return len(self._recent) > max(self.merge_min, self.merge_fraction * len(self._base)) or (
            bool(self._gone) and len(self._recent) == 0 and len(self._base) > 0 and self._gone_fraction() > 0.25)

    def _settle(self) -> None:
        """Fold pending adds into the recent segment; merge it into the base when large (in
        memory; a base on disk is merged by the next `save`, streamed to its files)."""
        with _SETTLING:
            self._fold_pending()
            if not self.on_disk and self._needs_merge():
                self.compact()

    def _gone_fraction(self) -> float:
        return len(self._gone) / max(1, len(self._gone) + len(self.norms))

    def compact(self, alloc=_in_memory) -> None:
        """One base segment without removed images (in memory, or where `alloc` puts it)."""
        self._fold_pending()
        gone = np.fromiter(self._gone, np.int64, len(self._gone))
        self._base = merge_segments([self._base, self._recent], [gone, np.zeros(0, np.int64)], self.k, self.nbytes,
                                    alloc)
        self._recent = _Segment(self.k, self.nbytes)
        self._gone = set()

    @property
    def _word_dtype(self):
        return np.uint16 if self.k <= 1 << 16 else np.int32

    # -- scoring -------------------------------------------------------------------------------
    @property
    def n_images(self) -> int:
        return len(self.norms)

    def idf(self) -> np.ndarray:
        """Eq. 4: log(N / n_w); 0 for words no image holds."""
        n = max(self.n_images, 1)
        return np.where(self.df > 0, np.log(n / np.maximum(self.df, 1)), 0.0)

    def _query(self, qwords, qcodes, dt, sigma, max_share=1.0, count=False):
        """The query's word per assignment, its signatures as 64-bit words, idf^2 and the HE
        weight per distance; assignments to words every image holds are left out (idf 0: they
        add nothing, and their lists are the longest; exact), and with `max_share` < 1 those to
        words more than that share of the images hold (a stop-list of crowded words). `count`
        (`match_counts`): every match within dt weighs 1 instead."""
        qw = np.asarray(qwords, np.int64).reshape(-1)
        qc = None if qcodes is None else np.asarray(qcodes, np.uint8).reshape(-1, self.nbytes)
        idf2 = self.idf() ** 2
        # HE weight by distance, looked up instead of computed per match (Eqs. 5-6)
        he_weight = np.where(np.arange(self.nbytes * 8 + 1) < dt,
                             np.exp(-np.arange(self.nbytes * 8 + 1, dtype=np.float64) ** 2 / sigma ** 2), 0.0)
        useful = idf2[qw] > 0
        if max_share < 1:
            useful &= self.df[qw] <= max_share * self.n_images
        qc64 = None if qc is None else np.ascontiguousarray(_as_words(qc)[useful])
        if count:
            idf2, he_weight = (idf2 > 0).astype(np.float64), (np.arange(len(he_weight)) < dt).astype(np.float64)
        return np.ascontiguousarray(qw[useful]), qc64, idf2, he_weight

    def _dead(self) -> np.ndarray:
        return np.fromiter(self._gone, np.int64, len(self._gone))

    def vote_array(self, qwords: np.ndarray, qcodes: np.ndarray | None, dt: int = 52, sigma: float = 30.0,
                   burst: bool = False, max_share: float = 1.0) -> np.ndarray:
        """Un-normalised score per image id (a dense array over ids 0..max id): sum over query
        assignments x of the matching entries' idf(w)^2 (Eq. 3), times exp(-d^2 / sigma^2) and
        only where d < dt with HE (Eqs. 5-7). qwords: n x m, qcodes: n x m x nbytes or None for
        plain BoW. Each posting is read once, however many assignments chose its word, by a
        compiled loop (`kernels`). `burst`: each query assignment's matches in one image count the
        square root of their summed HE weights (intra-image burstiness, `kernels.accumulate_he`);
        `max_share`: see `_query`."""
        if not use_compiled():
            return self.vote_array_numpy(qwords, qcodes, dt, sigma, burst, max_share)
        return sum_parts(t() for t in self.vote_tasks(qwords, qcodes, dt, sigma, burst, max_share))

    def vote_array_numpy(self, qwords: np.ndarray, qcodes: np.ndarray | None, dt: int = 52, sigma: float = 30.0,
                         burst: bool = False, max_share: float = 1.0, count: bool = False) -> np.ndarray:
        """`vote_array` (with `count`, `match_counts`) in vectorised numpy, without the compiled
        loops: for a process that answers one query, which would spend longer loading them
        (0.65-0.7 s from numba's cache, more to compile) than this takes on 26,000 images (50-70
        ms; the loops, once loaded, 7 ms). Each (query assignment, entry) pair is gathered;
        burstiness sums the runs of one image within a list (an image's entries in a list are
        contiguous, as `kernels.accumulate_he` relies on)."""
        self._settle()
        qw, qc64, idf2, he_weight = self._query(qwords, qcodes, dt, sigma, max_share, count)
        sums = np.zeros(self._ids_end)
        for seg in (self._base, self._recent):
            if not len(seg):
                continue
            entry, pair = seg.gather(qw)
            ids = np.asarray(seg.ids)[entry]
            weight = np.ones(len(entry))
            if qc64 is not None:
                d = hamming(np.asarray(seg.codes64)[entry], qc64[pair])
                ok = d < dt
                entry, pair, ids, weight = entry[ok], pair[ok], ids[ok], he_weight[d[ok]]
            if burst and len(entry):  # a run of one image in one assignment's list: idf^2 sqrt(sum)
                start = np.flatnonzero(np.concatenate([[True], (pair[1:] != pair[:-1]) | (ids[1:] != ids[:-1])]))
                weight, pair, ids = np.sqrt(np.add.reduceat(weight, start)), pair[start], ids[start]
            part = np.bincount(ids, weights=weight * idf2[qw[pair]], minlength=len(sums))
            if seg is self._base and self._gone:
                part[self._dead()] = 0.0
            sums += part
        return sums

    def match_counts(self, qwords: np.ndarray, qcodes: np.ndarray, dt: int = 52, max_share: float = 1.0) -> np.ndarray:
        """Per image id (dense, as `vote_array`): how many (query assignment, stored feature) pairs
        share a word and lie within `dt` bits: the HE matches, unweighted (no idf, no burstiness).
        Not normalised by either image's size, so a small shared region counts what it holds."""
        if not use_compiled():
            return self.vote_array_numpy(qwords, qcodes, dt, 1.0, False, max_share, count=True)
        return sum_parts(t() for t in self.vote_tasks(qwords, qcodes, dt, 1.0, False, max_share, count=True))

    def vote_tasks(self, qwords: np.ndarray, qcodes: np.ndarray | None, dt: int = 52, sigma: float = 30.0,
                   burst: bool = False, max_share: float = 1.0, parts: int = 1, count: bool = False) -> list:
        """`vote_array`'s work as up to `parts` functions of no argument and about equal work (the
        query's words dealt out by list length times the assignments to them), each giving its
        share of the votes as a dense array; their sum (`sum_parts`, in order) is `vote_array`.
        The compiled loops release the GIL, so the parts run side by side in threads. `count`:
        the parts of `match_counts` instead."""
        from .kernels import accumulate_bow, accumulate_he, deal, group_by_word

        self._settle()
        qw, qc64, idf2, he_weight = self._query(qwords, qcodes, dt, sigma, max_share, count)
        gwords, gstarts, qcodes_t = group_by_word(qw, qc64)
        segs = [s for s in (self._base, self._recent) if len(s)]
        # memory maps as plain arrays over the same pages (no copy)
        arrays = [(s is self._base, np.asarray(s.offsets, np.int64), np.asarray(s.ids), np.asarray(s.codes64))
                  for s in segs]
        entries = sum(off[gwords + 1] - off[gwords] for _, off, _, _ in arrays) if segs else np.zeros(len(gwords))
        work = entries * (np.diff(gstarts) + 1)
        parts = max(1, min(parts, len(gwords), int(work.sum()) // PART_WORK + 1))
        n, dead = self._ids_end, self._dead() if self._gone else None

        def task(groups):
            def run():
                sums = np.zeros(n)
                for is_base, offsets, ids, codes64 in arrays:
                    if qcodes_t is None:
                        accumulate_bow(offsets, ids, gwords, gstarts, groups, idf2, bool(burst), sums)
                    else:
                        accumulate_he(offsets, ids, codes64, gwords, gstarts, groups, qcodes_t, idf2, he_weight,
                                      int(dt), bool(burst), sums)
                    if is_base and dead is not None:  # dead base entries count for nothing (before
                        sums[dead] = 0.0                # the recent ones: an id may have come back)
                return sums
            return run

        return [task(groups) for groups in deal(work, parts)]

    def votes_reference(self, qwords: np.ndarray, qcodes: np.ndarray | None, dt: int = 52, sigma: float = 30.0,
                        burst: bool = False, max_share: float = 1.0, count: bool = False) -> dict[int, float]:
        """`vote_array` computed the slow, obvious numpy way (gather every entry, then a pass per
        step; burstiness by grouping the matches by query assignment and image), as {image id:
        votes} of the images with any: the reference the compiled loop is tested against (with
        `count`, `match_counts`'s)."""
        self._settle()
        qw, qc64, idf2, he_weight = self._query(qwords, qcodes, dt, sigma, max_share, count)
        sums = np.zeros(0)
        for seg in (self._base, self._recent):
            entry, pair = seg.gather(qw)
            if len(entry) == 0:
                continue
            weight = idf2[qw[pair]]
            if qc64 is not None:
                d = hamming(seg.codes64[entry], qc64[pair])
                ok = d < dt
                entry, pair, weight = entry[ok], pair[ok], weight[ok] * he_weight[d[ok]]
            ids = np.asarray(seg.ids[entry])
            if burst and len(entry):  # per (assignment, image): idf^2 sqrt(sum of HE weights)
                groups, at = np.unique(np.stack([pair, ids], axis=1), axis=0, return_inverse=True)
                he = np.bincount(at.ravel(), weights=weight / idf2[qw[pair]])
                ids, weight = groups[:, 1], idf2[qw[groups[:, 0]]] * np.sqrt(he)
            part = np.bincount(ids, weights=weight)
            if seg is self._base and self._gone:
                dead = self._dead()
                part[dead[dead < len(part)]] = 0.0
            if len(part) > len(sums):
                part[:len(sums)] += sums
                sums = part
            else:
                sums[:len(part)] += part
        hit = np.flatnonzero(sums)
        return {int(i): float(sums[i]) for i in hit}

    def votes(self, qwords: np.ndarray, qcodes: np.ndarray | None, dt: int = 52, sigma: float = 30.0,
              burst: bool = False, max_share: float = 1.0) -> dict[int, float]:
        """`vote_array` as {image id: votes} of the images with any."""
        sums = self.vote_array(qwords, qcodes, dt, sigma, burst, max_share)
        hit = np.flatnonzero(sums)
        return dict(zip(hit.tolist(), sums[hit].tolist()))

    def norm_array(self) -> np.ndarray:
        """Each image's term-frequency norm by id (dense, as `vote_array`; inf where no image is,
        so a score there is 0)."""
        if self._norms_dense is None:
            arr = np.full(self._ids_end, np.inf)
            if self.norms:
                ids = np.fromiter(self.norms, np.int64, len(self.norms))
                arr[ids] = np.fromiter(self.norms.values(), np.float64, len(self.norms))
            self._norms_dense = arr
        return self._norms_dense

    @staticmethod
    def query_norm(qwords: np.ndarray, k: int) -> float:
        qtf = np.bincount(np.asarray(qwords, np.int64).reshape(-1), minlength=k)
        return float(np.sqrt(np.sum(qtf.astype(np.float64) ** 2))) or 1.0

    def score_array(self, qwords: np.ndarray, qcodes: np.ndarray | None, dt: int = 52, sigma: float = 30.0,
                    burst: bool = False, max_share: float = 1.0) -> np.ndarray:
        """Eq. 8 for this layer, per image id (dense): the votes divided by the image's and the
        query's term-frequency norms, so that each layer's scores are on the same scale before
        late fusion; 0 for an image sharing no match with the query."""
        return self.normalise(self.vote_array(qwords, qcodes, dt, sigma, burst, max_share), qwords)

    def normalise(self, votes: np.ndarray, qwords: np.ndarray) -> np.ndarray:
        """Dense votes divided by each image's and the query's term-frequency norms (Eq. 8); 0 for
        an image without features (no votes, norm 0)."""
        norms = self.norm_array()[:len(votes)] * self.query_norm(qwords, self.k)
        return np.divide(votes, norms, out=np.zeros(len(votes)), where=norms > 0)

    def scores(self, qwords: np.ndarray, qcodes: np.ndarray | None, dt: int = 52, sigma: float = 30.0,
               burst: bool = False, max_share: float = 1.0) -> dict[int, float]:
        """`score_array` as {image id: score} of the images with any vote."""
        votes = self.vote_array(qwords, qcodes, dt, sigma, burst, max_share)
        hit = np.flatnonzero(votes)
        s = votes[hit] / (self.norm_array()[hit] * self.query_norm(qwords, self.k))
        return dict(zip(hit.tolist(), s.tolist()))

    # -- storage -------------------------------------------------------------------------------
    def _base_folder(self) -> Path | None:
        """Where the memory-mapped base is read from, while those files are still there."""
        if not self.on_disk:
            return None
        src = Path(self._base.ids.filename).parent
        return src if all((src / f"{n}.npy").is_file() for n in BASE_ARRAYS) else None

    def save(self, folder: str | Path) -> None:
        """Write a folder of .npy arrays (the base), delta.npz (recent entries and removals) and
        meta.npz. A base on disk that needs no merge is linked, not rewritten, so saving after a
        few changes costs only their size; otherwise base, recent and removals are merged on the
        way, streamed. Afterwards the base is read from the files (memory-mapped)."""
        folder = Path(folder)
        src = self._base_folder()
        if src is not None and src.resolve() == folder.resolve():
            raise ValueError(f"{folder}: this inverted file is read from there; save it to another folder")
        folder.mkdir(parents=True, exist_ok=True)
        self._fold_pending()
        if src is not None and not self._needs_merge():
            for name in BASE_ARRAYS:
                _link_or_copy(src / f"{name}.npy", folder / f"{name}.npy")
        else:
            self._merge_into(folder)
        r = self._recent
        np.savez(folder / "delta.npz", words=r.words, ids=r.ids, codes64=r.codes64,
                 gone=np.fromiter(sorted(self._gone), np.int64, len(self._gone)))
        ids = np.fromiter(self.norms, np.int64, len(self.norms))
        words = [self.words_of[i] for i in ids.tolist()]
        np.savez(folder / "meta.npz", offsets=self._base.offsets, df=self.df, norm_ids=ids,
                 norms=np.array([self.norms[i] for i in ids]), k=self.k, nbytes=self.nbytes,
                 word_counts=np.array([len(w) for w in words], np.int64),
                 words_of=np.concatenate(words) if words else np.zeros(0, self._word_dtype))

    def _merge_into(self, folder: Path) -> None:
        maps = []

        def to_file(name, shape, dtype):
            if 0 in shape:  # an empty file cannot be memory-mapped
                return np.empty(shape, dtype)
            m = np.lib.format.open_memmap(folder / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)
            maps.append((name, m))
            return m

        self.compact(to_file)
        for name in BASE_ARRAYS:
            if not (folder / f"{name}.npy").is_file():
                np.save(folder / f"{name}.npy", getattr(self._base, name))
        for _, m in maps:
            m.flush()

    @classmethod
    def load(cls, folder: str | Path, mmap: bool = True) -> InvertedFile:
        """Read a saved inverted file; with `mmap` its lists stay on disk and are paged in as
        queries touch them."""
        folder = Path(folder)
        with np.load(folder / "meta.npz") as z:
            inv = cls(int(z["k"]), int(z["nbytes"]))
            inv.df = z["df"]
            inv.norms = dict(zip(z["norm_ids"].tolist(), z["norms"].tolist()))
            offsets = z["offsets"]
            if "words_of" in z.files:
                inv._words_of, inv._words_packed = None, (z["norm_ids"], z["words_of"], z["word_counts"])
            else:  # saved before the words were kept: read once from the lists
                inv.words_of = inv._words_from_lists(folder, offsets, mmap)
        arrays = [_load_array(folder / f"{name}.npy", mmap) for name in BASE_ARRAYS]
        inv._base = _Segment.presorted(inv.nbytes, *arrays, offsets)
        with np.load(folder / "delta.npz") as z:
            w = z["words"]
            inv._recent = _Segment.presorted(inv.nbytes, w, z["ids"], z["codes64"], np.searchsorted(w, np.arange(inv.k + 1)))
            inv._gone = set(z["gone"].tolist())
        inv._ids_end = 1 + max(max(inv.norms, default=-1), max(inv._gone, default=-1))
        return inv

    def _words_from_lists(self, folder: Path, offsets: np.ndarray, mmap: bool) -> dict[int, np.ndarray]:
        """Each image's distinct words, read once from the lists themselves (inverted files saved
        before the words were kept): the live base entries and the recent ones."""
        base_ids = np.asarray(_load_array(folder / "ids.npy", mmap))
        base_words = np.repeat(np.arange(self.k, dtype=np.int64), np.diff(offsets))
        with np.load(folder / "delta.npz") as z:
            live = ~np.isin(base_ids, z["gone"])
            ids = np.concatenate([base_ids[live], z["ids"]])
            words = np.concatenate([base_words[live], z["words"].astype(np.int64)])
        pairs = np.unique(np.stack([ids, words], axis=1), axis=0)
        cut = np.flatnonzero(np.diff(pairs[:, 0])) + 1
        return {int(g[0, 0]): g[:, 1].astype(self._word_dtype) for g in np.split(pairs, cut) if len(g)}

    @property
    def on_disk(self) -> bool:
        return isinstance(self._base.ids, np.memmap)

    def nbytes_used(self) -> int:
        """Bytes of the entries, wherever they are (memory, or memory-mapped files)."""
        self._settle()
        return sum(s.ids.nbytes + s.codes64.nbytes + s.words.nbytes for s in (self._base, self._recent))
