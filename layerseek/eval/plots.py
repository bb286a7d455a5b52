"""Pictures of an evaluation: the precision-recall curve and, per query, its top results with the
correct ones framed green, the wrong ones red and junk grey."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..datasets import Dataset, Query


def pr_curve(ranks, positives, junk=(), exclude=None) -> tuple[np.ndarray, np.ndarray]:
    """Recall and precision after each retrieved image (junk and the query itself removed)."""
    drop = set(junk) | ({exclude} if exclude is not None else set())
    pos = set(positives) - ({exclude} if exclude is not None else set())
    ranked = [r for r in ranks if r not in drop]
    hits = np.cumsum([r in pos for r in ranked], dtype=float)
    n = np.arange(1, len(ranked) + 1)
    return hits / max(len(pos), 1), hits / n


def mean_pr_curve(rankings, queries: list[Query], grid: int = 101) -> tuple[np.ndarray, np.ndarray]:
    """Interpolated precision (max precision at recall >= r) averaged over queries on a recall grid."""
    rs = np.linspace(0, 1, grid)
    curves = []
    for ranks, q in zip(rankings, queries):
        if not q.positives:
            continue
        rec, prec = pr_curve(ranks, q.positives, q.junk, q.db_index)
        interp = np.maximum.accumulate(prec[::-1])[::-1] if len(prec) else prec
        curves.append([interp[rec >= r].max() if np.any(rec >= r) else 0.0 for r in rs])
    return rs, np.mean(curves, axis=0) if curves else np.zeros_like(rs)


def _label(q: Query, idx: int) -> str:
    if idx in q.positives or idx in q.hard:
        return "ok"
    return "junk" if idx in q.junk else "wrong"


def write_plots(ds: Dataset, ranked: list[tuple[int, list[int]]], out_dir: str | Path, title: str,
                top: int = 8, max_queries: int = 50, thumb: int = 160) -> list[Path]:
    """precision_recall.png and queries/<n>_<name>.png (at most `max_queries` of them)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image, ImageDraw, ImageOps

    from ..images import load_image

    out_dir = Path(out_dir)
    (out_dir / "queries").mkdir(parents=True, exist_ok=True)
    written = []
    qs = [ds.queries[qi] for qi, _ in ranked]
    rs, ps = mean_pr_curve([r for _, r in ranked], qs)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(rs, ps)
    ax.set(xlabel="recall", ylabel="interpolated precision", xlim=(0, 1), ylim=(0, 1.02),
           title=f"{ds.name}: {title}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_dir / "precision_recall.png", dpi=120)
    plt.close(fig)
    written.append(out_dir / "precision_recall.png")

    colours = {"ok": (40, 170, 60), "wrong": (210, 40, 40), "junk": (150, 150, 150)}

    def tile(path, bbox=None, rotate=0, colour=None):
        try:
            arr = load_image(path, max_side=thumb * 2, bbox=bbox, rotate=rotate)
            im = ImageOps.contain(Image.fromarray(arr), (thumb - 8, thumb - 8))
        except Exception:  # noqa: BLE001 - an unreadable file shows as a blank tile
            im = Image.new("RGB", (thumb - 8, thumb - 8), (240, 240, 240))
        cell = Image.new("RGB", (thumb, thumb), colour or (255, 255, 255))
        cell.paste(im, ((thumb - im.width) // 2, (thumb - im.height) // 2))
        return cell

    for n, (qi, ranks) in enumerate(ranked[:max_queries]):
        q = ds.queries[qi]
        shown = [j for j in ranks if j != q.db_index][:top]
        sheet = Image.new("RGB", (thumb * (len(shown) + 1) + 8, thumb + 20), (255, 255, 255))
        sheet.paste(tile(q.path, q.bbox, q.rotate, (60, 90, 200)), (0, 0))
        draw = ImageDraw.Draw(sheet)
        draw.text((4, thumb + 4), f"query {q.path.name}", fill=(0, 0, 0))
        for k, j in enumerate(shown, 1):
            lab = _label(q, j)
            sheet.paste(tile(ds.database[j], None, ds.rotations.get(ds.database[j].name, 0), colours[lab]),
                        (thumb * k + 8, 0))
            draw.text((thumb * k + 12, thumb + 4), f"{k}. {lab}", fill=colours[lab])
        p = out_dir / "queries" / f"{n:03d}_{q.path.stem}.png"
        sheet.save(p)
        written.append(p)
    return written
