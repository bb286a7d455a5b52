"""Groups of indexed images that show the same object or place (a duplicates report, as
imagededup users run): each image's nearest neighbours by its global vector are verified
against it geometrically with the features stored in the index (no photo is read again), and
the verified pairs are joined into groups (union-find). Near-identical copies, crops, re-encodes
and other photos of the same cover or facade land in one group; merely similar images do not.
"""
from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import LayerseekError


@dataclass
class Group:
    members: list[tuple[int, str]]  # (id, path), the first one the group's most connected image
    inliers: dict[int, int] = field(default_factory=dict)  # id -> its best verified pair's inliers


def _find(parent: dict[int, int], i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def duplicate_groups(index, neighbours: int = 10, progress: Callable[[int, int], None] | None = None) -> list[Group]:
    """The groups (2 images or more, largest first) of a global index made with verification:
    each image against its `neighbours` nearest, verified pairs joined."""
    from .verify.features import match_space, unpack_features

    if index.kind != "global" or not index.verify_settings:
        raise LayerseekError(f"{index.catalog.root}: a duplicates report needs a global index made with verification "
                             "(the default of `layerseek index`)")
    verifier = index.verifier
    ids, vectors = index.store.matrix()
    parent = {int(i): int(i) for i in ids}
    best: dict[int, int] = {}
    degree: dict[int, int] = {}
    checked: set[tuple[int, int]] = set()
    for k, (i, v) in enumerate(zip(ids.tolist(), vectors)):
        near = [h.id for h in index.search_vector(v, neighbours, exclude_id=i)]
        todo = [j for j in near if (min(i, j), max(i, j)) not in checked]
        checked.update((min(i, j), max(i, j)) for j in todo)
        stored = index.catalog.features([i] + todo)
        if i in stored and todo:
            mine = unpack_features(stored[i])
            space = match_space(mine) if len(mine) else None
            for j in todo:
                if j not in stored:
                    continue
                n = verifier.inliers(mine, unpack_features(stored[j]), space) if len(mine) else 0
                if n >= verifier.min_inliers:
                    parent[_find(parent, i)] = _find(parent, j)
                    for a in (i, j):
                        best[a] = max(best.get(a, 0), n)
                        degree[a] = degree.get(a, 0) + 1
        if progress:
            progress(k + 1, len(ids))
    members: dict[int, list[int]] = {}
    for i in parent:
        members.setdefault(_find(parent, i), []).append(i)
    groups = []
    for ms in members.values():
        if len(ms) < 2:
            continue
        ms.sort(key=lambda i: (-degree.get(i, 0), -best.get(i, 0), i))
        entries = [index.catalog.by_id(i) for i in ms]
        groups.append(Group([(i, e.path) for i, e in zip(ms, entries) if e is not None], {i: best[i] for i in ms}))
    groups.sort(key=lambda g: (-len(g.members), g.members[0][1]))
    return groups


def write_csv(groups: list[Group], out) -> None:
    """group, size, path, inliers (of the image's best verified pair) — one row per image."""
    import csv

    w = csv.writer(out, lineterminator="\n")
    w.writerow(["group", "size", "path", "inliers"])
    for g, group in enumerate(groups, 1):
        for i, path in group.members:
            w.writerow([g, len(group.members), path, group.inliers.get(i, "")])


def _thumbnail(path: str, side: int) -> str:
    """A data: URI of a small JPEG of the image ('' if it cannot be read any more)."""
    from PIL import Image

    from .images import load_image

    try:
        img = Image.fromarray(load_image(path, max_side=side))
    except Exception:  # noqa: BLE001 - a file gone or changed since it was indexed: shown without picture
        return ""
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def write_html(groups: list[Group], path: Path, title: str, side: int = 160) -> None:
    """A contact sheet: one row of thumbnails per group, each with its name (full path on hover)
    and inliers; a single file (thumbnails embedded), readable offline."""
    rows = []
    for g, group in enumerate(groups, 1):
        cells = []
        for i, p in group.members:
            src = _thumbnail(p, side)
            img = f'<img src="{src}" alt="{html.escape(Path(p).name)}">' if src else '<div class="gone">unreadable</div>'
            cells.append(f'<figure title="{html.escape(p)}">{img}<figcaption>{html.escape(Path(p).name)}'
                         f'<br><small>{group.inliers.get(i, "")} inliers</small></figcaption></figure>')
        rows.append(f'<section><h2>Group {g} <small>({len(group.members)} images)</small></h2>'
                    f'<div class="row">{"".join(cells)}</div></section>')
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 20px; color: #1d2330; }}
.row {{ display: flex; flex-wrap: wrap; gap: 10px; }}
figure {{ margin: 0; width: {side}px; }}
figure img, .gone {{ width: {side}px; height: {side}px; object-fit: contain; background: #eee; display: block; }}
figcaption {{ overflow: hidden; text-overflow: ellipsis; white-space: nowrap; font-size: 12px; }}
h2 {{ font-size: 15px; margin: 18px 0 8px; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{len(groups)} groups of images that show the same object or place ({sum(len(g.members) for g in groups)} images),
verified geometrically; the first of each group is its most connected image.</p>
{"".join(rows) if rows else "<p>No duplicates found.</p>"}
</body></html>
"""
    path.write_text(page, encoding="utf-8")


__all__ = ["Group", "duplicate_groups", "write_csv", "write_html"]
