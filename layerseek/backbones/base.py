"""A network as named stages run in order, and the extractor that gives several layers in one pass."""
from __future__ import annotations

import ctypes
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import LayerseekError
from .spec import BackboneSpec, LayerInfo  # noqa: F401 - their home before spec.py


class StagedNet(nn.Module):
    """Stages run in order; `forward(x, layers)` returns the named outputs and stops after the
    deepest one asked for (so conv3_3 alone never pays for conv5_3)."""

    def __init__(self, stages: Sequence[tuple[str, nn.Module]], holder: nn.Module | None = None):
        super().__init__()
        # `holder` owns the parameters under the key layout of the weight files; the stages are
        # views onto its submodules, kept out of the module tree so keys stay unchanged.
        self.holder = holder if holder is not None else nn.Sequential()
        self._stages = list(stages)
        self.stage_names = [n for n, _ in stages]

    def forward(self, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        wanted = set(layers)
        last = max(self.stage_names.index(n) for n in wanted)
        out: dict[str, torch.Tensor] = {}
        for name, stage in self._stages[: last + 1]:
            x = stage(x)
            if name in wanted:
                out[name] = x
        return out


_MALLOC_TUNED = False


def keep_freed_memory() -> None:
    """Ask glibc to keep large freed blocks instead of unmapping them after each forward pass.

    Images of varying size make PyTorch allocate fresh > 32 MB activation buffers every pass; with
    glibc's defaults each is mmapped and unmapped again, and the page faults cost 1.4-3x the
    extraction time on these VMs (DESIGN.md). Results are unchanged. No-op off glibc.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED or os.environ.get("LAYERSEEK_NO_MALLOPT"):
        return
    _MALLOC_TUNED = True
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4
        # M_MMAP_THRESHOLD is capped at 32 MiB on 64-bit, below VGG16's activations at 1024 px,
        # so turn mmap off for malloc altogether and never give the heap top back to the OS.
        libc.mallopt(m_mmap_max, ctypes.c_int(0))
        libc.mallopt(m_trim_threshold, ctypes.c_int(2**31 - 1))
    except (OSError, AttributeError):
        pass


ImageLike = np.ndarray | torch.Tensor


class FeatureExtractor:
    """One forward pass of a pretrained backbone -> {layer name: N x C x H x W}.

    Images are H x W x 3 uint8 RGB arrays (as `layerseek.images.load_image` returns) of any size
    and aspect; nothing is resized here. `extract` groups a stream of images by size into batches.
    """

    def __init__(
        self,
        backbone: str = "vgg16",
        layers: Sequence[str] | None = None,
        weights: str | Path | None = None,
        threads: int | None = None,
        device: str = "cpu",
        channels_last: bool = True,
        runtime: str = "auto",
        precision: str = "float",
    ):
        from . import get_spec
        from .runtime import choose
        from .spec import checked_layers

        self.spec = get_spec(backbone)
        self.layers = checked_layers(self.spec, layers)
        self.runtime = choose(runtime, device)
        if precision != "float" and self.runtime != "onnx":
            raise LayerseekError(f"an {precision} network runs on ONNX Runtime on the CPU, not with the "
                                 f"{self.runtime} runtime on {device!r}")
        if threads:
            torch.set_num_threads(int(threads))
        self.threads = int(threads) if threads else torch.get_num_threads()
        keep_freed_memory()
        self.device = torch.device(device)
        self.channels_last = channels_last and self.runtime == "torch"
        self._weights = weights
        self._net: StagedNet | None = None
        self._onnx = None  # the ONNX Runtime extractor this one runs on, under the onnx runtime
        if self.runtime == "torch":
            _ = self.net  # load (and check) the weights now: a bad file fails at construction
        else:
            from .runtime import OnnxExtractor

            self._onnx = OnnxExtractor(backbone, self.layers, weights, self.threads, precision)
        self._mean = torch.tensor(self.spec.mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._inv_std = 1.0 / torch.tensor(self.spec.std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)

    @property
    def net(self) -> StagedNet:
        """The PyTorch network with the weights loaded (built on first use under the onnx runtime:
        to export a graph, or as the reference)."""
        if self._net is None:
            from .weights import load_state_dict

            net = self.spec.build()
            self.spec.load(net, load_state_dict(self.spec.weights, self._weights))
            net.eval().requires_grad_(False)
            memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
            self._net = net.to(self.device, memory_format=memory_format)
        return self._net

    def preprocess(self, images: ImageLike | Sequence[ImageLike]) -> torch.Tensor:
        """uint8 RGB H x W x 3 (or a same-size list / N x H x W x 3) -> normalised N x 3 x H x W."""
        if isinstance(images, (list, tuple)):
            arrays = [torch.as_tensor(np.asarray(im)) if not isinstance(im, torch.Tensor) else im for im in images]
            shapes = {tuple(a.shape) for a in arrays}
            if len(shapes) != 1:
                raise LayerseekError(f"one batch needs images of one size, got {sorted(shapes)}")
            batch = torch.stack(arrays)
        else:
            batch = images if isinstance(images, torch.Tensor) else torch.as_tensor(np.asarray(images))
            if batch.ndim == 3:
                batch = batch.unsqueeze(0)
        if batch.ndim != 4 or batch.shape[-1] != 3:
            raise LayerseekError(f"expected H x W x 3 RGB images, got shape {tuple(batch.shape)}")
        x = batch.to(self.device).permute(0, 3, 1, 2).float()
        x = (x - self._mean) * self._inv_std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    @torch.inference_mode()
    def forward(self, x: torch.Tensor, layers: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """Normalised N x 3 x H x W -> {layer: N x C x h x w} (contiguous, float32)."""
        layers = tuple(layers or self.layers)
        if self._onnx is not None:
            return {k: torch.from_numpy(v) for k, v in self._onnx.forward(x.cpu().numpy(), layers).items()}
        out = self.net(x, layers)
        return {k: v.contiguous() for k, v in out.items()}

    def __call__(self, images: ImageLike | Sequence[ImageLike], layers: Sequence[str] | None = None) -> dict:
        return self.forward(self.preprocess(images), layers)

    def extract(
        self, images: Iterable[ImageLike], batch_size: int = 4, layers: Sequence[str] | None = None
    ) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
        """Yield (position in the input, {layer: 1 x C x h x w}) for a stream of images.

        Images of the same size are batched together (up to batch_size); a batch is run when it is
        full, and what is left at the end. Order of the yields follows batch completion.
        """
        pending: dict[tuple, list[tuple[int, ImageLike]]] = {}
        for i, im in enumerate(images):
            key = tuple(np.shape(im))
            group = pending.setdefault(key, [])
            group.append((i, im))
            if len(group) >= batch_size:
                yield from self._run_group(pending.pop(key), layers)
        for group in pending.values():
            yield from self._run_group(group, layers)

    def _run_group(self, group, layers):
        out = self(list(im for _, im in group), layers)
        for j, (i, _) in enumerate(group):
            yield i, {k: v[j : j + 1] for k, v in out.items()}
