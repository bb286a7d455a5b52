"""The `layerseek` command, one module per group of commands: `models` (models, extract),
`evaluate` (eval), `indexing` (index, watch, remove), `searching` (search, demo), `maintaining`
(duplicates, info, check, repair, upgrade) and `serving` (serve); `base` holds what they share.
Importing the package registers every command on `app`; `main` runs it (the console script is
`shell.main`, which sends a search a running server can answer before any of this loads)."""
from __future__ import annotations

import sys
from pathlib import Path

from rich.markup import escape

from ..errors import shown
from ..shell import print_hits, without_self  # noqa: F401 (the command line's names, for tests and scripts)
# each registers its commands; `--help` lists them in this order (the data flow's)
from . import base, models, evaluate, indexing, searching, maintaining, serving  # noqa: F401, I001  # isort: skip
from .base import (  # noqa: F401
    _NOTHING_TO_FINISH, DEFAULT_INDEX, EXIT_FAILED, EXIT_SOME_FAILED, EXIT_UNEXPECTED, app, collection_name, fail,
    human_bytes, models_app, os_error_line)
from .evaluate import EVAL_POOLINGS  # noqa: F401
from .maintaining import print_groups  # noqa: F401
from .searching import FEW_QUERIES, few_queries, query_images, search  # noqa: F401


def bare_flag_values(argv: list[str], option: str = "--ray", default: str = "local") -> list[str]:
    """`--ray` given without an address (last, or followed by another option) means `--ray local`:
    Typer's options always take their value, so the default is written in."""
    out = list(argv)
    for i in range(len(out) - 1, -1, -1):
        if out[i] == option and (i + 1 == len(out) or out[i + 1].startswith("-")):
            out.insert(i + 1, default)
    return out


def run_cli(argv: list[str]) -> None:
    """The command line with every exception turned into one line: an OSError names the file and
    the reason; anything unexpected names the command and the exception, and writes its traceback
    to a log file whose path the line gives (exit status EXIT_UNEXPECTED); OS and catalog errors
    exit EXIT_FAILED, like every error a command says itself. Usage errors and exit
    codes are click's (SystemExit passes through)."""
    import sqlite3

    from ..errors import escape_output, log_unexpected, storage_error_line

    escape_output()  # a file name that is not UTF-8 is printed with \xNN, never a crash
    try:
        app(args=bare_flag_values(argv), prog_name="layerseek")
    except OSError as e:  # a file or folder the OS refused
        base.err_console.print(f"[red]error:[/red] {escape(shown(os_error_line(e)))}", highlight=False, soft_wrap=True,
                               markup=True)
        sys.exit(EXIT_FAILED)
    except sqlite3.Error as e:  # the catalog: disk full, read-only, locked, damaged
        where = next((a for a in argv if not a.startswith("-") and Path(a, "catalog.sqlite").is_file()), "the index")
        base.err_console.print(f"[red]error:[/red] {escape(shown(storage_error_line(e, Path(where, 'catalog.sqlite'))))}",
                               highlight=False, soft_wrap=True, markup=True)
        sys.exit(EXIT_FAILED)
    except Exception as e:  # noqa: BLE001 - the last net: one line, the traceback in a log
        line = log_unexpected(e, "layerseek " + " ".join(argv[:2]))
        base.err_console.print(f"[red]error:[/red] {escape(line)}", highlight=False, soft_wrap=True, markup=True)
        sys.exit(EXIT_UNEXPECTED)


def main() -> None:  # pragma: no cover
    try:
        run_cli(sys.argv[1:])
        code = 0
    except SystemExit as e:
        if not (e.code is None or isinstance(e.code, int)) or not _NOTHING_TO_FINISH[0]:
            raise
        code = e.code or 0
    if _NOTHING_TO_FINISH[0]:
        import os

        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except OSError:  # a closed pipe (`| head -1`): nothing more can be said there
                pass
        os._exit(code)
    sys.exit(code)
