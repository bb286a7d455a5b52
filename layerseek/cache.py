"""Where layerseek keeps what it makes once and reuses: weights, exported graphs, descriptor caches.

`$LAYERSEEK_CACHE` if set, else the user cache directory (`~/.cache/layerseek`). A module of its
own so that asking for the folder imports nothing heavy (no torch).
"""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    env = os.environ.get("LAYERSEEK_CACHE")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("layerseek"))
