"""The two quantisation steps of MOF (seed 000, Sec. 2.2): a visual vocabulary per layer (FAISS
k-means, approximate assignment, multiple assignment) and Hamming Embedding signatures.

Both are estimators: the constructor stores parameters, `fit` learns from a training collection
(never the one searched), `save` / `load` keep plain arrays.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ..errors import LayerseekError

#: FAISS k-means wants at least this many training points per centroid
MIN_POINTS_PER_WORD = 39


class Vocabulary:
    """k visual words from FAISS k-means. With `approximate`, both the k-means assignment steps and
    the assignment of new descriptors go through an HNSW graph over the words (the AKM/ANN of the
    paper) instead of an exact scan of all k words. With `spherical`, the words are unit vectors
    (FAISS re-normalises the centroids after each k-means step), so a descriptor (itself of unit
    length) goes to the word of largest cosine: no word of small norm, the mean of scattered
    descriptors, gathers every descriptor unlike the training ones."""

    def __init__(self, k: int = 20000, niter: int = 20, seed: int = 1234, approximate: bool | None = None,
                 spherical: bool = False):
        self.k = k
        self.niter = niter
        self.seed = seed
        self.approximate = approximate  # None: approximate when k >= 4096
        self.spherical = spherical

    def _approx(self) -> bool:
        return self.approximate if self.approximate is not None else self.k >= 4096

    def fit(self, x: np.ndarray) -> Vocabulary:
        import faiss

        x = np.ascontiguousarray(x, dtype=np.float32)
        n, d = x.shape
        if n < self.k:
            raise LayerseekError(f"vocabulary: {n} training descriptors cannot make {self.k} words; "
                                 "use fewer words (--words) or a larger training collection")
        if n < MIN_POINTS_PER_WORD * self.k:
            warnings.warn(f"vocabulary: only {n} training descriptors for {self.k} words (FAISS asks for "
                          f"{MIN_POINTS_PER_WORD} per word, {MIN_POINTS_PER_WORD * self.k}); the words will be "
                          "poorly estimated: use fewer words or more training images", stacklevel=2)
        km = faiss.Kmeans(d, self.k, niter=self.niter, seed=self.seed, spherical=self.spherical, verbose=False)
        if self._approx():
            km.index = faiss.IndexHNSWFlat(d, 32)
        km.train(x)
        self.centroids_ = np.ascontiguousarray(km.centroids, dtype=np.float32)
        self._index = None
        return self

    def _search_index(self):
        import faiss

        if getattr(self, "_index", None) is None:
            if not hasattr(self, "centroids_"):
                raise LayerseekError("vocabulary: fit or load it first")
            d = self.centroids_.shape[1]
            if self._approx():
                self._index = self._cached_graph()
            else:
                self._index = faiss.IndexFlatL2(d)
                self._index.add(self.centroids_)
        return self._index

    def _cached_graph(self):
        """The HNSW graph over the words, read from the cache (`<cache>/assign/`) when an earlier
        process built it: building it takes 1-2 s for 20,000 words, at every start that encodes
        (an index's first search, `index`), and FAISS's parallel build is not the same graph twice."""
        import hashlib
        import os

        import faiss

        from ..cache import cache_dir

        key = hashlib.sha256(self.centroids_.tobytes())
        key.update(f"hnsw32 ef64 faiss {faiss.__version__}".encode())
        path = cache_dir() / "assign" / f"{key.hexdigest()[:20]}.faiss"
        index = None
        if path.is_file():
            try:
                index = faiss.read_index(str(path))
            except RuntimeError:  # damaged: built again below
                index = None
            if index is not None and (index.ntotal, index.d) != self.centroids_.shape:
                index = None
        if index is None:
            index = faiss.IndexHNSWFlat(self.centroids_.shape[1], 32)
            index.add(self.centroids_)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
                faiss.write_index(index, str(tmp))
                os.replace(tmp, path)
            except (OSError, RuntimeError):  # a read-only cache: built at each start, as before
                pass
        index.hnsw.efSearch = 64
        return index

    def assign(self, x: np.ndarray, ma: int = 1) -> np.ndarray:
        """n x ma word ids, nearest first (multiple assignment when ma > 1)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if len(x) == 0:
            return np.zeros((0, ma), np.int64)
        _, words = self._search_index().search(x, ma)
        return words

    def save(self, path: str | Path) -> None:
        np.savez(path, centroids=self.centroids_, niter=self.niter, seed=self.seed,
                 approximate=-1 if self.approximate is None else int(self.approximate), spherical=int(self.spherical))

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        with np.load(path) as z:
            a = int(z["approximate"])
            spherical = bool(z["spherical"]) if "spherical" in z.files else False  # saved before it existed
            v = cls(len(z["centroids"]), int(z["niter"]), int(z["seed"]), None if a < 0 else bool(a), spherical)
            v.centroids_ = z["centroids"]
        v._index = None
        return v


class HammingEmbedding:
    """Hamming Embedding (Jegou et al. 2008, seed 000 Sec. 2.2): a random orthogonal projection P
    (h x d, h = 128 or d if smaller) and, per visual word and bit, the median of the projected
    training descriptors of that word. A descriptor's signature for word w is P x > median(w)."""

    def __init__(self, bits: int = 128, seed: int = 1234):
        self.bits = bits
        self.seed = seed

    def fit(self, x: np.ndarray, words: np.ndarray, k: int) -> HammingEmbedding:
        """x: n x d training descriptors, words: their nearest word (n,), k: vocabulary size."""
        x = np.asarray(x, dtype=np.float32)
        d = x.shape[1]
        h = min(self.bits, d)
        rng = np.random.default_rng(self.seed)
        q, r = np.linalg.qr(rng.standard_normal((d, d)))
        q *= np.sign(np.diag(r))  # a uniformly random orthogonal matrix
        self.projection_ = np.ascontiguousarray(q[:h].astype(np.float32))  # h x d, orthonormal rows
        proj = x @ self.projection_.T
        words = np.asarray(words).reshape(-1)
        # A word no training descriptor fell in takes the median of all of them.
        medians = np.tile(np.median(proj, axis=0), (k, 1)).astype(np.float32)
        order = np.argsort(words, kind="stable")
        bounds = np.searchsorted(words[order], np.arange(k + 1))
        for w in np.flatnonzero(np.diff(bounds)):
            medians[w] = np.median(proj[order[bounds[w]:bounds[w + 1]]], axis=0)
        self.medians_ = medians
        return self

    @property
    def nbytes(self) -> int:
        return (self.projection_.shape[0] + 7) // 8

    def signatures(self, x: np.ndarray, words: np.ndarray) -> np.ndarray:
        """x: n x d, words: n x m -> n x m x nbytes packed signatures, one per assigned word."""
        proj = np.asarray(x, dtype=np.float32) @ self.projection_.T  # n x h
        bits = proj[:, None, :] > self.medians_[words]  # n x m x h
        return np.packbits(bits, axis=-1)

    def save(self, path: str | Path) -> None:
        np.savez(path, projection=self.projection_, medians=self.medians_, bits=self.bits, seed=self.seed)

    @classmethod
    def load(cls, path: str | Path) -> HammingEmbedding:
        with np.load(path) as z:
            he = cls(int(z["bits"]), int(z["seed"]))
            he.projection_, he.medians_ = z["projection"], z["medians"]
        return he


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Eq. 7: the number of differing bits between packed signatures (broadcast over leading axes)."""
    return np.bitwise_count(np.bitwise_xor(a, b)).sum(axis=-1, dtype=np.int32)
