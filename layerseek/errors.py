"""Errors a user sees: each one line, naming the thing and the reason."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class LayerseekError(Exception):
    """Base class for every error layerseek raises on purpose."""


class IndexBusy(LayerseekError):
    """Another process is changing the index (it holds the index's lock)."""


class ImageError(LayerseekError):
    """An image file could not be used. `reason` is one of REASONS."""

    REASONS = ("missing", "empty", "truncated", "not an image", "unsupported", "too large", "unreadable")

    def __init__(self, path: str | Path, reason: str, detail: str = ""):
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        msg = f"{self.path}: {reason}"
        if detail:
            msg += f" ({detail})"
        super().__init__(msg)


class WeightsError(LayerseekError):
    """Pretrained weights missing, corrupt or of the wrong shape."""


class UnknownNameError(LayerseekError, KeyError):
    """A name looked up in a registry that does not hold it."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def lookup(registry: Mapping[str, T], name: str, kind: str) -> T:
    """registry[name], or an error listing the valid names."""
    try:
        return registry[name]
    except KeyError:
        valid = ", ".join(sorted(registry))
        raise UnknownNameError(f"unknown {kind} {name!r}; valid: {valid}") from None
