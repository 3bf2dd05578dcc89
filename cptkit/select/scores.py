"""Per-document selection scores (higher = keep first), their combination, and the cut.

- similarity: cosine between the document's TF-IDF vector and the target sample's, either to
  the target centroid (the mean of the target vectors; Xie et al. 2023 style) or to the nearest
  target document (the maximum over them; Gururangan et al. 2020's nearest neighbours).
- novelty: ln perplexity of the document's beginning under the base model (mean token loss in
  nats): text the model already predicts well teaches it least.
- diversity: windowed word entropy in bits (see features.window_entropy).
- random: a uniform number drawn from a hash of (seed, document id); the baseline.
- mix: sum over methods of weight x percentile rank, ranks in [0, 1] (0 = lowest score), so
  methods on different scales combine without one dominating by its units.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter

import numpy as np

from cptkit.select.features import tfidf

METHODS = ("similarity", "novelty", "diversity")


class TargetProfile:
    """The target sample's TF-IDF vectors, for centroid or nearest-neighbour cosine."""

    def __init__(self, target_counts: list[Counter], idf: np.ndarray, how: str = "centroid"):
        from scipy import sparse

        self.idf, self.how = idf, how
        rows = [tfidf(c, idf) for c in target_counts]
        indptr = np.cumsum([0] + [len(i) for i, _ in rows])
        indices = np.concatenate([i for i, _ in rows]) if rows else np.zeros(0, dtype=np.int64)
        data = np.concatenate([w for _, w in rows]) if rows else np.zeros(0)
        matrix = sparse.csr_matrix((data, indices, indptr), shape=(len(rows), len(idf)))
        if how == "centroid":
            centroid = np.asarray(matrix.mean(axis=0)).ravel()
            norm = np.linalg.norm(centroid)
            self.centroid = centroid / norm if norm > 0 else centroid
        else:
            self.columns = matrix.tocsc()  # a document's terms pick columns: one sparse product

    def score(self, counts: Counter) -> float:
        idx, weights = tfidf(counts, self.idf)
        if not len(idx):
            return math.nan
        if self.how == "centroid":
            return float(weights @ self.centroid[idx])
        return float((self.columns[:, idx] @ weights).max())


def random_score(doc_id: str, seed: int) -> float:
    digest = hashlib.blake2b(f"{seed}\0{doc_id}".encode("utf-8", "backslashreplace"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def percentile_ranks(scores: np.ndarray) -> np.ndarray:
    """Each score's rank scaled to [0, 1] (ties share their mean rank); NaN scores rank 0."""
    n = len(scores)
    out = np.zeros(n)
    ok = ~np.isnan(scores)
    m = int(ok.sum())
    if m == 0:
        return out
    if m == 1:
        out[ok] = 1.0
        return out
    values = scores[ok]
    order = np.argsort(values, kind="stable")
    ranks = np.empty(m)
    sorted_vals = values[order]
    i = 0
    while i < m:  # average the ranks of equal scores
        j = i
        while j + 1 < m and sorted_vals[j + 1] == sorted_vals[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2
        i = j + 1
    out[ok] = ranks / (m - 1)
    return out


def mix_scores(scores: dict[str, np.ndarray], weights: dict[str, float]) -> np.ndarray:
    """sum_m weights[m] * percentile_rank(scores[m]) / sum of weights; NaN where every method is NaN."""
    total = sum(weights.values())
    n = len(next(iter(scores.values())))
    out = np.zeros(n)
    for name, w in weights.items():
        out += w / total * percentile_ranks(scores[name])
    all_nan = np.all([np.isnan(scores[name]) for name in weights], axis=0)
    out[all_nan] = np.nan
    return out


def choose(scores: np.ndarray, sizes: np.ndarray, fraction: float) -> np.ndarray:
    """Boolean mask of the kept documents: highest score first (ties: earlier document first;
    NaN scores last) until the kept sizes reach `fraction` of the total. Sizes are 1 per
    document to keep a share of documents, or their bytes to keep a share of the text."""
    n = len(scores)
    keep = np.zeros(n, dtype=bool)
    if n == 0:
        return keep
    key = np.where(np.isnan(scores), -np.inf, scores)
    order = np.lexsort((np.arange(n), -key))  # last key sorts first: score descending, then index
    budget = fraction * float(sizes.sum())
    taken = np.cumsum(sizes[order].astype(np.float64))
    # Keep documents while what was kept before each one is still under the budget, so the
    # share reaches the fraction (overshooting by at most one document), and never keep nothing.
    before = np.concatenate([[0.0], taken[:-1]])
    chosen = order[before < budget] if budget > 0 else order[:0]
    keep[chosen if len(chosen) else order[:1]] = True
    return keep


def quantiles(values: np.ndarray) -> dict[str, float] | None:
    ok = values[~np.isnan(values)]
    if not len(ok):
        return None
    qs = np.quantile(ok, [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0])
    return {k: round(float(v), 6) for k, v in zip(("min", "p10", "p25", "p50", "p75", "p90", "max"), qs)}
