"""A search as explicit stages, each a small object with its settings from the index's manifest
(`hubness`, `verify`) and a search's overrides:

    first stage (the store's ranking of the query vector, `Query.search_vector`)
      Hubness            its best re-scored by CSLS, so that images near everything do not crowd it
      + WordCandidates   the word engine's best over the stored SIFT (`verify.words`)
    -> Verification      RANSAC inliers of the shortlist and the candidates, the word filter first
    -> Expansion         verified query expansion, ranked and verified again (`verify.pipeline`)
    -> Diffusion         the verified images seed a diffusion that orders the rest (`verify.diffusion`)

`Stages.of(index, ...)` resolves a search's settings into them (the errors for a setting the
index cannot honour are said there, before any image is read); `Query.verify_hits` runs them. A
new candidate source or stage is one class here and one line in `Stages`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .errors import LayerseekError

#: How many of the first stage's best a search verifies by default, on an index that stores
#: local features (what docs/RESULTS.md measured; a query then takes about 1 s more on 2 cores).
DEFAULT_VERIFY = 100
#: the hubness correction of a new global index: CSLS over each image's 10 nearest (issue 26)
DEFAULT_HUBNESS = {"k": 10, "beta": 0.5}
#: how many of the store's best the correction re-scores (it lowers a score by at most beta)
HUB_POOL = 1000


@dataclass
class Hubness:
    """The first stage's cosines less `beta` times each image's mean cosine to its own `k`
    nearest indexed images (CSLS, `postprocess.csls`): a hub, an image close to everything (in a
    mixed library one Paris photo came first for 45 % of the phone photos of covers), loses the
    lead its crowded neighbourhood gave it (docs/RESULTS.md, "Hubs in the first stage")."""
    k: int
    beta: float = 0.5

    def rescore(self, index, ids: np.ndarray, scores: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray]:
        """The `top` best of the store's `ids` by the corrected score, with their cosines `scores`
        (what a hit shows: an identical photo still scores 1)."""
        from .postprocess import csls

        r = index.neighbourhood(self.k)
        ids = np.asarray(ids, np.int64)
        held = ids < len(r)
        rr = np.where(held, r[np.where(held, ids, 0)], 0.0)
        adjusted = csls(np.asarray(scores, np.float64)[None], rr, self.beta)[0]
        order = np.argsort(-adjusted, kind="stable")[:top]
        return ids[order], np.asarray(scores, np.float32)[order]


#: the word filter judges only an index of at least this many images. A word's idf, log(N / n_w),
#: is 0 for a word every image holds: in an index of one photo that is every word, so no candidate
#: scored above 0 and nothing was ever verified, not even the photo itself (nor, of two identical
#: files, either); below this size the scores say little and RANSAC of every candidate is cheap.
#: Every collection the filter was measured on holds 100 or more (docs/RESULTS.md).
WORD_FILTER_MIN_IMAGES = 100


@dataclass
class WordCandidates:
    """The word engine's `top` best images for the query's local features, verified beside the
    first stage's shortlist whatever the CNN thinks of them (issue 26); a candidate whose word
    score is at most `filter` is not verified at all (None: every one is)."""
    top: int
    filter: float | None = None

    def find(self, index, qf) -> tuple[list, np.ndarray | None]:
        """(hits, the word score of every image id): the hits scored by their word score (`scored`
        gives them the first stage's, once the network has run); ([], None) for a query without
        features."""
        from .hits import Hit
        from .verify.features import WordFeatures

        if not self.top or qf is None or not len(qf):
            return [], None
        with index._lock:
            engine = index.words_engine()
            scores = engine.score_array(qf.nearest(engine.params.ma) if isinstance(qf, WordFeatures)
                                        else engine.words.encode(qf, engine.params.ma))
            found = engine.best(scores, self.top)
            entries = {i: index.catalog.by_id(i) for i, _ in found}
        found = [(i, s) for i, s in found if entries[i] is not None]
        return [Hit(i, entries[i].path, float(s)) for i, s in found], scores

    @staticmethod
    def scored(index, hits: list, q: np.ndarray | None) -> list:
        """`hits` each scored by the first stage's similarity to `q` (as they are where there is
        no `q`)."""
        if q is None or not hits:
            return hits
        sims = index.catalog.vectors([h.id for h in hits]) @ np.asarray(q, np.float32)
        for h, v in zip(hits, sims):
            h.score = float(v)
        return hits

    def worth_verifying(self, scores: np.ndarray | None) -> Callable[[int], bool] | None:
        """Which ids the word filter lets through to RANSAC (None: all of them)."""
        if self.filter is None or scores is None:
            return None
        at = self.filter
        return lambda i: i >= len(scores) or scores[i] > at


@dataclass
class Verification:
    """RANSAC between the query's local features and each candidate's stored ones
    (`verify.geometry.Verifier`): the first stage's first `shortlist` and every extra candidate;
    one search's object (the shared-part rule weighs each candidate against the others,
    `verify.geometry.QueryVerdicts`)."""
    verifier: object
    shortlist: int
    verdicts: object = None

    def inliers(self, index, qf, ids: list[int], worth: Callable[[int], bool] | None = None,
                drawn: dict | None = None) -> dict[int, int]:
        """id -> inliers for `ids` (0 for one the word filter leaves out, or without features),
        and for any candidate of an earlier call whose verdict changed; `drawn` receives each
        verified image's correspondences (`Verifier.pairs`)."""
        from .verify.features import unpack_features
        from .verify.geometry import QueryVerdicts, evidence_of

        if self.verdicts is None:
            self.verdicts = QueryVerdicts(self.verifier)
        out = dict.fromkeys(ids, 0)
        if worth is not None:  # the cheap filter: too few shared words to be worth RANSAC
            ids = [i for i in ids if worth(i)]
        stored = index.catalog.features(ids)
        feats = [unpack_features(stored[i]) if i in stored else None for i in ids]
        found: list = []
        counts = self.verifier.scores(qf, feats, found)
        wide = self.verifier.shared_part
        evidence = {i: evidence_of(n, qf, f, qi, di, wide) for i, f, n, (qi, di) in zip(ids, feats, counts, found)
                    if f is not None}
        out.update(zip(ids, counts))
        out.update(self.verdicts.add(evidence))
        if drawn is not None:
            for i, f, inl in zip(ids, feats, found):
                if out[i] >= self.verifier.min_inliers:
                    drawn[i] = self.verifier.pairs(qf, f, found=inl)
            for i in [i for i in drawn if out.get(i, self.verifier.min_inliers) < self.verifier.min_inliers]:
                del drawn[i]  # an earlier call's, now only a shared part
        return out


