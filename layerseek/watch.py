"""Keep an index in step with a folder: file-system events (watchdog: inotify on Linux, FSEvents,
ReadDirectoryChangesW; polling where none is available) wake an incremental `add_folder` run once
the folder has been quiet for a moment, so a camera import of 500 photos is one run, not 500.

The run is the same as `layerseek index`: new and changed files are added, deleted ones
forgotten, removed and excluded ones left out, and a folder that vanishes whole (an unmounted
drive) is refused, not emptied. The watched folder itself moved away, renamed, deleted or
unmounted is said once (its photos stay in the index); when it is back, it is watched and
indexed again.
"""
from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .errors import IndexBusy, LayerseekError

#: seconds between tries while another process holds the index (its run may last minutes)
BUSY_RETRY = 2.0
#: seconds between looks at whether the watched folder is still there (events stop telling when it
#: is moved away: inotify follows it to its new place; a drive unmounted sends nothing more)
THERE_CHECK = 1.0


def watch(index, folder: str | Path, debounce: float = 2.0, stop: threading.Event | None = None,
          on_report: Callable[[object], None] | None = None, on_error: Callable[[str], None] | None = None,
          poll: bool = False, run_bar: Callable[[], tuple] | None = None, **add_options) -> None:
    """Index `folder` into `index` now, then again after every burst of changes under it (once no
    event came for `debounce` seconds), until `stop` is set. `on_report` gets each run's
    IndexReport, `on_error` the message of a run that failed (the watch goes on). A run that
    finds the index busy (another `index` or `remove` holds its lock) is tried again every
    BUSY_RETRY seconds until it gets through, so no change is left behind. `poll`: a polling
    observer (network shares, where no events come). `run_bar`: makes (a context manager shown while
    a run works, its update(done, total)): a progress bar for each run."""
    from watchdog.events import FileSystemEventHandler
    from watchdog.observers import Observer
    from watchdog.observers.polling import PollingObserver

    folder = Path(folder).expanduser().resolve()
    if not folder.is_dir():
        raise LayerseekError(f"{folder}: not a folder")
    own = str(Path(index.catalog.root).resolve())  # an index kept inside the folder: its writes are no change
    stop = stop or threading.Event()
    changed = threading.Event()
    last = [0.0]

    class Changes(FileSystemEventHandler):
        def on_any_event(self, event):
            if event.event_type in ("opened", "closed_no_write"):
                return  # reads change nothing
            paths = [event.src_path, getattr(event, "dest_path", "") or ""]
            if all(not p or p == own or p.startswith(own + "/") for p in map(str, paths)):
                return
            last[0] = time.monotonic()
            changed.set()

    busy = [False]  # the last run met another writer: the changes it was for are still to be indexed
    watched: set[str] = set()  # the linked folders the walk went into, watched too (events do not follow links)

    def run():
        bar, update = run_bar() if run_bar else (contextlib.nullcontext(), None)
        try:
            with bar:
                report = index.add_folder(folder, progress=update, **add_options)
                for target in set(report.followed) - watched:
                    with contextlib.suppress(OSError):
                        observer.schedule(Changes(), target, recursive=True)
                        watched.add(target)
                index.update_graph()  # as `index` does: the next search does not pay for it
        except IndexBusy as e:
            if on_error and not busy[0]:  # said once per wait, not every BUSY_RETRY seconds
                on_error(f"{e} (will try again every {BUSY_RETRY:g} s)")
            busy[0] = True
            return
        except LayerseekError as e:
            busy[0] = False
            if on_error:
                on_error(str(e))
            return
        busy[0] = False
        if on_report:
            on_report(report)

    observer = (PollingObserver(timeout=max(0.5, debounce)) if poll else Observer())
    observer.schedule(Changes(), str(folder), recursive=True)
    gone = [False, time.monotonic()]  # the folder is not there (said once); when it was last looked at

    def still_there() -> bool:
        """Whether the folder is there, looked at every THERE_CHECK seconds: its going said once,
        and when it is back, watched anew (the old watch followed it away, or died with its drive)."""
        if time.monotonic() - gone[1] < THERE_CHECK:
            return not gone[0]
        gone[1] = time.monotonic()
        there = folder.is_dir()
        if not there and not gone[0]:
            gone[0] = True
            if on_error:
                on_error(f"{folder}: gone (moved, renamed, deleted or unmounted); its photos stay in the index, "
                         "and it is indexed again when it is back")
        elif there and gone[0]:
            gone[0] = False
            with contextlib.suppress(OSError):
                observer.unschedule_all()
                watched.clear()
                observer.schedule(Changes(), str(folder), recursive=True)
            changed.clear()
            run()  # what changed while it was away
        return there

    observer.start()
    try:
        run()  # what changed while nobody watched
        while not stop.is_set():
            if not still_there():
                stop.wait(0.2)
                continue
            if busy[0] and not changed.is_set():  # nothing new, but the last run did not get through
                if not stop.wait(BUSY_RETRY):
                    run()
                continue
            if not changed.wait(0.2):
                continue
            if time.monotonic() - last[0] < debounce:  # still arriving: wait for the burst to end
                stop.wait(0.2)
                continue
            changed.clear()
            run()
    finally:
        observer.stop()
        observer.join(timeout=5)
