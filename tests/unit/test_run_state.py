"""The best-checkpoint tracker: what counts as best, what it keeps, what it restores."""

from __future__ import annotations

import math

from cptkit.records import EvalRecord
from cptkit.train.best import BestTracker


def test_the_best_tracker_scores_only_evaluations_within_budget_with_a_number():
    exported = []
    best = BestTracker("domain_ppl", export=lambda: exported.append(True))
    assert best.consider(EvalRecord(0, 0, {"domain_ppl": 50.0}), within_budget=True)
    assert not best.consider(EvalRecord(4, 8, {"domain_ppl": 40.0}), within_budget=False)  # over budget
    assert not best.consider(EvalRecord(8, 16, {"domain_ppl": math.nan}), within_budget=True)
    assert not best.consider(EvalRecord(12, 24, {"domain_ppl": 55.0}), within_budget=True)
    assert best.consider(EvalRecord(16, 32, {"domain_ppl": 45.0}), within_budget=True)
    assert best.best.step == 16 and best.kept_scores() == {0: 50.0, 12: 55.0, 16: 45.0}
    restored = BestTracker("domain_ppl")
    restored.load_state_dict(best.state_dict())
    assert restored.best == best.best and restored.scores == best.scores
    best.export()
    assert exported == [True]
