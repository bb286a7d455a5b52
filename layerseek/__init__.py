"""layerseek: image retrieval with multi-layer CNN activations (MOF, FCroW + WMFF) and baselines."""
from __future__ import annotations

__version__ = "0.1.0"

from .errors import ImageError, LayerseekError, UnknownNameError, WeightsError  # noqa: E402
from .images import load_image  # noqa: E402

__all__ = ["ImageError", "LayerseekError", "UnknownNameError", "WeightsError", "load_image", "__version__"]
