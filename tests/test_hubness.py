"""The first stage's hubness correction (issue 26, item 2): CSLS through a real index equals the
brute-force rule, stays in step with the catalog, and an index made before it searches as before."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from layerseek.cli import app
from layerseek.errors import LayerseekError
from layerseek.index import Index
from layerseek.stages import Hubness, Stages

OPTS = {"backbone": "mobilenet_v2", "layers": ("s32", "last"), "max_side": 256}


def _folder(data_dir, folder, covers=6, corel=(0, 100, 200, 300, 400, 500)):
    folder.mkdir(parents=True)
    for i in range(1, covers + 1):
        shutil.copy(data_dir / "smvs-dvd-covers" / "Reference" / f"{i:03d}.jpg", folder / f"{i:03d}.jpg")
    for i in corel:
        shutil.copy(data_dir / "corel1k" / "jpg" / f"{i}.jpg", folder / f"corel{i}.jpg")
    return folder


def _brute(idx, q, k, beta=0.5):
    """Every indexed image by cos(q, x) - beta * (x's mean cosine to its k nearest others, or to
    all the others where there are fewer)."""
    ids, D = idx.store.matrix()
    G = D @ D.T
    np.fill_diagonal(G, -np.inf)
    r = np.sort(G, axis=1)[:, ::-1][:, :min(k, len(ids) - 1)].mean(axis=1)
    s = D @ q - beta * r
    order = np.argsort(-s, kind="stable")
    return [int(i) for i in ids[order]], s[order]


def test_the_corrected_first_stage_equals_the_brute_force_rule_and_follows_the_catalog(data_dir, tmp_path):
    folder = _folder(data_dir, tmp_path / "photos")
    photo = data_dir / "smvs-dvd-covers" / "Palm" / "003.jpg"
    with Index.create(tmp_path / "idx", "rmac", **OPTS) as idx:
        idx.add_folder(folder)
        assert idx.catalog.manifest["hubness"] == {"k": 10, "beta": 0.5}
        assert Stages.of(idx).hubness == Hubness(10, 0.5) and Stages.of(idx, hubness=0).hubness is None
        q = idx.encode_query(photo)
        n = idx.catalog.count()
        want, _ = _brute(idx, q, 3)
        got = idx.search_vector(q, top=n, hubness=Hubness(3))
        assert [h.id for h in got] == want
        ids, D = idx.store.matrix()
        cos = dict(zip(ids.tolist(), (D @ q).tolist()))
        assert [h.score for h in got] == pytest.approx([cos[i] for i in want], abs=1e-5)  # a hit shows its cosine
        plain = [h.id for h in idx.search_vector(q, top=n)]
        assert plain != want  # the correction changes this ranking: the test can tell them apart
        # in step: two photos gone, one back under a new name
        (folder / "corel100.jpg").unlink()
        (folder / "002.jpg").rename(folder / "002-moved.jpg")
        idx.add_folder(folder)
        want, _ = _brute(idx, q, 3)
        assert [h.id for h in idx.search_vector(q, top=n, hubness=Hubness(3))] == want
        # the index's own setting (k 10: with 11 images, each one's mean over all the others)
        assert [h.id for h in idx.search(photo, top=n)] == _brute(idx, q, 10)[0]
        with pytest.raises(LayerseekError, match="hubness -1"):
            idx.search(photo, hubness=-1)
    r = CliRunner().invoke(app, ["info", str(tmp_path / "idx"), "-v"])
    assert "mean cosine to its 10 nearest (hubness correction)" in " ".join(r.output.split()), r.output
    r = CliRunner().invoke(app, ["search", str(tmp_path / "idx"), str(photo), "--hubness", "0", "--paths-only",
                                 "--top", "3"])
    assert r.exit_code == 0 and len(r.output.split()) == 3, r.output


def test_an_index_made_before_the_correction_ranks_by_cosine_until_upgraded(data_dir, tmp_path):
    folder = _folder(data_dir, tmp_path / "photos", covers=4, corel=(0, 100, 200))
    with Index.create(tmp_path / "idx", "rmac", hubness=False, **OPTS) as idx:
        idx.add_folder(folder)
        assert "hubness" not in json.loads((tmp_path / "idx" / "manifest.json").read_text()) or \
            json.loads((tmp_path / "idx" / "manifest.json").read_text())["hubness"] is None
    manifest = tmp_path / "idx" / "manifest.json"
    m = json.loads(manifest.read_text())
    m.pop("hubness", None)  # as written before the correction existed
    manifest.write_text(json.dumps(m))
    photo = data_dir / "smvs-dvd-covers" / "Canon" / "002.jpg"
    with Index.open(tmp_path / "idx") as old:
        q = old.encode_query(photo)
        assert Stages.of(old).hubness is None
        assert [h.id for h in old.search(photo, top=7)] == [h.id for h in old.search_vector(q, top=7)]
    r = CliRunner().invoke(app, ["upgrade", str(tmp_path / "idx")])
    assert r.exit_code == 0 and "hubness correction" in r.output, r.output
    with Index.open(tmp_path / "idx") as up:
        assert up.catalog.manifest["hubness"] == {"k": 10, "beta": 0.5}
        assert [h.id for h in up.search(photo, top=7)] == _brute(up, q, 10)[0]
    r = CliRunner().invoke(app, ["check", str(tmp_path / "idx")])
    assert r.exit_code == 0, r.output
