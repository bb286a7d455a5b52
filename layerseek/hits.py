"""What a search returns, and the ranges of its options: plain Python, so that a search answered
by a running server (`shell`) imports nothing heavy."""
from __future__ import annotations

#: the range of each search option, the same for the command line and the HTTP API
SEARCH_LIMITS = {"top": (1, 1000), "qe": (0, 50), "verify": (0, 1000), "shortlist": (1, 100000),
                 "words": (0, 1000), "word_filter": (-1.0, 1.0), "hubness": (0, 1000)}


def parse_region(text: str) -> tuple[float, float, float, float]:
    """A part of a photo written "X,Y,W,H": its left and top edges, width and height as shares of
    the photo's width and height (0.5,0,0.5,1: the right half); ValueError saying what is wrong."""
    parts = text.replace(" ", "").split(",")
    try:
        x, y, w, h = (float(p) for p in parts)
    except ValueError:
        raise ValueError(f"region {text!r}: four numbers X,Y,W,H, shares of the photo's width and height "
                         "(0.5,0,0.5,1: the right half)") from None
    if not (0 <= x < 1 and 0 <= y < 1 and 0 < w <= 1 and 0 < h <= 1) or x + w > 1 + 1e-6 or y + h > 1 + 1e-6:
        raise ValueError(f"region {text!r}: X and Y from 0, W and H above 0, X+W and Y+H at most 1 (shares "
                         "of the photo's width and height)")
    return x, y, min(w, 1 - x), min(h, 1 - y)


def format_region(region: tuple[float, float, float, float]) -> str:
    """A part of a photo (`parse_region`'s) written as the command line and the server take it."""
    return ",".join(f"{v:.6g}" for v in region)


class Hit:
    """One result of a search. A plain class, not a dataclass: `dataclasses` brings `inspect`,
    8 ms of every search a running server answers (`shell`)."""

    __slots__ = ("id", "path", "score", "inliers", "verified", "matches")

    def __init__(self, id: int, path: str, score: float, inliers: int | None = None, verified: bool = False,
                 matches: list | None = None):
        self.id = id
        self.path = path
        self.score = score  # the first stage's (or MOF's) similarity
        self.inliers = inliers  # geometrically consistent correspondences, when the hit was verified
        self.verified = verified  # inliers reached the index's threshold: the same object or place
        self.matches = matches  # with search(matches=True), a verified hit's correspondences (Verifier.pairs)

    def _fields(self) -> tuple:
        return tuple(getattr(self, k) for k in self.__slots__)

    def __eq__(self, other) -> bool:
        return self._fields() == other._fields() if type(other) is Hit else NotImplemented

    __hash__ = None  # mutable, as the dataclass was

    def __repr__(self) -> str:
        return "Hit(" + ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__) + ")"


def first_photos(hits: list, top: int, content: dict) -> list:
    """The hits of the first `top` photos, in order, where identical files (the same `content`,
    by id; a hit without one is a photo of its own) are one photo: every file of those photos is
    kept, so that the terminal and the page can show each photo once and name its other files."""
    photos: set = set()
    out = []
    for h in hits:
        c = content.get(h.id)
        photo = ("id", h.id) if c is None else c
        if photo not in photos:
            if len(photos) == top:
                continue
            photos.add(photo)
        out.append(h)
    return out
