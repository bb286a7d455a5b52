"""MOF's local engine: dense windows against the per-crop definition, HE codes against their
definition, inverted-file scores against a brute-force reference, and the life cycle."""
from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
import torch

from layerseek.errors import LayerseekError
from layerseek.images import load_image
from layerseek.local import invfile
from layerseek.local.invfile import InvertedFile, sum_parts
from layerseek.local.kernels import deal
from layerseek.local.mof import MOFEngine, MOFModel, MOFParams
from layerseek.local.quantize import HammingEmbedding, Vocabulary, hamming
from layerseek.local.windows import crop_window_descriptors, dense_window_descriptors, window_grid, window_pool


@pytest.mark.parametrize("pooling", ["sum", "max"])
@pytest.mark.parametrize("stride", [4, 16, 32])
def test_window_pool_equals_explicit_windows(pooling, stride):
    rng = np.random.default_rng(stride)
    h, w = 480 // stride, 352 // stride
    x = torch.from_numpy(rng.random((1, 5, h, w)).astype(np.float32))
    got = window_pool(x, stride, pooling).numpy()
    k, s = 224 // stride, 32 // stride
    ref = []
    for y in range(0, h - k + 1, s):
        for xx in range(0, w - k + 1, s):
            cell = x[0, :, y:y + k, xx:xx + k].numpy()
            ref.append(cell.max(axis=(1, 2)) if pooling == "max" else cell.sum(axis=(1, 2)))
    np.testing.assert_allclose(got, np.array(ref), rtol=1e-4)
    assert len(got) == len(window_grid(480, 352)) == 9 * 5  # the grid in pixels has the same windows


def test_small_image_gives_one_window_over_all_of_it():
    x = torch.ones(1, 3, 4, 9)  # 128 x 288 px at stride 32: shorter than a window vertically
    got = window_pool(x, 32, "sum")
    assert got.shape == (3, 3) and float(got[0, 0]) == 4 * 7


def test_fast_windows_equal_exact_crops_for_a_local_operator():
    """Geometry: with a 'network' whose cells see only their own pixels (4 x 4 average pooling,
    stride 4), pooling windows from the whole map equals running each 224 px crop exactly."""
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (320, 416, 3)).astype(np.uint8)

    def forward(a):
        x = torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None].float()
        return {"p4": torch.nn.functional.avg_pool2d(x, 4)}

    for pooling in ("sum", "max"):
        fast = dense_window_descriptors(forward(img), {"p4": 4}, pooling)["p4"]
        exact = crop_window_descriptors(img, forward, pooling)["p4"]
        assert fast.shape == exact.shape == (len(window_grid(320, 416)), 3)
        np.testing.assert_allclose(fast, exact, rtol=1e-5, atol=1e-6)


def test_fast_windows_agree_with_exact_crops_away_from_borders(data_dir, make_extractor):
    """A real network is not local: in one pass over the image, cells near a window's edge see
    pixels outside it, where the crop sees zero padding. Stated tolerance, measured on windows not
    touching the image border (MobileNetV2, max side 480): cosine between a window's fast and exact
    descriptor >= 0.9 (max pooling, s16), >= 0.85 (max and sum, last), >= 0.6 (sum, s16: a linear
    bottleneck layer with signed values, where the edge cells weigh most); and a window's fast
    descriptor is on average closer to its own crop than to crops three or more steps away."""
    fx = make_extractor("mobilenet_v2", ["s16", "last"])
    img = load_image(data_dir / "paris6k-subset" / "jpg" / "paris_louvre_000004.jpg", max_side=480)
    h, w = img.shape[:2]
    corners = window_grid(h, w)
    inner = [i for i, (y, x) in enumerate(corners) if 0 < y < h - 224 - 16 and 0 < x < w - 224 - 16]
    assert len(inner) >= 6
    grid = np.array(corners) // 32
    for pooling, tols in (("max", {"s16": 0.9, "last": 0.85}), ("sum", {"s16": 0.6, "last": 0.85})):
        fast = dense_window_descriptors(fx(img), {"s16": 16, "last": 32}, pooling)
        exact = crop_window_descriptors(img, lambda c: fx(c), pooling, corners=corners)
        for layer, tol in tols.items():
            sims = fast[layer] @ exact[layer].T
            own = np.diag(sims)[inner]
            assert own.min() >= tol, (pooling, layer, own.min())
            far = [sims[i, np.abs(grid - grid[i]).max(1) >= 3].mean() for i in inner]
            assert own.mean() > np.mean(far), (pooling, layer)