@dataclass
class Expansion:
    """`rounds` of spatially verified query expansion (Chum et al. 2007; a global index): the
    query vector expanded by the verified images' vectors, ranked and verified again."""
    rounds: int = 0

    def run(self, index, q, rank, inliers_of, verification: Verification, extra: list[int]):
        """(order, inlier counts) as `verify.pipeline.verify_and_expand` gives them."""
        from .verify.pipeline import verify_and_expand

        expand = index.method.expand if index.kind == "global" else None
        return verify_and_expand(q, rank, inliers_of, index.catalog.vectors, expand, verification.shortlist,
                                 verification.verifier.min_inliers, self.rounds if expand else 0, extra)


@dataclass
class Diffusion:
    """The verified images seed a diffusion over the k-NN graph of the index's vectors (Iscen et
    al. 2017) that orders every image after them: the whole graph up to `FULL_GRAPH_MAX` images,
    past it the graph of this query's `SHORTLIST` best."""
    k: int
    gamma: float
    alpha: float

    def order(self, index, q: np.ndarray, order: list[int], counts: dict[int, int], min_inliers: int) -> list[int]:
        from .verify.diffusion import FULL_GRAPH_MAX, SHORTLIST, shortlist_graph, verified_diffusion

        if not any(c >= min_inliers for c in counts.values()):  # no seed: the order stays, no graph needed
            return list(order)
        if index.catalog.count() > FULL_GRAPH_MAX:  # truncated: the graph of this query's shortlist
            ids = list(dict.fromkeys(order + [int(i) for i in index._top(q, SHORTLIST)[0]]))
            graph, S = shortlist_graph(ids, index.catalog.vectors(ids), self.k, self.gamma)
        else:
            graph, S = index.graph(self.k, self.gamma)
        return verified_diffusion(order, counts, min_inliers, graph, S, self.alpha)


