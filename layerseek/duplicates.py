"""Groups of indexed images that show the same object or place (a duplicates report, as
imagededup users run), each pair said for what it is:

- **identical**: the same bytes (the catalog's SHA-256);
- **copy**: one homography maps most of one image onto the other and their pixels there agree,
  everywhere (resized, re-encoded, cropped, rotated, made grey; not two shots of a burst):
  `overlap_evidence`;
- **same**: verified (enough RANSAC inliers), but not a copy: another photo of the object or
  place. A pair that shares only a part (the band Blu-ray cases carry) is not reported: the
  index's shared-part rule (`verify.geometry.same_object`) is applied with each image of the
  pair as the query, over every pair verified with it, and a pair is the same object when a
  search with either photo would mark the other so (`shared_parts`).

Each image's nearest neighbours by its global vector are verified against it with the features
stored in the index; only the pairs that verify are read again from disk (at COMPARE_SIDE px),
for the copy test. Pairs are joined into groups (union-find) at the asked kind; each group
suggests the copy to keep (a camera's RAW file, then the most pixels, then the oldest, then the
largest file) and says how each other member relates to it. `move_plan` / `move_files` move the
others out (never delete).
"""
from __future__ import annotations

import html
import os
import shutil
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import LayerseekError
from .verify.geometry import Evidence, evidence_of, one_blas_thread, same_object

#: what a report groups by: identical files only, copies (identical included), or every verified pair
KINDS = ("identical", "copies", "all")
#: a pair is a copy when the pixels the homography lays over each other correlate at least this
#: much (normalised cross-correlation, grey, 320 px): planted copies 0.993-1.000, other verified
#: pairs (phone photos of one cover, look-alike covers, one building) at most 0.889 (docs/RESULTS.md)
COPY_SIMILARITY = 0.95
#: ... and no block of the overlap differs more than this (`overlap_evidence`): planted copies at
#: most 0.31 (rotated: resampled twice), two shots of a burst with a person who moved 0.59-1.5
COPY_DIFFERENCE = 0.4
#: ... and the homography lays at least this share of one image inside the other ("most of it")
COPY_COVER = 0.9
#: the side of the blocks the local difference is measured over, in pixels at COMPARE_SIDE
BLOCK = 16
#: the side the copy test reads both photos at
COMPARE_SIDE = 320
#: photos read for it kept in memory at once (about 0.3 MB each)
GREYS_KEPT = 256
#: images whose nearest others are searched at once (a 10,000 x 256 block of scores: 10 MB)
NEAREST_BLOCK = 256
#: a pair's kind, from the strongest: what each relation level includes
_LEVEL = {"identical": 0, "copy": 1, "same": 2}
_KIND_LEVEL = {"identical": 0, "copies": 1, "all": 2}


@dataclass
class Pair:
    """Two images that verified: `kind` identical / copy / same, the RANSAC `inliers`, the share
    of each image the homography lays inside the other (`cover`) and the correlation of their
    pixels there (`similarity`; None where a file could not be read again)."""
    a: int
    b: int
    kind: str
    inliers: int
    cover: tuple[float, float] = (0.0, 0.0)
    similarity: float | None = None
    difference: float | None = None  # the largest local difference of the overlap (`overlap_evidence`)


@dataclass
class Member:
    id: int
    path: str
    size: int  # bytes
    width: int
    height: int
    mtime_ns: int
    relation: str = "keep"  # keep (the group's), identical / copy (of `copy_of`), same (object, a keep of its own)
    copy_of: int | None = None  # the image this one is identical to or a copy of (kept in its place)
    via: int | None = None  # the image it was found a copy of directly (copy_of, or one between them)


@dataclass
class Group:
    kind: str  # identical / copies / same: the loosest relation of a member to the kept one
    members: list[Member]  # the suggested keep first
    pairs: list[Pair] = field(default_factory=list)

    @property
    def keep(self) -> Member:
        return self.members[0]

    def inliers(self, member_id: int) -> int | None:
        """The inliers of the member's strongest verified pair in the group (None: identical only)."""
        ns = [p.inliers for p in self.pairs if member_id in (p.a, p.b) and p.kind != "identical"]
        return max(ns) if ns else None


