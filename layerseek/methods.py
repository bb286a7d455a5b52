"""The named methods an index can be built with: a name and options -> an encoder (image ->
one vector) and the parameters that must match at search time.

The global methods (FCroW + WMFF and the pooling baselines) fuse per-layer similarities with
weights w_i (Eq. 7). For cosine (and normalised correlation, which is the cosine of the centred
vectors) that sum equals one inner product: concatenate the per-layer unit vectors scaled by
sqrt(w_i), and q . d = sum_i w_i cos(q_i, d_i). So an index stores one vector per image and any
inner-product search (exact, or FAISS) gives exactly the WMFF ranking.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .backbones import get_spec
from .backbones.runtime import PRECISIONS
from .errors import LayerseekError, lookup
from .fusion import l2n, parse_weights
from .pooling import as_numpy, get_pooling
from .postprocess import PCAWhitening, average_query_expansion

INDEXABLE_SIMILARITIES = ("cosine", "correlation")


@dataclass
class GlobalMethod:
    """pooling per layer -> L2 -> (centre, for correlation) -> x sqrt(w_i) -> concatenation."""

    pooling: str = "fcrow"
    backbone: str = "vgg16"
    layers: tuple[str, ...] | None = None
    weights: str | None = None  # ratios such as "1:2:4"; None = equal (SUM)
    similarity: str = "cosine"
    max_side: int = 1024
    whiten_on: str | None = None  # the collection the per-layer PCA whitening was learned on
    precision: str = "float"  # the network's arithmetic (backbones.runtime.PRECISIONS): int8 on ONNX Runtime

    kind = "global"  # one vector per image (not a dataclass field: no annotation)

    def __post_init__(self):
        self.whitenings: list[PCAWhitening] | None = None  # learned state, not a parameter
        get_pooling(self.pooling)
        spec = get_spec(self.backbone)
        self.layers = tuple(self.layers) if self.layers else tuple(spec.default_layers)
        bad = [n for n in self.layers if n not in spec.layers]
        if bad:
            raise LayerseekError(f"{self.backbone} has no layer {bad[0]!r}; valid: {', '.join(spec.layers)}")
        if self.precision not in PRECISIONS:
            raise LayerseekError(f"unknown precision {self.precision!r}; valid: {', '.join(PRECISIONS)}")
        if self.similarity not in INDEXABLE_SIMILARITIES:
            raise LayerseekError(f"an index needs an inner-product similarity; valid: {', '.join(INDEXABLE_SIMILARITIES)}"
                                 f" (got {self.similarity!r}; euclidean and kl are for `eval`)")
        self.weight_vector()

    @property
    def name(self) -> str:
        return self.pooling

    def weight_vector(self) -> np.ndarray:
        if self.weights is None:
            return np.full(len(self.layers), 1.0 / len(self.layers))
        return parse_weights(self.weights, len(self.layers))

    def params(self) -> dict:
        # precision only where it is not float: the manifests of float indexes stay as they were
        return {"method": self.pooling, **{k: v for k, v in asdict(self).items()
                                           if k != "pooling" and not (k == "precision" and v == "float")},
                "layers": list(self.layers)}

    # -- whitening (learned on another collection, stored beside the index) ---------------------
    def fit_whitening(self, pooled: Sequence[np.ndarray]) -> GlobalMethod:
        """Learn one PCA whitening per layer from that layer's pooled vectors (N x C_i each) of a
        collection other than the one indexed."""
        self.whitenings = [PCAWhitening().fit(l2n(np.asarray(p, np.float64))) for p in pooled]
        return self

    def whitening_files(self, folder: Path) -> list[Path]:
        return [Path(folder) / f"whitening-{layer}.npz" for layer in self.layers]

    def save_whitening(self, folder: str | Path) -> None:
        for w, path in zip(self._need_whitenings(), self.whitening_files(Path(folder))):
            w.save(path)

    def load_whitening(self, folder: str | Path) -> GlobalMethod:
        if self.whiten_on:
            missing = [p for p in self.whitening_files(Path(folder)) if not p.is_file()]
            if missing:
                raise LayerseekError(f"{missing[0]}: missing; this index was built with whitening on "
                                     f"{self.whiten_on!r}; build it again")
            self.whitenings = [PCAWhitening.load(p) for p in self.whitening_files(Path(folder))]
        return self

    def _need_whitenings(self) -> list[PCAWhitening]:
        if self.whitenings is None:
            raise LayerseekError(f"whitening on {self.whiten_on!r} is not learned yet: fit_whitening or load_whitening first")
        return self.whitenings

    def _segment(self, v: np.ndarray, layer: int) -> np.ndarray:
        v = l2n(v)
        if self.whiten_on:
            v = self._need_whitenings()[layer].transform(v).astype(np.float32)
        if self.similarity == "correlation":
            v = l2n(v - v.mean(axis=-1, keepdims=True))
        return v

    def encode_pooled(self, pooled: Sequence[np.ndarray]) -> np.ndarray:
        """Per-layer pooled vectors (each N x C_i or C_i) -> N x D (or D) fused vectors."""
        w = self.weight_vector()
        return np.concatenate([self._segment(np.asarray(p, np.float32), i) * np.sqrt(wi)
                               for i, (p, wi) in enumerate(zip(pooled, w))], axis=-1).astype(np.float32)

    def encode(self, acts: dict) -> np.ndarray:
        """{layer: N x C x H x W, numpy (ONNX Runtime) or torch} -> N x D."""
        pool = get_pooling(self.pooling)
        return self.encode_pooled([as_numpy(pool(acts[layer])) for layer in self.layers])

    def segments(self) -> list[slice]:
        """Where each layer's part lies in the fused vector."""
        spec = get_spec(self.backbone)
        out, start = [], 0
        for i, layer in enumerate(self.layers):
            # whitening may keep fewer dimensions than channels (the rank of its training set)
            c = len(self.whitenings[i].eigenvalues_) if self.whitenings else spec.layers[layer].channels
            out.append(slice(start, start + c))
            start += c
        return out

    def expand(self, query: np.ndarray, top: np.ndarray) -> np.ndarray:
        """Average query expansion per layer (`postprocess.average_query_expansion` on each
        layer's part, which is unit-norm once the sqrt(w_i) scale is taken off), re-weighted.
        query D, top k x D."""
        parts, first = [], np.arange(len(top))[None]
        for s, wi in zip(self.segments(), self.weight_vector()):
            scale = np.sqrt(wi) if wi > 0 else 1.0
            parts.append(average_query_expansion(query[None, s] / scale, top[:, s] / scale, first, len(top))[0] * np.sqrt(wi))
        return np.concatenate(parts).astype(np.float32)


