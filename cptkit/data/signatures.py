"""Document signatures for deduplication and decontamination: an exact hash and MinHash bands.

Both start from the same normalised text: lower case, punctuation removed, whitespace
collapsed, so "Hello,  World!" and "hello world" are exact duplicates.

MinHash (Broder 1997) estimates the Jaccard similarity of two documents' sets of word n-grams.
Each n-gram gets a 64-bit hash (CRC-32 of each word, combined position by position and mixed);
each of bands x rows permutations is a multiply-add hash h -> (a*h + b) mod 2^64 keeping the
upper 32 bits, and the signature is the minimum per permutation. Locality-sensitive hashing
groups the signature into bands of `rows` values: two documents that agree on a whole band are
candidates, which happens with probability 1 - (1 - s^rows)^bands at similarity s (about 0.5
at s = 0.72 for FineWeb's 14 bands x 8 rows). Only the band keys (one 64-bit hash per band) are
stored. Everything is numpy over uint64 with wrap-around arithmetic, deterministic for a seed.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from cptkit.data.config import MinHashConfig

_NON_WORD = re.compile(r"[^\w\s]+")
_CHUNK = 4096  # n-grams hashed at once: bounds the [chunk, permutations] matrix to a few MB
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def normalize(text: str) -> str:
    return " ".join(_NON_WORD.sub(" ", text.lower()).split())


def exact_hash(normalized: str) -> int:
    return int.from_bytes(hashlib.blake2b(normalized.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


def mix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser: spreads every input bit over the 64 output bits."""
    x = x ^ (x >> np.uint64(30))
    x = x * _MIX1
    x = x ^ (x >> np.uint64(27))
    x = x * _MIX2
    return x ^ (x >> np.uint64(31))


@dataclass(frozen=True)
class MinHasher:
    ngram: int = 5
    bands: int = 14
    rows: int = 8
    seed: int = 1

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        n = self.bands * self.rows
        hi = np.iinfo(np.uint64).max
        object.__setattr__(self, "_a", rng.integers(1, hi, n, dtype=np.uint64, endpoint=True) | np.uint64(1))
        object.__setattr__(self, "_b", rng.integers(0, hi, n, dtype=np.uint64, endpoint=True))
        object.__setattr__(self, "_pos", rng.integers(1, hi, max(self.ngram, 1), dtype=np.uint64) | np.uint64(1))
        object.__setattr__(self, "_row", rng.integers(1, hi, self.rows, dtype=np.uint64) | np.uint64(1))

    @classmethod
    def from_config(cls, c: MinHashConfig) -> MinHasher:
        return cls(c.ngram, c.bands, c.rows, c.seed)

    def shingles(self, normalized: str) -> np.ndarray:
        """64-bit hashes of the word n-grams (one n-gram of all words when there are fewer)."""
        words = normalized.split()
        if not words:
            return np.zeros(1, dtype=np.uint64)
        w = np.fromiter((zlib.crc32(x.encode("utf-8", "surrogatepass")) for x in words), dtype=np.uint64, count=len(words))
        n = min(self.ngram, len(w))
        count = len(w) - n + 1
        h = np.zeros(count, dtype=np.uint64)
        for k in range(n):
            h += mix64(w[k : k + count] + np.uint64(k)) * self._pos[k]
        return mix64(h)

    def signature(self, normalized: str) -> np.ndarray:
        """bands * rows minimum hash values (uint64 holding 32-bit values)."""
        shingles = self.shingles(normalized)
        sig = np.full(self.bands * self.rows, np.iinfo(np.uint64).max, dtype=np.uint64)
        for start in range(0, len(shingles), _CHUNK):
            part = shingles[start : start + _CHUNK, None]
            values = (part * self._a + self._b) >> np.uint64(32)
            np.minimum(sig, values.min(axis=0), out=sig)
        return sig

    def band_keys(self, normalized: str) -> np.ndarray:
        """One 64-bit key per band; equal keys mean the band's rows agree (up to 2^-64)."""
        sig = self.signature(normalized).reshape(self.bands, self.rows)
        keyed = (mix64(sig + np.uint64(1)) * self._row).sum(axis=1, dtype=np.uint64)
        return mix64(keyed + np.arange(self.bands, dtype=np.uint64))


def jaccard(a: str, b: str, ngram: int = 5) -> float:
    """The exact Jaccard similarity of two texts' word n-gram sets (for tests and checks)."""
    def grams(t: str) -> set:
        w = normalize(t).split()
        n = min(ngram, len(w)) or 1
        return {tuple(w[i : i + n]) for i in range(max(len(w) - n + 1, 1))}

    x, y = grams(a), grams(b)
    return len(x & y) / len(x | y) if x | y else 1.0
