"""The fault-injection suite (issue 27), one try of each scenario with the real command line:
`index`, `watch` and `serve` adding at once; `remove`, `repair` and a server's upload killed
with SIGKILL. bench/faults.py runs the same scenarios 20 times each (docs/BENCHMARKS.md)."""
from __future__ import annotations

import shutil

import pytest

import faults
from conftest import PARIS


@pytest.fixture
def paris(data_dir):
    return [data_dir / "paris6k-subset" / "jpg" / name for name in PARIS]


def test_index_watch_and_serve_adding_at_once_lose_nothing(paris, tmp_path):
    r = faults.together(tmp_path, paris)
    assert r["ok"], faults.summary(r)
    assert r["rows"] == len(PARIS)


@pytest.fixture
def template(paris, tmp_path):
    """An index of all but the last photo (the one a killed upload adds)."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for p in paris:
        shutil.copy(p, photos / p.name)
    (photos / paris[-1].name).unlink()
    r = faults.run("index", str(photos), "--index", str(tmp_path / "t.lsx"), *faults.SMALL)
    assert r.returncode == 0, r.stderr
    return tmp_path / "t.lsx", [photos / p.name for p in paris[:-1]] + [paris[-1]]


@pytest.mark.parametrize("command", ["remove", "repair", "serve-add"])
def test_a_writing_command_killed_leaves_all_or_nothing(template, tmp_path, command):
    index, photos = template
    work = tmp_path / "work"
    work.mkdir()
    clean = faults.clean_seconds(index, work, command, photos)
    for share in (0.7, 0.9):  # late in the run: past start-up, while it writes
        r = faults.killed(index, work, command, share * clean, photos)
        assert r["ok"], faults.summary(r)
