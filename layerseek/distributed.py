"""Extraction on Ray: decoding and the forward passes of `layerseek index --ray` as a Ray Data
pipeline (batches of files, one model per worker actor, a GPU per worker when the cluster has
GPUs). The driver plans the work and commits the results into the index's catalog exactly as the
local path does, so incremental runs, resume after a kill and failure reports are the same.

Workers read the image files by path: on a cluster, the photos must be at the same path on every
node (a shared file system), and layerseek with its weights (`layerseek models pull`) installed
on each. The index directory itself stays with the driver; a worker gets the method's parameters
and learned state (whitening, MOF vocabularies) as bytes.
"""
from __future__ import annotations

import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .errors import ImageError, LayerseekError

#: the address that starts a private Ray instance on this machine
LOCAL = "local"


def sha_prefixes(shas) -> np.ndarray:
    """Sorted first 64 bits of hex SHA-256 digests: a compact set workers test content against.
    Two contents can share a prefix; the driver checks the full digest (`Index._index_files`)."""
    return np.unique(np.fromiter((int(s[:16], 16) for s in shas), np.uint64))


def has_prefix(prefixes: np.ndarray, sha: str) -> bool:
    p = np.uint64(int(sha[:16], 16))
    i = np.searchsorted(prefixes, p)
    return bool(i < len(prefixes) and prefixes[i] == p)


def learned_state(root: Path) -> dict[str, bytes]:
    """The index's learned files (whitening, MOF model) as {relative path: bytes}."""
    from .store.manifest import learned_files

    return {str(p.relative_to(root)): p.read_bytes() for p in learned_files(root)}


