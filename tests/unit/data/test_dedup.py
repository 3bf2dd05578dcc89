"""Signatures and the corpus-wide decisions, with exact expected values."""

import numpy as np

from cptkit.data import dedup as dd
from cptkit.data.signatures import MinHasher, exact_hash, jaccard, normalize


def test_normalised_exact_hash_ignores_case_punctuation_and_spacing():
    assert normalize("Hello,  World!\n") == "hello world"
    assert exact_hash(normalize("Hello,  World!")) == exact_hash(normalize("hello world"))
    assert exact_hash(normalize("hello world")) != exact_hash(normalize("hello worlds"))


def test_minhash_finds_near_duplicates_and_not_unrelated_text():
    rng = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(3000)]
    base = list(rng.choice(vocab, 300))
    near = base.copy()
    near[150] = "changed"  # one word in 300: Jaccard about 0.97
    far = list(rng.choice(vocab, 300))
    m = MinHasher()
    a, b, c = (m.band_keys(normalize(" ".join(x))) for x in (base, near, far))
    assert a.shape == (14,) and a.dtype == np.uint64
    assert jaccard(" ".join(base), " ".join(near)) > 0.9
    assert (a == b).sum() >= 10 and not (a == c).any()
    # Deterministic for a seed, different for another.
    assert (MinHasher().band_keys(normalize(" ".join(base))) == a).all()
    assert not (MinHasher(seed=2).band_keys(normalize(" ".join(base))) == a).any()


def test_first_occurrence_and_duplicates_exact_values():
    keys = np.array([5, 3, 5, 7, 3, 5], dtype=np.uint64)
    assert dd.first_occurrence(keys).tolist() == [0, 1, 0, 3, 1, 0]
    exact = np.array([1, 2, 1, 3, 4], dtype=np.uint64)
    bands = np.array([[10, 20], [11, 21], [12, 22], [13, 20], [14, 24]], dtype=np.uint64)
    kind, of = dd.duplicates(exact, bands)
    assert kind.tolist() == [dd.KEEP, dd.KEEP, dd.EXACT, dd.NEAR, dd.KEEP]
    assert of.tolist() == [-1, -1, 0, 0, -1]
    kind, of = dd.duplicates(None, bands)
    assert kind.tolist() == [0, 0, 0, dd.NEAR, 0]


def test_contamination_exact_and_near():
    exact = np.array([1, 2, 3], dtype=np.uint64)
    bands = np.array([[10, 20], [11, 21], [12, 99]], dtype=np.uint64)
    kind = dd.contaminated(exact, bands, np.array([2], dtype=np.uint64), np.array([[50, 99]], dtype=np.uint64))
    assert kind.tolist() == [dd.KEEP, dd.EXACT, dd.NEAR]
    assert dd.contaminated(exact, None, np.array([2], dtype=np.uint64), np.zeros((0, 2), np.uint64)).tolist() == [0, 1, 0]


def test_perplexity_buckets_and_keep_fraction():
    ppl = np.array([10.0, 50.0, np.nan, 30.0, 20.0, 40.0, 60.0])
    bucket, reason = dd.perplexity_select(ppl, [1 / 3, 2 / 3], ["head", "middle", "tail"], None)
    # scored: 10 20 30 40 50 60 -> thirds at quantiles 26.67 and 43.33
    assert bucket.tolist() == [0, 2, -1, 1, 0, 1, 2] and not reason.any()
    bucket, reason = dd.perplexity_select(ppl, [1 / 3, 2 / 3], ["head", "middle"], 0.5)
    # keep the lowest ceil(0.5 * 6) = 3: 10, 20, 30; the unscored row is kept
    assert reason.tolist() == [0, 1, 0, 0, 0, 1, 1]
    bucket, reason = dd.perplexity_select(ppl, [1 / 3, 2 / 3], ["head"], None)
    assert reason.tolist() == [0, 2, 0, 2, 0, 2, 2]
