"""A Milvus collection kept in step with the catalog through its change log (`store.vectors`
says how, and how a store is addressed)."""
from __future__ import annotations

import os

import numpy as np

from ..errors import LayerseekError
from .ann import HNSW_EF_CONSTRUCTION, HNSW_M, hnsw_ef
from .catalog import Catalog


class MilvusStore:
    """A Milvus collection (INT64 primary key `id`, FLOAT_VECTOR `vec`, inner product) in step
    with the catalog through its change log."""

    kind = "milvus"
    CHUNK = 1000  # rows per upsert: well under Milvus's 64 MB message limit at dim 4096

    def __init__(self, catalog: Catalog, spec: dict):
        self.catalog = catalog
        self.spec = spec
        self._client = None
        self._loaded = False

    @property
    def mode(self) -> str:
        return self.catalog.manifest.get("ann", "auto")

    @property
    def lite(self) -> bool:
        return not self.spec["uri"].startswith(("http://", "https://"))

    def index_type(self, mode: str | None = None) -> str:
        """exact -> FLAT; hnsw -> HNSW (the FAISS store's M and efConstruction); auto -> FLAT on
        milvus-lite, AUTOINDEX (Milvus's own choice) on a server."""
        return {"exact": "FLAT", "hnsw": "HNSW"}.get(mode or self.mode, "FLAT" if self.lite else "AUTOINDEX")

    def describe(self, n: int) -> str:
        return f"milvus {self.index_type()}" + (" (milvus-lite)" if self.lite else "")

    @property
    def client(self):
        if self._client is None:
            # gRPC's fork notices are noise next to Ray's worker processes
            os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
            try:
                from pymilvus import MilvusClient
            except ImportError:
                raise LayerseekError("the Milvus store needs pymilvus (and milvus-lite for a local file): "
                                     "pip install 'layerseek[milvus]'") from None
            kwargs = {"uri": self.spec["uri"]}
            if os.environ.get("LAYERSEEK_MILVUS_TOKEN"):
                kwargs["token"] = os.environ["LAYERSEEK_MILVUS_TOKEN"]
            if self.spec.get("db"):
                kwargs["db_name"] = self.spec["db"]
            try:
                self._client = MilvusClient(**kwargs)
            except Exception as e:  # pymilvus raises its own exception types for every failure
                why = str(e)
                if self.lite:
                    why += " (milvus-lite opens a file in one process at a time: is `layerseek serve` running on it?)"
                raise LayerseekError(f"{self.spec['uri']}: cannot open Milvus: {why}") from None
        return self._client

    def create(self, dim: int, mode: str) -> None:
        """Make the collection for `dim`-dimensional vectors searched in `mode` (exact, hnsw,
        auto). A collection of that name already there is replaced only when empty."""
        try:
            self._create(dim, mode)
        except LayerseekError:
            raise
        except Exception as e:
            raise self._failed(f"creating collection {self.spec['collection']!r}", e) from None

    def _create(self, dim: int, mode: str) -> None:
        from pymilvus import DataType, MilvusClient

        c, name = self.client, self.spec["collection"]
        if c.has_collection(name):
            rows = int(c.get_collection_stats(name).get("row_count", 0))
            if rows:
                raise LayerseekError(f"{self.spec['uri']}: collection {name!r} already holds {rows} vectors; "
                                     "name another with ?collection=NAME or drop it")
            c.drop_collection(name)
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vec", DataType.FLOAT_VECTOR, dim=dim)
        params = c.prepare_index_params()
        kind = self.index_type(mode)
        params.add_index(field_name="vec", index_type=kind, metric_type="IP",
                         params={"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION} if kind == "HNSW" else {})
        # Session consistency: a search sees this client's own writes at once (Strong would also
        # wait for the cluster's next time tick, 200 ms per query on a server); other processes'
        # writes show within that tick
        c.create_collection(name, schema=schema, index_params=params, consistency_level="Session")
        self._loaded = True  # created with its index: loaded

    def _failed(self, doing: str, e: Exception) -> LayerseekError:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        return LayerseekError(f"{self.spec['uri']}: Milvus failed while {doing} ({first}); the catalog keeps "
                              "every change and the next run applies what Milvus missed")

    def sync(self) -> None:
        """Apply the catalog's change log (a collection that went missing is rebuilt whole)."""
        try:
            self._sync()
        except LayerseekError:
            raise
        except Exception as e:  # pymilvus raises MilvusException, gRPC errors, ...
            raise self._failed("applying changes", e) from None

    def _sync(self) -> None:
        c, name = self.client, self.spec["collection"]
        if not self._loaded:  # once per client, not per query: is it there, and searchable (loaded)?
            if not c.has_collection(name):
                self.rebuild()
                return
            c.load_collection(name)  # a restarted Milvus releases its collections
            self._loaded = True
        seq = self.catalog.store_seq()
        if self.catalog.last_change() <= seq:
            return
        last, up, gone = self.catalog.changes_after(seq)
        for start in range(0, len(gone), self.CHUNK):
            c.delete(name, ids=gone[start:start + self.CHUNK])
        for start in range(0, len(up), self.CHUNK):
            chunk = up[start:start + self.CHUNK]
            self._upsert(np.asarray(chunk, np.int64), self.catalog.vectors(chunk))
        self.catalog.set_store_seq(last)

    def flush(self) -> None:
        """Seal what was written (after a batch of work): Milvus indexes sealed segments and scans
        growing ones, so an unflushed collection searches slowly (milvus-lite: 60x at 10k)."""
        try:
            self.client.flush(self.spec["collection"])
        except Exception as e:
            raise self._failed("flushing", e) from None

    def rebuild(self) -> None:
        """A new collection filled from the catalog, chunk by chunk."""
        last = self.catalog.last_change()
        self.create(self.catalog.dim, self.mode)
        for ids, vecs in self.catalog.iter_vectors(self.CHUNK):
            self._upsert(ids, vecs)
        self.flush()
        self.catalog.set_store_seq(last)

    def _upsert(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        self.client.upsert(self.spec["collection"], [{"id": int(i), "vec": v} for i, v in zip(ids, vecs)])

    def count(self) -> int:
        res = self.client.query(self.spec["collection"], filter="", output_fields=["count(*)"])
        return int(res[0]["count(*)"])

    def matrix(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids sorted, vectors) of everything indexed, read from the catalog."""
        return self.catalog.matrix()

    def search_many(self, queries: np.ndarray, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """`search` of each row of `queries` (call `sync` first)."""
        return [self.search(q, k) for q in queries]

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, scores) of the k best images, best first (call `sync` first)."""
        params = {"metric_type": "IP", "params": {"ef": hnsw_ef(k)} if self.index_type() == "HNSW" else {}}
        def ask():
            return self.client.search(self.spec["collection"], data=[np.asarray(q, np.float32)], limit=min(k, 16384),
                                      anns_field="vec", search_params=params, output_fields=["id"],
                                      consistency_level="Session")

        try:
            try:
                res = ask()
            except Exception:
                if self.client.has_collection(self.spec["collection"]):
                    raise
                self._loaded = False  # dropped behind our back: rebuilt from the catalog, asked again
                self.sync()
                res = ask()
        except LayerseekError:
            raise
        except Exception as e:
            raise self._failed("searching", e) from None
        hits = res[0] if res else []
        return (np.array([h["id"] for h in hits], np.int64), np.array([h["distance"] for h in hits], np.float32))

    def drop(self) -> None:
        if self.client.has_collection(self.spec["collection"]):
            self.client.drop_collection(self.spec["collection"])
        self._loaded = False

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client, self._loaded = None, False
