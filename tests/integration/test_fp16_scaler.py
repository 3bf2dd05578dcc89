"""float16 with dynamic loss scaling on CPU, through the real `cptkit train`: a skipped non-finite step
backs the scale off, the next steps train, and the scaler's state is part of the checkpoint.

Before cptkit owned its precision (cptkit/train/precision.py), float16 was refused on CPU, and on a
GPU the step after a skipped one raised "unscale_() has already been called on this optimizer since
the last update()": a skipped step never updated the scaler.
"""

from __future__ import annotations

import json
import math

from tests.helpers import cptkit, make_config, read_jsonl, write_config

INIT_SCALE = 2.0**16  # torch.amp.GradScaler's default; it backs off by half and grows after 2000 good steps


def test_a_skipped_float16_step_backs_the_scale_off_and_the_next_steps_train(tmp_path, tiny_model, corpus,
                                                                            monkeypatch):
    cfg = make_config(tmp_path, tiny_model, corpus, train={"max_steps": 4, "warmup_steps": 1, "lr": 1e-3},
                      checkpoint={"every_steps": 4, "keep_last": 1, "keep_best": 0}, eval={"every_steps": 4})
    cfg["model"]["dtype"] = "float16"
    monkeypatch.setenv("CPTKIT_NAN_STEPS", "2")
    out = cptkit("train", str(write_config(tmp_path / "run.yaml", cfg)))
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    assert metrics[1]["skipped"] == "non-finite loss"
    assert all("skipped" not in m and math.isfinite(m["loss"]) for m in metrics[2:])
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["skipped_steps"] == [{"step": 2, "reason": "non-finite loss"}]
    state = json.loads((tmp_path / "run" / "checkpoints" / "step-4" / "trainer_state.json").read_text())
    assert state["precision"]["scale"] == INIT_SCALE / 2  # backed off once (the NaN step), not grown
