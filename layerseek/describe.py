"""Global descriptors: every pooling of every layer from one forward pass, cached on disk.

An entry is keyed by the file's content hash, crop box and rotation, in a folder per (backbone,
weights, max side); it holds every pooling of every layer extracted so far. A rerun with other
fusion weights, similarities or post-processing only re-scores, and asking for a new layer
extracts just that layer.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .cache import cache_dir
from .images import file_sha256, load_image  # noqa: F401 (file_sha256 re-exported)
from .pooling import LOCAL_POOLINGS, POOLINGS, as_numpy

if TYPE_CHECKING:  # torch-backed: imported where they run, not by the search path's `Request`
    from .backbones import FeatureExtractor
    from .datasets import Dataset

#: 2: JPEGs decoded at the smallest draft scale that covers the target (images.load_image); 3: the
#: resize to the target by area averaging (images.shrink)
CACHE_VERSION = 3


def pool_all(acts: dict, poolings: Sequence[str] = tuple(POOLINGS)) -> dict[str, np.ndarray]:
    """{layer: 1 x C x H x W} -> {"pooling/layer": C-vector float32} (raw, not normalised)."""
    out = {}
    for layer, x in acts.items():
        for name in poolings:
            out[f"{name}/{layer}"] = np.asarray(as_numpy(POOLINGS[name](x))[0], np.float32)
    return out


def pool_windows(acts: dict, spec) -> dict[str, np.ndarray]:
    """{layer: 1 x C x H x W} -> {"sum/layer" and "max/layer": n x C window descriptors} (float16:
    unit vectors lose nothing that matters to the vocabulary, and the cache is half the size)."""
    out = {}
    from .local.windows import dense_window_descriptors

    for pooling in LOCAL_POOLINGS:
        for layer, d in dense_window_descriptors(acts, {n: spec.layers[n].stride for n in acts}, pooling).items():
            out[f"{pooling}/{layer}"] = d.astype(np.float16)
    return out


@dataclass
class Request:
    """One image to describe: a file, optionally cropped to a box (benchmark queries)."""

    path: Path
    bbox: tuple[float, float, float, float] | None = None
    rotate: int = 0  # degrees clockwise that make the stored image upright


def request_key(req: Request) -> str:
    """A cache key of what a request describes: the file's content, its turn and its crop box."""
    box = "" if req.bbox is None else "-" + "_".join(f"{v:.1f}" for v in req.bbox)
    turn = f"-r{req.rotate % 360}" if req.rotate % 360 else ""
    return file_sha256(req.path) + turn + box


class DescriptorCache:
    """Directory of .npz files, one per (image content, crop, extraction settings), each holding
    every pooling of every layer extracted so far; asking for more layers later extracts only
    those (one forward pass for all of them) and adds them to the file."""

    def __init__(self, root: str | Path, fx: FeatureExtractor, max_side: int | None, weights_id: str = "default",
                 local: bool = False):
        self.root = Path(root)
        self.fx = fx
        self.max_side = max_side
        self.local = local  # MOF's dense-window descriptors instead of the global poolings
        self.settings = {"v": CACHE_VERSION, "backbone": fx.spec.name, "max_side": max_side, "weights": weights_id}
        if local:
            from .local.windows import STEP, WINDOW

            self.settings["local"] = {"window": WINDOW, "step": STEP, "dtype": "float16"}
        tag = hashlib.sha256(json.dumps(self.settings, sort_keys=True).encode()).hexdigest()[:16]
        self.dir = self.root / f"{fx.spec.name}-{tag}"

    def key(self, req: Request) -> str:
        return request_key(req)

    def path_for(self, req: Request) -> Path:
        k = self.key(req)
        return self.dir / k[:2] / f"{k}.npz"

    def get(self, req: Request) -> dict[str, np.ndarray] | None:
        p = self.path_for(req)
        if not p.is_file():
            return None
        try:
            with np.load(p) as z:
                return {k.replace("__", "/"): z[k] for k in z.files}
        except (OSError, ValueError):
            return None  # a half-written or damaged entry is recomputed

    def put(self, req: Request, vectors: dict[str, np.ndarray]) -> None:
        p = self.path_for(req)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + f".{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.savez(f, **{k.replace("/", "__"): v for k, v in vectors.items()})
        os.replace(tmp, p)

    def describe(self, requests: Iterable[Request], progress=None, errors: list | None = None,
                 poolings: Sequence[str] | None = None) -> list[dict | None]:
        """Vectors of the extractor's layers for every request (None where the image failed; the
        error goes to `errors`). Only `poolings` (default: all) need to be in the cache already;
        a miss extracts the layer again and stores every pooling of it."""
        need = list(poolings) if poolings else list(LOCAL_POOLINGS if self.local else POOLINGS)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "settings.json").write_text(json.dumps(self.settings, indent=2))
        out: list[dict | None] = []
        for req in requests:
            vec = self.get(req) or {}
            # A layer is extracted again if any pooling of it is missing (e.g. one added later).
            missing = [layer for layer in self.fx.layers if any(f"{p}/{layer}" not in vec for p in need)]
            if missing:
                try:
                    img = load_image(req.path, max_side=self.max_side, bbox=req.bbox, rotate=req.rotate)
                except Exception as e:  # noqa: BLE001 - reported, the batch goes on
                    if errors is not None:
                        errors.append(str(e))
                    out.append(None)
                    if progress:
                        progress()
                    continue
                acts = self.fx(img, missing)
                vec.update(pool_windows(acts, self.fx.spec) if self.local else pool_all(acts))
                self.put(req, vec)
            out.append({k: v for k, v in vec.items() if k.split("/", 1)[1] in self.fx.layers})
            if progress:
                progress()
        return out


# -- a whole collection (benchmarks, and the collections an index learns from) --------------------
_EXTRACTORS: dict = {}


def extractor(backbone: str, layers: Sequence[str], threads: int | None = None,
              precision: str = "float") -> FeatureExtractor:
    key = (backbone, tuple(layers), precision)
    if key not in _EXTRACTORS:
        from .backbones import FeatureExtractor

        _EXTRACTORS[key] = FeatureExtractor(backbone, layers, threads=threads, precision=precision)
    return _EXTRACTORS[key]


def describe_dataset(ds: Dataset, backbone: str, layers: Sequence[str], max_side: int = 1024,
                     threads: int | None = None, progress: Callable[[int, int], None] | None = None,
                     poolings: Sequence[str] | None = None, cache_root=None, queries: bool = True,
                     local: bool = False, precision: str = "float"):
    """Pooled vectors of the database and (unless queries=False, e.g. for a collection that only
    trains a whitening) the cropped queries, from the descriptor cache where possible. `local`:
    MOF's dense-window descriptors ("sum/layer", "max/layer": n x C) instead of pooled vectors.
    `precision`: the network's (backbones.runtime.PRECISIONS; an int8 network's vectors are cached
    apart). Returns (db vectors, query vectors, errors); a failed image's vectors are None."""
    fx = extractor(backbone, layers, threads, precision)
    cache = DescriptorCache(cache_root or cache_dir() / "descriptors", fx, max_side,
                            "default" if precision == "float" else f"default-{precision}", local=local)
    reqs = [Request(p, rotate=ds.rotations.get(p.name, 0)) for p in ds.database]
    if queries:
        reqs += [Request(q.path, q.bbox, q.rotate) for q in ds.queries]
    errors: list[str] = []
    done = [0]

    def tick():
        done[0] += 1
        progress(done[0], len(reqs))

    out = cache.describe(reqs, tick if progress else None, errors, poolings)
    return out[: len(ds.database)], out[len(ds.database):], errors
