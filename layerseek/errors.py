"""Errors a user sees: each one line, naming the thing and the reason."""
from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class LayerseekError(Exception):
    """Base class for every error layerseek raises on purpose."""


class IndexBusy(LayerseekError):
    """Another process is changing the index (it holds the index's lock)."""


_WEB_ADDRESS = re.compile(r"(https?|ftp):/", re.IGNORECASE)


class ImageError(LayerseekError):
    """An image file could not be used. `reason` is one of REASONS."""

    REASONS = ("missing", "empty", "truncated", "not an image", "unsupported", "too large", "unreadable",
               "changed while being read")

    def __init__(self, path: str | Path, reason: str, detail: str = ""):
        self.path = str(path)
        self.reason = reason
        if reason == "missing" and not detail and _WEB_ADDRESS.match(self.path):  # a pasted link ("//" made "/")
            detail = "a web address: layerseek reads files on this machine; save the photo first"
        self.detail = " ".join(detail.split())  # a decoder's message may end in a newline: one line
        msg = f"{self.path}: {reason}"
        if self.detail:
            msg += f" ({self.detail})"
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


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def plural(n: int, one: str, many: str | None = None) -> str:
    """"1 image", "2 images", "10,000 images": `many` where an "s" does not make the plural."""
    return f"{n:,} {one if n == 1 else many or one + 's'}"


def shown(text: str) -> str:
    """Text safe to print on one line, store as SQLite text or send as JSON: bytes of a file name
    that are not valid UTF-8 (held by Python as surrogates) and control characters (a newline in
    a name) written as \\xNN; any other text unchanged."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text) if _CONTROL.search(text) else text


#: what SQLite's messages (and the OS's errors under it) mean for a user, and what to do
_SQLITE_CAUSES = (
    (("database or disk is full", "no space left"), "disk full: free some space and run the command again "
                                                     "(what was indexed before is kept)"),
    (("readonly database", "read-only", "readonly"), "read-only: the index is on a read-only drive or folder; "
                                                     "searching works, changing it needs write access"),
    (("database is locked", "database table is locked"), "locked by another process; try again when it has finished"),
    (("disk i/o error",), "disk I/O error: the drive may be full, failing or gone; check it, then "
                          "`layerseek check` (changes nothing)"),
    (("file is not a database", "malformed", "not a database"), "damaged or not a layerseek catalog; "
                                                                 "`layerseek check` says what can be repaired"),
    (("unable to open database",), "cannot be opened (missing, or no permission)"),
)


def storage_error_line(e: BaseException, file: str | Path) -> str:
    """One line for an error of SQLite or of the OS under it, naming `file` and the cause: disk
    full, read-only, locked, I/O error, damaged, not openable; else the message as it is."""
    import errno

    text = str(e).lower()
    code = getattr(e, "errno", None)
    if code == errno.ENOSPC:
        text = "database or disk is full"
    elif code == errno.EROFS:
        text = "readonly"
    for needles, line in _SQLITE_CAUSES:
        if any(n in text for n in needles):
            return f"{file}: {line}"
    return f"{file}: {getattr(e, 'strerror', None) or e}"


def _escape_undecodable(err: UnicodeError) -> tuple[str, int]:
    """Codec error handler "layerseek.escape": undecodable name bytes written as \\xNN."""
    if not isinstance(err, UnicodeEncodeError):
        raise err
    part = err.object[err.start:err.end]
    def escaped(c: str) -> str:
        if 0xDC80 <= ord(c) <= 0xDCFF:
            return f"\\x{ord(c) - 0xDC00:02x}"
        return f"\\u{ord(c):04x}" if ord(c) <= 0xFFFF else f"\\U{ord(c):08x}"  # as Python writes them

    return "".join(escaped(c) for c in part), err.end


def escape_output() -> None:
    """Make stdout and stderr write undecodable name bytes as \\xNN instead of failing."""
    import codecs
    import sys

    codecs.register_error("layerseek.escape", _escape_undecodable)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="layerseek.escape")
        except (AttributeError, ValueError):  # not a text stream that can be reconfigured
            pass


def log_unexpected(exc: BaseException, context: str) -> str:
    """Write an unexpected exception's traceback to a new log file and return the one line a user
    sees: what failed, the exception, and where the details are. The log folder is
    $LAYERSEEK_LOG_DIR, else `logs/` in the user cache; if it cannot be written, the line says so."""
    import os
    import tempfile
    import time
    import traceback

    reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:300] if str(exc) else type(exc).__name__
    try:
        folder = os.environ.get("LAYERSEEK_LOG_DIR")
        if not folder:
            from platformdirs import user_cache_dir

            folder = os.path.join(user_cache_dir("layerseek"), "logs")
        os.makedirs(folder, exist_ok=True)
        fd, path = tempfile.mkstemp(prefix=time.strftime("error-%Y%m%d-%H%M%S-"), suffix=".log", dir=folder)
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as f:
            f.write(f"{context}\n\n")
            f.write("".join(traceback.format_exception(exc)))
        where = f"details in {path}"
    except OSError as e:
        where = f"no log written ({e.strerror or e})"
    return f"{context}: unexpected error, {reason} ({where})"
