"""Backbone registry: name -> BackboneSpec. `FeatureExtractor` runs one of them.

Reading the registry imports no torch (ONNX Runtime's path runs without it); `FeatureExtractor`
and `StagedNet` import it when first named.
"""
from __future__ import annotations

from ..errors import lookup
from . import efficientnet_lite, mobilenet_v2, vgg16
from .spec import BackboneSpec, LayerInfo

BACKBONES: dict[str, BackboneSpec] = {
    vgg16.SPEC.name: vgg16.SPEC,
    mobilenet_v2.SPEC.name: mobilenet_v2.SPEC,
    **efficientnet_lite.SPECS,
}


def get_spec(name: str) -> BackboneSpec:
    return lookup(BACKBONES, name, "backbone")


def __getattr__(name: str):
    if name in ("FeatureExtractor", "StagedNet"):
        from . import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["BACKBONES", "BackboneSpec", "FeatureExtractor", "LayerInfo", "StagedNet", "get_spec"]
