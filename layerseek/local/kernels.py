"""Compiled loops of the MOF scorer (numba). The query's assignments come grouped by word
(`group_by_word`), so each posting of each list a query word points to is read from memory once
however many of the query's descriptors chose that word — XOR and popcount against every
signature of the group, the threshold, the HE weight and the accumulation in one pass (Eqs. 3,
5-7). Real lists are skewed (Zipf-like): a crowded word is chosen by tens of the query's
descriptors. Measured (docs/BENCHMARKS.md), grouping alone saved little — the comparisons, not
the reads, were the cost; the tight loop for 128-bit signatures (`_he_128`) and cutting each
layer into parts for the threads (`deal`) made most of the gain. `nogil`: the parts of a query
are scored in parallel threads. Compiled on first use and cached on disk (`cache=True`), so
later processes start warm.
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


def group_by_word(qwords: np.ndarray, qcodes64: np.ndarray | None):
    """The query's assignments sorted by word (stable): (the distinct words, where each word's
    assignments start — one more entry than words —, the signatures as nw x n 64-bit words, so a
    group's are contiguous per word of the signature; None without HE)."""
    qwords = np.asarray(qwords, np.int64)
    order = np.argsort(qwords, kind="stable")
    words, starts = np.unique(qwords[order], return_index=True)
    starts = np.append(starts, len(qwords)).astype(np.int64)
    codes_t = None if qcodes64 is None else np.ascontiguousarray(np.asarray(qcodes64)[order].T)
    return words, starts, codes_t


def deal(work: np.ndarray, parts: int) -> list[np.ndarray]:
    """Indices 0..len(work)-1 dealt into `parts` sets of about equal total work, each sorted: by
    work, heaviest first, dealt back and forth (0, 1, .., parts-1, parts-1, .., 0, 0, 1, ..)."""
    order = np.argsort(-np.asarray(work), kind="stable")
    r = np.arange(len(order)) % (2 * parts)
    part = np.where(r < parts, r, 2 * parts - 1 - r)
    return [np.sort(order[part == j]).astype(np.int64) for j in range(parts)]


@njit(nogil=True, cache=True)
def accumulate_he(offsets, ids, codes64, gwords, gstarts, groups, qcodes_t, idf2, he_weight, dt, burst, sums):
    """For each word group g in `groups` (indices into gwords/gstarts): sums[image] += idf2[w] *
    he_weight[d] for every entry of the list of its word w and every query signature of the group
    at Hamming distance d < dt from the entry's (Eqs. 5-7); an entry's matches are summed first
    and added once. With `burst`, a query assignment's matches in one image count idf2[w] *
    sqrt(sum of their HE weights) instead of the sum (intra-image burstiness, Jégou et al. 2009):
    an image's entries in a list are contiguous (an image is added at once), so each run of one id
    is summed per assignment and added when it ends."""
    if codes64.shape[1] == 2 and not burst:  # 128-bit signatures, the default: a tighter loop
        _he_128(offsets, ids, codes64, gwords, gstarts, groups, qcodes_t[0], qcodes_t[1], idf2, he_weight, dt, sums)
        return
    nw = codes64.shape[1]
    udt = np.uint64(dt)
    width = 1
    for g in groups:
        width = max(width, gstarts[g + 1] - gstarts[g])
    run = np.zeros(width)
    for g in groups:
        w = gwords[g]
        weight = idf2[w]
        a, b = gstarts[g], gstarts[g + 1]
        run_id = -1
        for e in range(offsets[w], offsets[w + 1]):
            image = ids[e]
            if burst and image != run_id:
                if run_id >= 0:
                    sums[run_id] += weight * _drain_sqrt(run, b - a)
                run_id = image
            acc = 0.0
            for j in range(a, b):
                d = np.uint64(0)
                for k in range(nw):
                    d += _popcount64(codes64[e, k] ^ qcodes_t[k, j])
                if d < udt:
                    if burst:
                        run[j - a] += he_weight[d]
                    else:
                        acc += he_weight[d]
            if acc > 0.0:
                sums[image] += weight * acc
        if burst and run_id >= 0:
            sums[run_id] += weight * _drain_sqrt(run, b - a)


@njit(nogil=True, cache=True, inline="always")
def _drain_sqrt(run, n):
    """sum of sqrt(run[:n]), leaving run[:n] at 0."""
    acc = 0.0
    for j in range(n):
        acc += np.sqrt(run[j])
        run[j] = 0.0
    return acc


@njit(nogil=True, cache=True)
def _he_128(offsets, ids, codes64, gwords, gstarts, groups, q0, q1, idf2, he_weight, dt, sums):
    """`accumulate_he` without burstiness for two 64-bit words per signature: the two halves held
    in registers (about 2.3x faster than the general loop over the words)."""
    udt = np.uint64(dt)
    for g in groups:
        w = gwords[g]
        weight = idf2[w]
        a, b = gstarts[g], gstarts[g + 1]
        for e in range(offsets[w], offsets[w + 1]):
            c0, c1 = codes64[e, 0], codes64[e, 1]
            acc = 0.0
            for j in range(a, b):
                d = _popcount64(c0 ^ q0[j]) + _popcount64(c1 ^ q1[j])
                if d < udt:
                    acc += he_weight[d]
            if acc > 0.0:
                sums[ids[e]] += weight * acc


@njit(nogil=True, cache=True)
def accumulate_bow(offsets, ids, gwords, gstarts, groups, idf2, burst, sums):
    """For each word group g in `groups`: sums[image] += idf2[w] * (the query's assignments to w)
    for every entry of the list of its word w (Eq. 3, plain BoW); with `burst`, each assignment
    counts idf2[w] * sqrt(the image's entries in the list) once per image."""
    for g in groups:
        w = gwords[g]
        weight = idf2[w] * (gstarts[g + 1] - gstarts[g])
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
