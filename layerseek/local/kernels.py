"""Compiled loops of the MOF scorer (numba): each posting of each list a query word points to is
read once — XOR and popcount of its signature, the threshold, the HE weight and the accumulation
in one pass (Eqs. 3, 5-7) — where the numpy path gathers the entries and makes a dozen passes over
them. `nogil`: the layers of a query are scored in parallel threads. Compiled on first use and
cached on disk (`cache=True`), so later processes start warm.
"""
from __future__ import annotations

import numpy as np
from numba import njit

_M1, _M2, _M4 = np.uint64(0x5555555555555555), np.uint64(0x3333333333333333), np.uint64(0x0F0F0F0F0F0F0F0F)
_H01 = np.uint64(0x0101010101010101)


@njit(nogil=True, cache=True, inline="always")
def _popcount64(v):
    v = v - ((v >> np.uint64(1)) & _M1)
    v = (v & _M2) + ((v >> np.uint64(2)) & _M2)
    v = (v + (v >> np.uint64(4))) & _M4
    return (v * _H01) >> np.uint64(56)


@njit(nogil=True, cache=True)
def accumulate_he(offsets, ids, codes64, qwords, qcodes64, idf2, he_weight, dt, burst, sums):
    """sums[image] += idf2[w] * he_weight[d] for every entry of the lists of `qwords` whose
    signature lies at Hamming distance d < dt from the query's (Eqs. 5-7), in list order. With
    `burst`, a query assignment's matches in one image count idf2[w] * sqrt(sum of their HE
    weights) instead of the sum (intra-image burstiness, Jégou et al. 2009): an image's entries
    in a list are contiguous (an image is added at once), so each run of one id is summed and
    added when it ends."""
    nw = codes64.shape[1]
    for p in range(qwords.shape[0]):
        w = qwords[p]
        weight = idf2[w]
        run_id = -1
        run = 0.0
        for e in range(offsets[w], offsets[w + 1]):
            d = 0
            for k in range(nw):
                d += _popcount64(codes64[e, k] ^ qcodes64[p, k])
            if d < dt:
                if not burst:
                    sums[ids[e]] += weight * he_weight[d]
                    continue
                if ids[e] != run_id:
                    if run_id >= 0:
                        sums[run_id] += weight * np.sqrt(run)
                    run_id = ids[e]
                    run = 0.0
                run += he_weight[d]
        if run_id >= 0:
            sums[run_id] += weight * np.sqrt(run)


@njit(nogil=True, cache=True)
def accumulate_bow(offsets, ids, qwords, idf2, burst, sums):
    """sums[image] += idf2[w] for every entry of the lists of `qwords` (Eq. 3, plain BoW); with
    `burst`, idf2[w] * sqrt(the image's entries in the list)."""
    for p in range(qwords.shape[0]):
        w = qwords[p]
        weight = idf2[w]
        a, b = offsets[w], offsets[w + 1]
        if not burst:
            for e in range(a, b):
                sums[ids[e]] += weight
            continue
        e = a
        while e < b:
            f = e
            while f < b and ids[f] == ids[e]:
                f += 1
            sums[ids[e]] += weight * np.sqrt(f - e)
            e = f
