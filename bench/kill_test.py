"""Crash safety as a bench: `layerseek index` killed (SIGKILL) at random moments, then run again
to the end, must give the index a clean run gives.

    .venv/bin/python bench/kill_test.py --kills 20 --photos 80

A clean run first indexes N Paris-subset photos (the default pipeline: R-MAC on MobileNetV2 with
SIFT features and the diffusion graph, max side 384 to keep each run short) and times itself.
Then, `--kills` times: a fresh index, `layerseek index` started in its own process and killed
with SIGKILL after a random delay drawn uniformly over the clean run's duration (start-up, the
network, commits and the graph update at the end all get hit), `layerseek check` on what the
kill left, then the same `index` command run again to the end. Each result is compared with the
clean run: rows (and no file twice), each file's vector (bit for bit), its stored local features,
the top 5 of 5 query photos, and `layerseek check` (no problem). Prints one line per kill and a
summary; exit status 1 if any comparison failed.
"""
from __future__ import annotations

import argparse
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PARIS = ROOT.parent / "shared" / "data" / "paris6k-subset" / "jpg"
LAYERSEEK = [sys.executable, "-m", "layerseek.cli"]


def index_cmd(photos: Path, index: Path, max_side: int) -> list[str]:
    return LAYERSEEK + ["index", str(photos), "--index", str(index), "--max-side", str(max_side)]


def snapshot(index: Path) -> dict:
    """{path: (sha256, vector bytes, feature bytes)} of an index, and the number of rows."""
    with sqlite3.connect(f"file:{index / 'catalog.sqlite'}?mode=ro", uri=True) as c:
        rows = c.execute("SELECT i.path, i.sha256, i.vector, f.data FROM images i LEFT JOIN features f ON f.id = i.id")
        rows = rows.fetchall()
    return {"rows": len(rows), "by_path": {r[0]: (r[1], bytes(r[2]), bytes(r[3]) if r[3] else None) for r in rows}}


def top5(index: Path, queries: list[Path]) -> list[list[str]]:
    from layerseek.index import Index

    with Index.open(index) as idx:
        return [[h.path for h in idx.search(q, top=5)] for q in queries]


def check_ok(index: Path) -> tuple[bool, str]:
    from layerseek.health import PROBLEM, check

    problems = [f.line() for f in check(index) if f.level == PROBLEM]
    return not problems, "; ".join(problems)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--photos", type=int, default=80, help="Paris-subset photos indexed")
    ap.add_argument("--max-side", type=int, default=384)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="layerseek-kill-"))
    photos = work / "photos"
    photos.mkdir()
    for p in sorted(PARIS.glob("*.jpg"))[:args.photos]:
        shutil.copy(p, photos / p.name)
    queries = [photos / p.name for p in sorted(photos.iterdir())[::max(1, args.photos // 5)][:5]]

    t0 = time.perf_counter()
    subprocess.run(index_cmd(photos, work / "clean", args.max_side), check=True, capture_output=True)
    clean_s = time.perf_counter() - t0
    clean, clean_top = snapshot(work / "clean"), top5(work / "clean", queries)
    print(f"clean run: {clean['rows']} rows in {clean_s:.1f} s; {args.kills} kills at uniform moments in "
          f"[0, {clean_s:.1f}] s", flush=True)

    failed, left_sound, killed_at = 0, 0, []
    for k in range(args.kills):
        idx = work / f"kill-{k}"
        delay = rng.uniform(0, clean_s)
        proc = subprocess.Popen(index_cmd(photos, idx, args.max_side), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(delay)
        finished = proc.poll() is not None
        if not finished:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        partial = snapshot(idx)["rows"] if (idx / "catalog.sqlite").exists() and (idx / "manifest.json").exists() else 0
        sound = True
        if (idx / "manifest.json").exists():
            sound, why = check_ok(idx)
            left_sound += sound
        else:
            why = "no index yet (killed before the manifest was written)"
            left_sound += 1
        r = subprocess.run(index_cmd(photos, idx, args.max_side), capture_output=True, text=True)
        after = snapshot(idx)
        problems = []
        if r.returncode != 0:
            problems.append(f"rerun exit {r.returncode}: {r.stderr.strip().splitlines()[-1:]}")
        if after["rows"] != clean["rows"] or len(after["by_path"]) != after["rows"]:
            problems.append(f"rows {after['rows']} (clean {clean['rows']})")
        differ = [p for p, v in clean["by_path"].items() if after["by_path"].get(p) != v]
        if differ:
            problems.append(f"{len(differ)} files differ in hash, vector or features ({differ[0]})")
        if top5(idx, queries) != clean_top:
            problems.append("top 5 differs")
        ok_after, why_after = check_ok(idx)
        if not ok_after:
            problems.append(f"check after the rerun: {why_after}")
        if not sound:
            problems.append(f"check after the kill: {why}")
        failed += bool(problems)
        killed_at.append(delay)
        print(f"kill {k + 1:2d} at {delay:5.1f} s{' (had finished)' if finished else ''}: {partial:3d} rows left, "
              f"{'sound' if sound else 'NOT sound'}; after the rerun "
              + ("identical to the clean run" if not problems else "; ".join(problems)), flush=True)
        shutil.rmtree(idx, ignore_errors=True)
    print(f"{args.kills} kills: {args.kills - failed} identical to the clean run after the rerun, {failed} not; "
          f"{left_sound} of {args.kills} left a sound index (layerseek check) at the moment of the kill")
    shutil.rmtree(work, ignore_errors=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
