"""A second source of candidates, independent of the CNN: Bag-of-Words with Hamming Embedding
over the RootSIFT features an index already stores for verification (Sivic & Zisserman 2003;
Philbin et al. 2007's large vocabularies; Jégou, Douze & Schmid 2008's HE; Jégou et al. 2009's
burstiness). A search verifies the union of the CNN's shortlist and this engine's, so the right
photo reaches geometry even where the CNN ranks a hub of another kind above it.

`SiftWords` is the learned part (an estimator: a spherical vocabulary of unit RootSIFT words with
an HNSW assignment, and per-word HE medians of a 64-bit projection), learned on a collection other
than the one searched. The one shipped (`SHIPPED`) was learned on Corel-1k by
`python -m layerseek.verify.words learn` (the command is in its file's metadata); every new index
with local features uses it, and its manifest names it. `WordsEngine` holds one inverted file of
the images' words and signatures (`local.invfile.InvertedFile`, the MOF machinery: compiled
scorer, IDF, burstiness, on-disk lists), kept in step with the catalog by the index.
"""
from __future__ import annotations

import hashlib
import json
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import LayerseekError
from ..local.invfile import InvertedFile
from ..local.quantize import HammingEmbedding, Vocabulary
from .features import LocalFeatures, rootsift

#: the vocabulary every new index with local features uses (learned on Corel-1k; see `learn`)
SHIPPED = Path(__file__).resolve().parent.parent / "data" / "sift-words-20k.npz"
#: the HNSW assignment's search breadth: 97.9 % of descriptors get the exact nearest word (32:
#: 99.0 %, 64: 99.6 %) in 60 % of 32's time (13 against 22 ms for 987 descriptors;
#: bench/word_encode.py); the mixed library, the Paris subset and the 400 "same" searches gave
#: the same figures with 16 as with 32 (docs/BENCHMARKS.md, "Fifth round")
EF_SEARCH = 16
#: word geometry (`features.WordFeatures`): the words each query feature is matched by (its
#: nearest 5; a stored feature has 1), measured with `Verifier.hamming` 20 in docs/RESULTS.md
GEOMETRY_QUERY_WORDS = 5
#: how many of the word engine's best a search verifies beside the CNN's shortlist (docs/RESULTS.md)
DEFAULT_WORD_CANDIDATES = 100
#: a candidate whose word score for the query is at most this is not verified (issue 26's cheap
#: filter; docs/RESULTS.md): SMVS R@1 and Paris mAP unchanged with 0 and 10,000 distractors (25 %
#: and 17 % skipped). 0.02 skipped more (50 %, 35 %), also without loss there, but dropped a cover
#: seen only in a photo's corner (17 inliers at a score of 0.014). Negative: verify every one.
DEFAULT_WORD_FILTER = 0.01


@dataclass
class WordsParams:
    """How a query is scored (Jégou et al. 2008/2009 for 64-bit SIFT signatures)."""

    dt: int = 24  # Hamming threshold out of 64 bits (Jégou et al. 2008: 22-24)
    sigma: float = 16.0  # HE weighting exp(-d^2 / sigma^2) (Jégou et al. 2009: 16 for 64 bits)
    ma: int = 1  # query-side multiple assignment
    burst: bool = True  # intra-image burstiness: repeated structure (text, windows) counts once


_BUILDING = threading.Lock()


