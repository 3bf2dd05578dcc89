"""What a resumed run must share with its checkpoint, and the best-checkpoint tracker."""

from __future__ import annotations

import math

from cptkit.config import load_config
from cptkit.records import EvalRecord
from cptkit.train.best import BestTracker
from cptkit.train.run import run_defining


def cfg_with(**sections):
    raw = {"model": {"name_or_path": "m"}, "data": {"domain": {"paths": ["d.jsonl"]}}, "output_dir": "run"}
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return load_config(None, raw=raw, check_paths=False)


def test_how_the_work_is_done_does_not_change_the_run_but_what_is_computed_does():
    base = run_defining(cfg_with())
    same = [{"data": {"executor": "ray", "ray_address": "10.0.0.1:6379", "num_workers": 3, "prepared_dir": "/x"}},
            {"train": {"log_every": 10, "gradient_checkpointing": True, "max_bad_steps": 2}}]
    for change in same:
        assert run_defining(cfg_with(**change)) == base, change
    for change in ({"train": {"lr": 1e-4}}, {"data": {"seq_len": 128}}, {"train": {"schedule": "wsd"}}, {"regularizer": {"kind": "l2sp"}}):
        assert run_defining(cfg_with(**change)) != base, change


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
