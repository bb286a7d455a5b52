"""`mof` as a method an index can be built with: activations -> dense windows -> the model's words
and signatures, stored per image as one payload; queries encoded with multiple assignment."""
from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..backbones import get_spec
from ..errors import LayerseekError
from .mof import MOFModel, MOFParams
from .windows import LOCAL_POOLINGS, dense_window_descriptors

#: MOF's layers per backbone when none are given: a mid-level, the last conv and the semantic layer
DEFAULT_LAYERS = {"mobilenet_v2": ("s16", "s32", "last"), "vgg16": ("conv3_3", "conv5_3", "pool5"),
                  "efficientnet_lite0": ("s16", "s32", "last")}
#: the window pooling that measured better per backbone (docs/RESULTS.md): max with plain ReLU
#: (VGG16), sum where ReLU6 clips the maxima (MobileNetV2)
DEFAULT_POOLING = {"vgg16": "max", "mobilenet_v2": "sum", "efficientnet_lite0": "sum"}


@dataclass
class LocalMethod:
    backbone: str = "mobilenet_v2"
    layers: tuple[str, ...] | None = None
    max_side: int = 1024
    pooling: str | None = None  # window pooling; None: the better one measured for the backbone
    words: int = 20000
    ma: int = 3
    he: bool = True
    train_on: str | None = None  # the collection the vocabularies and HE medians are learned on
    spherical: bool = MOFParams.spherical  # words as unit vectors; False: the paper's plain k-means words

    kind = "local"
    name = "mof"

    def __post_init__(self):
        self.model: MOFModel | None = None
        spec = get_spec(self.backbone)
        self.pooling = self.pooling or DEFAULT_POOLING.get(self.backbone, "sum")
        self.layers = tuple(self.layers) if self.layers else DEFAULT_LAYERS.get(self.backbone, spec.default_layers[-3:])
        bad = [n for n in self.layers if n not in spec.layers or not spec.layers[n].stride]
        if bad:
            raise LayerseekError(f"MOF needs convolutional layers; {self.backbone} has no {bad[0]!r} with a stride; "
                                 f"valid: {', '.join(n for n, li in spec.layers.items() if li.stride)}")
        if self.pooling not in LOCAL_POOLINGS:
            raise LayerseekError(f"unknown window pooling {self.pooling!r}; valid: {', '.join(LOCAL_POOLINGS)}")
        self.mof_params()

    def mof_params(self) -> MOFParams:
        return MOFParams(layers=self.layers, words=self.words, ma=self.ma, he=self.he, spherical=self.spherical)

    def params(self) -> dict:
        return {"method": "mof", **asdict(self), "layers": list(self.layers)}

    # -- the learned model ---------------------------------------------------------------------
    def fit(self, collection: str, threads: int | None = None, progress: Callable[[int, int], None] | None = None,
            max_train: int = 500_000, descriptor_cache=None) -> list[str]:
        """Learn vocabularies and HE medians on a collection (a dataset name, ground-truth file or
        folder), several separated by commas, or `others` (every shared collection:
        `datasets.training_collections`); every image of them, queries included; window
        descriptors cached as for `eval`. Returns the images that failed."""
        from ..datasets import get_dataset, training_collections
        from ..describe import describe_dataset
        from .train import train_mof

        vecs, errors = [], []
        for name in training_collections(collection):
            db, qs, err = describe_dataset(get_dataset(name), self.backbone, self.layers, self.max_side, threads,
                                           progress, cache_root=descriptor_cache, local=True)
            vecs, errors = vecs + db + qs, errors + err
        try:
            self.model = train_mof(self.mof_params(), vecs, self.pooling, max_train=max_train)
        except LayerseekError as e:
            raise LayerseekError(f"{collection}: {e}") from None
        return errors

    def save_model(self, folder: str | Path) -> None:
        self._need_model().save(Path(folder) / "mof")

    def load_model(self, folder: str | Path) -> LocalMethod:
        self.model = MOFModel.load(Path(folder) / "mof")
        return self

    def _need_model(self) -> MOFModel:
        if self.model is None:
            raise LayerseekError("MOF: the vocabularies are not learned yet (fit or load_model first)")
        return self.model

    # -- encoding ------------------------------------------------------------------------------
    def descriptors(self, acts: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        spec = get_spec(self.backbone)
        return dense_window_descriptors({n: acts[n] for n in self.layers},
                                        {n: spec.layers[n].stride for n in self.layers}, self.pooling)

    def encode(self, acts: dict[str, torch.Tensor]) -> list[bytes]:
        """One image's activations -> [payload]: its words and signatures (database side)."""
        return [pack(self._need_model().encode(self.descriptors(acts), db=True))]

    def encode_query(self, acts: dict[str, torch.Tensor]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        return self._need_model().encode(self.descriptors(acts))


def pack(encoded: dict[str, tuple[np.ndarray, np.ndarray]]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **{f"{k}__{layer}": a for layer, (w, c) in encoded.items() for k, a in (("w", w), ("c", c))})
    return buf.getvalue()


def unpack(payload: bytes) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    with np.load(io.BytesIO(payload)) as z:
        layers = [k[3:] for k in z.files if k.startswith("w__")]
        return {layer: (z[f"w__{layer}"], z[f"c__{layer}"]) for layer in layers}
