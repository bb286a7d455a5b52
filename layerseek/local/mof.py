"""MOF, Multi-layer Orderless Fusion (seed 000): per layer a vocabulary, Hamming Embedding and an
inverted file over dense-window descriptors; the layers' scores added (late fusion, Eq. 8).

    model = MOFModel(layers=("s16", "s32", "last"), words=2000).fit(training_descriptors)
    engine = MOFEngine(model)
    engine.add(image_id, model.encode(descriptors, db=True))
    engine.search(model.encode(query_descriptors))         # [(image id, score), ...] best first
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import LayerseekError
from ..postprocess import PCAWhitening
from .invfile import InvertedFile, sum_parts
from .quantize import HammingEmbedding, Vocabulary


@dataclass
class MOFParams:
    layers: tuple[str, ...] = ("s16", "s32", "last")
    words: int = 20000  # vocabulary size per layer (paper: 20k)
    ma: int = 3  # multiple assignment of query descriptors (paper: 3)
    ma_db: int = 1  # assignments of database descriptors (1 keeps the index small, as in Jegou et al.)
    bits: int = 128  # HE signature length (paper: 128; the layer's dimension if smaller)
    dt: int = 52  # Hamming threshold (paper: 52)
    sigma: float = 30.0  # HE weighting (paper: 30)
    he: bool = True  # False: plain BoW with TF-IDF (Eq. 3)
    # not in the paper, measured in docs/RESULTS.md ("Crowded words"): intra-image burstiness
    # (Jégou et al. 2009), and a stop-list of the words more than this share of the images hold
    burst: bool = False
    max_share: float = 1.0
    seed: int = 1234
    # not in the paper either (its Sec. 4 names PCA and whitening as the next step): the windows
    # PCA-whitened before the words and signatures, learned on the training windows; the power of
    # the eigenvalues (0: centred only, 0.5: full whitening) and the components kept (None: all).
    # None: the paper's windows as they are. Measured, not kept: docs/RESULTS.md ("Spherical words").
    whiten: float | None = None
    whiten_dim: int | None = None
    # not in the paper (its AKM is plain k-means): the words as unit vectors (spherical k-means),
    # as the windows are; see Vocabulary. Measured in docs/RESULTS.md ("Spherical words")
    spherical: bool = True

    def __post_init__(self):
        self.layers = tuple(self.layers)
        if not self.layers:
            raise LayerseekError("MOF needs at least one layer")
        for name in ("words", "ma", "ma_db", "bits"):
            if getattr(self, name) < 1:
                raise LayerseekError(f"MOF: {name} must be at least 1, got {getattr(self, name)}")
        if not 0 < self.max_share <= 1:
            raise LayerseekError(f"MOF: max_share must be in (0, 1], got {self.max_share}")
        if self.whiten is not None and not 0 <= self.whiten <= 1:
            raise LayerseekError(f"MOF: whiten (the eigenvalues' power) must be in [0, 1], got {self.whiten}")
        if self.whiten_dim is not None and self.whiten_dim < 1:
            raise LayerseekError(f"MOF: whiten_dim must be at least 1, got {self.whiten_dim}")


#: MOFParams fields added after models were saved, with the value those models had: a saved model
#: without the key reads back with it, and a model cache key leaves the field out at that value
#: (local/train.py), so the models cached earlier stay found
ADDED_LATER = {"whiten": None, "whiten_dim": None, "spherical": False}


@dataclass
class MOFModel:
    """The learned part of MOF: per layer a Vocabulary and a HammingEmbedding (and, with
    `params.whiten`, the PCA whitening applied to the windows first)."""

    params: MOFParams = field(default_factory=MOFParams)

    def __post_init__(self):
        self.vocabularies: dict[str, Vocabulary] = {}
        self.embeddings: dict[str, HammingEmbedding] = {}
        self.whitenings: dict[str, PCAWhitening] = {}

    def windows(self, layer: str, x: np.ndarray) -> np.ndarray:
        """A layer's window descriptors as the words see them: whitened when the model whitens."""
        w = self.whitenings.get(layer)
        return np.ascontiguousarray(x if w is None else w.transform(x), dtype=np.float32)

    def fit(self, descriptors: Mapping[str, np.ndarray], max_train: int = 500_000) -> MOFModel:
        """descriptors: {layer: n x C} from a training collection (never the one searched)."""
        p = self.params
        rng = np.random.default_rng(p.seed)
        for layer in p.layers:
            x = np.ascontiguousarray(descriptors[layer], dtype=np.float32)
            if len(x) > max_train:
                x = x[rng.choice(len(x), max_train, replace=False)]
            if p.whiten is not None:
                self.whitenings[layer] = PCAWhitening(p.whiten_dim, p.whiten).fit(x)
                x = self.windows(layer, x)
            voc = Vocabulary(p.words, seed=p.seed, spherical=p.spherical).fit(x)
            nearest = voc.assign(x, 1)[:, 0]
            self.vocabularies[layer] = voc
            self.embeddings[layer] = HammingEmbedding(p.bits, p.seed).fit(x, nearest, p.words)
        return self

    def encode(self, descriptors: Mapping[str, np.ndarray], db: bool = False) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """{layer: n x C} -> {layer: (words n x m, signatures n x m x nbytes)}; m = ma_db for the
        database side, ma for queries."""
        if not self.vocabularies:
            raise LayerseekError("MOF model: fit or load it first")
        m = self.params.ma_db if db else self.params.ma
        out = {}
        for layer in self.params.layers:
            x = self.windows(layer, descriptors[layer])
            words = self.vocabularies[layer].assign(x, m)
            out[layer] = (words.astype(np.int32), self.embeddings[layer].signatures(x, words))
        return out

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for layer in self.params.layers:
            self.vocabularies[layer].save(folder / f"vocabulary-{layer}.npz")
            self.embeddings[layer].save(folder / f"he-{layer}.npz")
            if layer in self.whitenings:
                self.whitenings[layer].save(folder / f"whitening-{layer}.npz")
        (folder / "mof.json").write_text(json.dumps(asdict(self.params), indent=2))

    @classmethod
    def load(cls, folder: str | Path) -> MOFModel:
        folder = Path(folder)
        try:
            params = MOFParams(**{**ADDED_LATER, **json.loads((folder / "mof.json").read_text())})
            model = cls(params)
            for layer in params.layers:
                model.vocabularies[layer] = Vocabulary.load(folder / f"vocabulary-{layer}.npz")
                model.embeddings[layer] = HammingEmbedding.load(folder / f"he-{layer}.npz")
                if params.whiten is not None:
                    model.whitenings[layer] = PCAWhitening.load(folder / f"whitening-{layer}.npz")
        except (OSError, ValueError, KeyError) as e:
            raise LayerseekError(f"{folder}: no usable MOF model ({e})") from None
        return model


