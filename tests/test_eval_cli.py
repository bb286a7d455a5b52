"""`layerseek eval` end to end on a collection it has never seen (a generic ground-truth file)."""
from __future__ import annotations

import json
import shutil

import numpy as np
from typer.testing import CliRunner

from layerseek.cli import app
from layerseek.eval import metrics as M
from layerseek.eval.datasets import load_ground_truth_file
from layerseek.eval.runner import describe_dataset
from layerseek.globaldesc import GlobalConfig, rank, score


def _collection(data_dir, tmp_path):
    # two Corel classes (buses 300-, elephants 500-), three images each, plus one missing file
    names = [f"{i}.jpg" for i in (300, 301, 302, 500, 501, 502)]
    for n in names:
        shutil.copy(data_dir / "corel1k" / "jpg" / n, tmp_path / n)
    gt = {"database": names + ["missing.jpg"],
          "queries": {"300.jpg": {"relevant": ["301.jpg", "302.jpg"]},
                      "500.jpg": {"relevant": ["501.jpg", "502.jpg"], "junk": ["300.jpg"]}}}
    f = tmp_path / "gt.json"
    f.write_text(json.dumps(gt))
    return f


def test_eval_generic_file_table_json_plots(data_dir, tmp_path, monkeypatch):
    f = _collection(data_dir, tmp_path)
    args = ["eval", str(f), "--backbone", "mobilenet_v2", "--layers", "s32,last", "--method", "gem",
            "--weights", "1:2", "--max-side", "160", "--cache", str(tmp_path / "cache"),
            "--json", str(tmp_path / "r.json"), "--plots", str(tmp_path / "plots")]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "6 database images, 2 queries" in text and "1 database images and 0 queries" in text
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["weights"] == "1:2" and report["layers"] == ["s32", "last"]
    assert report["versions"]["torch"].startswith("2.14.1")
    # the reported mAP is the one the Python API computes (queries 300 and 500 are db entries
    # 0 and 3 and are never counted as their own match)
    ds = load_ground_truth_file(f)
    db, qs, _ = describe_dataset(ds, "mobilenet_v2", ["s32", "last"], 160,
                                 cache_root=tmp_path / "cache")
    sims = score(GlobalConfig("gem", ("s32", "last"), "1:2"), qs, db, exclude=[0, 3])
    ranks = rank(sims)
    expected = np.mean([M.average_precision(r, q.positives, q.junk, q.db_index) for r, q in zip(ranks, ds.queries)])
    assert report["metrics"]["mAP"] == expected
    assert 0 < expected <= 1
    assert (tmp_path / "plots" / "precision_recall.png").stat().st_size > 1000
    assert len(list((tmp_path / "plots" / "queries").glob("*.png"))) == 2
    # a rerun with other weights only re-scores: decoding an image would now fail loudly
    import layerseek.describe

    def no_decoding(*a, **k):
        raise AssertionError("decoded again")

    monkeypatch.setattr(layerseek.describe, "load_image", no_decoding)
    res2 = CliRunner().invoke(app, args[:-4] + ["--weights", "1:1"])
    assert res2.exit_code == 0 and "failed" not in res2.output and "mAP" in res2.output


def test_eval_bad_names_fail_with_choices(tmp_path):
    r = CliRunner().invoke(app, ["eval", "nope"])
    assert r.exit_code == 1 and "valid: corel1k" in r.output
    r = CliRunner().invoke(app, ["eval", "smvs", "--method", "avg"])
    assert r.exit_code == 1 and "fcrow" in r.output
    r = CliRunner().invoke(app, ["eval", "smvs", "--similarity", "dot"])
    assert r.exit_code == 1 and "cosine" in r.output
