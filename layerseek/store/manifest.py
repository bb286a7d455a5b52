"""What an index directory says about itself, checked before it is trusted.

`manifest.json` is validated on every open against a typed model (types, ranges, known names):
a list, a missing key, a string where a number belongs or a negative size is refused in one line
naming the key. The catalog keeps a copy of the manifest it was created with; the part that made
its vectors and stored features (`made_with`: method parameters, dimension, feature settings) must
agree with the manifest, so a manifest edited from gem to mac is refused instead of searched with
vectors it did not make. `layerseek repair` writes the manifest back from that copy.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import LayerseekError

GLOBAL_METHODS = ("fcrow", "crow", "spoc", "mac", "gem", "rmac")
Side = Annotated[int, Field(ge=32, le=16384)]
Name = Annotated[str, Field(min_length=1, max_length=200)]


class _Model(BaseModel):
    # strict: "1024" is not a number and 1.5 is not an int; forbid: an unknown key is a typo or tampering
    model_config = ConfigDict(extra="forbid", strict=True)


class GlobalParams(_Model):
    method: Literal[GLOBAL_METHODS]
    backbone: Name
    layers: Annotated[list[Name], Field(min_length=1, max_length=16)]
    weights: Annotated[str, Field(pattern=r"^[0-9.]+(:[0-9.]+)*$")] | None = None
    similarity: Literal["cosine", "correlation"] = "cosine"
    max_side: Side = 1024
    whiten_on: Name | None = None
    precision: Literal["float", "int8"] = "float"  # absent: float (every index made before int8)


class MofParams(_Model):
    method: Literal["mof"]
    backbone: Name
    layers: Annotated[list[Name], Field(min_length=1, max_length=16)]
    max_side: Side = 1024
    pooling: Literal["sum", "max"]
    words: Annotated[int, Field(ge=2, le=10_000_000)]
    ma: Annotated[int, Field(ge=1, le=64)] = 3
    he: bool = True
    train_on: Name | None = None
    spherical: bool = False  # absent in indexes made before the flag: plain k-means words


class Diffusion(_Model):
    k: Annotated[int, Field(ge=1, le=1000)]
    gamma: Annotated[float, Field(gt=0, le=100)]
    alpha: Annotated[float, Field(gt=0, lt=1)]


class Words(_Model):
    vocabulary: Annotated[str, Field(pattern=r"^[0-9a-f]{16}$")]  # the hash of verify.words' vocabulary
    top: Annotated[int, Field(ge=1, le=1000)]
    # candidates whose word score is at most this go unverified (negative: none); absent before it
    filter: Annotated[float, Field(ge=-1, lt=1)] | None = None


class Verify(_Model):
    # sift: SIFT descriptors stored; sift-words: their visual words and HE signatures (needs `words`)
    kind: Literal["sift", "sift-words"]
    features: Annotated[int, Field(ge=16, le=20000)]
    side: Annotated[int, Field(ge=64, le=4096)]
    ratio: Annotated[float, Field(gt=0, le=1)]
    threshold: Annotated[float, Field(gt=0, le=1000)]
    min_inliers: Annotated[int, Field(ge=1, le=10000)]
    expand: Annotated[int, Field(ge=0, le=100)] = 1
    fundamental: Annotated[int, Field(ge=0, le=10000)] = 0  # 0: homography only (indexes made before it)
    spread: Annotated[float, Field(ge=0, le=1)] = 0.0  # 0: no spread rule (indexes made before it)
    # the shared-part rule of a query's matches (verify.geometry.same_object); 0: off (indexes made before it)
    shared_part: Annotated[float, Field(ge=0, le=1)] = 0.0
    hamming: Annotated[int, Field(ge=0, le=64)] = 20  # sift-words: a correspondence's largest signature distance
    query_words: Annotated[int, Field(ge=1, le=16)] = 5  # sift-words: words each query feature is matched by
    diffusion: Diffusion | None = None
    words: Words | None = None  # None: no word candidates (indexes made before them, or off)

    @model_validator(mode="after")
    def _words_named(self):
        if self.kind == "sift-words" and self.words is None:
            raise ValueError("stored word features (kind sift-words) need the words vocabulary named")
        return self


class Hubness(_Model):
    k: Annotated[int, Field(ge=1, le=1000)]  # the neighbours whose mean cosine is taken away (CSLS)
    beta: Annotated[float, Field(ge=0, le=1)]


class Store(_Model):
    kind: Literal["faiss", "milvus"]
    uri: Name | None = None
    collection: Name | None = None
    db: str | None = None


class Manifest(_Model):
    schema_version: int
    created: float
    params: Annotated[GlobalParams | MofParams, Field(discriminator="method")]
    dim: Annotated[int, Field(ge=0, le=1_000_000)]
    ann: Literal["auto", "exact", "hnsw"] = "auto"
    store: Store | None = None
    verify: Verify | None = None
    hubness: Hubness | None = None  # None: the first stage ranks by cosine (indexes made before it, or off)
    versions: dict[str, str] = {}


def _where(loc: tuple) -> str:
    parts = list(loc)
    if len(parts) > 1 and parts[0] == "params" and parts[1] in (*GLOBAL_METHODS, "mof"):
        del parts[1]  # the union's tag, not a key of the file
    return ".".join(str(p) for p in parts)


def validate(manifest: object, where: Path | str) -> dict:
    """The manifest if it fits the model, else LayerseekError naming the first wrong key."""
    if not isinstance(manifest, dict):
        raise LayerseekError(f"{where}: damaged manifest (a JSON object expected, found {type(manifest).__name__})")
    try:
        Manifest.model_validate(manifest)
    except ValidationError as e:
        err = e.errors()[0]
        key = _where(err["loc"]) or "(top level)"
        got = err.get("input")
        shown = "" if err["type"] == "missing" or isinstance(got, dict) else f" (found {json.dumps(got)[:60]})"
        raise LayerseekError(f"{where}: damaged manifest: {key}: {err['msg'][0].lower() + err['msg'][1:]}{shown}") \
            from None
    return manifest


def made_with(manifest: dict) -> dict:
    """The part of a manifest that made the stored vectors and features: changing any of it makes
    them wrong (search-time settings such as the diffusion or the verified head are not in it)."""
    verify = manifest.get("verify") or {}
    return {"params": manifest["params"], "dim": manifest["dim"],
            "features": {k: verify[k] for k in ("kind", "features", "side") if k in verify} or None}


def canonical(obj: object) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def fingerprint(obj: object) -> str:
    return hashlib.sha256(canonical(obj).encode()).hexdigest()[:16]


def first_difference(have: object, want: object, key: str = "") -> str | None:
    """Where two JSON values first differ, as 'key: have != want', or None."""
    if isinstance(have, dict) and isinstance(want, dict):
        for k in sorted(set(have) | set(want)):
            d = first_difference(have.get(k), want.get(k), f"{key}.{k}" if key else k)
            if d:
                return d
        return None
    return None if have == want else f"{key or 'value'} {json.dumps(have)} (the vectors were made with {json.dumps(want)})"


def learned_files(root: Path) -> list[Path]:
    """The index's learned files (per-layer whitening, MOF vocabularies and HE medians)."""
    root = Path(root)
    mof = sorted(p for p in (root / "mof").rglob("*") if p.is_file()) if (root / "mof").is_dir() else []
    return sorted(root.glob("whitening-*.npz")) + mof


def file_hashes(root: Path) -> dict[str, str]:
    """{path relative to the index: sha256} of its learned files."""
    out = {}
    for p in learned_files(root):
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        out[str(p.relative_to(root))] = h.hexdigest()
    return out
