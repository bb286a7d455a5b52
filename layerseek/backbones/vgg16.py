"""VGG16 (Simonyan & Zisserman) conv layers with the original Keras ImageNet weights."""
from __future__ import annotations

from ..errors import WeightsError
from .spec import BackboneSpec, LayerInfo
from .weights import VGG16_CONVS

# torchvision's vgg16().features, cut into named stages: each conv stage is Conv2d + ReLU
# (so a conv layer's output is taken after its ReLU), each pool stage one MaxPool2d.
_BLOCK_CHANNELS = {1: 64, 2: 128, 3: 256, 4: 512, 5: 512}


def _stage_plan() -> list[tuple[str, int, int]]:
    """(name, first index, end index) into vgg16().features."""
    plan, i, prev_block = [], 0, 1
    for b, c in VGG16_CONVS:
        if b != prev_block:
            plan.append((f"pool{prev_block}", i, i + 1))
            i += 1
            prev_block = b
        plan.append((f"conv{b}_{c}", i, i + 2))
        i += 2
    plan.append(("pool5", i, i + 1))
    return plan


def build() -> StagedNet:
    # Imported here: the registry is read without torch (ONNX Runtime's path), and
    # torchvision.models alone imports torch._dynamo (3 s).
    from torchvision.models import vgg16

    from .base import StagedNet

    features = vgg16(weights=None).features
    stages = [(name, features[a:b]) for name, a, b in _stage_plan()]
    return StagedNet(stages, holder=features)


def load(net: StagedNet, state: dict) -> None:
    """Accepts our converted file (keys `N.weight`) or a torchvision VGG16 file (`features.N.*`,
    classifier keys ignored) such as torchvision's IMAGENET1K_FEATURES weights."""
    if any(k.startswith("features.") for k in state):
        state = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    try:
        net.holder.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise WeightsError(f"not VGG16 conv weights: {str(e).splitlines()[0]}") from None


def _layers() -> dict[str, LayerInfo]:
    out = {}
    for name, _, _ in _stage_plan():
        block = int(name[4])
        stride = 2 ** (block - 1) if name.startswith("conv") else 2**block
        out[name] = LayerInfo(_BLOCK_CHANNELS[block], stride, "after ReLU" if name.startswith("conv") else "max-pool")
    return out


SPEC = BackboneSpec(
    name="vgg16",
    layers=_layers(),
    default_layers=("conv3_3", "conv4_3", "conv5_3"),
    mean=(123.68, 116.779, 103.939),
    std=(1.0, 1.0, 1.0),
    normalisation="caffe: RGB 0-255 minus (123.68, 116.779, 103.939); same as the Keras BGR pipeline",
    build=build,
    load=load,
    weights="vgg16",
    description="VGG16 conv1_1..conv5_3 + pool1..pool5, Keras ImageNet weights",
)
