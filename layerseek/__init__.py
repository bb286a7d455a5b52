"""layerseek: image retrieval with multi-layer CNN activations (MOF, FCroW + WMFF) and baselines."""
from __future__ import annotations

__version__ = "0.1.0"

from .errors import ImageError, LayerseekError, UnknownNameError, WeightsError  # noqa: E402

__all__ = ["ImageError", "LayerseekError", "UnknownNameError", "WeightsError", "load_image", "__version__"]


def __getattr__(name: str):
    # load_image brings numpy and Pillow: imported when asked for, not by every `layerseek.x`
    # (a search a running server answers imports neither: `shell`)
    if name == "load_image":
        from .images import load_image

        return load_image
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
