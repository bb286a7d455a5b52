"""The EfficientNet-Lite network itself (torch): built by `efficientnet_lite`'s specs on demand,
so that reading the registry imports no torch."""
from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import WeightsError
from .base import StagedNet
from .efficientnet_lite import _BN_EPS, _CUTS, BASE_STAGES, round_filters


def _same_total(size: int, k: int, s: int) -> int:
    return max((size + s - 1) // s * s - s + k - size, 0)  # (ceil(size / s) - 1) * s + k - size


def same_padding(x: torch.Tensor, kernel: list[int], stride: list[int]) -> torch.Tensor:
    """TensorFlow's 'SAME' padding of x for a conv with `kernel` and `stride` (height, width): the
    odd pixel at the end. Scripted, so an exported ONNX graph computes it from the input's size
    instead of keeping the traced example's (no loop: ONNX Runtime rejects the list it builds)."""
    h = _same_total(x.size(2), kernel[0], stride[0])
    w = _same_total(x.size(3), kernel[1], stride[1])
    return F.pad(x, [w // 2, w - w // 2, h // 2, h - h // 2])


with warnings.catch_warnings():  # torch.jit.script's deprecation notice, printed at every import
    warnings.simplefilter("ignore", FutureWarning)
    _same_total = torch.jit.script(_same_total)
    same_padding = torch.jit.script(same_padding)

class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding: output = ceil(input / stride), extra pad at the end."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1):
        super().__init__(cin, cout, k, stride, padding=0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = same_padding(x, list(self.kernel_size), list(self.stride))
        return F.conv2d(x, self.weight, None, self.stride, 0, 1, self.groups)


class MBConv(nn.Module):
    """Inverted residual block; attribute names follow the weight files' keys."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv2d(cin, mid, 1)
            self._bn0 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self._depthwise_conv = SameConv2d(mid, mid, k, stride, groups=mid)
        self._bn1 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self._project_conv = SameConv2d(mid, cout, 1)
        self._bn2 = nn.BatchNorm2d(cout, eps=_BN_EPS)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.residual else y


class EfficientNetLite(nn.Module):
    def __init__(self, width: float = 1.0, depth: float = 1.0, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, 2)
        self._bn0 = nn.BatchNorm2d(32, eps=_BN_EPS)
        blocks, self.stage_ends = [], []
        last = len(BASE_STAGES) - 1
        for i, (r, k, s, e, cin, cout) in enumerate(BASE_STAGES):
            cin = 32 if i == 0 else round_filters(cin, width)
            cout = round_filters(cout, width)
            repeats = r if i in (0, last) else int(math.ceil(depth * r))
            for j in range(repeats):
                blocks.append(MBConv(cin if j == 0 else cout, cout, k, s if j == 0 else 1, e))
            self.stage_ends.append(len(blocks))
            cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(cout, 1280, 1)
        self._bn1 = nn.BatchNorm2d(1280, eps=_BN_EPS)
        self._fc = nn.Linear(1280, num_classes)


def make_net(width: float, depth: float) -> StagedNet:
    """The network of one width and depth multiplier, cut into the named stages of `_CUTS`."""
    m = EfficientNetLite(width, depth)
    stem = nn.Sequential(m._conv_stem, m._bn0, nn.ReLU6())
    stages, start = [], 0
    for name, (stage_idx, _) in _CUTS.items():
        end = m.stage_ends[stage_idx]
        body = nn.Sequential(*m._blocks[start:end])
        stages.append((name, nn.Sequential(stem, body) if start == 0 else body))
        start = end
    stages.append(("last", nn.Sequential(m._conv_head, m._bn1, nn.ReLU6())))
    stages.append(("logits", nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), m._fc)))
    return StagedNet(stages, holder=m)


def load_state(net: StagedNet, state: dict) -> None:
    # The files carry BatchNorm's num_batches_tracked counters, which inference never reads.
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    missing, unexpected = net.holder.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise WeightsError(
            f"not EfficientNet-Lite weights of this size: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
