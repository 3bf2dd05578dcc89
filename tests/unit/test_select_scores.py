"""Selection scores on hand-written documents whose order is known, and the cut, exactly."""

import math
import zlib

import numpy as np
import pytest

from cptkit.select.features import DocumentFrequency, term_counts, tfidf, window_entropy, words
from cptkit.select.scores import (
    TargetProfile,
    choose,
    mix_scores,
    percentile_ranks,
    quantiles,
    random_score,
)

CATS = ["the cat sat on the mat and the cat purred", "a small cat chased the mouse across the mat"]
DOCS = {
    "cats": "my cat sat on the warm mat; the cat purred at the mouse",
    "mixed": "the cat ignored the quarterly bond yields and the interest rate",
    "bonds": "quarterly bond yields rose as the central bank raised the interest rate",
}


def profile(how: str) -> tuple[TargetProfile, dict]:
    df = DocumentFrequency()
    counts = {k: term_counts(v) for k, v in DOCS.items()}
    target = [term_counts(t) for t in CATS]
    for c in [*counts.values(), *target]:
        df.add(c)
    return TargetProfile(target, df.idf(), how), counts


def test_words_and_hashed_terms_are_stable():
    assert words("Hello, World_1 x2!") == ["hello", "world_1", "x2"]
    counts = term_counts("x y x", bits=18)
    mask = (1 << 18) - 1
    assert counts[zlib.crc32(b"x") & mask] == 2 and counts[zlib.crc32(b"x y") & mask] == 1
    assert sum(counts.values()) == 3 + 2  # three unigrams, two bigrams


def test_tfidf_is_unit_length_with_sublinear_tf():
    idf = np.ones(1 << 18)
    idx, w = tfidf(term_counts("a a b", bits=18), idf)
    assert np.linalg.norm(w) == pytest.approx(1.0)
    raw = {zlib.crc32(b"a") & (2**18 - 1): 1 + math.log(2)}
    a = int(np.where(idx == next(iter(raw)))[0][0])
    assert w[a] == pytest.approx((1 + math.log(2)) / math.sqrt((1 + math.log(2)) ** 2 + 3))


@pytest.mark.parametrize("how", ["centroid", "nearest"])
def test_similarity_ranks_on_topic_above_off_topic(how):
    prof, counts = profile(how)
    s = {k: prof.score(c) for k, c in counts.items()}
    assert s["cats"] > s["mixed"] > s["bonds"] >= 0


def test_nearest_neighbour_of_a_target_document_is_itself():
    prof, _ = profile("nearest")
    assert prof.score(term_counts(CATS[1])) == pytest.approx(1.0)
    assert math.isnan(prof.score(term_counts("!!! ...")))  # no words: no score


def test_window_entropy_exact_values():
    assert window_entropy("a a a a") == 0.0
    assert window_entropy("a b c d") == pytest.approx(2.0)
    # Two full windows of 4 words: entropy 0 and 2 bits; the mean is 1.
    assert window_entropy("a a a a w x y z", window=4) == pytest.approx(1.0)
    # A tail shorter than half a window is left out; one of half a window or more counts.
    assert window_entropy("a b c d a", window=4) == pytest.approx(2.0)
    assert window_entropy("a b c d a b", window=4) == pytest.approx((2.0 + 1.0) / 2)
    assert math.isnan(window_entropy("... !!!"))


def test_diversity_ranks_boilerplate_below_prose():
    boiler = " ".join(["copyright all rights reserved"] * 40)
    prose = " ".join(f"w{i}" for i in range(160))
    assert window_entropy(prose) > window_entropy(DOCS["bonds"]) > window_entropy(boiler)


def test_percentile_ranks_ties_and_nan():
    assert percentile_ranks(np.array([3.0, 1.0, 2.0])).tolist() == [1.0, 0.0, 0.5]
    assert percentile_ranks(np.array([1.0, 1.0, 2.0])).tolist() == [0.25, 0.25, 1.0]
    assert percentile_ranks(np.array([np.nan, 5.0, 7.0])).tolist() == [0.0, 0.0, 1.0]
    assert percentile_ranks(np.array([np.nan, 5.0])).tolist() == [0.0, 1.0]


def test_mix_is_the_weighted_mean_of_ranks():
    scores = {"similarity": np.array([0.9, 0.1, 0.5]), "novelty": np.array([1.0, 3.0, 2.0])}
    mixed = mix_scores(scores, {"similarity": 3.0, "novelty": 1.0})
    # ranks: similarity [1, 0, .5], novelty [0, 1, .5]
    assert mixed.tolist() == pytest.approx([0.75, 0.25, 0.5])
    both_nan = mix_scores({"a": np.array([np.nan, 1.0]), "b": np.array([np.nan, 2.0])}, {"a": 1, "b": 1})
    assert math.isnan(both_nan[0]) and both_nan[1] == 1.0


def test_choose_takes_best_until_the_fraction_is_reached():
    scores = np.array([0.1, 0.9, 0.5, np.nan])
    sizes = np.array([10, 10, 10, 10])
    assert choose(scores, sizes, 0.5).tolist() == [False, True, True, False]
    # by bytes: the 0.9 document alone is 60% of the text
    assert choose(scores, np.array([10, 60, 20, 10]), 0.5).tolist() == [False, True, False, False]
    # overshoot by at most one document; ties go to the earlier document
    assert choose(np.array([1.0, 1.0, 1.0]), np.array([1, 1, 1]), 0.4).tolist() == [True, True, False]
    assert choose(scores, sizes, 1e-9).sum() == 1 and choose(scores, sizes, 1.0).all()
    assert choose(np.zeros(0), np.zeros(0, dtype=int), 0.5).tolist() == []


def test_random_scores_are_fixed_by_seed_and_id():
    a = [random_score(f"doc{i}", 0) for i in range(200)]
    assert a == [random_score(f"doc{i}", 0) for i in range(200)]
    assert a != [random_score(f"doc{i}", 1) for i in range(200)]
    assert all(0 <= x < 1 for x in a) and 0.4 < sum(a) / len(a) < 0.6


def test_quantiles_ignore_nan():
    q = quantiles(np.array([np.nan, 0.0, 10.0]))
    assert q["min"] == 0.0 and q["p50"] == 5.0 and q["max"] == 10.0
    assert quantiles(np.array([np.nan])) is None