def _connect(address: str) -> None:
    import os
    import warnings

    # Ray Data logs each run's plan and progress (and that its bars are off): the CLI has its own bar
    os.environ.setdefault("RAY_DATA_LOG_LEVEL", "ERROR")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # gRPC's notices about Ray's forks
    import ray

    warnings.filterwarnings("ignore", message=".*concurrent actors.*", category=UserWarning)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    if ray.is_initialized():
        return
    # the workers log to their own files; the driver shows one progress bar of its own
    kwargs = dict(include_dashboard=False, log_to_driver=False, configure_logging=True, logging_level="ERROR")
    try:
        if address == LOCAL:
            ray.init(**kwargs)
        else:
            ray.init(address=address, **kwargs)
    except Exception as e:  # Ray raises ConnectionError, RuntimeError, ValueError ... by cause
        raise LayerseekError(f"Ray at {address!r}: cannot connect ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None


class _Encoder:
    """A Ray Data actor: builds the method and the network once, then turns batches of files
    into (content hash, vector or payload, size) rows; a bad file becomes a row with an error."""

    def __init__(self, params: dict, state: dict[str, bytes], known: np.ndarray, threads: int, device: str,
                 forward_batch: int):
        from .backbones import FeatureExtractor
        from .methods import method_from_params

        self.method = method_from_params(params)
        with tempfile.TemporaryDirectory() as tmp:
            for rel, data in state.items():
                p = Path(tmp, rel)
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(data)
            self.method = self.method.load_model(tmp) if self.method.kind == "local" else self.method.load_whitening(tmp)
        self.fx = FeatureExtractor(self.method.backbone, self.method.layers, threads=threads, device=device)
        self.known = known
        self.forward_batch = forward_batch
        self.decoders = ThreadPoolExecutor(max_workers=max(2, threads))

    def _encode(self, acts) -> bytes:
        acts = {k: v.cpu() for k, v in acts.items()}
        out = self.method.encode(acts)[0]
        return bytes(out) if self.method.kind == "local" else np.asarray(out, np.float32).tobytes()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import hashlib

        from .images import load_image, read_snapshot

        n = len(batch["path"])
        sha, payload, width, height = [""] * n, [b""] * n, [0] * n, [0] * n
        reason, detail = [""] * n, [""] * n
        size, mtime = batch["size"].copy(), batch["mtime"].copy()

        def decode(i):
            path = batch["path"][i]
            try:  # hash, pixels, size and time of one version of the file
                data, got_size, got_mtime = read_snapshot(path)
            except ImageError as e:
                reason[i], detail[i] = e.reason, e.detail
                return None
            size[i], mtime[i] = got_size, got_mtime
            sha[i] = hashlib.sha256(data).hexdigest()
            if has_prefix(self.known, sha[i]):
                return None  # indexed already (the driver copies its vector)
            try:
                return load_image(path, max_side=self.method.max_side, data=data)
            except ImageError as e:
                reason[i], detail[i] = e.reason, e.detail
                return None

        def encode(i, acts):
            try:
                payload[i] = self._encode(acts)
            except Exception as e:  # one image must not stop the batch
                reason[i], detail[i] = "unreadable", f"encoding failed: {type(e).__name__}: {e}"

        # decoding (which releases the GIL) runs in threads ahead of the network
        decoded = self.decoders.map(decode, range(n))
        if self.forward_batch == 1:  # each image through the network while the next ones decode
            for i, img in enumerate(decoded):
                if img is not None:
                    height[i], width[i] = img.shape[:2]
                    encode(i, self.fx(img))
        else:  # GPU: same-size images batched
            images, where = [], []
            for i, img in enumerate(decoded):
                if img is not None:
                    height[i], width[i] = img.shape[:2]
                    images.append(img)
                    where.append(i)
            for j, acts in self.fx.extract(images, batch_size=self.forward_batch):
                encode(where[j], acts)
        return {"path": batch["path"], "size": size, "mtime": mtime,
                "sha": np.array(sha, dtype=object), "payload": np.array(payload, dtype=object),
                "width": np.array(width, np.int64), "height": np.array(height, np.int64),
                "reason": np.array(reason, dtype=object), "detail": np.array(detail, dtype=object)}


def ray_results(index, todo: list[tuple[str, int, int]], address: str = LOCAL, workers: int | None = None,
                files_per_task: int = 8) -> Iterator[tuple[tuple[str, int, int], str | None, tuple | None,
                                                           ImageError | None]]:
    """Encode `todo` [(path, size, mtime_ns)] on Ray. Yields, in completion order,
    ((path, size, mtime_ns), sha256, (vector or payload, width, height) or None when the content is
    indexed already, ImageError or None), as `Index._local_results` does."""
    if getattr(index.method, "precision", "float") != "float":  # Ray's actors run PyTorch's network
        raise LayerseekError("--ray encodes with PyTorch's float network; this index's network is "
                             f"{index.method.precision} (index it without --ray)")
    try:
        import ray
    except ImportError:
        raise LayerseekError("--ray needs Ray: pip install 'layerseek[ray]'") from None
    _connect(address)
    res = ray.cluster_resources()
    gpus = int(res.get("GPU", 0))
    cpus = max(1, int(res.get("CPU", 1)))
    if gpus:
        workers = workers or gpus
        per_worker = {"num_gpus": 1, "num_cpus": 1}
        threads, device, forward_batch = 1, "cuda", 8
    else:
        workers = workers or cpus
        threads = max(1, cpus // workers)
        per_worker = {"num_cpus": min(threads, cpus / workers)}  # more workers than CPUs: they share
        device, forward_batch = "cpu", 1  # one image per pass on CPUs: the local path's exact numbers
    method = index.method
    ctor = dict(params=index.catalog.manifest["params"], state=learned_state(index.catalog.root),
                known=sha_prefixes(index.catalog.shas().values()), threads=threads, device=device,
                forward_batch=forward_batch)
    items = [{"path": p, "size": s, "mtime": m} for p, s, m in todo]
    # a block's results reach the driver (and are committed) when the whole block is done: small
    # blocks keep the loss on a kill to a few batches; past 20,000 blocks they grow instead
    blocks = min(len(items), max(2 * workers, min(20_000, -(-len(items) // files_per_task))))
    ds = ray.data.from_items(items, override_num_blocks=blocks)
    out = ds.map_batches(_Encoder, fn_constructor_kwargs=ctor, batch_size=files_per_task, batch_format="numpy",
                         compute=ray.data.ActorPoolStrategy(size=workers), **per_worker)
    is_local = method.kind == "local"
    batches = iter(out.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=2))
    while True:
        try:
            b = next(batches)
        except StopIteration:
            return
        except Exception as e:  # a worker that cannot start (no layerseek or weights on a node) ...
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise LayerseekError(f"Ray at {address!r}: the extraction failed ({first}); what was done before "
                                 "is committed, run the command again to go on") from None
        for i in range(len(b["path"])):
            item = (str(b["path"][i]), int(b["size"][i]), int(b["mtime"][i]))
            err = ImageError(item[0], b["reason"][i], b["detail"][i]) if b["reason"][i] else None
            payload = b["payload"][i]
            enc = None
            if not err and len(payload):
                vec = bytes(payload) if is_local else np.frombuffer(payload, np.float32).copy()
                enc = (vec, int(b["width"][i]), int(b["height"][i]))
            yield item, b["sha"][i] or None, enc, err

