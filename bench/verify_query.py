"""End-to-end query time of the default pipeline (R-MAC on MobileNetV2, the first 100 verified by
SIFT + RANSAC, one round of verified expansion, diffusion from the verified images over the k-NN
graph of the index) against an index of N images, query decoding and extraction included; also
the time to build that graph the first time and to bring it up to date after 100 additions.
With --matches each query also asks for the verified results' correspondences (the web page's
search).

    .venv/bin/python bench/verify_query.py --size 10000 --queries 40 [--matches]

The index is a real one (the default `layerseek index` settings) of the 100 SMVS reference covers;
it is then padded to N images with synthetic rows written through the real catalog: random
unit vectors and, as their stored local features, copies of the covers' features. The cost of a
query depends on N only through the global search and on the shortlist through the
verifications, so the padding measures what a real N-image index would cost; the queries are
SMVS phone photos, and the answers are checked (the right cover first) as they are timed.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from layerseek.index import Index  # noqa: E402

SMVS = Path(__file__).resolve().parents[2] / "shared" / "data" / "smvs-dvd-covers"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=10000)
    ap.add_argument("--queries", type=int, default=40)
    ap.add_argument("--verify", type=int, default=100)
    ap.add_argument("--no-diffusion", action="store_true", help="an index made without the diffusion")
    ap.add_argument("--matches", action="store_true", help="each query also asks for the verified results' "
                                                          "correspondences, as the web page does")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory()
    root = Path(tmp.name) / "idx"
    idx = Index.create(root, "rmac", backbone="mobilenet_v2", verify={"diffusion": not args.no_diffusion})
    t0 = time.perf_counter()
    idx.add_folder(SMVS / "Reference")
    t_real = (time.perf_counter() - t0) / idx.catalog.count()
    real = list(idx.catalog.entries())
    feats = idx.catalog.features(e.id for e in real)
    rng = np.random.default_rng(0)
    dim = idx.catalog.dim

    def pad(first, last):  # synthetic rows, 1000 a transaction
        for start in range(first, last, 1000):
            idx._commit([row(k) for k in range(start, min(last, start + 1000))])

    def row(k):
        v = rng.standard_normal(dim).astype(np.float32)
        v /= np.linalg.norm(v)
        src = real[k % len(real)]
        return (f"/synthetic/{k:07d}.jpg", 1, 1, hashlib.sha256(str(k).encode()).hexdigest(), 640, 480, v, feats[src.id])

    pad(len(real), args.size)
    print(f"index of {idx.catalog.count()} images ({len(real)} real); real indexing {t_real:.2f} s per image "
          f"(network + SIFT), {idx.catalog.feature_bytes()} bytes of features per image", file=sys.stderr)
    photos = sorted(p for phone in ("Canon", "Droid", "E63", "Palm") for p in (SMVS / phone).glob("*.jpg"))
    photos = [photos[i] for i in np.linspace(0, len(photos) - 1, args.queries).astype(int)]
    idx.search(photos[0], top=10, verify=args.verify, diffusion=False)  # warm: network loaded, store built
    t = time.perf_counter()
    idx.search(photos[0], top=10, verify=args.verify)  # the graph is built at the first diffused search
    t_graph = time.perf_counter() - t
    times, right, drawn = [], 0, 0
    for p in photos:
        t = time.perf_counter()
        hits = idx.search(p, top=10, verify=args.verify, matches=args.matches)
        times.append(time.perf_counter() - t)
        drawn += sum(h.matches is not None for h in hits)
        right += Path(hits[0].path).name == p.name
    pad(args.size, args.size + 100)
    t = time.perf_counter()
    idx.search(photos[0], top=10, verify=args.verify)
    t_update = time.perf_counter() - t
    out = {"size": args.size, "verify": args.verify, "diffusion": idx.verify_settings.get("diffusion"),
           "first_query_with_graph_build_s": t_graph if not args.no_diffusion else None,
           "query_after_100_additions_s": t_update, "queries": len(photos), "right_first": right,
           "matches": args.matches, "hits_with_correspondences": drawn,
           "p50_s": float(np.percentile(times, 50)), "p90_s": float(np.percentile(times, 90)),
           "max_s": float(max(times)), "index_seconds_per_image": t_real,
           "feature_bytes_per_image": idx.catalog.feature_bytes()}
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    idx.close()


if __name__ == "__main__":
    main()
