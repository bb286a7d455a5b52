"""Where the time of `layerseek index` and `layerseek search` goes, on phone-size photos.

    .venv/bin/python bench/speed_profile.py photos /var/tmp/phone30 --n 30          # make 12 MP JPEGs (+ 640 px, HEIC)
    .venv/bin/python bench/speed_profile.py photos /var/tmp/phone1000 --n 1000      # the 1,000 of "Fourth round"
    .venv/bin/python bench/speed_profile.py index /var/tmp/phone30 [--runtime torch,onnx]
    .venv/bin/python bench/speed_profile.py search /var/tmp/phone30 [--runtime torch,onnx]
    .venv/bin/python bench/speed_profile.py served /var/tmp/mixed10k.lsx --photos /var/tmp/phone30/12mp \
        [--n 12] [--rounds 2] [--trees /tmp/wt-before,.] [--terminal]
    .venv/bin/python bench/speed_profile.py timeline /var/tmp/mixed10k.lsx --photos /var/tmp/phone30/12mp \
        [--n 12] [--network-threads 1]
    .venv/bin/python bench/speed_profile.py files /var/tmp/mixed10k.lsx --photos /var/tmp/phone30/12mp [--n 6]
    PYTHONPATH=/tmp/ov .venv/bin/python bench/speed_profile.py runtimes -      # pip install --target /tmp/ov openvino

`photos` writes N phone-size JPEGs (4032 x 3024, quality 92) made from the
shared collections' largest real photos (Paris subset, Holidays samples, SMVS covers, then Corel: cropped to
4:3 and brought up to 12 MP with Lanczos: about 1.6 MB each, less than a phone's 3-4 MB, as an
enlarged photo holds less detail), the same photos at 640 px, and the first 5 as HEIC.
They are benchmark data: keep them outside the repository.

`index`: each stage of one photo, timed alone on each photo in turn (2 threads for the network,
as `layerseek index` runs it): read + SHA-256, decode (JPEG draft, EXIF, resize to 1024), the
network, pooling, SIFT (1000 features at 640 px), the word codes; then `layerseek index` of the
folder as a user runs it (a fresh process, its start included), and the graph step after it.

`search`: `layerseek search INDEX photo` from a shell (wall time, median of 5), and where it goes:
imports, opening the index, loading the network, decoding the query, the network, SIFT, and the
search stages (first stage, verification, diffusion).

`timeline`: where one search's time goes, in one process (a server's case): `Index.open(INDEX)`,
a search to warm up, then a search of each of the first N photos with timers around its stages
(decoding, the network with its pooling, SIFT and the word candidates on the thread beside it, the
first stage, verification and each pair's RANSAC, diffusion): for each, the median of its start,
end and duration in ms from the search's start, which thread ran it, and each search's wall and
CPU time. `--network-threads 1` runs the network on one thread (default: every core).

`runtimes`: the default network (MobileNetV2 cut at s8, s16, s32 and last) on one 1024 x 768
input, as `layerseek index` runs it (ONNX Runtime, 2 threads, no spinning), against OpenVINO on the
same cached graph (f32, 2 threads, latency hint) where it is importable: median wall and CPU time of
8 runs, three alternating rounds, and the largest difference of each layer relative to its largest
activation.

`files`: what asking a search for more files costs, in one process (`Index.search` of the first N
photos with `top` 20, 200 and 1000, then `distinct=True` with `top` 10: identical files counted
once), the median wall time of each, twice over, alternating.

`served`: `layerseek search INDEX PHOTO --json` from a shell while `layerseek serve INDEX` runs,
for the first N photos of a folder (wall time of each command, its start included): the server
started from each tree in turn (a worktree of another commit measures that one, with this
checkout's environment), `--rounds` times, alternating; one search first, not timed, waits for
the server's warm-up. `--terminal`: each search prints its table on a pseudo-terminal, as at a
shell, instead of --json into a pipe.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# the command as a user runs it, from this checkout (a worktree of another commit measures that one)
LAYERSEEK = [sys.executable, "-m", "layerseek.cli"]


def phone_photo(job: tuple[int, str, str]) -> None:
    """One source photo cropped to 4:3 and brought up to 4032 x 3024 (and down to 640 x 480)."""
    from PIL import Image

    i, src, out = job
    out = Path(out)
    im = Image.open(src).convert("RGB")
    w, h = im.size
    if w * 3 >= h * 4:  # crop to 4:3 landscape
        cw = h * 4 // 3
        im = im.crop(((w - cw) // 2, 0, (w - cw) // 2 + cw, h))
    else:
        ch = w * 3 // 4
        im = im.crop((0, (h - ch) // 2, w, (h - ch) // 2 + ch))
    big = im.resize((4032, 3024), Image.Resampling.LANCZOS)
    big.save(out / "12mp" / f"phone{i:03d}.jpg", quality=92)
    big.resize((640, 480), Image.Resampling.LANCZOS).save(out / "640" / f"phone{i:03d}.jpg", quality=92)
    if i < 5:
        from pillow_heif import from_pillow

        from_pillow(big).save(out / "heic" / f"phone{i:03d}.heic", quality=90)


def make_photos(out: Path, n: int) -> None:
    from multiprocessing import Pool

    from PIL import Image

    from layerseek.datasets import shared_data_dir

    data = shared_data_dir()
    sources = sorted(data.glob("samples/holidays/*.jpg")) + sorted(data.glob("paris6k-subset/jpg/*.jpg"))
    sources += sorted(data.glob("smvs-dvd-covers/**/*.jpg")) + sorted(data.glob("corel1k/jpg/*.jpg"))
    sources = sorted(sources, key=lambda p: -Image.open(p).size[0] * Image.open(p).size[1])[:n]
    for sub in ("12mp", "640", "heic"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    with Pool(os.cpu_count()) as pool:
        pool.map(phone_photo, [(i, str(src), str(out)) for i, src in enumerate(sources)], chunksize=4)
    print(f"{len(sources)} photos in {out}/12mp, /640, and {min(5, len(sources))} in /heic")


def ms(values) -> str:
    return f"{1000 * statistics.median(values):7.1f}"


def stage_profile(folder: Path, runtime: str) -> dict:
    """Median ms of each stage of one photo, over the photos of `folder`."""
    os.environ["LAYERSEEK_RUNTIME"] = runtime
    import numpy as np
    from PIL import Image, ImageOps

    from layerseek.images import draft_scale, load_image, read_snapshot, resized_size, shrink
    from layerseek.index import Index

    with tempfile.TemporaryDirectory() as tmp:
        idx = Index.create(Path(tmp) / "p.lsx", "rmac", backbone="mobilenet_v2", verify=True)
        words = idx.vocabulary() if (idx.verify_settings or {}).get("words") else None
        t = {k: [] for k in ("read+sha256", "decode (draft)", "EXIF", "resize", "load_image (all three)",
                             "normalise", "network", "pooling", "SIFT", "word codes")}
        fx = idx.fx
        photos = sorted(p for p in folder.iterdir() if p.is_file())
        fx(load_image(photos[0]))  # warm-up
        for p in photos:
            t0 = time.perf_counter()
            data, _, _ = read_snapshot(p)
            hashlib.sha256(data).hexdigest()
            t["read+sha256"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            im = Image.open(p)
            if im.format == "JPEG":  # as load_image: the draft scale that covers the target (or nearly)
                w, h = im.size
                scale = draft_scale(w, h, *resized_size(w, h, idx.method.max_side))
                im.draft("RGB", (w // scale, h // scale))
            im.load()
            t["decode (draft)"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            ImageOps.exif_transpose(im, in_place=True)  # as load_image: no copy when nothing turns
            im = im if im.mode == "RGB" else im.convert("RGB")
            t["EXIF"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            target = resized_size(*im.size, idx.method.max_side)
            if target != im.size:  # as load_image: area averaging (images.shrink)
                shrink(np.asarray(im), target)
            t["resize"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            img = load_image(p, max_side=idx.method.max_side, data=data)
            t["load_image (all three)"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            x = fx.preprocess(img)
            t["normalise"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            acts = fx.forward(x)
            t["network"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            idx.method.encode(acts)
            t["pooling"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            f = idx.local_features(img)
            t["SIFT"].append(time.perf_counter() - t0)
            if words is not None:
                t0 = time.perf_counter()
                words.encode(f, 1)
                t["word codes"].append(time.perf_counter() - t0)
        idx.close()
    return {k: v for k, v in t.items() if v}


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode not in (0, 3):
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return wall, proc.stdout + proc.stderr


def timed_on_terminal(cmd: list[str], env: dict | None = None) -> tuple[float, str]:
    """`timed`, the command's standard output a terminal (a pseudo-terminal, read to its end): what
    a user at a shell sees printed, a table rather than lines for a pipe."""
    master, slave = os.openpty()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=slave, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    os.close(slave)
    shown = b""
    while True:
        try:
            chunk = os.read(master, 1 << 16)
        except OSError:  # the other end closed (EIO)
            break
        if not chunk:
            break
        shown += chunk
    err = proc.stderr.read()
    proc.wait()
    wall = time.perf_counter() - t0
    os.close(master)
    if proc.returncode not in (0, 3):
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {err.decode(errors='replace')[-500:]}")
    return wall, shown.decode(errors="replace") + err.decode(errors="replace")


def index_profile(folder: Path, runtimes: list[str]) -> None:
    for kind in ("12mp", "640", "heic"):
        sub = folder / kind
        if not sub.is_dir():
            continue
        n = sum(1 for _ in sub.iterdir())
        for rt in runtimes:
            stages = stage_profile(sub, rt)
            print(f"\n{kind} ({n} photos), runtime {rt}: ms per photo, each stage alone (median)")
            for k, v in stages.items():
                print(f"  {k:24s} {ms(v)}")
            env = dict(os.environ, LAYERSEEK_RUNTIME=rt)
            with tempfile.TemporaryDirectory() as tmp:
                wall, out = timed(LAYERSEEK + ["index", str(sub), "--index", f"{tmp}/i.lsx"], env)
                print(f"  `layerseek index` of the {n}: {wall:.2f} s wall, {n / wall:.2f} photos/s with its start")


def search_profile(folder: Path, runtimes: list[str], repeat: int = 5) -> None:
    photos = sorted((folder / "12mp").iterdir())
    query = sorted((folder / "640").iterdir())[0] if (folder / "640").is_dir() else photos[0]
    py = sys.executable
    print("imports, each in a fresh process (median of 3):")
    for mod in ("torch", "cv2", "faiss", "onnxruntime", "layerseek.cli", "layerseek.index"):
        walls = []
        for _ in range(3):
            out = subprocess.run([py, "-c", f"import time; t=time.perf_counter(); import {mod}; "
                                  "print(time.perf_counter()-t)"], capture_output=True, text=True, cwd=ROOT)
            walls.append(float(out.stdout.strip() or "nan"))
        print(f"  import {mod:18s} {ms(walls)} ms")
    for rt in runtimes:
        env = dict(os.environ, LAYERSEEK_RUNTIME=rt)
        with tempfile.TemporaryDirectory() as tmp:
            index = f"{tmp}/i.lsx"
            timed(LAYERSEEK + ["index", str(folder / "12mp"), "--index", index], env)
            walls = [timed(LAYERSEEK + ["search", index, str(query)], env)[0] for _ in range(repeat)]
            help_walls = [timed(LAYERSEEK + ["--help"], env)[0] for _ in range(3)]
            print(f"\nruntime {rt}: `layerseek search INDEX {query.name}` {statistics.median(walls):.2f} s wall "
                  f"(median of {repeat}; `layerseek --help` {statistics.median(help_walls):.2f} s)")
            code = (f"import os, time; os.environ['LAYERSEEK_RUNTIME']={rt!r}; t=[time.perf_counter()]\n"
                    "import layerseek.cli, layerseek.index; t.append(time.perf_counter())\n"
                    f"from layerseek.index import Index; idx=Index.open({index!r}); t.append(time.perf_counter())\n"
                    "fx=idx.fx; t.append(time.perf_counter())\n"
                    f"img=idx.query_image({str(query)!r}); t.append(time.perf_counter())\n"
                    "fx(img); t.append(time.perf_counter())\n"
                    "idx.local_features(img, query=True); t.append(time.perf_counter())\n"
                    f"idx.search({str(query)!r}, top=10); t.append(time.perf_counter())\n"
                    "import json; print(json.dumps([b-a for a,b in zip(t,t[1:])]))")
            parts = json.loads(subprocess.run([py, "-c", code], capture_output=True, text=True, env=env,
                                              cwd=ROOT).stdout)
            names = ["imports (layerseek.cli, .index)", "open the index", "load the network", "decode the query",
                     "the network", "SIFT", "search (again: extraction + stages)"]
            for name, v in zip(names, parts):
                print(f"  {name:38s} {1000 * v:7.1f} ms")
            print(f"  {'so the stages (search less extraction)':38s} {1000 * (parts[6] - sum(parts[3:6])):7.1f} ms")


def timeline_profile(index: Path, photos: Path, n: int, network_threads: int | None) -> None:
    import functools
    import threading
    from collections import defaultdict

    import layerseek.query as query
    import layerseek.stages as stages
    import layerseek.verify.features as features
    import layerseek.verify.geometry as geometry
    from layerseek.index import Index

    events: list[tuple[str, str, float, float]] = []

    def timer(owner, name: str, label: str, static: bool = False) -> None:
        fn = getattr(owner, name)

        @functools.wraps(fn)
        def timed_call(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                events.append((label, threading.current_thread().name, t0, time.perf_counter()))

        setattr(owner, name, staticmethod(timed_call) if static else timed_call)

    for owner, name, label in [(query.Query, "query_image", "decode"), (query.Query, "encode_query", "network + pooling"),
                               (features, "sift_features", "SIFT"), (stages.WordCandidates, "find", "word candidates"),
                               (query.Query, "search_vector", "first stage"), (stages.Verification, "inliers", "verification"),
                               (geometry.Verifier, "verify", "one pair (matches + RANSAC)"),
                               (stages.Diffusion, "order", "diffusion")]:
        timer(owner, name, label)
    idx = Index.open(index, threads=network_threads)
    shots = sorted(p for p in photos.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))[:n]
    idx.search(shots[0], top=10)  # warm-up: the network, the word engine, the graph
    spans: dict[tuple[str, str], list] = defaultdict(list)
    walls, cpus = [], []
    for photo in shots:
        events.clear()
        t0, c0 = time.perf_counter(), time.process_time()
        idx.search(photo, top=10)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
        per_search: dict[tuple[str, str], list] = defaultdict(list)
        for label, thread, a, b in events:
            side = "main" if thread == "MainThread" else "beside" if thread.startswith("layerseek") else "pool"
            per_search[label, side].append((a - t0, b - t0))
        for key, got in per_search.items():  # a stage run more than once (expansion), or nested: its first
            busy, until = 0.0, float("-inf")  # start, its last end, and the time covered by its runs
            for a, b in sorted(got):
                busy += max(0.0, b - max(a, until))
                until = max(until, b)
            spans[key].append((min(a for a, _ in got), max(b for _, b in got), busy, len(got)))
    idx.close()
    print(f"{len(shots)} searches of {index}, network on {network_threads or os.cpu_count()} thread(s): "
          f"wall median {statistics.median(walls):.3f} s, CPU {statistics.median(cpus):.3f} s "
          f"({sum(cpus) / sum(walls):.2f} cores busy)")
    print(f"  {'stage':30s} {'thread':7s} {'start':>6s} {'end':>6s} {'time':>6s} {'calls':>6s}   (ms from the search's start, medians)")
    for (label, side), v in sorted(spans.items(), key=lambda kv: statistics.median(x[0] for x in kv[1])):
        med = [statistics.median(x[i] for x in v) for i in range(4)]
        print(f"  {label:30s} {side:7s} {1000 * med[0]:6.0f} {1000 * med[1]:6.0f} {1000 * med[2]:6.0f} {med[3]:6.0f}")


def served_profile(index: Path, photos: Path, n: int, rounds: int, trees: list[Path], terminal: bool = False) -> None:
    shots = sorted(p for p in photos.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))[:n]
    announced = index / "serve.json"
    # the console script's short path (`layerseek.shell`), from the tree on PYTHONPATH
    shell = [sys.executable, "-c", "import sys; from layerseek.shell import main; sys.argv[0] = 'layerseek'; main()"]
    for r in range(rounds):
        for tree in trees:
            env = dict(os.environ, PYTHONPATH=str(tree))
            server = subprocess.Popen([sys.executable, "-m", "layerseek.cli", "serve", str(index), "--port", "0"],
                                      cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                for _ in range(600):
                    if announced.is_file() and json.loads(announced.read_text() or "{}").get("pid") == server.pid:
                        break
                    time.sleep(0.1)
                else:
                    raise SystemExit(f"the server from {tree} did not start")
                search = shell + ["search", str(index)]
                timed(search + [str(shots[0]), "--json"], env)  # waits for the warm-up
                walls = []
                for photo in shots:
                    wall, out = (timed_on_terminal(search + [str(photo)], env) if terminal
                                 else timed(search + [str(photo), "--json"], env))
                    if "searched by the server" not in out:
                        raise SystemExit(f"{photo}: not searched by the server ({out[-300:]})")
                    walls.append(wall)
            finally:
                server.terminate()
                server.wait(timeout=60)
            print(f"round {r + 1}, {tree}: median {statistics.median(walls):.3f} s, {min(walls):.2f}-{max(walls):.2f} s, "
                  f"{sum(w <= 0.5 for w in walls)} of {len(walls)} at or under 0.5 s")


def files_profile(index: Path, photos: Path, n: int) -> None:
    from layerseek.index import Index

    shots = sorted(p for p in photos.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))[:n]
    asks = [("top 20", {"top": 20}), ("top 200", {"top": 200}), ("top 1000", {"top": 1000}),
            ("top 10 photos (distinct)", {"top": 10, "distinct": True})]
    with Index.open(index) as idx:
        idx.search(shots[0], top=10)  # the network, the graph and the word engine loaded
        for r in range(2):
            for name, kw in asks:
                walls = []
                for photo in shots:
                    t0 = time.perf_counter()
                    idx.search(photo, **kw)
                    walls.append(time.perf_counter() - t0)
                print(f"round {r + 1}  {name:26s} median {statistics.median(walls):.3f} s", flush=True)


def runtimes_profile(rounds: int = 3, runs: int = 8) -> None:
    import numpy as np

    from layerseek.backbones.runtime import OnnxExtractor

    fx = OnnxExtractor("mobilenet_v2", threads=2)
    x = np.random.default_rng(0).standard_normal((1, 3, 768, 1024), dtype=np.float32)
    graph = fx._graph(fx.layers)
    contenders = {"onnxruntime": lambda: graph(x)}
    try:
        import openvino as ov
    except ImportError:
        print("openvino is not importable: ONNX Runtime alone")
    else:
        from importlib.metadata import version

        from layerseek.backbones.runtime import graph_path, weights_sha256

        core = ov.Core()
        compiled = core.compile_model(core.read_model(str(graph_path("mobilenet_v2", fx.layers,
                                                                      weights_sha256(fx.spec)))), "CPU",
                                      {"INFERENCE_NUM_THREADS": 2, "PERFORMANCE_HINT": "LATENCY",
                                       "INFERENCE_PRECISION_HINT": "f32"})
        request = compiled.create_infer_request()

        def openvino_run():
            request.infer({0: x})
            return {n: request.get_output_tensor(i).data.copy() for i, n in enumerate(fx.layers)}

        contenders[f"openvino {version('openvino')}"] = openvino_run
        ref, got = contenders["onnxruntime"](), openvino_run()
        print("largest difference / largest activation:",
              ", ".join(f"{n} {float(np.abs(ref[n] - got[n]).max() / np.abs(ref[n]).max()):.1e}" for n in fx.layers))
    for r in range(rounds):
        for name, run in contenders.items():
            run()
            walls, cpu0 = [], time.process_time()
            for _ in range(runs):
                t0 = time.perf_counter()
                run()
                walls.append(time.perf_counter() - t0)
            cpu = (time.process_time() - cpu0) / runs
            print(f"round {r + 1}  {name:18s} median {1000 * statistics.median(walls):6.1f} ms   "
                  f"CPU {1000 * cpu:6.1f} ms a run")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=("photos", "index", "search", "served", "timeline", "runtimes", "files"))
    ap.add_argument("folder", type=Path, help="the photos' folder; for `served`, the index")
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--runtime", default="torch,onnx")
    ap.add_argument("--photos", type=Path, help="served: the folder of query photos")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--trees", default=str(ROOT), help="served: checkouts to start the server from, in turn")
    ap.add_argument("--network-threads", type=int, help="timeline: the network's threads (default: every core)")
    ap.add_argument("--terminal", action="store_true",
                    help="served: each search prints its table on a (pseudo-)terminal, as at a shell (else --json into a pipe)")
    args = ap.parse_args()
    if args.what == "photos":
        make_photos(args.folder, args.n)
    elif args.what == "index":
        index_profile(args.folder, args.runtime.split(","))
    elif args.what == "runtimes":
        runtimes_profile()
    elif args.what == "files":
        files_profile(args.folder, args.photos, min(args.n, 30))
    elif args.what == "timeline":
        timeline_profile(args.folder, args.photos, args.n, args.network_threads)
    elif args.what == "served":
        served_profile(args.folder, args.photos, min(args.n, 1000), args.rounds,
                       [Path(t).resolve() for t in args.trees.split(",")], args.terminal)
    else:
        search_profile(args.folder, args.runtime.split(","))


if __name__ == "__main__":
    main()