def _find(parent: dict[int, int], i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def overlap_evidence(xy_a: np.ndarray, xy_b: np.ndarray, size_a: tuple[int, int], size_b: tuple[int, int],
                     grey_a: np.ndarray, grey_b: np.ndarray) -> tuple[float, float, float, float]:
    """(share of image a the homography lays inside b, the same for b in a, the normalised
    cross-correlation of their grey pixels where they overlap, the largest local difference
    there) for inlier positions `xy_a` -> `xy_b` (k x 2, pixels of images of `size_a` / `size_b`,
    width x height) and the two images as grey arrays at any scale. The homography is fitted to
    the inliers by least squares. A copy lays most of one image inside the other with the same
    pixels everywhere (correlation near 1, no block that differs); another photo of the object
    does not (light, viewpoint, what lies around it), nor a second shot of a burst (a person who
    moved: one block differs). The local difference: the mean absolute residual of b's pixels
    after the best gain, in units of a's standard deviation, over BLOCK x BLOCK blocks; the
    largest one."""
    import cv2

    if len(xy_a) < 4:
        return 0.0, 0.0, 0.0, np.inf
    H, _ = cv2.findHomography(np.asarray(xy_a, np.float32), np.asarray(xy_b, np.float32), 0)
    if H is None or not np.isfinite(H).all() or abs(np.linalg.det(H)) < 1e-12:
        return 0.0, 0.0, 0.0, np.inf
    (ha, wa), (hb, wb) = grey_a.shape, grey_b.shape
    scale_a = np.diag([wa / size_a[0], ha / size_a[1], 1.0])
    scale_b = np.diag([wb / size_b[0], hb / size_b[1], 1.0])
    H = scale_b @ H @ np.linalg.inv(scale_a)  # a's pixels as read -> b's pixels as read
    H_inv = np.linalg.inv(H)
    b_in_a = cv2.warpPerspective(grey_b, H_inv, (wa, ha), flags=cv2.INTER_LINEAR)
    inside_a = cv2.warpPerspective(np.ones_like(grey_b), H_inv, (wa, ha), flags=cv2.INTER_NEAREST) > 0.5
    inside_b = cv2.warpPerspective(np.ones_like(grey_a), H, (wb, hb), flags=cv2.INTER_NEAREST) > 0.5
    cover = (float(inside_a.mean()), float(inside_b.mean()))
    # compared a few pixels in from the overlap's edge, both blurred a little (resampling, JPEG)
    mask = cv2.erode(inside_a.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    if mask.sum() < BLOCK * BLOCK:
        return (*cover, 0.0, np.inf)
    x = cv2.GaussianBlur(grey_a, (0, 0), 1.0)[mask].astype(np.float64)
    y = cv2.GaussianBlur(b_in_a, (0, 0), 1.0)[mask].astype(np.float64)
    x, y = x - x.mean(), y - y.mean()
    sxx, syy = (x * x).sum(), (y * y).sum()
    if sxx == 0 or syy == 0:
        return (*cover, 0.0, np.inf)
    similarity = float((x * y).sum() / np.sqrt(sxx * syy))
    residual = np.zeros(grey_a.shape)
    residual[mask] = np.abs(y - (x * y).sum() / sxx * x) / np.sqrt(sxx / len(x))
    inside = mask.astype(np.float64)
    sums = cv2.boxFilter(residual, -1, (BLOCK, BLOCK), normalize=False)
    counts = cv2.boxFilter(inside, -1, (BLOCK, BLOCK), normalize=False)
    full = counts >= 0.9 * BLOCK * BLOCK  # blocks (nearly) all inside the overlap
    difference = float((sums[full] / counts[full]).max()) if full.any() else np.inf
    return (*cover, similarity, difference)


def pair_kind(cover: tuple[float, float], similarity: float | None, difference: float | None = None) -> str:
    """copy or same, for a verified pair of different files (COPY_SIMILARITY, COPY_DIFFERENCE,
    COPY_COVER)."""
    if (similarity is not None and similarity >= COPY_SIMILARITY and max(cover) >= COPY_COVER
            and difference is not None and difference <= COPY_DIFFERENCE):
        return "copy"
    return "same"


def _grey(path: str, preview: bool = False) -> tuple[np.ndarray | None, bool]:
    """(the photo as grey float32 at COMPARE_SIDE px, None when it cannot be read any more;
    whether it may be a HEIC's embedded thumbnail: a HEIC read with `preview`, which decodes the
    photo itself when no thumbnail covers the side). `preview`: a first look (an iPhone's 320 px
    thumbnail: about 10 ms, the 12 MP photo about 1 s)."""
    from .images import is_raw_name, load_image

    try:
        rgb = load_image(path, max_side=COMPARE_SIDE, preview=preview).astype(np.float32)
        if preview:  # a regular file that decodes: only a HEIC's preview is another picture (a
            # camera RAW's embedded JPEG is what its index holds: the photo as the camera made it)
            preview = not is_raw_name(path) and _is_heif(path)
    except Exception:  # noqa: BLE001 - gone or changed since it was indexed: no copy test
        return None, False
    return rgb @ np.array([0.299, 0.587, 0.114], np.float32), preview


def _is_heif(path: str) -> bool:
    from PIL import Image

    with Image.open(path) as im:
        return im.format == "HEIF"


def check_reportable(index) -> None:
    """LayerseekError unless `index` can give a duplicates report: a global index with verification."""
    if index.kind != "global" or not index.verify_settings:
        raise LayerseekError(f"{index.catalog.root}: a duplicates report needs a global index made with verification "
                             "(the default of `layerseek index`)")


def verified_pairs(index, neighbours: int = 10, progress: Callable[[int, int], None] | None = None) -> list[Pair]:
    """Every pair of indexed images that is identical (same bytes) or verifies among each image's
    `neighbours` nearest by the global vector, with its kind and evidence, less those that share
    only a part (`shared_parts`, under the index's shared-part rule)."""
    pairs, seen = verified_evidence(index, neighbours, progress)
    v = index.verifier
    return shared_parts(pairs, seen, v.min_inliers, v.shared_part)


def verified_evidence(index, neighbours: int = 10, progress: Callable[[int, int], None] | None = None
                      ) -> tuple[list[Pair], dict[int, dict[int, Evidence]]]:
    """(every identical or verified pair, as `verified_pairs` finds them before the shared-part
    rule; image -> other image -> the `Evidence` of their pair with the image as the query). BLAS
    runs on one thread meanwhile: each image's neighbours are verified in threads of their own,
    and OpenBLAS's idle workers spun beside them (half the run's CPU)."""
    with one_blas_thread():
        return _verified_evidence(index, neighbours, progress)


def _verified_evidence(index, neighbours: int, progress: Callable[[int, int], None] | None
                       ) -> tuple[list[Pair], dict[int, dict[int, Evidence]]]:
    from .verify.features import unpack_features

    check_reportable(index)
    verifier = index.verifier
    shas = index.catalog.shas()
    by_sha: dict[str, list[int]] = {}
    for i, sha in shas.items():
        by_sha.setdefault(sha, []).append(i)
    pairs = [Pair(min(ids), j, "identical", 0, (1.0, 1.0), 1.0, 0.0)
             for ids in by_sha.values() if len(ids) > 1 for j in sorted(ids)[1:]]
    checked = {(p.a, p.b) for p in pairs}
    # the photos read for the copy test, the most recently used kept (an image meets its
    # neighbours one after the other; all of them kept, memory grew with the library)
    greys: OrderedDict[tuple[int, bool], tuple[np.ndarray | None, bool]] = OrderedDict()

    def grey(i: int, preview: bool) -> tuple[np.ndarray | None, bool]:
        key, first = (i, preview), greys.get((i, True))
        if not preview and key not in greys and first is not None and not first[1]:
            key = (i, True)  # its first look was the photo itself
        if key in greys:
            greys.move_to_end(key)
        else:
            e = index.catalog.by_id(i)
            greys[key] = _grey(e.path, preview) if e is not None else (None, False)
            if len(greys) > GREYS_KEPT:
                greys.popitem(last=False)
        return greys[key]

    def evidence(a: int, b: int, fa, fb, qi, di, preview: bool) -> tuple[str, tuple, float | None, float | None, bool]:
        """(kind, cover, similarity, difference, whether a thumbnail took part) of the verified pair
        a, b (features fa, fb; the inliers' indices qi, di)."""
        (ga, ta), (gb, tb) = grey(a, preview), grey(b, preview)
        if ga is None or gb is None:
            return "same", (0.0, 0.0), None, None, False
        ca, cb, similarity, difference = overlap_evidence(fa.xy[qi], fb.xy[di], fa.size, fb.size, ga, gb)
        return pair_kind((ca, cb), similarity, difference), (ca, cb), similarity, difference, ta or tb

    seen: dict[int, dict[int, Evidence]] = {}  # image -> other -> the pair's evidence, the image as query
    ids, vectors = index.store.matrix()
    for k, (i, near) in enumerate(zip(ids.tolist(), nearest(index, ids, vectors, neighbours))):
        todo = [j for j in near if (min(i, j), max(i, j)) not in checked]
        checked.update((min(i, j), max(i, j)) for j in todo)
        stored = index.catalog.features([i] + todo) if todo else {}
        mine = unpack_features(stored[i]) if i in stored else None
        if mine is not None and len(mine):
            near = [j for j in todo if j in stored]
            theirs_all, found = [unpack_features(stored[j]) for j in near], []
            counts = verifier.scores(mine, theirs_all, found)  # in the verification threads, one BLAS thread
            for j, theirs, n, (qi, di) in zip(near, theirs_all, counts, found):
                if n < verifier.min_inliers:
                    continue
                kind, cover, similarity, difference, thumbnail = evidence(i, j, mine, theirs, qi, di, True)
                if kind == "copy" and thumbnail:  # a file is moved on its photo's pixels, not a thumbnail's
                    kind, cover, similarity, difference, _ = evidence(i, j, mine, theirs, qi, di, False)
                pairs.append(Pair(min(i, j), max(i, j), kind, n, cover, similarity, difference))
                seen.setdefault(i, {})[j] = evidence_of(n, mine, theirs, qi, di, verifier.shared_part)
                seen.setdefault(j, {})[i] = evidence_of(n, theirs, mine, di, qi, verifier.shared_part)
        if progress:
            progress(k + 1, len(ids))
    return pairs, seen


def shared_parts(pairs: list[Pair], seen: dict[int, dict[int, Evidence]], min_inliers: int,
                 wide: float) -> list[Pair]:
    """`pairs` less the *same* pairs that share only a part: `seen` is image -> other image ->
    the `Evidence` of their verified pair with the image as the query; the shared-part rule
    (`verify.geometry.same_object`, bar `wide`, 0: off) is applied to each image's pairs, and a
    same pair stays when the rule keeps it from either side (a search with either photo would mark
    the other the same object). Identical and copy pairs always stay, and a copy decides nothing
    (it fills its image whatever the photo shows, as the photo itself does in a search)."""
    copies = {(p.a, p.b) for p in pairs if p.kind == "copy"}
    verdicts = {i: same_object({j: e._replace(copy=e.copy or (min(i, j), max(i, j)) in copies)
                                for j, e in found.items()}, min_inliers, wide)
                for i, found in seen.items()}
    return [p for p in pairs if p.kind != "same"
            or verdicts.get(p.a, {}).get(p.b, min_inliers) >= min_inliers
            or verdicts.get(p.b, {}).get(p.a, min_inliers) >= min_inliers]


def nearest(index, ids: np.ndarray, vectors: np.ndarray, k: int, block: int = NEAREST_BLOCK):
    """Each image's `k` nearest others by the first stage's cosine, as lists of ids (what
    `Query.search_vector` gives one image), found for a block of images at once (the exact store:
    one matrix product a block, 7x faster than one a photo)."""
    for at in range(0, len(ids), block):
        with index._lock:
            index.store.sync()  # another process may have changed the catalog
            found = index.store.search_many(vectors[at:at + block], k + 1)
        for i, (got, _) in zip(ids[at:at + block].tolist(), found):
            yield [int(j) for j in got if j != i][:k]


def keep_order(m: Member) -> tuple:
    """The copy to keep first: a camera's RAW file (the original of any JPEG made of it, the
    camera's own beside it included), then the most pixels, then the oldest (the original, where
    a copy was made of it), then the largest file, then the path."""
    from .images import is_raw_name

    return (not is_raw_name(m.path), -m.width * m.height, m.mtime_ns, -m.size, m.path)


def group_pairs(index, pairs: list[Pair], kind: str = "all") -> list[Group]:
    """The groups (2 images or more, largest first) joined by the pairs of `kind` (KINDS), each
    with its suggested keep first and every member's relation to it."""
    if kind not in KINDS:
        raise LayerseekError(f"unknown kind {kind!r}; valid: {', '.join(KINDS)}")
    level = _KIND_LEVEL[kind]
    used = [p for p in pairs if _LEVEL[p.kind] <= level]
    parent: dict[int, int] = {}
    for p in used:
        for x in (p.a, p.b):
            parent.setdefault(x, x)
        parent[_find(parent, p.a)] = _find(parent, p.b)
    members: dict[int, list[int]] = {}
    for i in parent:
        members.setdefault(_find(parent, i), []).append(i)
    pairs_of: dict[int, list[Pair]] = {}
    for p in used:
        pairs_of.setdefault(_find(parent, p.a), []).append(p)
    sha = index.catalog.shas()
    groups = []
    for root, ids in members.items():
        entries = [index.catalog.by_id(i) for i in ids]
        ms = {e.id: Member(e.id, e.path, e.size, e.width, e.height, e.mtime_ns) for e in entries if e is not None}
        if len(ms) < 2:
            continue
        mine = [p for p in pairs_of.get(root, []) if p.a in ms and p.b in ms]
        # the copies among the group: each set of images joined by copy pairs keeps its best one,
        # and every other image of it is a copy of that one
        ordered, left = [], sorted(ms.values(), key=keep_order)
        while left:
            keep = left[0]
            part = _component(keep.id, [p for p in mine if p.kind != "same"])
            for m in left[1:]:
                if m.id in part:
                    m.relation = "identical" if sha.get(m.id) == sha.get(keep.id) else "copy"
                    m.copy_of, m.via = keep.id, part[m.id]
            if ordered:
                keep.relation = "same"
            ordered += [keep] + [m for m in left[1:] if m.id in part]
            left = [m for m in left[1:] if m.id not in part]
        worst = max(_LEVEL[m.relation] for m in ordered[1:])
        groups.append(Group(("identical", "copies", "same")[worst], ordered, mine))
    groups.sort(key=lambda g: (_LEVEL[{"copies": "copy"}.get(g.kind, g.kind)], -len(g.members), g.keep.path))
    return groups


def _component(start: int, pairs: list[Pair]) -> dict[int, int | None]:
    """The images joined to `start` by these pairs, each with the one it was reached from
    (breadth first: the fewest steps from `start`; None for `start`)."""
    near: dict[int, list[int]] = {}
    for p in pairs:
        near.setdefault(p.a, []).append(p.b)
        near.setdefault(p.b, []).append(p.a)
    seen: dict[int, int | None] = {start: None}
    todo = [start]
    while todo:
        nxt = []
        for i in todo:
            for j in sorted(near.get(i, ())):
                if j not in seen:
                    seen[j] = i
                    nxt.append(j)
        todo = nxt
    return seen


def duplicate_groups(index, neighbours: int = 10, progress: Callable[[int, int], None] | None = None,
                     kind: str = "all") -> list[Group]:
    """`group_pairs` of `verified_pairs`: the groups of a global index made with verification."""
    if kind not in KINDS:
        raise LayerseekError(f"unknown kind {kind!r}; valid: {', '.join(KINDS)}")
    return group_pairs(index, verified_pairs(index, neighbours, progress), kind)


# -- acting on a report ----------------------------------------------------------------------
def movable(groups: list[Group]) -> list[Member]:
    """What a dedupe run moves: every member identical to or a copy of another that is kept
    (never a photo that is only the same object, never a kept one), unless it is that very file
    under another name (a hard link, or a name through a linked folder): moving it would take the
    kept photo away too, or free nothing."""
    out = []
    for g in groups:
        by_id = {m.id: m for m in g.members}
        for m in g.members[1:]:
            kept = by_id.get(m.copy_of)
            if m.relation in ("identical", "copy") and not (kept is not None and _same_file(m.path, kept.path)):
                out.append(m)
    return out


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def move_plan(members: list[Member], dest: Path, roots: list[str]) -> list[tuple[str, Path]]:
    """(from, to) for each member: to `dest` under its path relative to the indexed folder that
    holds it (the folder's name first, so two folders' files never meet), else to its absolute
    path's parts; an existing file is never overwritten (a number is added to the name)."""
    dest = Path(dest).absolute()
    for r in roots:
        if dest == Path(r) or Path(r) in dest.parents:
            raise LayerseekError(f"--move-to {dest}: inside the indexed folder {r}; the moved copies would be indexed "
                                 "again. Choose a folder outside it")
    plan, taken = [], set()
    for m in members:
        src = Path(m.path)
        root = next((Path(r) for r in sorted(roots, key=len, reverse=True)
                     if Path(r) in src.parents), None)
        rel = Path(root.name) / src.relative_to(root) if root else Path(*src.parts[1:])
        to = dest / rel
        n = 1
        while to in taken or to.exists():
            to = to.with_name(f"{src.stem} ({n}){src.suffix}")
            n += 1
        taken.add(to)
        plan.append((m.path, to))
    return plan


def move_files(plan: list[tuple[str, Path]]) -> tuple[list[str], list[tuple[str, str]]]:
    """Carry out a `move_plan`: (the paths moved, (path, reason) of those that could not be). A
    file that changed or vanished since the report is left where it is."""
    moved, failed = [], []
    for src, to in plan:
        try:
            to.parent.mkdir(parents=True, exist_ok=True)
            if to.exists():
                raise FileExistsError(f"{to} exists")
            shutil.move(src, to)
            moved.append(src)
        except OSError as e:
            failed.append((src, e.strerror or str(e)))
    return moved, failed


# -- writing a report ------------------------------------------------------------------------
CSV_COLUMNS = ["group", "kind", "relation", "path", "copy_of", "bytes", "width", "height", "modified", "inliers",
               "similarity", "difference"]


def _modified(ns: int) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ns / 1e9))


