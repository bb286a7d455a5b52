"""Where an index's global vectors are searched: the embedded FAISS store (the default) or a
Milvus collection (`--store milvus://...`).

The catalog holds every vector either way; it is the truth a store is derived from. The FAISS
store keeps them as rows that change in place, both for exact search (`FlatRows`: one matrix on
disk, new images in a small recent one) and for a FAISS HNSW graph (`HnswGraph`: additions linked
into it); removals are tombstones, and the rows are rebuilt only when too many are dead. The
Milvus store keeps a collection of (id, vector) in step with the catalog through the catalog's
change log: each change is logged in the transaction that makes it and applied to Milvus
afterwards (upserts and deletes, so applying twice is harmless); a process killed in between
catches up at the next open. A collection that went missing is rebuilt from the catalog.

Store addresses (`parse_store`):
    faiss                               the default: embedded FAISS, nothing to run
    milvus:                             milvus-lite, a file milvus.db inside the index directory
    milvus:///abs/path/file.db          milvus-lite at that file
    milvus://HOST:PORT                  a Milvus server or cluster (http); milvus+https:// for TLS
    ...?collection=NAME&db=DB           collection (default: one named after the index) and database
The token of a secured Milvus comes from $LAYERSEEK_MILVUS_TOKEN ("user:password" or an API key)
and is never written into the index.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from ..errors import LayerseekError
from .ann import ANN_MODES, ANN_THRESHOLD, HNSW_EF_CONSTRUCTION, HNSW_EF_MIN, HNSW_M, hnsw_ef  # noqa: F401
from .catalog import Catalog
from .faiss_store import (  # noqa: F401 (the store's parts, named from here by tests and benchmarks)
    FLAT_RECENT_SHARE, HNSW_COMPACT_SHARE, HNSW_RECENT_SHARE, HNSW_SAVE_ROWS, FaissStore, FlatRows, HnswGraph,
    diff_rows, hashes_of, own_name, remove_others, write_new)
from .milvus_store import MilvusStore


# -- addresses and opening -----------------------------------------------------------------------
def parse_store(address: str | None, root: str | Path) -> dict:
    """A store address -> its settings as the manifest keeps them: {"kind": "faiss"} or
    {"kind": "milvus", "uri": ..., "collection": ..., "db": ...}. Fails with the valid forms."""
    if address in (None, "", "faiss"):
        return {"kind": "faiss"}
    forms = "faiss, milvus:, milvus:///path/file.db, milvus://HOST:PORT, milvus+https://HOST:PORT"
    parts = urlsplit(address)
    if parts.scheme not in ("milvus", "milvus+http", "milvus+https"):
        raise LayerseekError(f"unknown store {address!r}; valid: {forms}")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = set(query) - {"collection", "db"}
    if unknown:
        raise LayerseekError(f"store {address!r}: unknown setting {sorted(unknown)[0]!r}; valid: collection, db")
    root = Path(root).expanduser().resolve()
    if parts.netloc:
        if parts.path not in ("", "/"):
            raise LayerseekError(f"store {address!r}: a server address has no path; name the collection "
                                 "with ?collection=NAME")
        scheme = "https" if parts.scheme == "milvus+https" else "http"
        uri = f"{scheme}://{parts.netloc}"
    else:
        path = Path(parts.path) if parts.path else root / "milvus.db"
        if not path.is_absolute():
            raise LayerseekError(f"store {address!r}: a milvus-lite file needs an absolute path (milvus:///abs/file.db)")
        if path.suffix != ".db":
            raise LayerseekError(f"store {address!r}: a milvus-lite file name ends in .db")
        uri = str(path)
    name = query.get("collection") or default_collection(root)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,254}", name):
        raise LayerseekError(f"store {address!r}: collection name {name!r} must be letters, digits and _ "
                             "and not start with a digit")
    return {"kind": "milvus", "uri": uri, "collection": name, "db": query.get("db", "")}


def default_collection(root: Path) -> str:
    """One collection per index directory: its name, and a hash of its full path."""
    stem = re.sub(r"[^A-Za-z0-9_]", "_", root.name)[:40]
    return f"layerseek_{stem}_{hashlib.sha1(str(root).encode()).hexdigest()[:8]}"


def store_address(spec: dict) -> str:
    """The settings back as an address (for `info`)."""
    if spec["kind"] == "faiss":
        return "faiss"
    uri = spec["uri"]
    base = ("milvus+https://" + uri[8:]) if uri.startswith("https://") else (
        "milvus://" + uri[7:] if uri.startswith("http://") else "milvus://" + uri)
    return base + f"?collection={spec['collection']}" + (f"&db={spec['db']}" if spec["db"] else "")


#: store kind -> class
STORES = {"faiss": FaissStore, "milvus": MilvusStore}


def open_store(catalog: Catalog, spec: dict | None = None) -> FaissStore | MilvusStore:
    """The store of an index (its manifest's "store" settings unless `spec` is given)."""
    spec = spec or catalog.store_settings
    return STORES[spec["kind"]](catalog, spec)
