"""Dataset loaders on the real layouts and ground-truth files in ../shared/data."""
from __future__ import annotations

import json
import shutil

import pytest

from layerseek.errors import LayerseekError
from layerseek.datasets import (get_dataset, load_ground_truth_file, load_holidays, load_oxford_classic,
                                     load_ukbench, read_rotations)


def test_smvs_references_as_database(data_dir):
    ds = get_dataset("smvs", data_dir / "smvs-dvd-covers")
    assert (len(ds.database), len(ds.queries)) == (100, 400)
    for q in ds.queries:
        assert len(q.positives) == 1 and ds.database[q.positives[0]].stem == q.path.stem
        assert q.db_index is None


def test_smvs_all_views(data_dir):
    ds = get_dataset("smvs-all", data_dir / "smvs-dvd-covers")
    assert (len(ds.database), len(ds.queries)) == (500, 400)
    for q in ds.queries:
        assert ds.database[q.db_index] == q.path
        assert len(q.positives) == 4 and q.db_index not in q.positives
        assert {ds.database[j].stem for j in q.positives} == {q.path.stem}


def test_rparis6k_subset_restricted_to_present(data_dir):
    ds = get_dataset("rparis6k-subset", data_dir)
    assert (len(ds.database), len(ds.queries)) == (238, 12)
    assert (ds.dropped_db, ds.dropped_queries) == (6322 - 238, 70 - 12)
    assert "6,084 database images and 58 queries" in ds.describe()
    assert all(q.bbox is not None and len(q.bbox) == 4 for q in ds.queries)
    assert all(0 <= j < 238 for q in ds.queries for j in q.positives + q.hard + q.junk)
    assert sum(len(q.positives) for q in ds.queries) > 0 and sum(len(q.hard) for q in ds.queries) > 0


def test_corel_classes(data_dir):
    ds = get_dataset("corel1k", data_dir / "corel1k" / "jpg")
    assert (len(ds.database), len(ds.queries)) == (1000, 1000)
    q = ds.queries[250]
    assert q.path.name == "250.jpg" and q.db_index == 250
    assert len(q.positives) == 99 and set(q.positives) == set(range(200, 300)) - {250}


def test_holidays_groups_from_names(data_dir, tmp_path):
    ds = load_holidays(data_dir / "samples" / "holidays")
    assert [p.name for p in ds.database] == ["100000.jpg", "100001.jpg", "100002.jpg"]
    assert len(ds.queries) == 1
    q = ds.queries[0]
    assert q.path.name == "100000.jpg" and q.db_index == 0 and q.positives == [1, 2]
    rot = tmp_path / "rot.txt"
    rot.write_text("# upright\n100001.jpg 90\n\n100002.jpg -90\n")
    assert read_rotations(rot) == {"100001.jpg": 90, "100002.jpg": 270}
    assert load_holidays(data_dir / "samples" / "holidays", rot).rotations["100002.jpg"] == 270
    rot.write_text("100001.jpg 45\n")
    with pytest.raises(LayerseekError, match=r"rot.txt:1: rotation 45"):
        read_rotations(rot)


def test_ukbench_groups_of_four(data_dir):
    ds = load_ukbench(data_dir / "samples" / "ukbench")
    assert len(ds.database) == len(ds.queries) == 10
    assert ds.queries[5].positives == [4, 5, 6, 7]  # the query itself counts for N-S
    assert ds.queries[9].positives == [8, 9]


def test_oxford_classic_ground_truth(data_dir, tmp_path):
    gt = data_dir / "gnd" / "oxford5k_gt_files"
    good = (gt / "all_souls_1_good.txt").read_text().split()
    ok = (gt / "all_souls_1_ok.txt").read_text().split()
    junk = (gt / "all_souls_1_junk.txt").read_text().split()
    jpg = tmp_path / "jpg"
    jpg.mkdir()
    present = ["all_souls_000013", good[0], good[1], ok[0], junk[0], "some_other_000001"]
    for n in present:
        (jpg / f"{n}.jpg").write_bytes(b"")  # the loader only reads names
    ds = load_oxford_classic(gt, jpg)
    qimages = {f.read_text().split()[0].removeprefix("oxc1_") for f in gt.glob("*_query.txt")}
    expected = sum(1 for f in gt.glob("*_query.txt") if f.read_text().split()[0].removeprefix("oxc1_") in present)
    assert len(list(gt.glob("*_query.txt"))) == 55 and len(ds.queries) == expected >= 1
    assert all(q.path.stem in qimages for q in ds.queries)
    q = next(q for q in ds.queries if q.path.stem == "all_souls_000013")
    assert q.bbox == (136.5, 34.1, 648.5, 955.7)
    names = [p.stem for p in ds.database]
    assert {names[j] for j in q.positives} >= {good[0], good[1], ok[0]}
    assert names.index(junk[0]) in q.junk
    assert ds.dropped_queries == 55 - len(ds.queries)
    assert ds.dropped_db > 0