def _copy_pair(group: Group, m: Member) -> Pair | None:
    """The pair that made a copy one: with the image it was found a copy of directly (`via`)."""
    for p in group.pairs:
        if {p.a, p.b} == {m.id, m.via} and p.similarity is not None and p.kind != "identical":
            return p
    return None


def _similarity(group: Group, m: Member) -> str:
    """The pixel correlation of a copy with the image it was found a copy of ('' where not compared)."""
    p = _copy_pair(group, m)
    return "" if p is None else f"{p.similarity:.3f}"


def write_csv(groups: list[Group], out) -> None:
    """One row per image: its group, the group's kind, its relation (keep: the group's suggested
    keep; identical / copy: of the image `copy_of`, which is kept; same: the same object, kept),
    path, copy_of, bytes, width, height, last modified, the inliers of its best verified pair, and
    the pixel correlation and largest local difference of the pair that made it a copy (with
    copy_of, or with a copy of it in between)."""
    import csv

    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for g, group in enumerate(groups, 1):
        paths = {m.id: m.path for m in group.members}
        for m in group.members:
            n = group.inliers(m.id)
            p = _copy_pair(group, m)
            w.writerow([g, group.kind, m.relation, m.path, paths.get(m.copy_of, ""), m.size, m.width, m.height,
                        _modified(m.mtime_ns), "" if n is None else n, "" if p is None else f"{p.similarity:.3f}",
                        "" if p is None else f"{p.difference:.3f}"])


