"""One progress bar for every long job (extraction, indexing): rate and ETA, on stderr."""
from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Console


def progress_bar(label: str, console: Console | None = None, transient: bool = False
                 ) -> tuple[object, Callable[..., None]]:
    """(a rich Progress to use as a context manager, an update(done, total) callback: see
    `another_line`); `transient`: gone from the terminal when it ends."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    # the label as text: a path's "[old]" is no style tag
    bar = Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
                   TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                   console=console or Console(stderr=True), transient=transient)
    return bar, another_line(bar, label)


def another_line(bar, label: str) -> Callable[..., None]:
    """An update(done, total, seconds=None) callback of a new line on a bar (`progress_bar`'s) with
    this label; `seconds`: how long the work has run (a line shown after it began), else the
    time since the line was made."""
    task = bar.add_task(label, total=None, rate="")
    t0 = time.perf_counter()

    def update(done: int, total: int, seconds: float | None = None) -> None:
        rate = done / max(time.perf_counter() - t0 if seconds is None else seconds, 1e-9)
        # nothing to do (an index run that found no change): no line left saying "0/0 0%"
        bar.update(task, completed=done, total=total, rate=f"{rate:.2f} img/s" if done else "", visible=total != 0)

    return update


def catching_up_bar(console: Console, bar=None) -> Callable[[str, int, int, float], None]:
    """A callback for `Index.catching_up`: each thing a search's caches bring up to date a line of
    `bar` (a progress bar shown already: `index`'s), or of a bar of its own shown while it runs
    (a search, `serve`'s start)."""
    lines: dict[str, Callable[..., None]] = {}
    own: list = []

    def told(what: str, done: int, total: int, seconds: float) -> None:
        if what not in lines:
            if bar is not None:
                lines[what] = another_line(bar, what)
            else:
                mine, lines[what] = progress_bar(what, console, transient=True)
                mine.start()
                own.append(mine)
        lines[what](done, total, seconds)  # told first after a second's work: its rate from the start
        if done >= total and bar is None:  # its own bar: gone with the work
            own.pop().stop()
            del lines[what]

    return told


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