@dataclass
class Stages:
    """The stages of one search (`hubness` None: the first stage ranks by cosine; `verification`
    None: unverified)."""
    verification: Verification | None = None
    hubness: Hubness | None = None
    words: WordCandidates | None = None
    expansion: Expansion | None = None
    diffusion: Diffusion | None = None

    @classmethod
    def of(cls, index, verify: int | None = None, expand: int | None = None, diffusion: bool | None = None,
           words: int | None = None, word_filter: float | None = None, hubness: int | None = None) -> Stages:
        """A search's stages from the index's settings (`verify` in its manifest) and the search's
        overrides, each None for the index's own: `verify` the shortlist verified (0: none),
        `expand` the rounds of expansion, `diffusion` (False: off; True: on with the default
        settings where the index has none), `words` the word candidates (0: none), `word_filter`
        the word score at or below which a candidate is not verified (negative: off), `hubness` the
        neighbours of the first stage's correction (0: off)."""
        v = index.verify_settings or {}
        hub = hubness_of(index, hubness)
        shortlist = (DEFAULT_VERIFY if v else 0) if verify is None else int(verify)
        if shortlist < 0:
            raise LayerseekError(f"verify {shortlist}: give a shortlist size >= 0")
        if shortlist and not v:
            raise LayerseekError(f"{index.catalog.root}: this index stores no local features to verify with; "
                                 "create it with --verify")
        if not shortlist:
            return cls(hubness=hub)
        stages = cls(Verification(index.verifier, shortlist), hub)
        stages.words = word_candidates(index, words, word_filter)
        if index.kind == "global":
            stages.expansion = Expansion(int(v.get("expand", 0) if expand is None else expand))
            rule = v.get("diffusion") if diffusion is not False else None
            if diffusion and not rule:
                from .verify.diffusion import settings

                rule = settings()
            stages.diffusion = Diffusion(int(rule["k"]), float(rule["gamma"]), float(rule["alpha"])) if rule else None
        return stages


def word_candidates(index, words: int | None = None, word_filter: float | None = None) -> WordCandidates | None:
    """The word-candidate stage of a search on `index` (None: off): `words` candidates (None: the
    index's setting; 0: none), filtered at `word_filter` (None: the index's setting, and no filter in
    an index of fewer than WORD_FILTER_MIN_IMAGES images; negative: off)."""
    w = (index.verify_settings or {}).get("words")
    k = int(w["top"]) if words is None and w else int(words or 0)
    if k < 0:
        raise LayerseekError(f"words {k}: give a number of word candidates >= 0")
    if not k:
        return None
    if not w:
        raise LayerseekError(f"{index.catalog.root}: this index has no word candidates (made before "
                             "them, or with them off); search with --word-candidates 0")
    small = word_filter is None and index.catalog.count() < WORD_FILTER_MIN_IMAGES  # its scores say little
    return WordCandidates(k, None if small else word_filter_of(index, word_filter))


def word_filter_of(index, given: float | None = None) -> float | None:
    """The word score at or below which a candidate is not verified: `given`, else the index's
    setting (none on an index made before the filter); None when off (negative)."""
    t = ((index.verify_settings or {}).get("words") or {}).get("filter") if given is None else given
    if t is None or t < 0:
        return None
    if t >= 1:
        raise LayerseekError(f"word filter {t}: give a word score below 1 (negative: off)")
    return float(t)


def hubness_of(index, given: int | None = None) -> Hubness | None:
    """The first stage's hubness correction on `index` (None: off): `given` neighbours (0: off),
    else the index's setting (none on an index made before it, or on a MOF index)."""
    h = index.catalog.manifest.get("hubness")
    if given is None:
        return Hubness(int(h["k"]), float(h["beta"])) if h and index.kind == "global" else None
    if given < 0:
        raise LayerseekError(f"hubness {given}: give a number of neighbours >= 0 (0: off)")
    if given and index.kind != "global":
        raise LayerseekError("the hubness correction is for the global methods; a mof index has none")
    return Hubness(int(given), float(h["beta"]) if h else DEFAULT_HUBNESS["beta"]) if given else None
