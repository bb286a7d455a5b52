"""What a backbone is (its layers, normalisation, where its weights come from), apart from the
network itself: the registry and ONNX Runtime's path read these without importing torch."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class LayerInfo:
    channels: int
    stride: int  # input pixels per output cell
    note: str = ""


@dataclass(frozen=True)
class BackboneSpec:
    """What a backbone is: its layers, its input normalisation, how to build it and its weights."""

    name: str
    layers: dict[str, LayerInfo]
    default_layers: tuple[str, ...]
    mean: tuple[float, float, float]  # subtracted from RGB 0..255
    std: tuple[float, float, float]  # then divided by, per channel
    normalisation: str  # human-readable
    build: Callable[[], "StagedNet"]  # architecture, random init
    load: Callable[["StagedNet", dict], None]  # puts a state dict into the built net
    weights: str  # key in weights.SOURCES
    description: str = ""
    extras: dict = field(default_factory=dict)


def checked_layers(spec: BackboneSpec, layers) -> tuple[str, ...]:
    """The layers asked for (default: the backbone's), each one of the backbone's."""
    from ..errors import UnknownNameError

    chosen = tuple(layers) if layers else spec.default_layers
    bad = [n for n in chosen if n not in spec.layers]
    if bad:
        raise UnknownNameError(f"unknown layer {bad[0]!r} for {spec.name}; valid: {', '.join(spec.layers)}")
    return chosen
