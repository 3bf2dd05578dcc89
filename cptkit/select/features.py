"""Text features for data selection: words, hashed TF-IDF vectors, windowed word entropy.

Pure functions of the text (no model), stable across processes and runs: terms are hashed with
CRC-32, not Python's salted `hash`, so a document's vector is the same everywhere.

- Words: lower-cased runs of letters, digits and underscores (identifiers stay whole in code).
- Terms: words and adjacent word pairs (unigrams + bigrams), hashed into 2**bits buckets.
- TF-IDF: sublinear term frequency 1 + ln(tf), times the smoothed inverse document frequency
  ln((1 + n) / (1 + df)) + 1, then L2-normalised, so cosine similarity is a dot product.
- Entropy: the mean, over consecutive windows of `window` words, of the Shannon entropy (bits)
  of the window's word distribution. Windows make it a property of how varied the text is,
  not of how long it is: a long document is not more "diverse" merely for having more words.
"""

from __future__ import annotations

import math
import re
import zlib
from collections import Counter

import numpy as np

WORD = re.compile(r"\w+")
DEFAULT_BITS = 18


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def term_counts(text: str, bits: int = DEFAULT_BITS) -> Counter:
    """Hashed bucket -> count of the document's unigrams and bigrams."""
    ws = words(text)
    mask = (1 << bits) - 1
    counts: Counter = Counter()
    for w in ws:
        counts[zlib.crc32(w.encode("utf-8")) & mask] += 1
    for a, b in zip(ws, ws[1:]):
        counts[zlib.crc32(f"{a} {b}".encode()) & mask] += 1
    return counts


class DocumentFrequency:
    """Counts, per hashed term, how many documents contain it (one pass over a corpus)."""

    def __init__(self, bits: int = DEFAULT_BITS):
        self.bits = bits
        self.df = np.zeros(1 << bits, dtype=np.int64)
        self.n = 0

    def add(self, counts: Counter) -> None:
        if counts:
            self.df[np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))] += 1
        self.n += 1

    def idf(self) -> np.ndarray:
        return np.log((1.0 + self.n) / (1.0 + self.df)) + 1.0


def tfidf(counts: Counter, idf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(bucket indices, L2-normalised weights) of one document; empty arrays for no terms."""
    if not counts:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    idx = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
    tf = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
    weights = (1.0 + np.log(tf)) * idf[idx]
    order = np.argsort(idx)
    idx, weights = idx[order], weights[order]
    return idx, weights / np.linalg.norm(weights)


def window_entropy(text: str, window: int = 256) -> float:
    """Mean Shannon entropy (bits) of the word distribution over windows of `window` words.

    A trailing partial window counts only when it is at least half a window long (or is the
    whole document), so a short tail does not drag a long document's mean down. NaN for a
    document without words.
    """
    ws = words(text)
    if not ws:
        return math.nan
    spans = [ws[i : i + window] for i in range(0, len(ws), window)]
    if len(spans) > 1 and len(spans[-1]) < window / 2:
        spans.pop()
    return sum(_entropy(Counter(s)) for s in spans) / len(spans)


def _entropy(counts: Counter) -> float:
    total = sum(counts.values())
    return -sum(c / total * math.log2(c / total) for c in counts.values())
