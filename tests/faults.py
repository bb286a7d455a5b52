"""Fault scenarios run with the real command line (issue 27): several writers on one index at
once, and writing commands killed with SIGKILL. Each function runs one try and returns what it
saw; tests/test_faults.py runs each once in CI, bench/faults.py runs them N times for
docs/BENCHMARKS.md.

An index survives a try when `layerseek check` finds it sound, it holds every file it was asked
to hold (each once), and a rerun of the interrupted command ends where an uninterrupted one ends.
"""
from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

LS = [sys.executable, "-m", "layerseek.cli"]
#: small and fast, but the default pipeline's parts (SIFT features, verification, the graph)
SMALL = ["--method", "gem", "--backbone", "mobilenet_v2", "--layers", "last", "--max-side", "160"]
TOKEN = "fault-scenario-token"


def run(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*LS, *args], capture_output=True, text=True, timeout=timeout, env=env)


def rows(index: Path) -> tuple[int, int]:
    """(rows, distinct paths) of an index's catalog, read without the package."""
    with sqlite3.connect(f"file:{index / 'catalog.sqlite'}?mode=ro", uri=True, timeout=30) as c:
        return c.execute("SELECT COUNT(*), COUNT(DISTINCT path) FROM images").fetchone()


def is_sound(index: Path) -> tuple[bool, str]:
    r = run("check", str(index))
    return r.returncode == 0, " ".join((r.stdout + r.stderr).split())


def said(p: subprocess.CompletedProcess | tuple[int, str]) -> str:
    """A command's last error line (or its last line), without the index's path: a message kind."""
    rc, text = (p.returncode, p.stdout + "\n" + p.stderr) if isinstance(p, subprocess.CompletedProcess) else p
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")] or [ln for ln in lines if " added, " in ln]
    line = (errors or lines or [""])[-1]
    line = line.split(".lsx: ", 1)[-1].split(" (since")[0].split("layerseek pid")[0]
    return f"exit {rc}: {line[:90]}"


