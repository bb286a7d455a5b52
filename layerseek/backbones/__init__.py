"""Backbone registry: name -> BackboneSpec. `FeatureExtractor` runs one of them."""
from __future__ import annotations

from ..errors import lookup
from . import efficientnet_lite, mobilenet_v2, vgg16
from .base import BackboneSpec, FeatureExtractor, LayerInfo, StagedNet

BACKBONES: dict[str, BackboneSpec] = {
    vgg16.SPEC.name: vgg16.SPEC,
    mobilenet_v2.SPEC.name: mobilenet_v2.SPEC,
    **efficientnet_lite.SPECS,
}


def get_spec(name: str) -> BackboneSpec:
    return lookup(BACKBONES, name, "backbone")


__all__ = ["BACKBONES", "BackboneSpec", "FeatureExtractor", "LayerInfo", "StagedNet", "get_spec"]
