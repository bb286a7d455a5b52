"""A cue measured for the shared-part rule, not built: the share of the overlap that matches.

    .venv/bin/python bench/overlap_cue.py /var/tmp/mixed10k.lsx [--keep /tmp/overlap.pkl]

The shared-part rule (`verify.geometry.same_object`) takes the mark of a verified candidate
whose inliers spread over less than 30 % of it when the query's strongest match fills its image:
right for a cover matched only by the Blu-ray band, wrong for a photo of a landmark that shows
it small (docs/RESULTS.md, "The photo searched with, itself indexed"). The cue: a homography
fitted to the inliers (least squares) lays each image's features into the other; of the features
that land inside the other image's frame, the share that are inliers, both ways. A band pair
lays a whole other cover over the object and matches little of it; a landmark seen small should
match much of what the close view shows. A candidate the rule takes keeps its mark when the
larger (or smaller) share reaches a bar.

Searched on the mixed library (covers in `covers`, the Paris subset in `paris`, as BENCHMARKS
"Fifth round"): the 400 SMVS phone photos, the 276 Paris photos and the 100 covers, each with
itself (indexed). Every verified candidate's evidence is taken as the search verified it, then
the rule is applied offline with and without the cue: phone searches with another cover marked
same (of them, covers really in the photo: `same_object.VISIBLE`), marks between two Paris
photos of one landmark, cover searches with another cover marked.
"""
from __future__ import annotations

import argparse
import pickle
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import layerseek.stages as stages  # noqa: E402
from layerseek.datasets import shared_data_dir  # noqa: E402
from layerseek.index import Index  # noqa: E402
from layerseek.verify.geometry import evidence_of, same_object  # noqa: E402

from same_object import VISIBLE  # noqa: E402


def _inside(xy: np.ndarray, H: np.ndarray, size: tuple[int, int]) -> int:
    """How many points `xy` the homography H lays inside a frame of `size` (in front of it)."""
    p = np.c_[xy, np.ones(len(xy))] @ H.T
    ok = p[:, 2] > 1e-9
    x, y = p[ok, 0] / p[ok, 2], p[ok, 1] / p[ok, 2]
    return int(((x >= 0) & (x < size[0]) & (y >= 0) & (y < size[1])).sum())


def overlap_shares(query, db, qi: np.ndarray, di: np.ndarray) -> tuple[float, float]:
    """(inliers / the query's features laid inside the candidate, inliers / the candidate's laid
    inside the query); (inf, inf) where no homography can be fitted (a 3-D scene's epipolar
    inliers may fit none: the cue cannot judge them)."""
    import cv2

    if len(qi) < 4:
        return np.inf, np.inf
    H, _ = cv2.findHomography(query.xy[qi].astype(np.float32), db.xy[di].astype(np.float32), 0)
    if H is None or not np.isfinite(H).all() or abs(np.linalg.det(H)) < 1e-12:
        return np.inf, np.inf
    nq, nd = _inside(query.xy, H, db.size), _inside(db.xy, np.linalg.inv(H), query.size)
    return (len(qi) / nq if nq else np.inf), (len(qi) / nd if nd else np.inf)


def searches(index_path: Path, record, phones: bool = False) -> tuple[list, dict, int, float]:
    """Search with each phone photo of the SMVS covers and with each cover and Paris photo of the
    index (`phones`: only the E63 and Palm photos, an index of the others' photos), keeping each
    verified candidate's `record(verifier, query features, its features, inliers, qi, di)`:
    ([(kind, query, {id: record})], {id: path}, the index's min_inliers, its shared-part bar)."""
    found: dict[int, object] = {}
    plain = stages.Verification.inliers

    def inliers(self, index, qf, ids, worth=None, drawn=None):
        from layerseek.verify.features import unpack_features

        out = plain(self, index, qf, ids, worth, drawn)
        todo = [i for i in ids if worth is None or worth(i)]
        stored = index.catalog.features(todo)
        for i in todo:
            if i in stored:
                f = unpack_features(stored[i])
                n, qi, di = self.verifier.verify(qf, f)
                if n >= self.verifier.min_inliers:
                    found[i] = record(self.verifier, qf, f, n, qi, di)
        return out

    stages.Verification.inliers = inliers
    smvs = shared_data_dir() / "smvs-dvd-covers"
    rows = []
    with Index.open(index_path) as idx:
        path = {e.id: e.path for e in idx.catalog.entries()}
        queries = [("phone", str(p)) for ph in (("E63", "Palm") if phones else ("Canon", "Droid", "E63", "Palm"))
                   for p in sorted((smvs / ph).glob("*.jpg"))]
        if not phones:
            queries += [(kind, p) for kind, folder in (("paris", "paris"), ("cover", "covers"))
                        for p in sorted(p for p in path.values() if Path(p).parent.name == folder)]
        for kind, q in queries:
            found.clear()
            idx.search(q, top=100)
            rows.append((kind, q, dict(found)))
        v = idx.verifier
        return rows, path, v.min_inliers, v.shared_part


