"""EfficientNet-Lite0/1/2 (Tan & Le; the TF 'lite' variants: ReLU6, no squeeze-excitation, stem and
head not scaled), written here for any input size, loading the lukemelas-format state dicts.

TensorFlow's 'SAME' padding is applied per forward pass from the actual input size, so the
network matches the TF original on every image size, not only 224 x 224.
"""
from __future__ import annotations

from .spec import BackboneSpec, LayerInfo

# (repeats, kernel, stride, expand ratio, in channels, out channels) of the seven stages.
BASE_STAGES = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]
# name -> (width multiplier, depth multiplier)
VARIANTS = {"efficientnet_lite0": (1.0, 1.0), "efficientnet_lite1": (1.0, 1.1), "efficientnet_lite2": (1.1, 1.2)}
# Layer name -> (index of the stage it ends: the last stage at each stride, that stride).
_CUTS = {"s4": (1, 4), "s8": (2, 8), "s16": (4, 16), "s32": (6, 32)}
_BN_EPS = 1e-3


def round_filters(channels: int, width: float, divisor: int = 8) -> int:
    """Channel count scaled by `width`, rounded to a multiple of 8, never more than 10% down."""
    if width == 1.0:
        return channels
    scaled = channels * width
    out = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return out + divisor if out < 0.9 * scaled else out


def _make_build(width: float, depth: float):
    def build():
        from .efficientnet_lite_net import make_net

        return make_net(width, depth)

    return build


def load(net, state: dict) -> None:
    from .efficientnet_lite_net import load_state

    load_state(net, state)


def _spec(name: str) -> BackboneSpec:
    width, depth = VARIANTS[name]
    return BackboneSpec(
        name=name,
        layers={
            **{
                n: LayerInfo(round_filters(BASE_STAGES[i][5], width), stride, f"end of stage {i}")
                for n, (i, stride) in _CUTS.items()
            },
            "last": LayerInfo(1280, 32, "1x1 conv head"),
            "logits": LayerInfo(1000, 0, "ImageNet class scores (N x 1000)"),
        },
        default_layers=("s8", "s16", "s32", "last"),
        mean=(127.0, 127.0, 127.0),
        std=(128.0, 128.0, 128.0),
        normalisation="TF lite: (RGB 0-255 minus 127) / 128",
        build=_make_build(width, depth),
        load=load,
        weights=name,
        description=f"EfficientNet-Lite{name[-1]} (width {width}, depth {depth}), TF ImageNet weights",
    )


SPECS = {name: _spec(name) for name in VARIANTS}
