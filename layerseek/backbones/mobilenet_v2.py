"""MobileNetV2 (Sandler et al.) with torchvision's ImageNet weights."""
from __future__ import annotations

from ..errors import WeightsError
from .spec import BackboneSpec, LayerInfo

# Layer name -> last index of torchvision's mobilenet_v2().features that it takes in: the last
# block at each stride, and the final 1x1 conv to 1280 channels.
_CUTS = {"s4": (3, 24, 4), "s8": (6, 32, 8), "s16": (13, 96, 16), "s32": (17, 320, 32), "last": (18, 1280, 32)}


def build() -> StagedNet:
    # Imported here: the registry is read without torch (ONNX Runtime's path), and
    # torchvision.models alone imports torch._dynamo (3 s).
    from torch import nn
    from torchvision.models import mobilenet_v2

    from .base import StagedNet

    model = mobilenet_v2(weights=None)
    stages, start = [], 0
    for name, (end, _, _) in _CUTS.items():
        stages.append((name, model.features[start : end + 1]))
        start = end + 1
    # The classifier stays in the holder so the full torchvision state dict loads unchanged;
    # `logits` is offered for the classification check, not for retrieval.
    stages.append(("logits", nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), model.classifier)))
    return StagedNet(stages, holder=model)


def load(net: StagedNet, state: dict) -> None:
    try:
        net.holder.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise WeightsError(f"not MobileNetV2 weights: {str(e).splitlines()[0]}") from None


SPEC = BackboneSpec(
    name="mobilenet_v2",
    layers={
        **{n: LayerInfo(c, s, f"features[{e}]") for n, (e, c, s) in _CUTS.items()},
        "logits": LayerInfo(1000, 0, "ImageNet class scores (N x 1000)"),
    },
    default_layers=("s8", "s16", "s32", "last"),
    mean=(0.485 * 255, 0.456 * 255, 0.406 * 255),
    std=(0.229 * 255, 0.224 * 255, 0.225 * 255),
    normalisation="ImageNet: RGB/255 minus (0.485, 0.456, 0.406), divided by (0.229, 0.224, 0.225)",
    build=build,
    load=load,
    weights="mobilenet_v2",
    description="MobileNetV2, torchvision ImageNet weights (IMAGENET1K_V1)",
)