def _thumbnail(path: str, side: int) -> str:
    """A data: URI of a small JPEG of the image ('' if it cannot be read any more)."""
    from .images import jpeg_data_uri, load_image

    try:
        return jpeg_data_uri(load_image(path, max_side=side, preview=True), quality=80)
    except Exception:  # noqa: BLE001 - a file gone or changed since it was indexed: shown without picture
        return ""


def human_size(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


_WORDS = {"keep": "keep", "identical": "identical file", "copy": "copy", "same": "same object (kept)"}
_GROUP_WORDS = {"identical": "identical files", "copies": "copies", "same": "same object or place"}


def write_html(groups: list[Group], path: Path, title: str, side: int = 160) -> None:
    """A contact sheet: one row per group, its kind in words; each image a link to the file with
    its full path, size, resolution, date, relation to the kept one (marked) and the evidence;
    a single file (thumbnails embedded), readable offline."""
    rows = []
    for g, group in enumerate(groups, 1):
        cells, paths = [], {m.id: m.path for m in group.members}
        for m in group.members:
            src = _thumbnail(m.path, side)
            link = html.escape(Path(m.path).as_uri(), quote=True)
            img = (f'<img src="{src}" alt="{html.escape(Path(m.path).name)}">' if src
                   else '<div class="gone">unreadable</div>')
            n, sim = group.inliers(m.id), _similarity(group, m)
            evidence = (", ".join(x for x in (f"{n} inliers" if n else "", f"pixels {sim}" if sim else "") if x)
                        if m.relation != "keep" else "suggested to keep")
            of = (f" of {html.escape(Path(paths[m.copy_of]).name)}" if m.copy_of in paths else "")
            cells.append(
                f'<figure class="{m.relation}"><a href="{link}">{img}</a><figcaption>'
                f'<b>{_WORDS[m.relation]}{of}</b><br><a href="{link}" class="path">{html.escape(m.path)}</a><br>'
                f'{m.width} × {m.height}, {human_size(m.size)}, {_modified(m.mtime_ns)}<br>'
                f'<small>{html.escape(evidence)}</small></figcaption></figure>')
        rows.append(f'<section><h2>Group {g}: {_GROUP_WORDS[group.kind]} <small>({len(group.members)} images)'
                    f'</small></h2><div class="row">{"".join(cells)}</div></section>')
    counts = {k: sum(g.kind == k for g in groups) for k in _GROUP_WORDS}
    summary = ", ".join(f"{n} of {_GROUP_WORDS[k]}" for k, n in counts.items() if n) or "none"
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 20px; color: #1d2330; }}
.row {{ display: flex; flex-wrap: wrap; gap: 12px; }}
figure {{ margin: 0; width: {side + 60}px; padding: 6px; border: 2px solid transparent; border-radius: 6px; }}
figure.keep {{ border-color: #2d7a3a; }}
figure img, .gone {{ width: {side}px; height: {side}px; object-fit: contain; background: #eee; display: block; }}
figcaption {{ font-size: 12px; overflow-wrap: anywhere; }}
figure.same b {{ color: #8a5a00; }}
h2 {{ font-size: 15px; margin: 18px 0 8px; }}
@media (prefers-color-scheme: dark) {{ body {{ background: #15181e; color: #e4e7ee; }} a {{ color: #8ab4ff; }} }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{len(groups)} groups ({summary}); {sum(len(g.members) for g in groups)} images. The kept image (green frame)
is a suggestion: the most pixels, then the oldest, then the largest file. A copy: one homography lays most of one
image over the other and their pixels agree (resized, re-encoded, cropped, rotated, grey); <code>--move-to</code>
moves identical files and copies. Same object: verified, but not a copy (another photo): never moved.</p>
{"".join(rows) if rows else "<p>No duplicates found.</p>"}
</body></html>
"""
    path.write_text(page, encoding="utf-8")


__all__ = ["COPY_COVER", "COPY_DIFFERENCE", "COPY_SIMILARITY", "Group", "KINDS", "Member", "Pair", "duplicate_groups",
           "group_pairs", "move_files", "move_plan", "movable", "overlap_evidence", "pair_kind", "shared_parts",
           "verified_evidence", "verified_pairs", "write_csv", "write_html"]
