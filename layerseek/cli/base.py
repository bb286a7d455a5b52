"""What every command shares: the Typer apps, the consoles, the one-line error, exit codes and
the settings of a new index."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperArgument, TyperCommand, TyperOption

from ..errors import shown

class _Argument(TyperArgument):
    """An argument as help has long written one: FOLDER, and [FOLDER] when optional, in the usage
    line (Typer 0.29 writes {folder}, braces that elsewhere mean a choice), without a "<path>"
    label beside it in the list."""

    @property
    def display_name_raw(self) -> str:
        return self.metavar or self.name.upper()

    def _usage_display_name(self) -> str:
        name = self.display_name_raw if self.required else f"[{self.display_name_raw}]"
        return name + ("..." if self.nargs != 1 else "")

    def display_type_rich(self, ctx) -> None:
        return None


#: what an option's value is called in help, by Typer's label for its type: "--top N", not
#: "--top <int range>" (a choice keeps its "a|b")
_VALUE_WORDS = {"int": "N", "int range": "N", "float": "X", "float range": "X", "str": "TEXT", "path": "PATH",
                "Path": "PATH", "list[str]": "TEXT", "list[Path]": "PATH"}  # a list option is repeated


class _Option(TyperOption):
    def display_type_rich(self, ctx) -> str:
        if self.metavar is not None:
            return self.metavar
        label = self.display_type(ctx)[1:-1]
        return _VALUE_WORDS.get(label, label)


class _Command(TyperCommand):
    """A command whose help names its values in words (see _Argument and _Option)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for param in self.params:  # Typer makes its own parameter classes: given these methods here
            if type(param) is TyperArgument:
                param.__class__ = _Argument
            elif type(param) is TyperOption:
                param.__class__ = _Option


class _Typer(typer.Typer):
    def command(self, *args, cls=None, **kwargs):
        return super().command(*args, cls=cls or _Command, **kwargs)


app = _Typer(
    help="Find the images that show the same object or place, with multi-layer CNN retrieval.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: sentences wrapped whole, no "<bool>" beside each flag
    context_settings={"help_option_names": ["-h", "--help"]},
)


models_app = _Typer(help="List backbones and fetch their pretrained weights.", invoke_without_command=True)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"layerseek {version('layerseek')}")
        raise typer.Exit()


@app.callback()
def _options(version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                                   help="print the version and exit")] = False) -> None:
    """Find the images that show the same object or place, with multi-layer CNN retrieval."""


app.add_typer(models_app, name="models")


# Into a pipe or a file, lines are never wrapped (a terminal wraps at its own width). No markup
# unless a call asks for it (markup=True, the text in it escaped): a path like "trip [old]" is
# text, not a style tag that Rich would drop.
console = Console(soft_wrap=not sys.stdout.isatty(), markup=False)


err_console = Console(stderr=True, soft_wrap=not sys.stderr.isatty(), markup=False)


#: `index` finished, but some files failed or some folders could not be read.
EXIT_SOME_FAILED = 3


#: exit status of an error said in one line: the OS or the catalog refused (disk full, read-only,
#: locked, damaged), as for any other error a command reports: the user knows what to do
EXIT_FAILED = 1


#: exit status when something unexpected went wrong (the traceback is in a log file)
EXIT_UNEXPECTED = 2


#: What a new index is made with when nothing is said: R-MAC on MobileNetV2 ranks, SIFT + RANSAC
#: verifies the first 100 (docs/RESULTS.md, "Geometric verification").
DEFAULT_INDEX = {"method": "rmac", "backbone": "mobilenet_v2", "verify": True}


#: set by a command whose process holds nothing to finish once it has printed (a search from the
#: shell: the index is closed): `main` then ends it without the interpreter's teardown, which took
#: 0.1-0.14 s after a search (freeing ONNX Runtime, FAISS and the memory maps)
_NOTHING_TO_FINISH = [False]


def _manifest_verify(index_path: Path):
    import json as _json

    try:
        return _json.loads(Path(index_path, "manifest.json").read_text()).get("verify")
    except (OSError, ValueError, AttributeError):
        return None


def os_error_line(e: OSError) -> str:
    """An OSError as one line naming the file and the cause ("PATH: disk full: …", "PATH:
    Permission denied"): `errors.storage_error_line`."""
    from ..errors import storage_error_line

    return storage_error_line(e, e.filename) if e.filename is not None else str(e.strerror or e)


def fail(message: str, code: int = 1) -> None:
    err_console.print(f"[red]error:[/red] {escape(shown(message))}", highlight=False, soft_wrap=True, markup=True)
    raise typer.Exit(code)


def collection_name(name: str | None) -> str | None:
    """A collection to learn from, as stored in an index's parameters: registry names (and
    `others`) as they are, folders and files as absolute paths (so the same collection compares
    equal from any cwd); each of several separated by commas."""
    from ..datasets import DATASETS

    if name is None or name in DATASETS or name == "others":
        return name
    if Path(name).expanduser().exists():
        return str(Path(name).expanduser().resolve())
    if "," in name:
        return ",".join(collection_name(n.strip()) for n in name.split(",") if n.strip())
    return name


def human_bytes(n: int | None) -> str:
    """1234567 -> '1.2 MB' (decimal units, as file managers show sizes)."""
    if n is None:
        return "?"
    if n < 1000:
        return f"{n} bytes"
    for unit in ("KB", "MB", "GB", "TB"):
        n /= 1000
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}"