def capture(index_path: Path) -> tuple[list, dict, int, float]:
    """Each search's verified candidates: (kind, query, {id: (Evidence, shares)})."""
    return searches(index_path, lambda v, qf, f, n, qi, di: (evidence_of(n, qf, f, qi, di, v.shared_part),
                                                             overlap_shares(qf, f, qi, di)))


def verdicts(found: dict, min_inliers: int, wide: float, keeps) -> set[int]:
    """The candidates marked same: `same_object`'s verdicts, a candidate it takes kept when
    `keeps(shares)` (each candidate's verdict depends only on the strongest match, so a kept one
    changes no other)."""
    counts = same_object({i: e for i, (e, _) in found.items()}, min_inliers, wide)
    return {i for i, (e, shares) in found.items()
            if counts[i] >= min_inliers or (e.inliers >= min_inliers and keeps(shares))}


def landmark(path: str) -> str | None:
    m = re.match(r"paris_([a-z]+)_\d+", Path(path).name)
    return m.group(1) if m else None


def counted(rows, path, marked) -> dict:
    """What the searches mark same, `marked(found)` giving a search's ids marked: phone searches
    with another cover (and of them, those whose covers all lie in the photo: VISIBLE), marks
    between two Paris photos of one landmark and of a photo outside the Paris folder, cover
    searches with another cover."""
    c = dict.fromkeys(("phone", "visible", "landmarks", "outside", "covers"), 0)
    for kind, q, found in rows:
        same = marked(found) - {i for i in found if path[i] == q}
        if kind == "phone":
            ph, num = Path(q).parent.name, Path(q).stem
            others = [Path(path[i]).stem for i in same
                      if not (Path(path[i]).parent.name == "covers" and Path(path[i]).stem == num)]
            c["phone"] += bool(others)
            c["visible"] += bool(others) and all(f"{ph}/{num}:{o}" in VISIBLE for o in others)
        elif kind == "paris":
            c["landmarks"] += sum(1 for i in same if landmark(q) and landmark(q) == landmark(path[i]))
            c["outside"] += sum(1 for i in same if Path(path[i]).parent.name != "paris")
        else:
            c["covers"] += any(Path(path[i]).parent.name == "covers" for i in same)
    return c


def tally(rows, path, min_inliers, wide, keeps) -> str:
    c = counted(rows, path, lambda found: verdicts(found, min_inliers, wide, keeps))
    return (f"phone searches with another cover same {c['phone']} (only covers in the photo: {c['visible']}); "
            f"same-landmark marks {c['landmarks']}; cover searches with another cover {c['covers']}")


def taken_shares(rows, path, min_inliers, wide) -> str:
    """The larger share of the pairs the rule takes: within a landmark, and a phone photo with
    another cover or photo (10th, 50th and 90th percentiles; pairs no homography fits apart)."""
    within, other, unfit = [], [], [0, 0]
    for kind, q, found in rows:
        if kind == "cover":
            continue
        for i in verdicts(found, min_inliers, 0.0, None) - verdicts(found, min_inliers, wide, lambda s: False):
            share = max(found[i][1])
            if kind == "paris" and landmark(q) and landmark(q) == landmark(path[i]):
                into, k = within, 0
            elif kind == "phone" and not (Path(path[i]).parent.name == "covers" and Path(path[i]).stem == Path(q).stem):
                into, k = other, 1
            else:
                continue
            if np.isfinite(share):
                into.append(share)
            else:
                unfit[k] += 1
    return "; ".join(f"{name}: {len(a)} pairs, 10/50/90 %: {np.percentile(a, [10, 50, 90]).round(3).tolist()} "
                     f"(no homography: {n})" for name, a, n in (("within a landmark", within, unfit[0]),
                                                               ("another cover or photo", other, unfit[1])))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("index", type=Path)
    ap.add_argument("--keep", type=Path, help="keep the searches' evidence here (a second run reads it)")
    a = ap.parse_args()
    if a.keep and a.keep.is_file():
        rows, path, mi, wide = pickle.loads(a.keep.read_bytes())
    else:
        rows, path, mi, wide = capture(a.index)
        if a.keep:
            a.keep.write_bytes(pickle.dumps((rows, path, mi, wide)))
    print(f"{len(rows)} searches")
    print("rule off:           " + tally(rows, path, mi, 0.0, lambda s: False))
    for bar in sorted({wide, 0.4, 0.5}):  # the rule's own bar wider, on the same evidence
        print(f"rule (bar {bar}):     " + tally(rows, path, mi, bar, lambda s: False))
    for bar in (0.1, 0.2, 0.3):
        print(f"kept at max >= {bar}:  " + tally(rows, path, mi, wide, lambda s, b=bar: max(s) >= b))
    for bar in (0.1, 0.15, 0.3):
        print(f"kept at min >= {bar}: " + tally(rows, path, mi, wide, lambda s, b=bar: min(s) >= b))
    print("the larger share of the pairs the rule takes: " + taken_shares(rows, path, mi, wide))


if __name__ == "__main__":
    main()
