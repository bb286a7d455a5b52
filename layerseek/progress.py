"""One progress bar for every long job (extraction, indexing): rate and ETA, on stderr."""
from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Console


def progress_bar(label: str, console: Console | None = None) -> tuple[object, Callable[[int, int], None]]:
    """(a rich Progress to use as a context manager, an update(done, total) callback)."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    # the label as text: a path's "[old]" is no style tag
    bar = Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
                   TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                   console=console or Console(stderr=True))
    task = bar.add_task(label, total=None, rate="")
    t0 = time.perf_counter()

    def update(done: int, total: int) -> None:
        rate = done / max(time.perf_counter() - t0, 1e-9)
        bar.update(task, completed=done, total=total, rate=f"{rate:.2f} img/s" if done else "")

    return bar, update


def versions() -> dict:
    """Versions that a report or an index manifest records (read from the installed packages'
    metadata: importing torch for its version alone cost an index 1.7 s at creation)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import numpy as np

    import layerseek

    out = {"layerseek": layerseek.__version__}
    for package in ("torch", "onnxruntime"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = None
    return out | {"numpy": np.__version__, "python": platform.python_version(), "machine": platform.machine()}
