"""Faults survived (issue 27): concurrency scenarios run N times each with the real command line,
counting indexes lost or damaged and the messages seen. Results go in docs/BENCHMARKS.md.

    .venv/bin/python bench/faults.py --tries 20 --photos ../shared/data/paris6k-subset/jpg --n 8

Scenarios:
- creators: two `layerseek index FOLDER --index NEW` started `offset` seconds apart (offsets spread
  over 0-6 s): the index must exist afterwards, hold all N photos after one more run, and `check`
  must find it sound;
- together: `index`, `watch` and `serve` adding to one index at once (tests/faults.py `together`):
  every photo in the index once, uploads all 201, `check` sound;
- kill: `remove`, `repair` and a server's upload killed with SIGKILL after a delay drawn uniformly
  over the command's uninterrupted duration (tests/faults.py `killed`): all or nothing after the
  kill, and the rerun ends as an uninterrupted run;
- slow: 500 connections that never finish their header or body against `layerseek serve
  --header-timeout 2 --body-timeout 2`: seconds until all are closed, and /health's latency
  (p50 / max over a request every 50 ms) meanwhile.
"""
from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import faults as scenarios  # noqa: E402  (the same scenarios tests/test_faults.py runs once)

LS = scenarios.LS


def creators(photos: Path, tries: int, work: Path) -> dict:
    lost = damaged = 0
    n = len(list(photos.iterdir()))
    messages: Counter = Counter()
    for t in range(tries):
        target = work / f"race{t}.lsx"
        offset = 6.0 * t / max(1, tries - 1)
        a = subprocess.Popen([*LS, "index", str(photos), "--index", str(target)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        time.sleep(offset)
        b = subprocess.run([*LS, "index", str(photos), "--index", str(target)], capture_output=True, text=True)
        out_a, err_a = a.communicate()
        messages[scenarios.said((a.returncode, out_a + "\n" + err_a))] += 1
        messages[scenarios.said(b)] += 1
        if not (target / "manifest.json").is_file():
            lost += 1
            continue
        again = scenarios.run("index", str(photos), "--index", str(target))
        if again.returncode != 0 or not scenarios.is_sound(target)[0] or scenarios.rows(target) != (n, n):
            damaged += 1
        shutil.rmtree(target, ignore_errors=True)
    return {"tries": tries, "lost": lost, "damaged": damaged, "messages": dict(messages)}


def slow(index: Path, n: int = 500) -> dict:
    server = scenarios.Server(index, "--header-timeout", "2", "--body-timeout", "2")
    url = server.url
    port = int(url.rsplit(":", 1)[1])
    socks = []
    try:
        first = time.perf_counter()
        urllib.request.urlopen(url + "/health", timeout=10).read()  # the server's first request, apart
        first_ms = 1000 * (time.perf_counter() - first)
        t0 = time.monotonic()
        for i in range(n):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: " if i % 2 else
                      b"POST /search HTTP/1.1\r\nHost: localhost\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                      b"Content-Length: 99999\r\n\r\n--b\r\n")  # a form the server waits on (without the
            # multipart type FastAPI answered 422 at once: no slow body at all, as measured before 2026-12-03)
            s.setblocking(False)
            socks.append(s)
        latencies, open_ = [], set(range(n))
        while open_ and time.monotonic() - t0 < 30:
            t = time.perf_counter()
            urllib.request.urlopen(url + "/health", timeout=10).read()
            latencies.append(1000 * (time.perf_counter() - t))
            for i in list(open_):
                try:
                    if socks[i].recv(4096) == b"":
                        open_.discard(i)
                except BlockingIOError:
                    pass
                except ConnectionResetError:
                    open_.discard(i)
            time.sleep(0.05)
        return {"connections": n, "all_closed_after_s": round(time.monotonic() - t0, 2), "still_open": len(open_),
                "health_p50_ms": round(statistics.median(latencies), 1), "health_max_ms": round(max(latencies), 1),
                "health_slowest_ms": [round(x) for x in sorted(latencies)[-3:]], "health_first_in_flood_ms": round(latencies[0], 1),
                "health_requests": len(latencies), "first_health_before_ms": round(first_ms, 1)}
    finally:
        for s in socks:
            s.close()
        server.close()


def together(photos: Path, tries: int, work: Path) -> dict:
    results = []
    for t in range(tries):
        r = scenarios.together(work / f"together{t}", sorted(photos.glob("*.jpg")))
        print(scenarios.summary(r), file=sys.stderr, flush=True)
        results.append(r)
    messages: Counter = Counter()
    for r in results:
        messages.update(r["messages"])
    return {"tries": tries, "failed": sum(not r["ok"] for r in results), "photos": results[0]["expected"],
            "seconds_p50": statistics.median(r["seconds"] for r in results), "messages": dict(messages)}


def kill(photos: Path, tries: int, work: Path) -> dict:
    import random

    rng = random.Random(27)
    files = sorted(photos.glob("*.jpg"))
    held = work / "held"
    held.mkdir()
    for p in files[:-1]:
        shutil.copy(p, held / p.name)
    template = work / "template.lsx"
    subprocess.run([*LS, "index", str(held), "--index", str(template), *scenarios.SMALL], capture_output=True, check=True)
    named = [held / p.name for p in files[:-1]] + [files[-1]]
    out = {}
    for command in ("remove", "repair", "serve-add"):
        clean = scenarios.clean_seconds(template, work, command, named)
        results = []
        for _ in range(tries):
            r = scenarios.killed(template, work, command, rng.uniform(0, clean), named)
            print(scenarios.summary(r), file=sys.stderr, flush=True)
            results.append(r)
        out[command] = {"tries": tries, "clean_s": round(clean, 2), "failed": sum(not r["ok"] for r in results),
                        "finished_before_kill": sum(r["finished_before_kill"] for r in results),
                        "changed_by_the_killed_run": sum(r["rows_after_kill"] != scenarios.rows(template)[0]
                                                         for r in results)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--photos", type=Path, default=Path("../shared/data/paris6k-subset/jpg"))
    ap.add_argument("--n", type=int, default=8, help="photos in the folder indexed")
    ap.add_argument("--tries", type=int, default=20)
    ap.add_argument("--only", choices=["creators", "together", "kill", "slow"], help="one scenario")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="faults-"))
    photos = work / "photos"
    photos.mkdir()
    for p in sorted(args.photos.glob("*.jpg"))[:args.n]:
        shutil.copy(p, photos / p.name)
    for name, scenario in (("creators", creators), ("together", together), ("kill", kill)):
        if args.only in (None, name):
            print(json.dumps({name: scenario(photos, args.tries, work)}), flush=True)
    if args.only not in (None, "slow"):
        return
    subprocess.run([*LS, "index", str(photos), "--index", str(work / "served.lsx")], capture_output=True, check=True)
    print(json.dumps({"slow": slow(work / "served.lsx")}), flush=True)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
