"""The word engine (`verify.words`): a second source of candidates over the stored SIFT features,
independent of the CNN: the vocabulary as an estimator, the engine's ranking, and an index whose
engine stays in step with its catalog and finds what the CNN's shortlist misses."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from typer.testing import CliRunner

from layerseek.cli import app
from layerseek.errors import LayerseekError
from layerseek.images import load_image
from layerseek.index import Index
from layerseek.stages import Diffusion, Expansion, Hubness, Stages, WordCandidates, word_candidates, word_filter_of
from layerseek.verify.features import LocalFeatures, rootsift, sift_features
from layerseek.verify.words import SHIPPED, SiftWords, WordsEngine, shipped

OPTS = {"backbone": "mobilenet_v2", "layers": ("s32", "last"), "max_side": 512}


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_a_vocabulary_round_trips_and_assigns_each_descriptor_its_nearest_word(tmp_path):
    rng = np.random.default_rng(0)
    centres = _unit(rng.standard_normal((32, 128)))
    x = _unit(np.repeat(centres, 60, axis=0) + 0.02 * rng.standard_normal((32 * 60, 128)))
    w = SiftWords(k=32, niter=10).fit(x)
    words, sigs = w.vocabulary_.assign(x, 1)[:, 0], None
    exact = np.argmax(x @ w.vocabulary_.centroids_.T, axis=1)
    assert np.mean(words == exact) > 0.99  # the HNSW assignment is the nearest word
    # the planted clusters are words (k-means may split one and merge two: most, not all)
    pure = sum(len(np.unique(words[c * 60:(c + 1) * 60])) == 1 for c in range(32))
    assert pure >= 28 and len(np.unique(words)) == 32
    # a signature bit is the projection against that word's median (Jégou et al. 2008)
    proj = x @ w.he_.projection_.T
    sigs = w.he_.signatures(x, words[:, None])[:, 0]
    assert np.array_equal(np.unpackbits(sigs, axis=1).astype(bool), proj > w.he_.medians_[words])
    w.save(tmp_path / "w.npz", {"learned_on": "test"})
    back = SiftWords.load(tmp_path / "w.npz")
    assert back.about == {"learned_on": "test"} and back.fingerprint() == w.fingerprint()
    assert np.mean(back.vocabulary_.assign(x, 1)[:, 0] == words) > 0.99  # float16 words: same assignment
    (tmp_path / "bad.npz").write_bytes(b"not a vocabulary")
    with pytest.raises(LayerseekError, match="bad.npz: not a usable word vocabulary"):
        SiftWords.load(tmp_path / "bad.npz")


def test_the_shipped_vocabulary_says_what_it_was_learned_on():
    w = shipped()
    assert w.k == 20000 and w.nbytes == 8 and SHIPPED.is_file()
    assert "corel1k" in w.about["learned_on"] and w.about["command"].startswith("python -m layerseek.verify.words")


def test_the_engine_ranks_the_cover_of_a_phone_photo_first(data_dir):
    w = shipped()
    covers = data_dir / "smvs-dvd-covers"
    engine = WordsEngine(w)
    for i in range(1, 11):
        engine.add(i, w.encode(sift_features(load_image(covers / "Reference" / f"{i:03d}.jpg", max_side=640))))
    for i in (3, 7):
        q = sift_features(load_image(covers / "Palm" / f"{i:03d}.jpg", max_side=640))
        found = engine.search(w.encode(q), 5)
        assert found[0][0] == i and found[0][1] > 2 * found[1][1], found
    assert engine.remove(7) and not engine.remove(7)
    q = sift_features(load_image(covers / "Palm" / "007.jpg", max_side=640))
    assert 7 not in [i for i, _ in engine.search(w.encode(q), 10)]
    with pytest.raises(LayerseekError, match="reads SIFT"):
        w.encode(LocalFeatures(np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8), (1, 1), "orb"))


def _covers(data_dir, folder, n=8):
    folder.mkdir(parents=True)
    for i in range(1, n + 1):
        shutil.copy(data_dir / "smvs-dvd-covers" / "Reference" / f"{i:03d}.jpg", folder / f"{i:03d}.jpg")
    return folder


def test_a_cover_the_cnn_shortlist_misses_is_found_by_the_words_and_kept_in_step(data_dir, tmp_path):
    covers = _covers(data_dir, tmp_path / "covers")
    photo = data_dir / "smvs-dvd-covers" / "Palm" / "007.jpg"
    with Index.create(tmp_path / "idx", "rmac", verify=True, **OPTS) as idx:
        idx.add_folder(covers)
        idx.update_graph()
        assert idx.verify_settings["words"] == {"vocabulary": shipped().fingerprint(), "top": 100, "filter": 0.01}
        # the CNN ranks the right cover 5th: a shortlist of 2 never sees it
        cnn = idx.search(photo, top=8, verify=0)
        assert [h.path[-7:] for h in cnn].index("007.jpg") >= 2
        alone = idx.search(photo, top=3, verify=2, words=0, diffusion=False)
        assert not alone[0].path.endswith("007.jpg") and not any(h.verified for h in alone)
        both = idx.search(photo, top=3, verify=2, diffusion=False, expand=0)
        assert both[0].path.endswith("007.jpg") and both[0].verified
        # its score stays the first stage's similarity, as a shortlisted hit's would
        assert both[0].score == pytest.approx([h.score for h in cnn if h.path.endswith("007.jpg")][0], abs=1e-5)
        # in step with the catalog: a removed file leaves it, a changed one is held as it is now
        held = lambda: idx._words[2]  # noqa: E731
        assert held() == idx.catalog.shas()
        gone = both[0].id
        (covers / "007.jpg").unlink()
        shutil.copy(data_dir / "smvs-dvd-covers" / "Reference" / "009.jpg", covers / "002.jpg")
        idx.add_folder(covers)
        # the removed cover is no candidate any more, with the expansion and diffusion on too (the
        # photo also shows the corner of cover 8: that one verifies)
        after = idx.search(photo, top=7, verify=2)
        assert gone not in [h.id for h in after] and after[0].verified
        assert gone not in [h.id for h in word_candidates(idx, 10).find(idx, idx.local_features(idx.query_image(photo)))[0]]
        assert held() == idx.catalog.shas() and len(idx.words_engine()) == 7
        nine = data_dir / "smvs-dvd-covers" / "Palm" / "009.jpg"
        assert idx.search(nine, top=1, verify=1, diffusion=False)[0].path.endswith("002.jpg")
        first = [(h.id, h.inliers) for h in idx.search(nine, top=5)]
        gen = idx.catalog.generation()
    assert sorted(p.name for p in (tmp_path / "idx" / "cache").glob("words-*")) == [f"words-{gen}"]
    # another process reads the saved engine: nothing encoded again, the same results
    with Index.open(tmp_path / "idx") as again:
        again.words_engine()
        assert again._words[2] == again.catalog.shas()
        assert [(h.id, h.inliers) for h in again.search(nine, top=5)] == first


def test_a_search_takes_sift_and_word_candidates_beside_its_network_on_one_blas_thread(data_dir, tmp_path,
                                                                                     monkeypatch):
    """Issue 28: the query's SIFT and the word engine's candidates (no network needed) run in
    another thread while the network runs, with the same results as one after the other; the
    search runs BLAS on one thread (OpenBLAS's spinning workers slowed the network beside it),
    and a k-NN graph built inside a search gets every core back."""
    import os
    import threading
    from concurrent.futures import Future

    from threadpoolctl import threadpool_info, threadpool_limits

    from layerseek import query
    from layerseek.verify.diffusion import KnnGraph

    def blas_threads():  # numpy's and OpenCV's OpenBLAS (FAISS's is an OpenMP build: a count per thread)
        return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas" and i.get("threading_layer")
                == "pthreads"}

    seen = {}

    def spy(cls, name, key):
        real = getattr(cls, name)

        def wrapped(*args, **kwargs):
            seen[key] = (threading.current_thread().name, blas_threads())
            return real(*args, **kwargs)
        monkeypatch.setattr(cls, name, wrapped)

    spy(Index, "local_side", "side")
    spy(Index, "encode_query", "network")
    spy(KnnGraph, "update", "graph")
    covers = _covers(data_dir, tmp_path / "covers")
    photo = data_dir / "smvs-dvd-covers" / "Palm" / "007.jpg"
    # two BLAS threads before it, whatever an earlier test in this process left (the shell's
    # search sets one for its whole process)
    with Index.create(tmp_path / "idx", "rmac", verify=True, **OPTS) as idx, \
            threadpool_limits(limits=2, user_api="blas"):
        idx.add_folder(covers)
        seen.clear()
        beside = [(h.id, h.score, h.inliers, h.verified) for h in idx.search(photo, top=8)]
        assert seen["side"][0].startswith("layerseek-beside") and seen["network"][0] == "MainThread"
        assert seen["network"][1] == {1} and seen["side"][1] == {1}
        assert seen["graph"][1] == {os.cpu_count()}  # the first search builds the diffusion's graph

        class Inline:  # the same search, its local side taken first in this thread
            def submit(self, fn, *args):
                done = Future()
                done.set_result(fn(*args))
                return done

        monkeypatch.setattr(query, "_beside", Inline)
        seen.clear()
        one_after_the_other = [(h.id, h.score, h.inliers, h.verified) for h in idx.search(photo, top=8)]
        assert seen["side"][0] == "MainThread"
        assert blas_threads() == {2}  # given back after the search
    assert beside == one_after_the_other and beside[0][3] and beside[0][2] >= 10


def test_the_word_filter_verifies_only_candidates_that_share_enough_words(data_dir, tmp_path, monkeypatch):
    """Issue 26 item 3: a candidate whose word score is at most the filter costs no RANSAC."""
    import layerseek.stages
    from layerseek.verify.geometry import Verifier

    monkeypatch.setattr(layerseek.stages, "WORD_FILTER_MIN_IMAGES", 8)  # 8 covers: judged as a library is
    covers = _covers(data_dir, tmp_path / "covers")
    photo = data_dir / "smvs-dvd-covers" / "Canon" / "004.jpg"
    seen: list[int] = []
    real = Verifier.scores
    monkeypatch.setattr(Verifier, "scores", lambda self, qf, feats, found=None: seen.append(len(feats)) or
                        real(self, qf, feats, found))
    with Index.create(tmp_path / "idx", "rmac", verify=True, **OPTS) as idx:
        idx.add_folder(covers)
        qf = idx.local_features(idx.query_image(photo), query=True)
        _, scores = word_candidates(idx).find(idx, qf)
        at = word_filter_of(idx)
        low = sum(scores[h.id] <= at for h in idx.search(photo, top=8, verify=0))
        assert 0 < low < 8  # some covers share (almost) no words with the photo, the right one many
        runs = {}
        for t in (-1, None, 0.99):
            seen.clear()
            hits = idx.search(photo, top=8, verify=8, word_filter=t, expand=0, diffusion=False)
            runs[t] = (sum(seen), hits[0].path[-7:], hits[0].verified)
        assert runs[-1] == (8, "004.jpg", True)
        assert runs[None] == (8 - low, "004.jpg", True)  # the index's filter: the same answer, fewer verified
        assert runs[0.99][0] == 0 and not runs[0.99][2]
        assert at == 0.01 and word_filter_of(idx, -0.5) is None and word_filter_of(idx, 0.3) == 0.3
        # the stages a search runs, from the manifest and the search's overrides
        st = Stages.of(idx)
        assert (st.verification.shortlist, st.words, st.expansion, st.diffusion) == (
            100, WordCandidates(100, 0.01), Expansion(1), Diffusion(15, 3.0, 0.99))
        assert Stages.of(idx, verify=0) == Stages(hubness=Hubness(10, 0.5))  # the first stage still corrected
        st = Stages.of(idx, verify=7, expand=0, diffusion=False, words=3, word_filter=-1)
        assert (st.verification.shortlist, st.words, st.expansion, st.diffusion) == (
            7, WordCandidates(3, None), Expansion(0), None)
        assert Stages.of(idx, words=0).words is None
        with pytest.raises(LayerseekError, match="word filter 1.5"):  # said before the photo is read
            idx.search(tmp_path / "no such photo.jpg", word_filter=1.5)
        with pytest.raises(LayerseekError, match="word filter 1.5"):
            idx.search(photo, word_filter=1.5)
    with pytest.raises(LayerseekError, match="word filter 2.0: out of range"):
        Index.create(tmp_path / "bad", "rmac", verify={"words": {"filter": 2}}, **OPTS)
    r = CliRunner().invoke(app, ["info", str(tmp_path / "idx"), "-v"])
    assert "word score is at most 0.01 are not verified" in " ".join(r.output.split()), r.output


def test_a_small_index_verifies_every_candidate(data_dir, tmp_path, monkeypatch):
    """An index of one photo verified nothing, not even a phone photo of it or the photo itself:
    its every word is in every image (idf log(N / n_w) = 0), so every word score was 0 and the
    filter skipped them all; so for two identical files. Under WORD_FILTER_MIN_IMAGES images
    every candidate is verified."""
    import layerseek.stages

    covers = _covers(data_dir, tmp_path / "covers", 1)
    shutil.copy(covers / "001.jpg", tmp_path / "001 again.jpg")
    phone = data_dir / "smvs-dvd-covers" / "Palm" / "001.jpg"
    with Index.create(tmp_path / "idx", "rmac", verify=True, **OPTS) as idx:
        idx.add_folder(covers)
        for query in (phone, covers / "001.jpg"):
            hits = idx.search(query, top=1)
            assert hits[0].verified and hits[0].inliers >= 20, hits
        idx.add_files([tmp_path / "001 again.jpg"])
        assert [h.verified for h in idx.search(phone, top=2)] == [True, True]
        monkeypatch.setattr(layerseek.stages, "WORD_FILTER_MIN_IMAGES", 1)  # judged as a library is
        assert [h.verified for h in idx.search(phone, top=2)] == [False, False]


def test_an_index_made_before_word_candidates_opens_and_searches_with_the_cnn_alone(data_dir, tmp_path):
    covers = _covers(data_dir, tmp_path / "covers", 4)
    # SIFT descriptors stored, as every index made before word features
    with Index.create(tmp_path / "idx", "rmac", verify={"geometry": "descriptors"}, **OPTS) as idx:
        idx.add_folder(covers)
        assert idx.verify_settings["kind"] == "sift" and "hamming" not in idx.verify_settings
    manifest = tmp_path / "idx" / "manifest.json"
    m = json.loads(manifest.read_text())
    del m["verify"]["words"]  # as written before the word engine existed
    manifest.write_text(json.dumps(m))
    with Index.open(tmp_path / "idx") as old:
        hit = old.search(data_dir / "smvs-dvd-covers" / "Canon" / "003.jpg", top=1)[0]
        assert hit.path.endswith("003.jpg") and hit.verified and old.words_engine() is None
        with pytest.raises(LayerseekError, match="no word candidates"):
            old.search(data_dir / "smvs-dvd-covers" / "Canon" / "003.jpg", words=10)
    assert not list((tmp_path / "idx" / "cache").glob("words-*"))
    # `layerseek upgrade` gives it the word candidates a new index gets, nothing extracted again
    shas = None
    with Index.open(tmp_path / "idx") as old:
        shas = old.catalog.shas()
    r = CliRunner().invoke(app, ["upgrade", str(tmp_path / "idx")])
    assert r.exit_code == 0 and "added word candidates" in r.output and "upgraded" in r.output, r.output
    # and builds the word engine then, not in the next search's time (a minute at 10,000 photos)
    assert len(list((tmp_path / "idx" / "cache").glob("words-*"))) == 1
    with Index.open(tmp_path / "idx") as up:
        assert up.verify_settings["words"] == {"vocabulary": shipped().fingerprint(), "top": 100, "filter": 0.01}
        assert up.catalog.shas() == shas and up.words_engine() is not None and len(up.words_engine()) == 4
        assert up.search(data_dir / "smvs-dvd-covers" / "Canon" / "003.jpg", top=1, words=10)[0].verified
    assert json.loads(manifest.read_text())["verify"]["words"]["filter"] == 0.01
    r = CliRunner().invoke(app, ["check", str(tmp_path / "idx")])
    assert r.exit_code == 0, r.output  # the catalog's copy agrees
    r = CliRunner().invoke(app, ["upgrade", str(tmp_path / "idx")])
    assert r.exit_code == 0 and "nothing to add" in r.output, r.output
    m = json.loads(manifest.read_text())  # made with word candidates before their filter: gets the filter
    del m["verify"]["words"]["filter"]
    manifest.write_text(json.dumps(m))
    with Index.open(tmp_path / "idx") as up:
        assert word_filter_of(up) is None and up.upgrade() == [
            "word filter: candidates with a word score of at most 0.01 are not verified"]
        assert word_filter_of(up) == 0.01
    m["verify"]["words"] = {"vocabulary": "0123456789abcdef", "top": 100}
    manifest.write_text(json.dumps(m))
    with Index.open(tmp_path / "idx") as other:
        with pytest.raises(LayerseekError, match="word vocabulary 0123456789abcdef"):
            other.search(data_dir / "smvs-dvd-covers" / "Canon" / "003.jpg")
        assert other.search(data_dir / "smvs-dvd-covers" / "Canon" / "003.jpg", words=0, top=1)[0].verified
    # an index that stores word features cannot verify with another vocabulary at all
    with Index.create(tmp_path / "new", "rmac", verify={"geometry": "words"}, **OPTS) as new:
        new.add_folder(covers)
    manifest = tmp_path / "new" / "manifest.json"
    m = json.loads(manifest.read_text())
    assert m["verify"]["kind"] == "sift-words"
    m["verify"]["words"]["vocabulary"] = "0123456789abcdef"
    manifest.write_text(json.dumps(m))
    with Index.open(tmp_path / "new") as other:
        with pytest.raises(LayerseekError, match="stored word features need it"):
            other.search(data_dir / "smvs-dvd-covers" / "Canon" / "003.jpg", words=0)


def test_rootsift_of_the_stored_bytes_is_what_the_words_see(data_dir):
    f = sift_features(load_image(data_dir / "smvs-dvd-covers" / "Reference" / "001.jpg", max_side=640))
    back = LocalFeatures.unpack(f.pack())
    w = shipped()
    assert np.array_equal(w.encode(back)[0], w.vocabulary_.assign(rootsift(f.desc), 1).astype(np.int32))


def test_extra_candidates_are_verified_wherever_the_ranking_puts_them():
    from layerseek.verify.pipeline import verify_and_expand

    inliers = {0: 12, 7: 30, 8: 3}
    seen = []

    def inliers_of(ids):
        seen.extend(ids)
        return {i: inliers.get(i, 0) for i in ids}

    order, counts = verify_and_expand(None, lambda _: list(range(10)), inliers_of, None, None, 2, 10, rounds=0,
                                      extra=[7, 8, 1])
    # verified first by inliers (the extra 7 before the shortlisted 0); the extra 8 that fails
    # stays where the ranking put it; the shortlist's own 1 is verified once
    assert order == [7, 0, 1, 2, 3, 4, 5, 6, 8, 9] and sorted(seen) == [0, 1, 7, 8]
    assert counts == {0: 12, 1: 0, 7: 30, 8: 3}
    # an extra the ranking does not hold and that fails is left out; one that verifies comes first
    order, _ = verify_and_expand(None, lambda _: [0, 1, 2], inliers_of, None, None, 2, 10, rounds=0, extra=[8, 7])
    assert order == [7, 0, 1, 2]


def test_an_image_without_features_is_no_candidate(data_dir):
    w = shipped()
    engine = WordsEngine(w)
    blank = LocalFeatures(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8), (64, 64))
    engine.add(0, w.encode(blank))  # a flat grey photo: no keypoint, a norm of 0
    cover = sift_features(load_image(data_dir / "smvs-dvd-covers" / "Reference" / "004.jpg", max_side=640))
    engine.add(1, w.encode(cover))
    s = engine.score_array(w.encode(cover))
    assert np.isfinite(s).all() and s[0] == 0 and s[1] > 0
    assert [i for i, _ in engine.search(w.encode(cover), 10)] == [1]


def test_an_index_of_word_features_verifies_with_them_and_its_engine_reads_them_as_stored(data_dir, tmp_path,
                                                                                           monkeypatch):
    from layerseek.verify.features import WordFeatures, unpack_features

    covers = _covers(data_dir, tmp_path / "covers", 6)
    with Index.create(tmp_path / "idx", "rmac", verify={"geometry": "words"}, **OPTS) as idx:
        idx.add_folder(covers)
        v = idx.verify_settings
        assert (v["kind"], v["hamming"], v["query_words"]) == ("sift-words", 20, 5)
        stored = idx.catalog.features([e.id for e in idx.catalog.entries()])
        feats = {i: unpack_features(d) for i, d in stored.items()}
        assert all(isinstance(f, WordFeatures) and f.words.shape[1] == 1 for f in feats.values())
        # 14 bytes a feature and a 20-byte header: a ninth of the SIFT descriptors' 132
        assert all(len(d) == 20 + 14 * len(feats[i]) for i, d in stored.items())
        encoded = []
        real = SiftWords.encode_many
        monkeypatch.setattr(SiftWords, "encode_many", lambda self, fs, ma=1: encoded.append(len(fs)) or real(self, fs, ma))
        for phone in ("Canon", "Palm"):
            for i in ("002", "005"):
                hits = idx.search(data_dir / "smvs-dvd-covers" / phone / f"{i}.jpg", top=3)
                assert hits[0].path.endswith(f"{i}.jpg") and hits[0].verified, (phone, i, hits)
                assert hits[0].inliers > 3 * idx.verifier.min_inliers and not hits[1].verified
        # the engine's lists are the stored words: only the four queries were encoded
        assert encoded == [1, 1, 1, 1] and len(idx.words_engine()) == 6
        qf = idx.local_features(idx.query_image(data_dir / "smvs-dvd-covers" / "Palm" / "005.jpg"), query=True)
        assert qf.words.shape[1] == 5
    r = CliRunner().invoke(app, ["info", str(tmp_path / "idx"), "-v"])
    assert r.exit_code == 0 and "matched by shared words within 20 bits" in r.output
    r = CliRunner().invoke(app, ["index", str(covers), "--index", str(tmp_path / "idx"), "--geometry", "descriptors"])
    assert r.exit_code == 1 and "fixed when it was created" in r.output


def test_threads_encoding_at_once_with_a_fresh_vocabulary_agree_with_one_thread(data_dir):
    from concurrent.futures import ThreadPoolExecutor

    feats = [sift_features(load_image(data_dir / "smvs-dvd-covers" / "Reference" / f"{i:03d}.jpg", max_side=640))
             for i in range(1, 9)]
    fresh = SiftWords.load(SHIPPED)  # its HNSW graph is built by the first encoding
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda f: fresh.encode(f), feats))
    for f, (words, sigs) in zip(feats, got):
        w1, s1 = shipped().encode(f)
        assert np.mean(words == w1) > 0.99 and np.array_equal(sigs[words == w1], s1[words == w1])


def test_the_shipped_vocabulary_is_read_once_however_many_threads_ask(monkeypatch):
    """`Query.prefetch_words` loads it beside a search, which may ask for it meanwhile: one read."""
    import threading

    from layerseek.verify import words

    reads = []
    real = words.SiftWords.load

    def counted(path):
        reads.append(path)
        return real(path)

    monkeypatch.setattr(words, "_LOADED", {})
    monkeypatch.setattr(words.SiftWords, "load", staticmethod(counted))
    got, start = [], threading.Barrier(4)

    def ask():
        start.wait()
        got.append(words.shipped().warm())

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(reads) == 1 and len({id(w) for w in got}) == 1
    assert got[0].vocabulary_._index is not None and got[0]._fingerprint


def test_the_word_codes_catching_up_are_told_and_shown(data_dir, tmp_path, monkeypatch):
    """A search's word codes brought up to date for many photos (a minute at 10,000, said by
    nothing) tell `Index.catching_up` how far they are, and `progress.catching_up_bar` shows it;
    codes kept in the cache are not told again."""
    from rich.console import Console

    from layerseek import query
    from layerseek.progress import catching_up_bar

    monkeypatch.setattr(query, "CATCH_UP_TOLD", 0.0)  # told from the first
    covers = _covers(data_dir, tmp_path / "covers")
    n = len(list(covers.iterdir()))
    told = []
    with Index.create(tmp_path / "idx", "rmac", verify=True, **OPTS) as idx:
        idx.catching_up = lambda *a: told.append(a)
        idx.add_folder(covers)
        idx.update_graph()
    assert told and told[-1][:3] == ("word codes for searching", n, n) and told[-1][3] >= 0
    told.clear()
    with Index.open(tmp_path / "idx") as idx:  # kept: nothing to tell
        idx.catching_up = lambda *a: told.append(a)
        idx.update_graph()
    assert told == []
    for old in (tmp_path / "idx" / "cache").glob("words-*"):
        shutil.rmtree(old)
    shown = Console(record=True, width=120, force_terminal=True)
    with Index.open(tmp_path / "idx") as idx:
        idx.catching_up = catching_up_bar(shown)
        idx.search(data_dir / "smvs-dvd-covers" / "Palm" / "007.jpg", top=1)
    text = shown.export_text()
    assert "word codes for searching" in text and f"{n}/{n} 100%" in text
    # told first after some work: the rate counts from the work's start (200 photos told at once
    # after 3 s of work read as 13,882 photos/s)
    line = Console(record=True, width=120, force_terminal=True)
    told = catching_up_bar(line)
    told("word codes for searching", 200, 200, 2.5)
    assert "200/200 100% 80.00 img/s" in line.export_text()
