"""Load on `layerseek serve`: N clients posting real photos to /search for T seconds, while a
prober asks /health every 0.2 s. Records requests, failures, 503s (queue full), search and
/health latency (p50 / p99 / max) and the server's RSS before and after.

    .venv/bin/python bench/serve_load.py --clients 50 --seconds 60            # index made here
    .venv/bin/python bench/serve_load.py --index photos.lsx --photos DIR --clients 50 --seconds 60

Without --index, an index of the Paris subset (gem on MobileNetV2, max side 512, no
verification: the figures in docs/BENCHMARKS.md were taken so) is built in a temporary folder first. The server runs in its own process (`layerseek serve`, loopback only);
the clients are threads of this process using the standard library's http.client.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PARIS = ROOT.parent / "shared" / "data" / "paris6k-subset" / "jpg"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def post_image(port: int, data: bytes, name: str, timeout: float) -> int:
    boundary = uuid.uuid4().hex
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/search?top=10", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        r = conn.getresponse()
        r.read()
        return r.status
    finally:
        conn.close()


def get(port: int, path: str, timeout: float) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        r.read()
        return r.status
    finally:
        conn.close()


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000 if values else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", type=Path, help="an existing index (default: build one of the Paris subset)")
    ap.add_argument("--photos", type=Path, default=PARIS, help="photos the clients post")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--max-queue", type=int, default=None, help="the server's --max-queue (default: its own)")
    ap.add_argument("--json", type=Path, help="write the figures here too")
    args = ap.parse_args()
    cli = [sys.executable, "-m", "layerseek.cli"]
    tmp = tempfile.TemporaryDirectory()
    index = args.index
    if index is None:
        index = Path(tmp.name) / "idx"
        t0 = time.perf_counter()
        subprocess.run(cli + ["index", str(args.photos), "--index", str(index), "--method", "gem",
                              "--backbone", "mobilenet_v2", "--max-side", "512", "--no-verify"], check=False,
                       stdout=subprocess.DEVNULL)
        print(f"index built in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    photos = sorted(p for p in args.photos.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
    payloads = [(p.name, p.read_bytes()) for p in photos[:100]]
    port = free_port()
    extra = ["--max-queue", str(args.max_queue)] if args.max_queue else []
    server = subprocess.Popen(cli + ["serve", str(index), "--port", str(port), *extra],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(600):
            try:
                if get(port, "/health", 1) == 200:
                    break
            except OSError:
                time.sleep(0.1)
        rss_before = rss_mib(server.pid)
        stop = time.monotonic() + args.seconds
        lock = threading.Lock()
        search_lat: list[float] = []
        codes: dict[str, int] = {}
        health_lat: list[float] = []
        health_fail = 0

        def client(seed: int) -> None:
            rnd = random.Random(seed)
            while time.monotonic() < stop:
                name, data = rnd.choice(payloads)
                t = time.perf_counter()
                try:
                    code = str(post_image(port, data, name, timeout=120))
                except OSError as e:
                    code = type(e).__name__
                dt = time.perf_counter() - t
                with lock:
                    codes[code] = codes.get(code, 0) + 1
                    if code == "200":
                        search_lat.append(dt)
                if code == "503":
                    time.sleep(rnd.uniform(0.5, 1.5))  # as Retry-After asks, roughly

        def prober() -> None:
            nonlocal health_fail
            while time.monotonic() < stop:
                t = time.perf_counter()
                try:
                    ok = get(port, "/health", 30) == 200
                except OSError:
                    ok = False
                health_lat.append(time.perf_counter() - t)
                health_fail += not ok
                time.sleep(0.2)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
        threads.append(threading.Thread(target=prober))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rss_after = rss_mib(server.pid)
    finally:
        server.terminate()
        server.wait(30)
    served = codes.get("200", 0)
    failures = sum(v for k, v in codes.items() if k not in ("200", "503"))
    out = {"clients": args.clients, "seconds": args.seconds, "requests": sum(codes.values()), "ok": served,
           "busy_503": codes.get("503", 0), "failures": failures, "codes": codes,
           "search_p50_ms": pct(search_lat, 50), "search_p99_ms": pct(search_lat, 99),
           "searches_per_s": served / args.seconds,
           "health_probes": len(health_lat), "health_failures": health_fail,
           "health_p50_ms": pct(health_lat, 50), "health_p99_ms": pct(health_lat, 99),
           "health_max_ms": max(health_lat) * 1000 if health_lat else float("nan"),
           "rss_before_mib": rss_before, "rss_after_mib": rss_after, "cpus": os.cpu_count()}
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
