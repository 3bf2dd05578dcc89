"""Numerical faults in real runs: NaN steps are skipped and counted; too many in a row stop the run."""

import json
import math
import os

import torch
from safetensors.torch import load_file

from tests.helpers import cptkit, make_config, read_jsonl, write_config


def run_with_nans(tmp_path, tiny_model, corpus, steps: str, **train):
    cfg = make_config(tmp_path, tiny_model, corpus, train={"max_steps": 8, **train})
    path = write_config(tmp_path / "run.yaml", cfg)
    os.environ["CPTKIT_NAN_STEPS"] = steps
    try:
        return cptkit("train", str(path))
    finally:
        del os.environ["CPTKIT_NAN_STEPS"]


def test_non_finite_steps_are_skipped_counted_and_logged(tmp_path, tiny_model, corpus):
    out = run_with_nans(tmp_path, tiny_model, corpus, "3,4", max_bad_steps=3)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "step 3: non-finite loss; update skipped (1 in a row, the run stops at 3)" in out.stderr
    metrics = {m["step"]: m for m in read_jsonl(tmp_path / "run" / "metrics.jsonl")}
    assert sorted(metrics) == list(range(1, 9))
    assert metrics[3]["skipped"] == "non-finite loss" and metrics[3]["loss"] is None
    assert "skipped" not in metrics[5] and math.isfinite(metrics[5]["loss"])
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["skipped_steps"] == [{"step": 3, "reason": "non-finite loss"},
                                        {"step": 4, "reason": "non-finite loss"}]
    assert all(torch.isfinite(t).all() for t in load_file(tmp_path / "run" / "final" / "model.safetensors").values())


def test_too_many_bad_steps_in_a_row_stop_the_run_with_the_last_checkpoint_intact(tmp_path, tiny_model, corpus):
    out = run_with_nans(tmp_path, tiny_model, corpus, "5,6,7", max_bad_steps=2)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    step4 = tmp_path / "run" / "checkpoints" / "step-4"
    assert "step 6: 2 steps in a row had a non-finite loss or gradient (steps 5-6)" in out.stderr
    assert f"the newest checkpoint, {step4}, is intact" in out.stderr
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step-4"]
    assert not (tmp_path / "run" / "final").exists() and not (tmp_path / "run" / "summary.json").exists()
