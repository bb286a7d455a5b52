"""The README's code on arrays runs as written (a user copies it first)."""
from __future__ import annotations

import re
import warnings
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(section: str) -> list[str]:
    text = README.read_text()
    start = text.index(f"\n## {section}\n")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start:end if end > 0 else None], re.S)


def test_the_methods_on_arrays_run_as_written():
    blocks = _blocks("The methods from Python, on arrays")
    assert len(blocks) == 2
    names: list[dict] = []
    for code in blocks:
        scope: dict = {}
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the example trains its words on enough windows
            exec(compile(code, str(README), "exec"), scope)
        names.append(scope)
    first, mof = names
    assert first["s"].shape == (1, 5) and first["wq"].shape[0] == 1
    # the query is the third image filled in (windows[8] is added as id 3): it comes first
    assert mof["hits"][0][0] == 3 and len(mof["hits"]) == 3
