"""Near-duplicate prompts (template copies) grouped with MinHash + LSH, vectorised in numpy.

Users re-run a template with a word changed ("a portrait of X, highly detailed, 8k"), so a split
grouped by *identical* prompts lets near-copies cross from train to test, and copying the nearest
training negative looks better than it is. Two prompts are near duplicates when the Jaccard
similarity of their word-shingle sets is at least ``threshold``; near duplicates fall into one group
(transitively: connected components), and the split hashes the group, not the prompt.

MinHash: for ``P`` hash functions ``h_p``, ``sig_p(S) = min_{s in S} h_p(s)`` and
``P(sig_p(A) == sig_p(B)) = J(A, B)``. LSH: bands of ``rows`` signature rows; two sets share a band
with probability ``J^rows``, so at least one of ``P // rows`` bands with ``1 - (1 - J^rows)^(P // rows)``
(``band_rows`` picks ``rows`` so that this is >= 0.99 at the threshold). Every pair that
shares a band is then checked with its exact Jaccard, so the band choice sets recall, not precision.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

_M1, _M2, _GOLDEN = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB), np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijective 64-bit mixer (uint64 arithmetic wraps, as intended)."""
    with np.errstate(over="ignore"):
        z = x + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def distinct(x: np.ndarray) -> np.ndarray:
    """``np.unique(x)`` for a 1-D array, by sort: numpy 2.4's ``unique`` hashes integers first, many times
    slower on millions of int64 keys (bench/bench_clean.py in bench/RESULTS.md)."""
    x = np.sort(x)
    return x[np.r_[True, x[1:] != x[:-1]]] if len(x) else x