class Server:
    """`layerseek serve INDEX --port 0` in its own process, with a token for adding."""

    def __init__(self, index: Path, *extra: str):
        env = {**os.environ, "LAYERSEEK_TOKEN": TOKEN}
        self.proc = subprocess.Popen([*LS, "serve", str(index), "--port", "0", *extra], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env=env)
        line = self.proc.stdout.readline()
        if " at " not in line:
            self.proc.kill()
            raise RuntimeError(f"serve did not start: {line}{self.proc.stdout.read()}")
        self.url = line.rsplit(" at ", 1)[1].split()[0].rstrip("/")
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()  # keep its pipe drained

    def add(self, photo: Path, tries: int = 200) -> tuple[int, int]:
        """POST /images until it is not busy: (final status, 503s met)."""
        busy = 0
        for _ in range(tries):
            boundary = uuid.uuid4().hex
            body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{photo.name}\"\r\n"
                    "Content-Type: image/jpeg\r\n\r\n").encode() + photo.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
            req = urllib.request.Request(self.url + "/images", data=body, method="POST", headers={
                "Authorization": f"Bearer {TOKEN}", "Content-Type": f"multipart/form-data; boundary={boundary}"})
            try:
                with urllib.request.urlopen(req, timeout=300) as r:
                    return r.status, busy
            except urllib.error.HTTPError as e:
                if e.code != 503:
                    return e.code, busy
                busy += 1
                time.sleep(min(2.0, float(e.headers.get("Retry-After") or 1)))
            except (OSError, http.client.HTTPException):  # the server went away (killed)
                return 0, busy
        return 503, busy

    def close(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def together(work: Path, photos: list[Path], settle: float = 240) -> dict:
    """`index`, `watch` and `serve` adding to one index at once. The index is made with two
    photos; then, together: photos copied one by one into a watched folder, `layerseek index` of
    another folder (run again while it meets "index busy"), and uploads to the server (sent
    again after each 503). Sound when every photo is in the index once and `check` passes."""
    seed, watched, other = work / "seed", work / "watched", work / "other"
    for d in (seed, watched, other):
        d.mkdir(parents=True)
    parts = [photos[i::4] for i in range(4)]  # seed, watched, indexed, uploaded
    for p in parts[0]:
        shutil.copy(p, seed / p.name)
    for p in parts[2]:
        shutil.copy(p, other / p.name)
    index = work / "x.lsx"
    made = run("index", str(seed), "--index", str(index), *SMALL)
    if made.returncode != 0:
        raise RuntimeError(said(made))
    server = Server(index)
    watcher = subprocess.Popen([*LS, "watch", str(watched), "--index", str(index), "--debounce", "0.5"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: dict[str, int] = {}
    statuses: list[int] = []

    def note(kind: str) -> None:
        seen[kind] = seen.get(kind, 0) + 1

    def copy_in():
        for p in parts[1]:
            shutil.copy(p, watched / p.name)
            time.sleep(0.3)

    def index_other():
        for _ in range(200):
            r = run("index", str(other), "--index", str(index))
            note("index: " + said(r))
            if r.returncode == 0:
                return
            time.sleep(0.5)

    def upload():
        for p in parts[3]:
            status, busy = server.add(p)
            statuses.append(status)
            if busy:
                note(f"upload: 503 busy (sent again) x{busy}")

    threads = [threading.Thread(target=f) for f in (copy_in, index_other, upload)]
    t0 = time.monotonic()
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        expected = len(photos)
        while time.monotonic() - t0 < settle and rows(index)[0] < expected:
            time.sleep(0.5)  # the watch's last run
        settled_s = time.monotonic() - t0
    finally:
        watcher.send_signal(signal.SIGINT)
        try:
            out, _ = watcher.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            watcher.kill()
            out, _ = watcher.communicate()
        server.close()
    for line in out.splitlines():
        if "error:" in line:
            note("watch: " + said((1, line)))
    n, distinct = rows(index)
    sound, why = is_sound(index)
    return {"expected": expected, "rows": n, "distinct": distinct, "uploads": statuses, "sound": sound,
            "check": why, "seconds": round(settled_s, 1), "messages": seen,
            "ok": sound and n == distinct == expected and all(s == 201 for s in statuses)}


#: rows an uninterrupted run of each writing command changes the index by
CHANGE = {"remove": -2, "repair": -1, "serve-add": +1}


def _prepared(template: Path, work: Path, command: str, photos: list[Path]) -> tuple[Path, list[str] | None]:
    """A fresh copy of `template` ready for `command`, and the command's arguments (None: an
    upload to a server). "repair" gets a catalog with one vector of the wrong length to mend."""
    index = work / "k.lsx"
    shutil.rmtree(index, ignore_errors=True)
    shutil.copytree(template, index)
    if command == "repair":
        with sqlite3.connect(index / "catalog.sqlite") as c:
            c.execute("UPDATE images SET vector = x'00' WHERE id = (SELECT MAX(id) FROM images)")
    args = {"remove": ["remove", str(index), str(photos[0]), str(photos[1])], "repair": ["repair", str(index)],
            "serve-add": None}
    if command not in args:
        raise ValueError(command)
    return index, args[command]


def killed(template: Path, work: Path, command: str, delay: float, photos: list[Path]) -> dict:
    """One writing command on a copy of the index `template` (which holds all `photos` but the
    last), killed with SIGKILL `delay` seconds after it started; then `check`, and the command run
    again to the end.

    command: "remove" (two photos), "repair" (of a catalog with a vector of the wrong length),
    "serve-add" (an upload of the last photo; the server is killed). Sound when the kill left the
    index all-or-nothing (`check` passes, or for repair reports just what it said of the damage)
    and the rerun ends as an uninterrupted run does."""
    index, args = _prepared(template, work, command, photos)
    before = rows(index)[0]
    given = is_sound(index)[1]  # what check says before the command (repair: of the damage)
    if args is not None:
        proc = subprocess.Popen([*LS, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(delay)
        finished = proc.poll() is not None
        proc.kill()
        proc.communicate()
    else:
        server = Server(index)
        threading.Thread(target=server.add, args=(photos[-1],), daemon=True).start()
        time.sleep(delay)
        finished = False
        server.close(signal.SIGKILL)
    n, distinct = rows(index)
    sound, why = is_sound(index)
    sound = sound or why == given  # repair killed before it mended: the damage it was given, nothing else
    all_or_nothing = n in (before, before + CHANGE[command]) and n == distinct
    if args is not None:
        ran_again = run(*args).returncode in (0, 1)  # `remove` of files gone already says so and exits 1
    else:
        server = Server(index)
        ran_again = server.add(photos[-1])[0] == 201
        server.close()
    final, final_distinct = rows(index)
    final_sound, final_why = is_sound(index)
    rerun_ok = ran_again and final == final_distinct == before + CHANGE[command] and final_sound
    return {"command": command, "delay_s": round(delay, 2), "finished_before_kill": finished,
            "rows_after_kill": n, "all_or_nothing": all_or_nothing, "sound_after_kill": sound,
            "check_after_kill": why, "rerun_ok": rerun_ok, "check_after_rerun": final_why,
            "ok": all_or_nothing and sound and rerun_ok}


def clean_seconds(template: Path, work: Path, command: str, photos: list[Path]) -> float:
    """How long the command takes uninterrupted on a copy prepared as `killed` prepares it (the
    kill delays are drawn over it); for an upload, from the request on (the server started)."""
    index, args = _prepared(template, work, command, photos)
    if args is not None:
        t0 = time.monotonic()
        run(*args)
        return time.monotonic() - t0
    server = Server(index)
    t0 = time.monotonic()
    server.add(photos[-1])
    seconds = time.monotonic() - t0
    server.close()
    return seconds


def summary(result: dict) -> str:
    return json.dumps(result, sort_keys=True)
