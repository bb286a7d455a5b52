from __future__ import annotations

from pathlib import Path

import threading

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.fail(f"shared data not found at {DATA} (the repository must sit beside ../shared)")
    return DATA


def _extractor(name, layers):
    from layerseek.backbones import FeatureExtractor
    from layerseek.backbones.weights import is_present

    if not is_present(name):
        pytest.fail(f"weights for {name} missing: run ./setup.sh (or layerseek models pull {name})")
    return FeatureExtractor(name, layers, runtime="torch")  # PyTorch: the reference these tests check


@pytest.fixture(scope="session")
def vgg16_all():
    from layerseek.backbones import get_spec

    return _extractor("vgg16", list(get_spec("vgg16").layers))


@pytest.fixture(scope="session")
def make_extractor():
    return _extractor


#: a few real Paris photos of different landmarks, used by the index, server and page tests
PARIS = ["paris_defense_000000.jpg", "paris_eiffel_000000.jpg", "paris_invalides_000002.jpg",
         "paris_louvre_000004.jpg", "paris_moulinrouge_000003.jpg", "paris_eiffel_000004.jpg"]


@pytest.fixture(scope="session")
def copy_paris(data_dir):
    """copy(folder, n=6): the first n PARIS photos copied into a new folder, which is returned."""
    import shutil

    def copy(folder: Path, n: int = len(PARIS)) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        for name in PARIS[:n]:
            shutil.copy(data_dir / "paris6k-subset" / "jpg" / name, folder / name)
        return folder

    return copy


def in_time(fn, seconds=300):
    """fn() on a thread (its exception raised here); fails instead of hanging the suite."""
    out = {}

    def run():
        try:
            out["r"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            out["e"] = e
    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"still running after {seconds} s (something waited on a file?)"
    if "e" in out:
        raise out["e"]
    return out["r"]