def _words(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(uint64 hash of every word, word count per text): ``text.lower().replace(",", " , ").split()``.

    Arrow end to end (pandas' ``str.split`` is a Python call per text, about half of the shingling at the
    paper's scale: bench/bench_clean.py in bench/RESULTS.md).
    Arrow's ``utf8_split_whitespace`` splits where ``str.split()`` does (the same whitespace characters,
    a run is one separator: tests/test_neardup.py checks every character ``str.isspace`` accepts), but
    keeps an empty piece at a leading or trailing separator, which is dropped here. Each distinct word
    is hashed once.
    """
    arr = pc.replace_substring(pc.utf8_lower(pa.array(texts, type=pa.large_string())), ",", " , ")
    pieces = pc.utf8_split_whitespace(arr)
    flat, owner = pieces.flatten(), pc.list_parent_indices(pieces).to_numpy()
    word = pc.not_equal(pc.utf8_length(flat), 0)
    flat, owner = flat.filter(word), owner[word.to_numpy(zero_copy_only=False)]
    lens = np.bincount(owner, minlength=len(texts)).astype(np.int64)
    if not len(flat):
        return np.zeros(0, np.uint64), lens
    enc = pc.dictionary_encode(flat)
    vocab = enc.dictionary.to_numpy(zero_copy_only=False).astype(object)
    return _mix(pd.util.hash_array(vocab, categorize=False))[enc.indices.to_numpy()], lens


def shingle_hashes(texts: list[str], n: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(uint64 hash of every word n-gram, start offset of each text's shingles), vectorised.

    Words are the lower-cased text split on whitespace, commas counted as words. A text with fewer
    than ``n`` words (including none) is one shingle of all its words.
    """
    codes, lens = _words(texts)
    word_start = np.r_[0, np.cumsum(lens)[:-1]]
    count = np.maximum(1, lens - n + 1)  # shingles per text
    owner = np.repeat(np.arange(len(texts)), count)
    pos = np.arange(count.sum()) - np.repeat(np.r_[0, np.cumsum(count)[:-1]], count)  # shingle index in text
    first = word_start[owner] + pos
    width = np.minimum(lens[owner], n)  # words in the shingle (0 for an empty text)
    h = np.full(len(owner), _GOLDEN, dtype=np.uint64)
    for j in range(n):
        use = width > j
        h[use] = _mix(h[use] ^ codes[first[use] + j])
    return h, np.r_[0, np.cumsum(count)[:-1]]


def minhash_signatures(texts: list[str], num_perm: int = 64, n: int = 3, seed: int = 0,
                       shingled: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """``[len(texts), num_perm]`` uint64 MinHash signatures of each text's word n-gram set."""
    values, starts = shingled if shingled is not None else shingle_hashes(texts, n)
    # Hash family h_p(x) = (x ^ s_p) * m_p mod 2^64 (m_p odd): a bijection per p, and since x is already a
    # mixed 64-bit hash, two operations per value suffice (the full mixer per p costs several times more).
    salts = _mix(np.arange(num_perm, dtype=np.uint64) + np.uint64(seed) * np.uint64(1_000_003))
    mults = _mix(salts) | np.uint64(1)
    sig = np.empty((len(texts), num_perm), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for p in range(num_perm):
            sig[:, p] = np.minimum.reduceat((values ^ salts[p]) * mults[p], starts)
    return sig


def shingle_sets(values: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sorted keys ``text << 32 | id of the hash``, each text's first key, distinct shingles per text):
    every text's shingle *set* as exact integer keys, sorted once."""
    counts = np.diff(np.r_[starts, len(values)])
    owner = np.repeat(np.arange(len(starts), dtype=np.uint64), counts)
    rank, _ = pd.factorize(values)  # an exact id per distinct hash (any order will do)
    key = distinct(owner << np.uint64(32) | rank.astype(np.uint64))  # sorted; each text's shingles once
    first = np.searchsorted(key >> np.uint64(32), np.arange(len(starts), dtype=np.uint64))
    return key, first, np.diff(np.r_[first, len(key)])


def exact_jaccard(values: np.ndarray, starts: np.ndarray, a: np.ndarray, b: np.ndarray,
                  chunk: int = 1 << 22, sets: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Jaccard of the shingle-hash sets of texts ``a[i]`` and ``b[i]`` (the candidate check: exact, not estimated).

    Vectorised over the pairs (a loop of ``np.intersect1d`` per pair was most of the 256k-row clean:
    bench/bench_clean.py in bench/RESULTS.md): a pair's intersection is how many of its smaller set's
    shingles, asked under the other text's id, are found among the sorted keys of ``shingle_sets`` (``sets``,
    when the caller has them) by one ``searchsorted``. At most ``chunk`` shingles are asked at a time.
    """
    key, first, size = sets if sets is not None else shingle_sets(values, starts)
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    a_smaller = size[a] <= size[b]
    small, big = np.where(a_smaller, a, b), np.where(a_smaller, b, a)
    # Pairs asked in order of the text they are asked under: the searches then walk the keys forward
    # (cache-friendly) instead of jumping across them.
    by_big = np.argsort(big, kind="stable")
    small, big = small[by_big], big[by_big]
    inter_sorted = np.zeros(len(a))
    asked = np.cumsum(size[small])
    lo = 0
    while lo < len(a):
        hi = max(lo + 1, int(np.searchsorted(asked, (asked[lo - 1] if lo else 0) + chunk, side="right")))
        n = size[small[lo:hi]]
        pair = np.repeat(np.arange(hi - lo), n)
        offset = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
        ranks = key[first[small[lo:hi]][pair] + offset] & np.uint64(0xFFFFFFFF)
        q = big[lo:hi][pair].astype(np.uint64) << np.uint64(32) | ranks
        found = key[np.minimum(np.searchsorted(key, q), len(key) - 1)] == q
        inter_sorted[lo:hi] = np.bincount(pair, weights=found, minlength=hi - lo)
        lo = hi
    inter = np.empty(len(a))
    inter[by_big] = inter_sorted
    return inter / (size[a] + size[b] - inter)


def band_rows(threshold: float, num_perm: int, recall: float = 0.99) -> int:
    """The most rows per band (fewest false candidates) that still catch a pair at ``threshold`` with
    probability ``recall``: ``1 - (1 - t^r)^(P // r) >= recall``."""
    for r in range(num_perm, 0, -1):
        if 1 - (1 - threshold**r) ** (num_perm // r) >= recall:
            return r
    return 1


def near_duplicate_groups(texts: list[str], threshold: float = 0.7, num_perm: int = 64, n: int = 3,
                          seed: int = 0) -> np.ndarray:
    """A group id per text (the smallest member index): estimated shingle Jaccard >= ``threshold`` joins."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    m = len(texts)
    if m < 2:
        return np.arange(m)
    shingled = shingle_hashes(texts, n)
    sig = minhash_signatures(texts, num_perm, n, seed, shingled)
    rows = band_rows(threshold, num_perm)
    src, dst = [], []
    for start in range(0, num_perm - rows + 1, rows):
        key = np.zeros(m, dtype=np.uint64)
        for r in range(start, start + rows):
            key = _mix(key ^ sig[:, r])
        order = np.argsort(key, kind="stable")
        k = key[order]
        run_head = order[np.maximum.accumulate(np.where(np.r_[True, k[1:] != k[:-1]], np.arange(m), 0))]
        cand = run_head != order  # every member of a bucket is checked against the bucket's first
        src.append(run_head[cand])
        dst.append(order[cand])
    pair_key = distinct(np.concatenate(src).astype(np.int64) * m + np.concatenate(dst))  # 1-D: unique(axis=0) sorts rows
    pairs = np.stack([pair_key // m, pair_key % m], axis=1)
    sets = shingle_sets(*shingled)
    size_a, size_b = sets[2][pairs[:, 0]], sets[2][pairs[:, 1]]
    # J(A, B) <= min(|A|, |B|) / max(|A|, |B|) (and a float quotient keeps that order), so a pair whose set
    # sizes differ more than that cannot reach the threshold: dropped before the exact check, none lost.
    pairs = pairs[np.minimum(size_a, size_b) / np.maximum(size_a, size_b) >= threshold]
    keep = exact_jaccard(*shingled, pairs[:, 0], pairs[:, 1], sets=sets) >= threshold
    src_all, dst_all = pairs[keep, 0], pairs[keep, 1]
    graph = coo_matrix((np.ones(len(src_all), dtype=np.int8), (src_all, dst_all)), shape=(m, m))
    _, labels = connected_components(graph, directed=False)
    first = np.full(labels.max() + 1, m, dtype=np.int64)
    np.minimum.at(first, labels, np.arange(m))
    return first[labels]