def _mof(**options):
    from .local.method import LocalMethod

    return LocalMethod(**options)


#: method name -> factory(**options): the global poolings (one vector per image) and MOF (local)
METHODS = {**{name: (lambda name=name: lambda **kw: GlobalMethod(pooling=name, **kw))()
              for name in ("fcrow", "crow", "spoc", "mac", "gem", "rmac")}, "mof": _mof}


def make_method(name: str, **options):
    factory = lookup(METHODS, name, "method")
    given = {k: v for k, v in options.items() if v is not None}
    try:
        return factory(**given)
    except TypeError as e:  # an option of another method
        bad = str(e).rsplit(" ", 1)[-1].strip("'")
        raise LayerseekError(f"option {bad!r} does not apply to method {name!r}") from None


#: per method, the options added after indexes were made, with the value those indexes had (their
#: manifests lack the key): MOF indexes before spherical words learned plain k-means ones; a global
#: index without a precision runs the float network
SETTINGS_BEFORE = {"mof": {"spherical": False}, **{name: {"precision": "float"} for name in METHODS if name != "mof"}}


def method_from_params(params: dict) -> GlobalMethod:
    p = {**SETTINGS_BEFORE.get(params.get("method"), {}), **params}
    return make_method(p.pop("method"), **{k: (tuple(v) if k == "layers" else v) for k, v in p.items()})
