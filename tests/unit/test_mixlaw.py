"""The fixed-N D-CPT law: the fit recovers known parameters; held-out R^2; the recommendation."""

import math

import numpy as np
import pytest

from cptkit.mixlaw import N_PARAMS, Law, at_bounds, fit, held_out_ratios, r_squared, recommend
from cptkit.sweep import measured_choice

SHARES = [0.05, 0.1, 0.25, 0.5, 0.75, 0.95, 1.0]
TOKENS = [1e5, 3e5, 1e6, 3e6]
GRID = (np.array([d for d in TOKENS for _ in SHARES]), np.array(SHARES * len(TOKENS)))


@pytest.mark.parametrize("true", [
    Law(E=1.5, B=50.0, beta=0.3, eta=0.5, C=0.3, gamma=0.8, epsilon=0.05),   # a domain-loss shape
    Law(E=2.2, B=8.0, beta=0.2, eta=1.2, C=0.05, gamma=1.1, epsilon=0.02),   # a general-loss shape
])
def test_fit_recovers_known_parameters(true):
    d, r = GRID
    law, rmse = fit(d, r, true(d, r))
    assert rmse < 1e-9
    for name in ("E", "B", "beta", "eta", "C", "gamma", "epsilon"):
        assert getattr(law, name) == pytest.approx(getattr(true, name), rel=1e-4), name
    assert r_squared(true(d, r), law(d, r)) == pytest.approx(1.0, abs=1e-12)


def test_fit_is_deterministic():
    d, r = GRID
    y = Law(1.0, 20.0, 0.25, 0.7, 0.2, 0.9, 0.1)(d, r) + 0.01 * np.sin(np.arange(len(d)))  # not exactly lawful
    assert fit(d, r, y) == fit(d, r, y)


def test_held_out_ratios_predict_unseen_ratios():
    true = Law(E=1.5, B=50.0, beta=0.3, eta=0.5, C=0.3, gamma=0.8, epsilon=0.05)
    d, r = GRID
    out = held_out_ratios(d, r, true(d, r))
    assert out["r2"] == pytest.approx(1.0, abs=1e-6)
    assert [f["share"] for f in out["folds"]] == SHARES
    fold = out["folds"][3]
    assert fold["predicted"] == pytest.approx(fold["actual"], rel=1e-5)


def test_held_out_needs_three_ratios_and_enough_points():
    d, r = np.array([1e5, 1e5, 3e5, 3e5]), np.array([0.1, 0.5, 0.1, 0.5])
    out = held_out_ratios(d, r, np.ones(4))
    assert out["r2"] is None and "at least 3" in out["why"]
    d, r = np.array([1e5, 1e5, 1e5]), np.array([0.1, 0.5, 0.9])
    assert f"for {N_PARAMS} parameters" in held_out_ratios(d, r, np.ones(3))["why"]
    assert r_squared([1.0, 1.0], [1.0, 2.0]) is None  # no variance to explain


# General loss 2 + 0.1 / (replay + 0.1) against a base of 2.2: its perplexity rise is within 5%
# exactly when replay >= 0.1 / (2.2 + ln 1.05 - 2) - 0.1 = 0.30195.
GENERAL = Law(E=2.0, B=0.0, beta=0.0, eta=1.0, C=0.1, gamma=1.0, epsilon=0.1)
DOMAIN = Law(E=1.0, B=0.0, beta=0.0, eta=1.0, C=0.5, gamma=1.0, epsilon=0.1)
CANDIDATES = [round(0.05 * i, 2) for i in range(11)]


def test_recommendation_is_the_least_replay_inside_the_budget():
    rec = recommend(DOMAIN, GENERAL, 1e6, base_domain=2.0, base_general=2.2, budget=0.05, candidates=CANDIDATES)
    c = rec["choice"]
    assert c["replay"] == 0.35
    assert c["domain_loss"] == pytest.approx(1.0 + 0.5 / 0.75)
    assert c["domain_gain"] == pytest.approx(2.0 - (1.0 + 0.5 / 0.75))
    assert c["general_rise"] == pytest.approx(math.exp(2.0 + 0.1 / 0.45 - 2.2) - 1)
    assert c["general_rise"] <= 0.05
    # 0.30 is just outside: its rise is above 5%
    assert math.exp(2.0 + 0.1 / 0.4 - 2.2) - 1 > 0.05


def test_no_ratio_inside_the_budget_gives_none_and_the_least_rise():
    rec = recommend(DOMAIN, GENERAL, 1e6, base_domain=2.0, base_general=1.0, budget=0.05, candidates=CANDIDATES)
    assert rec["choice"] is None and rec["least_rise"]["replay"] == 0.5


def test_measured_choice_reads_the_runs_with_the_most_tokens():
    base = {"domain_loss": 3.0, "general_loss": 2.0}

    def run(replay, tokens, dl, gl):
        return {"replay": replay, "tokens": tokens, "final": {"domain_loss": dl, "general_loss": gl}}

    runs = [run(0.0, 100, 1.0, 2.5), run(0.0, 200, 1.5, 2.2), run(0.25, 200, 1.7, 2.04), run(0.5, 200, 1.9, 2.01)]
    c = measured_choice(runs, base, budget=0.05)
    assert c["replay"] == 0.25 and c["general_rise"] == pytest.approx(math.exp(0.04) - 1)
    assert measured_choice(runs, base, budget=0.0) is None


def test_parameters_on_a_bound_are_named():
    assert at_bounds(Law(E=1.5, B=50.0, beta=0.3, eta=0.5, C=0.3, gamma=0.8, epsilon=0.05)) == []
    assert at_bounds(Law(E=0.0, B=6.0, beta=2.0, eta=5.0, C=0.3, gamma=0.8, epsilon=1e-4)) == [
        "E", "beta", "eta", "epsilon"]
