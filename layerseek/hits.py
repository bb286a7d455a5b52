"""What a search returns, and the ranges of its options: plain Python, so that a search answered
by a running server (`shell`) imports nothing heavy."""
from __future__ import annotations

from dataclasses import dataclass

#: the range of each search option, the same for the command line and the HTTP API
SEARCH_LIMITS = {"top": (1, 1000), "qe": (0, 50), "verify": (0, 1000), "shortlist": (1, 100000),
                 "words": (0, 1000), "word_filter": (-1.0, 1.0), "hubness": (0, 1000)}


@dataclass
class Hit:
    id: int
    path: str
    score: float  # the first stage's (or MOF's) similarity
    inliers: int | None = None  # geometrically consistent correspondences, when the hit was verified
    verified: bool = False  # inliers reached the index's threshold: the same object or place
    matches: list | None = None  # with search(matches=True), a verified hit's correspondences (Verifier.pairs)
