"""MOF's vocabularies learned on a collection's window descriptors, kept on disk so that each is
trained once (for `eval`, the benches and `index --method mof --train-on`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..backbones.weights import cache_dir
from ..errors import LayerseekError


def local_descriptors(vec: dict, pooling: str, layers) -> dict[str, np.ndarray]:
    """One image's cached window descriptors of the given pooling, per layer, as float32."""
    return {layer: np.asarray(vec[f"{pooling}/{layer}"], np.float32) for layer in layers}


def train_mof(params, train_vecs, pooling: str, cache_root=None, max_train: int = 500_000):
    """A MOF model learned on a training collection's window descriptors; kept on disk under a key
    of everything it depends on (parameters, pooling, sample size and the descriptors themselves),
    so each vocabulary is trained once."""
    import hashlib
    import json
    from dataclasses import asdict

    from ..local.mof import ADDED_LATER, MOFModel

    vecs = [v for v in train_vecs if v is not None]
    if not vecs:
        raise LayerseekError("no readable image to learn the MOF vocabularies from")
    content = hashlib.sha256()  # what the model learns from, so a changed collection trains anew
    for v in vecs:
        content.update(np.ascontiguousarray(v[f"{pooling}/{params.layers[0]}"]).tobytes())
    settings = {k: v for k, v in asdict(params).items() if k not in ADDED_LATER or v != ADDED_LATER[k]}
    key = hashlib.sha256(json.dumps({**settings, "pooling": pooling, "max_train": max_train,
                                     "content": content.hexdigest()}, sort_keys=True,
                                    default=list).encode()).hexdigest()[:16]
    folder = Path(cache_root or cache_dir() / "mof-models") / key
    if (folder / "mof.json").is_file():
        try:
            return MOFModel.load(folder)
        except Exception:  # noqa: BLE001 - a damaged entry is trained again
            pass
    train = {layer: np.concatenate([np.asarray(v[f"{pooling}/{layer}"], np.float32) for v in vecs])
             for layer in params.layers}
    model = MOFModel(params).fit(train, max_train)
    model.save(folder)
    return model