def test_hamming_codes_equal_their_definition():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 160)).astype(np.float32)
    words = rng.integers(0, 6, 300)
    he = HammingEmbedding(bits=128, seed=3).fit(x, words, k=7)  # word 6 has no training descriptor
    p = he.projection_
    np.testing.assert_allclose(p @ p.T, np.eye(128), atol=1e-5)  # orthonormal rows
    proj = x @ p.T
    np.testing.assert_allclose(he.medians_[2], np.median(proj[words == 2], axis=0), rtol=1e-5)
    np.testing.assert_allclose(he.medians_[6], np.median(proj, axis=0), rtol=1e-5)
    q = rng.standard_normal((4, 160)).astype(np.float32)
    qw = np.array([[0, 2], [6, 1], [3, 3], [5, 4]])
    codes = he.signatures(q, qw)
    assert codes.shape == (4, 2, 16)
    for i in range(4):
        for j in range(2):
            bits = [(q[i] @ p[b]) > he.medians_[qw[i, j], b] for b in range(128)]
            assert np.array_equal(np.unpackbits(codes[i, j]).astype(bool), bits)
    assert hamming(codes[0, 0], codes[0, 0]) == 0
    assert hamming(codes[0, 0], codes[1, 0]) == sum(np.unpackbits(codes[0, 0]) != np.unpackbits(codes[1, 0]))
    assert HammingEmbedding(128).fit(x[:, :96], words, 7).nbytes == 12  # h = d when d < 128


