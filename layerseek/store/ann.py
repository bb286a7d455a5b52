"""The search settings both vector stores share (FAISS and Milvus alike), so that their figures
compare."""
from __future__ import annotations

#: above this many images `ann="auto"` searches a FAISS HNSW graph instead of the exact matrix
ANN_THRESHOLD = 50_000
ANN_MODES = ("auto", "exact", "hnsw")
#: HNSW graph parameters shared by both stores, so that their figures compare
HNSW_M, HNSW_EF_CONSTRUCTION = 32, 80

#: the least efSearch of an HNSW query: 256 reaches recall@10 0.987 at 2.1 ms p50 on 1M vectors,
#: where 64 gave 0.913 (bench/ann_inplace.py, docs/BENCHMARKS.md "HNSW in place")
HNSW_EF_MIN = 256


def hnsw_ef(k: int) -> int:
    """efSearch for a top-k query: at least HNSW_EF_MIN, and twice k (FAISS and Milvus alike)."""
    return max(HNSW_EF_MIN, 2 * k)
