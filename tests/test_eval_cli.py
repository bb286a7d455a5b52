"""`layerseek eval` end to end on a collection it has never seen (a generic ground-truth file)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from layerseek.cli import app
from layerseek.eval import metrics as M
from layerseek.datasets import load_ground_truth_file
from layerseek.describe import describe_dataset
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
    assert "6 database images, 2 queries" in text and "1 database image and 0 queries" in text
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
    # per query: its AP (their mean is the mAP) and the places of its positives, as ranked
    per = report["per_query"]
    assert [Path(p["query"]).name for p in per] == ["300.jpg", "500.jpg"]
    assert np.mean([p["ap"] for p in per]) == pytest.approx(report["metrics"]["mAP"])
    for p, r, q in zip(per, ranks, ds.queries):
        places = [i + 1 for i, j in enumerate(j for j in r if j not in set(q.junk) | {q.db_index}) if j in q.positives]
        assert p["positives_at"] == places and len(places) == 2
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
    r = CliRunner().invoke(app, ["eval", "smvs", "--verify", "10", "--hubness", "10"])
    assert r.exit_code == 1 and "--hubness follows --verify N with --expand or --diffusion" in r.output, r.output


def test_eval_mof_and_two_stage(data_dir, tmp_path):
    import warnings

    from layerseek.eval.runner import evaluate_mof
    from layerseek.local.train import train_mof
    from layerseek.local.mof import MOFParams

    f = _collection(data_dir, tmp_path)
    train = tmp_path / "train"
    train.mkdir()
    for i in range(0, 1000, 50):  # another collection: 20 other Corel images
        shutil.copy(data_dir / "corel1k" / "jpg" / f"{i + 7}.jpg", train / f"{i + 7}.jpg")
    common = ["--backbone", "mobilenet_v2", "--max-side", "384", "--cache", str(tmp_path / "cache"),
              "--train-on", str(train), "--words", "8", "--max-train", "100000"]
    r = CliRunner().invoke(app, ["eval", str(f), "--method", "mof", "--layers", "s16,s32", *common,
                                 "--json", str(tmp_path / "mof.json")])
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "mof.json").read_text())
    assert report["mof"]["words"] == 8 and report["mof"]["layers"] == ["s16", "s32"] and report["rerank"] == 0
    # the same number from Python
    ds = load_ground_truth_file(f)
    db, qs, _ = describe_dataset(ds, "mobilenet_v2", ["s16", "s32"], 384, cache_root=tmp_path / "cache", local=True)
    from layerseek.datasets import load_folder

    tdb, tqs, _ = describe_dataset(load_folder(train), "mobilenet_v2", ["s16", "s32"], 384,
                                   cache_root=tmp_path / "cache", local=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = train_mof(MOFParams(layers=("s16", "s32"), words=8), tdb + tqs, "sum", max_train=100000)
    res = evaluate_mof(ds, model, "sum", db, qs)
    assert report["metrics"]["mAP"] == res["mAP"]
    # the paper's plain k-means words, as every MOF figure before spherical words was measured
    r = CliRunner().invoke(app, ["eval", str(f), "--method", "mof", "--layers", "s16,s32", *common, "--plain-words",
                                 "--json", str(tmp_path / "plain.json")])
    assert r.exit_code == 0, r.output
    plain = json.loads((tmp_path / "plain.json").read_text())
    assert report["mof"]["spherical"] is True and plain["mof"]["spherical"] is False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain_model = train_mof(MOFParams(layers=("s16", "s32"), words=8, spherical=False), tdb + tqs, "sum",
                                max_train=100000)
    assert not plain_model.vocabularies["s16"].spherical
    assert plain["metrics"]["mAP"] == evaluate_mof(ds, plain_model, "sum", db, qs)["mAP"]

    # two stages: the global method's top 3 re-ordered by MOF score, the rest in global order
    shortlist = {0: [5, 4, 3, 2, 1, 0], 1: [0, 1, 2, 3, 4, 5]}
    two = evaluate_mof(ds, model, "sum", db, qs, shortlist=shortlist, rerank=3)
    mof_only = dict(evaluate_mof(ds, model, "sum", db, qs)["_ranks"])
    for qi, ranking in two["_ranks"]:
        head = ranking[:3]
        assert sorted(head) == sorted(shortlist[qi][:3]) and ranking[3:] == shortlist[qi][3:]
        assert head == [j for j in mof_only[qi] if j in head]  # MOF's order among the three
    r = CliRunner().invoke(app, ["eval", str(f), "--method", "gem", "--layers", "s32,last", "--rerank", "3", *common])
    assert r.exit_code == 0 and "top 3 re-scored by MOF s16+s32+last" in " ".join(r.output.split())
    r = CliRunner().invoke(app, ["eval", str(f), "--method", "mof", "--backbone", "mobilenet_v2"])
    assert r.exit_code == 1 and "--train-on" in r.output


def test_eval_help_lists_every_method():
    """`eval --help` names every pooling of the registry, mof and local (issue 15, item 8)."""
    from layerseek.cli import EVAL_POOLINGS
    from layerseek.pooling import POOLINGS

    assert EVAL_POOLINGS.split(", ") == list(POOLINGS)
    r = CliRunner().invoke(app, ["eval", "--help"], terminal_width=400)
    text = " ".join(r.output.split())
    assert r.exit_code == 0 and all(name in text for name in [*POOLINGS, "mof", "local"])
    r = CliRunner().invoke(app, ["eval", "smvs", "--method", "rmacc"])  # a typo: every method named, mof and local too
    assert r.exit_code == 1 and ("unknown method 'rmacc'; valid: " + ", ".join(sorted(POOLINGS)) + ", mof, local"
                                 ) in " ".join(r.output.split()), r.output


def test_eval_runs_the_int8_network_with_its_vectors_apart(data_dir, tmp_path):
    """`eval --precision int8` describes with the network `index --precision int8` runs: its
    vectors are cached apart from the float ones (another folder), differ from them yet point the
    same way, and the report says which network; a precision MOF does not run is refused."""
    f = _collection(data_dir, tmp_path)
    common = ["eval", str(f), "--backbone", "mobilenet_v2", "--method", "rmac", "--max-side", "160",
              "--cache", str(tmp_path / "cache")]
    plain = CliRunner().invoke(app, common)
    int8 = CliRunner().invoke(app, [*common, "--precision", "int8"])
    assert plain.exit_code == 0 and int8.exit_code == 0, plain.output + int8.output
    assert "int8 network" in " ".join(int8.output.split()) and "int8" not in plain.output
    assert len(list((tmp_path / "cache").glob("mobilenet_v2-*"))) == 2
    ds = load_ground_truth_file(f)
    layers = ["s8", "s16", "s32", "last"]
    a, _, _ = describe_dataset(ds, "mobilenet_v2", layers, 160, cache_root=tmp_path / "cache")
    b, _, _ = describe_dataset(ds, "mobilenet_v2", layers, 160, cache_root=tmp_path / "cache", precision="int8")
    va, vb = a[0]["rmac/s32"], b[0]["rmac/s32"]
    assert not np.array_equal(va, vb) and va @ vb / np.linalg.norm(va) / np.linalg.norm(vb) > 0.95
    r = CliRunner().invoke(app, [*common, "--precision", "int4"])
    assert r.exit_code == 1 and "valid: float, int8" in r.output
    r = CliRunner().invoke(app, ["eval", str(f), "--method", "mof", "--train-on", "corel1k", "--precision", "int8"])
    assert r.exit_code == 1 and "MOF runs the float network" in " ".join(r.output.split())
