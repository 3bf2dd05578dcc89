import math

from cptkit.mixing import replay_shares
from cptkit.train.budget import ForgettingBudget, boosted


def test_within_budget_is_relative_to_the_base_and_nan_is_over():
    b = ForgettingBudget(0.05)
    base = {"general_ppl": 100.0}
    assert b.within(base, {"general_ppl": 104.99}) and not b.within(base, {"general_ppl": 105.01})
    assert not b.within(base, {"general_ppl": math.nan})
    assert abs(b.rise(base, {"general_ppl": 90.0}) + 0.1) < 1e-12
    assert ForgettingBudget(None).within(base, {"general_ppl": 1e9})  # no budget: everything is within


def test_rollback_target_is_the_newest_committed_step_within_budget():
    b = ForgettingBudget(0.05)
    metric_at = {0: 300.0, 4: 250.0, 8: None, 12: 240.0}
    assert b.rollback_target(metric_at, committed=[0, 4, 8, 12], now=16) == 12
    assert b.rollback_target(metric_at, committed=[0, 4, 8], now=12) == 4  # 8 was over budget
    assert b.rollback_target(metric_at, committed=[], now=12) is None


def test_each_rollback_halves_the_lr_and_moves_share_to_replay_until_the_limit():
    b = ForgettingBudget(0.05, "rollback", lr_factor=0.5, replay_step=0.05, max_rollbacks=2)
    assert b.next_action() == "rollback"
    b.adjust(8, 4, 0.07)
    b.adjust(8, 4, 0.06)
    assert (b.lr_scale, round(b.replay_boost, 10)) == (0.25, 0.1) and b.next_action() == "stop"
    shares = boosted(replay_shares({"d": 1.0}, {"g": 1.0}, 0.05), b.replay_boost)
    assert abs(shares(0.5)["g"] - 0.15) < 1e-12 and abs(shares(0.5)["d"] - 0.85) < 1e-12