def rerank_head(ranking: Sequence[int], scores: Mapping[int, float], n: int) -> list[int]:
    """Two stages: the first n of another method's ranking re-ordered by these (MOF) scores, best
    first (missing: 0; nan: last; ties keep the first stage's order), the rest left as it was."""
    def key(i):
        s = scores.get(i, 0.0)
        return (s != s, -s if s == s else 0.0)  # nan sorts after every number

    return sorted(ranking[:n], key=key) + list(ranking[n:])


_POOL = None
#: threads that score a query's layers (and the parts of a layer)
WORKERS = max(1, min(4, os.cpu_count() or 1))


def _pool():
    global _POOL
    if _POOL is None:
        from concurrent.futures import ThreadPoolExecutor

        _POOL = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="mof")
    return _POOL


class MOFEngine:
    """One inverted file per layer; a query's score is the sum of its layers' Eq. 8 scores."""

    def __init__(self, model: MOFModel):
        self.model = model
        p = model.params
        self.files = {layer: InvertedFile(p.words, model.embeddings[layer].nbytes) for layer in p.layers}

    def add(self, image_id: int, encoded: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> None:
        for layer, inv in self.files.items():
            inv.add(image_id, *encoded[layer])

    def remove(self, image_id: int) -> bool:
        return all([inv.remove(image_id) for inv in self.files.values()])

    def __len__(self) -> int:
        return next(iter(self.files.values())).n_images

    def _per_layer(self, encoded, he, layers, dense: bool):
        p = self.model.params
        he = p.he if he is None else he
        chosen = [(layer, inv) for layer, inv in self.files.items() if layers is None or layer in layers]

        def args(layer):
            return encoded[layer][0], encoded[layer][1] if he else None, p.dt, p.sigma, p.burst, p.max_share

        # the compiled loops release the GIL: the layers, each cut in as many parts of about equal
        # work as there are threads (crowded words make one layer's lists far longer than the
        # others'), are scored side by side
        if not dense:
            return dict(_pool().map(lambda item: (item[0], item[1].scores(*args(item[0]))), chosen))
        pool = _pool()
        jobs = [(layer, inv, [pool.submit(t) for t in inv.vote_tasks(*args(layer), parts=WORKERS)])
                for layer, inv in chosen]
        out = {}
        for layer, inv, parts in jobs:
            out[layer] = inv.normalise(sum_parts(p.result() for p in parts), encoded[layer][0])
        return out

    def layer_scores(self, encoded: Mapping[str, tuple[np.ndarray, np.ndarray]], he: bool | None = None
                     ) -> dict[str, dict[int, float]]:
        """Per layer, {image id: Eq. 8 score} of the images with any match."""
        return self._per_layer(encoded, he, None, dense=False)

    def search(self, encoded: Mapping[str, tuple[np.ndarray, np.ndarray]], top: int | None = None,
               layers: Sequence[str] | None = None, he: bool | None = None) -> list[tuple[int, float]]:
        """(image id, fused score) best first, ties by id; images sharing no match with the query
        are left out."""
        arrays = self._per_layer(encoded, he, layers, dense=True)
        fused = np.zeros(max((len(a) for a in arrays.values()), default=0))
        for a in arrays.values():  # in layer order, as the scores are defined (Eq. 8 summed)
            fused[:len(a)] += a
        hit = np.flatnonzero(fused)
        if top and len(hit) > top:  # only the candidates at or above the top-th score are sorted
            kth = np.partition(fused[hit], len(hit) - top)[len(hit) - top]
            hit = hit[fused[hit] >= kth]
        order = hit[np.lexsort((hit, -fused[hit]))]
        if top:
            order = order[:top]
        return list(zip(order.tolist(), fused[order].tolist()))

    def save(self, folder: str | Path) -> None:
        """One folder of arrays per layer (after which the lists are read from those files)."""
        for layer, inv in self.files.items():
            inv.save(Path(folder) / f"invfile-{layer}")

    def load_files(self, folder: str | Path, mmap: bool = True) -> MOFEngine:
        """Read saved inverted files; with `mmap` (default) their lists stay on disk."""
        self.files = {layer: InvertedFile.load(Path(folder) / f"invfile-{layer}", mmap) for layer in self.files}
        return self

    def nbytes(self) -> int:
        return sum(inv.nbytes_used() for inv in self.files.values())