def test_vocabulary_assignment_and_training_size_checks():
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((8, 16)).astype(np.float32) * 5
    x = (centres[rng.integers(0, 8, 2000)] + rng.standard_normal((2000, 16)) * 0.1).astype(np.float32)
    voc = Vocabulary(8, seed=2).fit(x)
    words = voc.assign(x, ma=3)
    assert words.shape == (2000, 3)
    d = ((x[:, None, :] - voc.centroids_[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(words[:, 0], d.argmin(1))  # exact nearest word first
    np.testing.assert_array_equal(words, np.argsort(d, axis=1)[:, :3])
    with pytest.warns(UserWarning, match="only 2000 training descriptors for 100 words"):
        Vocabulary(100, niter=2).fit(x)
    with pytest.raises(LayerseekError, match="cannot make 5000 words"):
        Vocabulary(5000).fit(x)
    approx = Vocabulary(8, seed=2, approximate=True).fit(x)  # HNSW assignment agrees on easy data
    assert np.mean(approx.assign(x)[:, 0] == np.argmin(((x[:, None] - approx.centroids_[None]) ** 2).sum(-1), 1)) > 0.99


def test_spherical_vocabulary_words_of_unit_length_and_cosine_assignment(tmp_path):
    """Spherical words: unit centroids, each descriptor assigned to its largest cosine; a word that
    is the mean of scattered descriptors (short in plain k-means) no longer gathers every
    descriptor unlike the training ones. Saved with the flag; files from before it load as plain."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3000, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    voc = Vocabulary(16, seed=3, spherical=True).fit(x)
    np.testing.assert_allclose(np.linalg.norm(voc.centroids_, axis=1), 1, atol=1e-5)
    np.testing.assert_array_equal(voc.assign(x, 2), np.argsort(-(x @ voc.centroids_.T), axis=1)[:, :2])
    # a short word (plain k-means' mean of scattered windows) beside two long ones: by L2 it takes
    # every descriptor far from all three, by cosine none of them
    centroids = np.array([[1, 0, 0], [0, 1, 0], [0.212, -0.212, 0]], np.float32)
    far = np.array([[0.4, 0.4, 0.825], [0.45, 0.35, 0.82], [0.42, 0.38, 0.82]], np.float32)
    far /= np.linalg.norm(far, axis=1, keepdims=True)
    plain, unit = Vocabulary(3), Vocabulary(3, spherical=True)
    plain.centroids_ = centroids
    unit.centroids_ = centroids / np.linalg.norm(centroids, axis=1, keepdims=True)
    assert (plain.assign(far)[:, 0] == 2).all() and (unit.assign(far)[:, 0] != 2).all()
    voc.save(tmp_path / "v.npz")
    assert Vocabulary.load(tmp_path / "v.npz").spherical
    z = dict(np.load(tmp_path / "v.npz"))
    del z["spherical"]
    np.savez(tmp_path / "old.npz", **z)
    assert not Vocabulary.load(tmp_path / "old.npz").spherical


def test_models_and_indexes_made_before_spherical_words_stay_plain(tmp_path):
    """New MOF models learn spherical words; a model or index manifest saved before the flag
    existed had plain k-means words, and says so when read back."""
    import json

    from layerseek.methods import method_from_params

    rng = np.random.default_rng(2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = MOFModel(MOFParams(layers=("a",), words=8, bits=16)).fit({"a": rng.standard_normal((500, 16)).astype(np.float32)})
    assert model.params.spherical and model.vocabularies["a"].spherical
    model.save(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "mof.json").read_text())
    del saved["spherical"]
    (tmp_path / "m" / "mof.json").write_text(json.dumps(saved))
    assert not MOFModel.load(tmp_path / "m").params.spherical
    old = {"method": "mof", "backbone": "mobilenet_v2", "layers": ["s16", "s32"], "max_side": 1024, "pooling": "sum",
           "words": 20000, "ma": 3, "he": True, "train_on": None}
    assert method_from_params(old).spherical is False
    assert method_from_params({**old, "spherical": True}).spherical is True
    # `index` run again on such an index: --plain-words is its setting, --spherical is refused
    from types import SimpleNamespace

    from layerseek.index import Index

    made_before = SimpleNamespace(catalog=SimpleNamespace(root="old.lsx", manifest={"params": old}))
    Index.check_method(made_before, "mof", spherical=False)
    with pytest.raises(LayerseekError, match="built with spherical False, not True"):
        Index.check_method(made_before, "mof", spherical=True)


def _brute_force_scores(db, q_words, q_codes, he, k, dt=52, sigma=30.0):
    """Eqs. 3-8 by explicit loops over every (query assignment, database descriptor) pair."""
    n = len(db)
    df = np.zeros(k)
    for words, _ in db.values():
        df[np.unique(words)] += 1
    idf = np.where(df > 0, np.log(n / np.maximum(df, 1)), 0)
    q_tf = np.bincount(q_words.reshape(-1), minlength=k)
    out = {}
    for image, (words, codes) in db.items():
        total = 0.0
        for a in range(q_words.shape[0]):
            for b in range(q_words.shape[1]):
                for e in range(words.shape[0]):
                    for f in range(words.shape[1]):
                        if words[e, f] != q_words[a, b]:
                            continue
                        s = idf[q_words[a, b]] ** 2
                        if he:
                            d = int(np.sum(np.unpackbits(codes[e, f]) != np.unpackbits(q_codes[a, b])))
                            if d >= dt:
                                continue
                            s *= np.exp(-d * d / sigma ** 2)
                        total += s
        if total > 0:
            tf = np.bincount(words.reshape(-1), minlength=k)
            out[image] = total / (np.sqrt((tf ** 2).sum()) * np.sqrt((q_tf ** 2).sum()))
    return out


def _random_db(rng, n_images, k, nbytes=16, m=1):
    db = {}
    for i in range(n_images):
        n = int(rng.integers(3, 12))
        db[10 + 3 * i] = (rng.integers(0, k, (n, m)).astype(np.int32), rng.integers(0, 256, (n, m, nbytes), dtype=np.uint8))
    return db


@pytest.mark.parametrize("he", [False, True])
def test_inverted_file_scores_equal_brute_force(he):
    rng = np.random.default_rng(5)
    k = 9
    db = _random_db(rng, 12, k)
    # signatures near each other so that some pairs pass the threshold and some do not
    base = rng.integers(0, 256, 16, dtype=np.uint8)
    for words, codes in db.values():
        flips = rng.random(codes.shape + (8,)) < 0.25
        codes[:] = np.packbits(np.unpackbits(np.broadcast_to(base, codes.shape), axis=-1) ^ flips.reshape(*codes.shape[:-1], -1), axis=-1)
    inv = InvertedFile(k, 16)
    for i, (w, c) in db.items():
        inv.add(i, w, c)
    qw = rng.integers(0, k, (6, 3)).astype(np.int32)
    qc = np.broadcast_to(base, (6, 3, 16)).copy()
    got = inv.scores(qw, qc if he else None)
    ref = _brute_force_scores(db, qw, qc, he, k)
    assert got.keys() == ref.keys() and len(ref) > 3
    for i in ref:
        assert got[i] == pytest.approx(ref[i], rel=1e-9)
    if he:  # the threshold really removed some pairs
        assert sum(_brute_force_scores(db, qw, qc, False, k).values()) > sum(ref.values())


def test_inverted_file_add_remove_compact_and_save(tmp_path):
    rng = np.random.default_rng(7)
    k = 11
    db = _random_db(rng, 30, k)
    inv = InvertedFile(k, 16, merge_min=40)  # small merge threshold: base and recent both in use
    for i, (w, c) in db.items():
        inv.add(i, w, c)
    qw, qc = rng.integers(0, k, (5, 3)), rng.integers(0, 256, (5, 3, 16), dtype=np.uint8)
    inv.scores(qw, qc)
    gone = list(db)[::4]
    for i in gone:
        assert inv.remove(i)
    assert not inv.remove(gone[0]) and inv.n_images == 30 - len(gone)
    gone = list(gone)
    # an id removed and added again with other content (a changed file keeps its catalog id)
    db[gone[1]] = _random_db(rng, 1, k)[10]
    inv.add(gone[1], *db[gone[1]])
    gone.remove(gone[1])
    fresh = InvertedFile(k, 16)
    for i, (w, c) in db.items():
        if i not in gone:
            fresh.add(i, w, c)
    for he in (False, True):
        a, b = inv.scores(qw, qc if he else None), fresh.scores(qw, qc if he else None)
        assert a.keys() == b.keys() and not set(gone) & a.keys()
        assert all(a[i] == pytest.approx(b[i]) for i in a)
    np.testing.assert_array_equal(inv.df, fresh.df)
    inv.save(tmp_path / "inv")
    loaded = InvertedFile.load(tmp_path / "inv")
    assert loaded.scores(qw, qc) == pytest.approx(fresh.scores(qw, qc))
    with pytest.raises(ValueError, match="already"):
        loaded.add(list(fresh.norms)[0], *db[list(fresh.norms)[0]])


def test_streamed_merge_equals_a_stable_sort(monkeypatch):
    """merge_segments, a few entries at a time, against concatenate + filter + stable argsort."""
    from layerseek.local import invfile

    monkeypatch.setattr(invfile, "CHUNK", 7)  # many chunks, runs of a word split across them
    rng = np.random.default_rng(3)
    k, nb = 9, 12
    segs = []
    for n in (60, 25):
        w, ids = rng.integers(0, k, n).astype(np.int32), rng.integers(0, 15, n).astype(np.int64)
        segs.append(invfile._Segment(k, nb, w, ids, rng.integers(0, 256, (n, nb), dtype=np.uint8)))
    gone = np.array([3, 11], np.int64)
    got = invfile.merge_segments(segs, [gone, gone[:1]], k, nb)  # segment 1 keeps its id 11
    w, ids, codes = (np.concatenate(p) for p in zip(*[(s.words, s.ids, s.codes) for s in segs]))
    keep = ~np.isin(ids, gone)
    keep[len(segs[0]):] = ids[len(segs[0]):] != gone[0]
    order = np.argsort(w[keep], kind="stable")
    np.testing.assert_array_equal(got.words, w[keep][order])
    np.testing.assert_array_equal(got.ids, ids[keep][order])
    np.testing.assert_array_equal(got.codes, codes[keep][order])
    np.testing.assert_array_equal(got.offsets, np.searchsorted(got.words, np.arange(k + 1)))


def test_inverted_file_on_disk_answers_and_keeps_changing(tmp_path):
    rng = np.random.default_rng(5)
    k = 13
    db = _random_db(rng, 40, k)
    inv, fresh = InvertedFile(k, 16), InvertedFile(k, 16)
    for i, (w, c) in db.items():
        inv.add(i, w, c)
    inv.save(tmp_path / "a")
    disk = InvertedFile.load(tmp_path / "a")
    assert disk.on_disk and isinstance(disk._base.codes64, np.memmap) and not InvertedFile.load(tmp_path / "a", mmap=False).on_disk
    # change it while its base is memory-mapped: remove two, add one, save elsewhere (streamed)
    assert disk.remove(16) and disk.remove(22)
    extra = _random_db(rng, 1, k)[10]
    disk.add(999, *extra)
    db = {i: v for i, v in db.items() if i not in (16, 22)} | {999: extra}
    # an id that comes back (a changed file keeps its id), goes again and comes back again
    first, second = _random_db(rng, 2, k).values()
    assert disk.remove(13)
    disk.add(13, *first)
    assert disk.remove(13)
    disk.add(13, *second)
    db[13] = second
    for i, (w, c) in db.items():
        fresh.add(i, w, c)
    qw, qc = rng.integers(0, k, (6, 3)), rng.integers(0, 256, (6, 3, 16), dtype=np.uint8)
    assert disk.scores(qw, qc) == pytest.approx(fresh.scores(qw, qc))
    disk.save(tmp_path / "b")  # a few changes: the base files are linked, the changes go to delta.npz
    assert (tmp_path / "b" / "ids.npy").stat().st_ino == (tmp_path / "a" / "ids.npy").stat().st_ino
    again = InvertedFile.load(tmp_path / "b")
    assert again._gone == {13, 16, 22} and len(again._recent) == len(extra[0]) + len(second[0])
    for he in (False, True):
        assert again.scores(qw, qc if he else None) == pytest.approx(fresh.scores(qw, qc if he else None))
    np.testing.assert_array_equal(again.df, fresh.df)
    again.merge_min, again.merge_fraction = 0, 0.0  # now any recent entry calls for a merge (streamed)
    again.save(tmp_path / "c")
    assert (tmp_path / "c" / "ids.npy").stat().st_ino != (tmp_path / "a" / "ids.npy").stat().st_ino
    merged = InvertedFile.load(tmp_path / "c")
    assert not merged._gone and len(merged._recent) == 0 and len(merged._base) == sum(len(w) for w, _ in db.values())
    assert merged.scores(qw, qc) == pytest.approx(fresh.scores(qw, qc))
    empty = InvertedFile(k, 16)
    empty.save(tmp_path / "empty")
    assert InvertedFile.load(tmp_path / "empty").scores(qw, qc) == {}


def test_mof_model_engine_late_fusion_and_save(tmp_path):
    rng = np.random.default_rng(9)
    train = {"a": rng.standard_normal((3000, 32)).astype(np.float32), "b": rng.standard_normal((3000, 64)).astype(np.float32)}
    # dt scaled to 32 bits as the paper's 52 is to 128: at 52 every pair of 32-bit signatures matches
    params = MOFParams(layers=("a", "b"), words=16, bits=32, dt=13)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = MOFModel(params).fit(train)
    images = {i: {"a": rng.standard_normal((20, 32)).astype(np.float32), "b": rng.standard_normal((20, 64)).astype(np.float32)}
              for i in range(8)}
    engine = MOFEngine(model)
    for i, d in images.items():
        enc = model.encode(d, db=True)
        assert enc["a"][0].shape == (20, 1) and enc["a"][1].shape == (20, 1, 4)
        engine.add(i, enc)
    noisy = {k: v + 0.05 * rng.standard_normal(v.shape).astype(np.float32) for k, v in images[3].items()}
    q = model.encode(noisy)
    assert q["b"][0].shape == (20, 3)
    ranked = engine.search(q)
    assert ranked[0][0] == 3
    per_layer = engine.layer_scores(q)
    for i, s in ranked:  # late fusion: the sum of the layers' scores
        assert s == pytest.approx(per_layer["a"].get(i, 0) + per_layer["b"].get(i, 0))
    model.save(tmp_path / "m")
    engine.save(tmp_path / "m")
    again = MOFEngine(MOFModel.load(tmp_path / "m")).load_files(tmp_path / "m")
    reloaded = again.search(again.model.encode(noisy))
    assert [i for i, _ in reloaded] == [i for i, _ in ranked]
    assert [s for _, s in reloaded] == pytest.approx([s for _, s in ranked])
    assert engine.remove(3) and engine.search(q)[0][0] != 3
    with pytest.raises(LayerseekError, match="no usable MOF model"):
        MOFModel.load(tmp_path / "nothing")


def test_mof_whitened_windows_learned_once_and_kept(tmp_path):
    """With `whiten`, the words and signatures are learned on, and computed from, the PCA-whitened
    windows (whitening learned on the training windows); the whitening is saved with the model."""
    rng = np.random.default_rng(5)
    offset = 20 * np.ones(16, np.float32)
    train = {"a": (offset + rng.standard_normal((4000, 16)) * np.linspace(0.2, 3, 16)).astype(np.float32)}
    params = MOFParams(layers=("a",), words=32, bits=16, whiten=0.5, whiten_dim=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = MOFModel(params).fit(train)
    w = model.whitenings["a"]
    assert w.components_.shape == (8, 16) and np.allclose(w.mean_, train["a"].mean(0), atol=1e-4)
    assert model.vocabularies["a"].centroids_.shape == (32, 8)
    x = train["a"][:50]
    words, sigs = model.encode({"a": x})["a"]
    assert (words == model.vocabularies["a"].assign(w.transform(x).astype(np.float32), 3)).all()
    model.save(tmp_path / "m")
    assert (tmp_path / "m" / "whitening-a.npz").is_file()
    again = MOFModel.load(tmp_path / "m").encode({"a": x})["a"]
    assert (again[0] == words).all() and (again[1] == sigs).all()
    with pytest.raises(LayerseekError, match="whiten"):
        MOFParams(whiten=2)
    with pytest.raises(LayerseekError, match="whiten_dim"):
        MOFParams(whiten=0.5, whiten_dim=0)


def test_match_counts_count_every_shared_word_within_the_hamming_threshold():
    """`InvertedFile.match_counts` (the cheap filter's count of HE matches, issue 26) against a
    brute-force count, and the compiled loop against the numpy reference; removed images count 0."""
    rng = np.random.default_rng(3)
    k, dt = 12, 60
    db = _random_db(rng, 40, k, nbytes=8)
    inv = InvertedFile(k, 8)
    for i, (w, c) in db.items():
        inv.add(i, w, c)
    # a word every image holds has idf 0 and is left out of every score: keep one such word out
    qw, qc = rng.integers(0, k, (25, 2)).astype(np.int32), rng.integers(0, 256, (25, 2, 8), dtype=np.uint8)
    bits = lambda a, b: int(np.unpackbits(np.bitwise_xor(a, b)).sum())  # noqa: E731
    held = {w for i, (w, _) in db.items() for w in np.unique(w)}
    everywhere = {w for w in held if all(w in ws for ws, _ in db.values())}
    brute = {i: sum(1 for x in range(25) for a in range(2) for f in range(len(w))
                    if qw[x, a] == w[f, 0] and qw[x, a] not in everywhere and bits(qc[x, a], c[f, 0]) < dt)
             for i, (w, c) in db.items()}
    got = inv.match_counts(qw, qc, dt)
    assert {i: int(got[i]) for i in db} == brute and max(brute.values()) >= 5
    ref = inv.votes_reference(qw, qc, dt, count=True)
    assert {i: int(v) for i, v in ref.items()} == {i: n for i, n in brute.items() if n}
    gone = max(brute, key=brute.get)
    inv.remove(gone)
    assert inv.match_counts(qw, qc, dt)[gone] == 0


def test_threads_scoring_a_fresh_inverted_file_at_once_see_every_posting():
    """The first scores fold the pending adds in; a second thread scoring meanwhile found the
    pending list already emptied and scored the old segment: images scored 0, and eval's word
    filter then skipped right covers (issue 26, Canon at 10,000 distractors)."""
    import threading

    rng = np.random.default_rng(4)
    k = 50
    db = _random_db(rng, 4000, k, nbytes=8)
    qw, qc = rng.integers(0, k, (40, 1)).astype(np.int32), rng.integers(0, 256, (40, 1, 8), dtype=np.uint8)

    def fresh():
        inv = InvertedFile(k, 8, merge_min=10 ** 9)
        for i, (w, c) in db.items():
            inv.add(i, w, c)
        return inv

    want = fresh().vote_array(qw, qc, 64)
    for _ in range(3):
        inv, start, got = fresh(), threading.Barrier(8), []

        def score():
            start.wait()
            got.append(inv.vote_array(qw, qc, 64))

        threads = [threading.Thread(target=score) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(got) == 8 and all(np.array_equal(g, want) for g in got)


def test_compiled_scorer_equals_the_numpy_reference(tmp_path, monkeypatch):
    """The compiled loop (one pass per posting, the query's assignments grouped by word) against
    the gather-then-passes numpy scorer, on lists with a base and a recent segment, removed images,
    an id that came back, memory maps. Equal up to the order of float additions (an entry's
    matches are summed before they are added)."""
    rng = np.random.default_rng(11)
    k = 40
    db = _random_db(rng, 300, k, m=1)
    inv = InvertedFile(k, 16, merge_min=500)
    for i, (w, c) in db.items():
        inv.add(i, w, c)
    inv.votes(np.zeros((1, 1), np.int32), None)  # settles: most entries go into the base
    for i in list(db)[5:60:3]:
        inv.remove(i)
    back = list(db)[8]
    inv.add(back, *_random_db(rng, 1, k)[10])
    for i, (w, c) in _random_db(rng, 20, k).items():
        inv.add(2000 + i, w, c)
    assert len(inv._base) and len(inv._recent) + sum(len(p[0]) for p in inv._pending) and inv._gone
    qw, qc = rng.integers(0, k, (30, 3)).astype(np.int32), rng.integers(0, 256, (30, 3, 16), dtype=np.uint8)
    assert np.bincount(qw.ravel()).max() >= 5  # words chosen by several assignments: grouped
    monkeypatch.setattr(invfile, "PART_WORK", 1)  # small lists still cut in parts when asked
    for source in (inv, None):
        if source is None:  # the same lists read back memory-mapped
            inv.save(tmp_path / "inv")
            source = InvertedFile.load(tmp_path / "inv")
        for codes, dt in ((qc, 64), (qc, 52), (None, 52)):
            ref = source.votes_reference(qw, codes, dt)
            got = source.votes(qw, codes, dt)
            assert got.keys() == ref.keys() and got == pytest.approx(ref, rel=1e-12) and len(ref) > 30
            for burst, share in ((True, 1.0), (False, 0.2), (True, 0.2)):
                ref2 = source.votes_reference(qw, codes, dt, burst=burst, max_share=share)
                got2 = source.votes(qw, codes, dt, burst=burst, max_share=share)
                assert got2.keys() == ref2.keys() and got2 == pytest.approx(ref2, rel=1e-12) and len(ref2) > 10
                assert got2 != got  # each setting changes the votes
            assert not {i for i in list(db)[5:60:3] if i != back} & ref.keys()
            assert codes is not None or back in ref  # BoW: its new words reach it
            for burst in (False, True):  # cut in parts for threads: the same votes, summed in order
                tasks = source.vote_tasks(qw, codes, dt, burst=burst, parts=3)
                assert len(tasks) == 3
                whole = source.vote_array(qw, codes, dt, burst=burst)
                np.testing.assert_allclose(sum_parts(t() for t in tasks), whole, rtol=1e-12)
                assert all(0 < np.count_nonzero(t()) < np.count_nonzero(whole) for t in tasks)
                # the numpy path of a process of few queries: the same votes
                np.testing.assert_allclose(source.vote_array_numpy(qw, codes, dt, burst=burst), whole, rtol=1e-12)
                for share in (1.0, 0.2):
                    np.testing.assert_allclose(source.vote_array_numpy(qw, codes, dt, burst=burst, max_share=share),
                                               source.vote_array(qw, codes, dt, burst=burst, max_share=share),
                                               rtol=1e-12)
            if codes is not None:
                np.testing.assert_array_equal(source.vote_array_numpy(qw, codes, dt, count=True),
                                              source.match_counts(qw, codes, dt))


def test_few_queries_score_with_numpy_until_the_compiled_loops_are_loaded(monkeypatch):
    monkeypatch.setattr(invfile, "_COMPILED", [True])
    assert invfile.use_compiled()
    invfile.few_queries()
    monkeypatch.delitem(sys.modules, "layerseek.local.kernels", raising=False)
    assert not invfile.use_compiled()
    monkeypatch.setitem(sys.modules, "layerseek.local.kernels", invfile)  # loaded: used whatever was asked
    assert invfile.use_compiled()


def test_image_ids_are_stored_as_int32_and_int64_lists_still_score(tmp_path):
    rng = np.random.default_rng(14)
    db = _random_db(rng, 40, 12)
    inv = InvertedFile(12, 16, merge_min=50)
    for i, (w, c) in db.items():
        inv.add(i, w, c)
    qw, qc = rng.integers(0, 12, (9, 2)).astype(np.int32), rng.integers(0, 256, (9, 2, 16), dtype=np.uint8)
    want = inv.votes(qw, qc)
    inv.save(tmp_path / "inv")
    assert np.load(tmp_path / "inv" / "ids.npy").dtype == np.int32
    np.save(tmp_path / "inv" / "ids.npy", np.load(tmp_path / "inv" / "ids.npy").astype(np.int64))  # as written before
    old = InvertedFile.load(tmp_path / "inv")
    assert old._base.ids.dtype == np.int64 and old.votes(qw, qc) == pytest.approx(want, rel=1e-12)
    old.add(5000, *_random_db(rng, 1, 12)[10])  # merged with int32 entries: one dtype again
    old.compact()
    assert old._base.ids.dtype == np.int32 and set(want) <= set(old.votes(qw, qc))
    with pytest.raises(ValueError, match="holds ids 0..2147483647"):
        inv.add(2**31, *_random_db(rng, 1, 12)[10])


def test_query_words_are_dealt_into_parts_of_about_equal_work():
    work = np.array([1, 50, 3, 40, 2, 30, 5, 7, 9, 11], float)
    parts = deal(work, 3)
    assert sorted(np.concatenate(parts).tolist()) == list(range(10))  # each word once
    loads = sorted(work[p].sum() for p in parts)
    assert loads == [30 + 11 + 2 + 1, 40 + 9 + 3, 50 + 7 + 5]  # dealt back and forth, heaviest first
    assert [len(p) for p in deal(work, 1)] == [10] and all(np.all(np.diff(p) > 0) for p in parts)


def test_engine_search_equals_a_slow_fusion_of_the_layer_scores():
    rng = np.random.default_rng(12)
    k = 30
    model = MOFModel(MOFParams(layers=("a", "b", "c"), words=k, bits=128))
    engine = MOFEngine.__new__(MOFEngine)
    engine.model, engine.files = model, {n: InvertedFile(k, 16) for n in "abc"}
    for i in range(200):
        for inv in engine.files.values():
            inv.add(i, *_random_db(rng, 1, k)[10])
    q = {n: (rng.integers(0, k, (25, 3)).astype(np.int32), rng.integers(0, 256, (25, 3, 16), dtype=np.uint8))
         for n in "abc"}
    fused: dict[int, float] = {}
    for n in "abc":  # layer by layer, in order, from the reference votes
        inv = engine.files[n]
        qnorm = InvertedFile.query_norm(q[n][0], k)
        for i, v in inv.votes_reference(*q[n]).items():
            fused[i] = fused.get(i, 0.0) + v / (inv.norms[i] * qnorm)
    expect = sorted(fused.items(), key=lambda t: (-t[1], t[0]))
    got = engine.search(q)
    assert [i for i, _ in got] == [i for i, _ in expect] and len(expect) > 60
    assert [s for _, s in got] == pytest.approx([s for _, s in expect], rel=1e-12)
    assert [i for i, _ in engine.search(q, top=17)] == [i for i, _ in expect[:17]]
    ab = engine.search(q, layers=("a", "b"))
    assert ab != expect and [i for i, _ in ab][:3] == [i for i, _ in sorted(
        ((i, sum(engine.layer_scores(q)[n].get(i, 0.0) for n in "ab")) for i in range(200)),
        key=lambda t: (-t[1], t[0]))][:3]


def test_each_image_words_are_kept_for_removal_and_recovered_from_older_files(tmp_path):
    rng = np.random.default_rng(13)
    k = 25
    db = _random_db(rng, 60, k, m=2)
    inv = InvertedFile(k, 16, merge_min=100)
    for i, (w, c) in db.items():
        inv.add(i, w, c)
    inv.votes(np.zeros((1, 1), np.int32), None)
    for i in list(db)[::5]:
        inv.remove(i)
    inv.add(list(db)[0], *db[list(db)[0]])  # came back
    for i, (w, _) in db.items():
        if i in inv.norms:
            assert inv.words_of[i].tolist() == np.unique(w).tolist()
    inv.save(tmp_path / "inv")
    # an inverted file saved before the words were kept: they are read back from its lists
    with np.load(tmp_path / "inv" / "meta.npz") as z:
        old = {n: z[n] for n in z.files if n not in ("words_of", "word_counts")}
    np.savez(tmp_path / "inv" / "meta.npz", **old)
    loaded = InvertedFile.load(tmp_path / "inv")
    assert loaded.words_of.keys() == inv.words_of.keys()
    assert all(loaded.words_of[i].tolist() == inv.words_of[i].tolist() for i in inv.words_of)
    for i in list(db)[1:20:3]:  # removals keep the document frequencies those of a fresh file
        loaded.remove(i)
    fresh = InvertedFile(k, 16)
    for i, (w, c) in db.items():
        if i in loaded.norms:
            fresh.add(i, w, c)
    np.testing.assert_array_equal(loaded.df, fresh.df)


def test_burstiness_counts_the_square_root_of_an_image_repeated_matches():
    sig = np.full((1, 1, 16), 7, np.uint8)
    inv = InvertedFile(4, 16)
    inv.add(0, np.array([[1], [1], [1]]), np.repeat(sig, 3, axis=0))  # one word, three times
    inv.add(1, np.array([[1], [2]]), np.repeat(sig, 2, axis=0))
    inv.add(2, np.array([[3]]), sig)
    idf2 = np.log(3 / 2) ** 2
    q = (np.array([[1]]), sig)
    assert inv.votes(*q) == pytest.approx({0: 3 * idf2, 1: idf2})
    assert inv.votes(*q, burst=True) == pytest.approx({0: np.sqrt(3) * idf2, 1: idf2})
    assert inv.votes(*q, max_share=0.5) == {}  # word 1 is held by 2 of 3 images: stopped
    with pytest.raises(LayerseekError, match="max_share"):
        MOFParams(max_share=0)