def test_generic_ground_truth_file(data_dir, tmp_path):
    src = data_dir / "corel1k" / "jpg"
    (tmp_path / "imgs").mkdir()
    for n in ("0", "1", "2", "500"):
        shutil.copy(src / f"{n}.jpg", tmp_path / "imgs" / f"{n}.jpg")
    spec = {"root": "imgs", "database": ["0.jpg", "1.jpg", "2.jpg", "500.jpg", "gone.jpg"],
            "queries": {"0.jpg": {"relevant": ["1.jpg", "2.jpg", "gone.jpg"], "junk": ["500.jpg"]},
                        "500.jpg": {"relevant": ["500.jpg"], "bbox": [0, 0, 100, 80]},
                        "lost.jpg": {"relevant": ["1.jpg"]}}}
    f = tmp_path / "gt.json"
    f.write_text(json.dumps(spec))
    ds = get_dataset(str(f))
    assert [p.name for p in ds.database] == ["0.jpg", "1.jpg", "2.jpg", "500.jpg"]
    assert (ds.dropped_db, ds.dropped_queries) == (1, 1)
    q0, q500 = ds.queries
    assert (q0.positives, q0.junk, q0.db_index) == ([1, 2], [3], 0)
    assert q500.bbox == (0.0, 0.0, 100.0, 80.0) and q500.db_index == 3


@pytest.mark.parametrize("text, message", [
    ("{not json", "not valid JSON"),
    ('{"database": "a.jpg", "queries": {}}', "'database' list"),
    ('{"database": ["a.jpg"], "queries": {"a.jpg": {}}}', "needs a 'relevant' list"),
    ('{"database": ["a.jpg"], "queries": {"a.jpg": {"relevant": ["b.jpg"]}}}', "not in the database"),
])
def test_generic_ground_truth_errors(tmp_path, text, message):
    (tmp_path / "a.jpg").write_bytes(b"x")
    f = tmp_path / "gt.json"
    f.write_text(text)
    with pytest.raises(LayerseekError, match=message) as e:
        load_ground_truth_file(f)
    assert str(f) in str(e.value)


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(LayerseekError, match="valid: corel1k, holidays.*smvs-all, ukbench"):
        get_dataset("nope")
    with pytest.raises(LayerseekError, match="--root"):
        get_dataset("holidays")


def test_the_shared_data_is_found_beside_the_repository(data_dir, monkeypatch):
    from layerseek.datasets import shared_data_dir

    monkeypatch.delenv("LAYERSEEK_DATA", raising=False)
    assert shared_data_dir().resolve() == data_dir.resolve()


def test_distractor_photos_are_a_fixed_sample_of_the_folder(tmp_path):
    from layerseek.datasets import distractor_photos

    for i in range(20):
        (tmp_path / f"{i:02d}.jpg").write_bytes(b"x")
    (tmp_path / "manifest.csv").write_text("not a photo")
    five = distractor_photos(tmp_path, 5)
    assert five == distractor_photos(tmp_path, 5) and five == distractor_photos(tmp_path, 20)[:5]
    assert len(set(five)) == 5 and five != sorted(tmp_path.glob("*.jpg"))[:5]  # shuffled, no repeats
    assert len(distractor_photos(tmp_path, 20)) == 20 and distractor_photos(tmp_path, 0) == []
    with pytest.raises(LayerseekError, match="20 photos, fewer than 21"):
        distractor_photos(tmp_path, 21)