class SiftWords:
    """A vocabulary of `k` unit RootSIFT words and 64-bit Hamming Embedding: `fit` on descriptors
    of a training collection, `encode` an image's features as (words n x ma, signatures)."""

    def __init__(self, k: int = 20000, bits: int = 64, niter: int = 12, seed: int = 1234):
        self.k, self.bits, self.niter, self.seed = k, bits, niter, seed

    def fit(self, x: np.ndarray) -> SiftWords:
        """x: n x 128 RootSIFT descriptors (unit length) of a training collection."""
        self.vocabulary_ = Vocabulary(self.k, self.niter, self.seed, approximate=True, spherical=True).fit(x)
        nearest = self.vocabulary_.assign(x, 1)[:, 0]
        self.he_ = HammingEmbedding(self.bits, self.seed).fit(x, nearest, self.k)
        self._fingerprint = None
        return self

    @property
    def nbytes(self) -> int:
        return self.he_.nbytes

    def _assign(self, x: np.ndarray, ma: int) -> np.ndarray:
        self.warm()
        return self.vocabulary_.assign(x, ma)

    def warm(self) -> SiftWords:
        """Load (or build) the words' assignment graph and the fingerprint now, not at the first
        encoding: `Query.prefetch_words` does it beside a query's decoding and network."""
        # an index's decoding threads encode at once: the HNSW graph is built once, under a lock
        # (two threads building it corrupted the heap); searching it from several is safe
        with _BUILDING:
            index = self.vocabulary_._search_index()
            if hasattr(index, "hnsw") and index.hnsw.efSearch != EF_SEARCH:
                index.hnsw.efSearch = EF_SEARCH
        self.fingerprint()
        return self

    def encode(self, f: LocalFeatures, ma: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(words n x ma int32, signatures n x ma x nbytes) of an image's SIFT features."""
        return self.encode_many([f], ma)[0]

    def encode_many(self, feats: list[LocalFeatures], ma: int = 1) -> list[tuple[np.ndarray, np.ndarray]]:
        """`encode` of several images, their descriptors assigned in one search (FAISS spreads
        one search over the cores)."""
        for f in feats:
            if f.kind != "sift":
                raise LayerseekError(f"the word engine reads SIFT features, not {f.kind}")
        x = np.concatenate([rootsift(f.desc) for f in feats if len(f)] or [np.zeros((0, 128), np.float32)])
        words = self._assign(x, ma)
        sigs = self.he_.signatures(x, words)
        out, at = [], 0
        for f in feats:
            n = len(f)
            out.append((words[at:at + n].astype(np.int32), sigs[at:at + n]))
            at += n
        return out

    def fingerprint(self) -> str:
        """A short hash of the learned arrays: what an index's cache and manifest are tied to
        (computed once: 5 MB of words)."""
        if getattr(self, "_fingerprint", None):
            return self._fingerprint
        h = hashlib.sha256(np.ascontiguousarray(self.vocabulary_.centroids_, np.float16).tobytes())
        h.update(np.ascontiguousarray(self.he_.medians_, np.float16).tobytes())
        self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def save(self, path: str | Path, about: dict | None = None) -> None:
        """Plain arrays (float16: the words and medians of unit vectors lose nothing that matters
        to an assignment, and the file is half the size) and what it was learned on."""
        np.savez_compressed(path, centroids=self.vocabulary_.centroids_.astype(np.float16),
                            projection=self.he_.projection_, medians=self.he_.medians_.astype(np.float16),
                            params=np.array(json.dumps({"k": self.k, "bits": self.bits, "niter": self.niter,
                                                        "seed": self.seed, "about": about or {}})))

    @classmethod
    def load(cls, path: str | Path) -> SiftWords:
        try:
            with np.load(path) as z:
                p = json.loads(str(z["params"]))
                w = cls(p["k"], p["bits"], p["niter"], p["seed"])
                w.about = p.get("about", {})
                v = Vocabulary(p["k"], p["niter"], p["seed"], approximate=True, spherical=True)
                v.centroids_ = np.ascontiguousarray(z["centroids"], np.float32)
                v._index = None
                he = HammingEmbedding(p["bits"], p["seed"])
                he.projection_ = np.ascontiguousarray(z["projection"], np.float32)
                he.medians_ = np.ascontiguousarray(z["medians"], np.float32)
        except (OSError, ValueError, KeyError) as e:
            raise LayerseekError(f"{path}: not a usable word vocabulary ({e})") from None
        w.vocabulary_, w.he_ = v, he
        return w


_LOADED: dict[str, SiftWords] = {}
_LOADING = threading.Lock()


def shipped() -> SiftWords:
    """The shipped vocabulary, read once per process (a second thread asking meanwhile waits for
    the first's)."""
    key = str(SHIPPED)
    with _LOADING:
        if key not in _LOADED:
            if not SHIPPED.is_file():
                raise LayerseekError(f"{SHIPPED}: the word vocabulary is missing from this installation")
            _LOADED[key] = SiftWords.load(SHIPPED)
        return _LOADED[key]


class WordsEngine:
    """One inverted file of every image's words and HE signatures; `search` gives the images
    with the highest HE scores (Eqs. 3-8 of seed 000 with one layer), best first."""

    def __init__(self, words: SiftWords, params: WordsParams | None = None):
        self.words = words
        self.params = params or WordsParams()
        self.file = InvertedFile(words.k, words.nbytes)

    def add(self, image_id: int, encoded: tuple[np.ndarray, np.ndarray]) -> None:
        self.file.add(image_id, *encoded)

    def remove(self, image_id: int) -> bool:
        return self.file.remove(image_id)

    def __len__(self) -> int:
        return self.file.n_images

    def score_array(self, query: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        p = self.params
        return self.file.score_array(query[0], query[1], p.dt, p.sigma, p.burst)

    def match_counts(self, query: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        """Per image id: the query's HE matches in it (`InvertedFile.match_counts`, within `dt`)."""
        return self.file.match_counts(query[0], query[1], self.params.dt)

    def search(self, query: tuple[np.ndarray, np.ndarray], top: int) -> list[tuple[int, float]]:
        """(image id, score) of the `top` best images sharing any match, best first, ties by id."""
        return self.best(self.score_array(query), top)

    @staticmethod
    def best(s: np.ndarray, top: int) -> list[tuple[int, float]]:
        """(image id, score) of the `top` best of a `score_array` with a nonzero score, best first, ties by id."""
        hit = np.flatnonzero(s)
        if len(hit) > top:
            hit = hit[np.argpartition(-s[hit], top - 1)[:top]]
        order = hit[np.lexsort((hit, -s[hit]))]
        return list(zip(order.tolist(), s[order].tolist()))

    def save(self, folder: str | Path) -> None:
        self.file.save(Path(folder) / "invfile")

    def load_files(self, folder: str | Path) -> WordsEngine:
        self.file = InvertedFile.load(Path(folder) / "invfile")
        return self


def learn(folder: str | Path, out: str | Path, k: int = 20000, features: int = 1000, side: int = 640,
          max_train: int = 1_200_000) -> SiftWords:
    """Learn a vocabulary on the images of `folder` (SIFT as the index extracts it) and save it."""
    from ..images import IMAGE_SUFFIXES, load_image
    from .features import sift_features

    paths = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    descs = []
    for p in paths:
        descs.append(rootsift(sift_features(load_image(p, max_side=side), features, side).desc))
    x = np.concatenate(descs)
    rng = np.random.default_rng(0)
    if len(x) > max_train:
        x = x[rng.choice(len(x), max_train, replace=False)]
    w = SiftWords(k).fit(x)
    w.save(out, {"learned_on": str(folder), "images": len(paths), "descriptors": len(x),
                 "features": features, "side": side,
                 "command": f"python -m layerseek.verify.words learn {Path(folder).name} {Path(out).name} --k {k}"})
    return w


if __name__ == "__main__":  # python -m layerseek.verify.words learn FOLDER OUT.npz [--k K]
    args = sys.argv[1:]
    if len(args) < 3 or args[0] != "learn":
        sys.exit("usage: python -m layerseek.verify.words learn FOLDER OUT.npz [--k K]")
    kk = int(args[args.index("--k") + 1]) if "--k" in args else 20000
    learn(args[1], args[2], kk)
    print(f"{args[2]}: {kk} words learned on {args[1]}")
