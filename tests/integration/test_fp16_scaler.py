"""float16 with dynamic loss scaling: a skipped non-finite step backs the scale off and the run goes on.

accelerate refuses float16 loss scaling on CPU, so this test gives the real training loop a real
`torch.amp.GradScaler("cpu")` and float16 autocast by hand: accelerate's own scaler code paths
(scaled backward, unscale in clip_grad_norm_, scaler.step and update in optimizer.step) then run
exactly as on a GPU. A NaN loss is injected at step 2 (cptkit.faults).

Fails until the loop calls `scaler.update()` on a skipped step (see the report): without it, the
next step's clip raises "unscale_() has already been called on this optimizer since the last update()".
"""

from __future__ import annotations

import math

import torch

import cptkit.train.setup as train_setup
from cptkit.config import load_config
from cptkit.distributed import setup as real_setup
from cptkit.train.loop import train
from tests.helpers import make_config, read_jsonl

INIT_SCALE = 2.0**10


def test_a_skipped_float16_step_backs_the_scale_off_and_the_next_steps_train(tmp_path, tiny_model, corpus,
                                                                            monkeypatch):
    scalers = []

    def float16_on_cpu(dtype, **kwargs):
        dist = real_setup("float32", **kwargs)
        acc = dist.accelerator
        acc.scaler = torch.amp.GradScaler("cpu", init_scale=INIT_SCALE, growth_interval=1000)
        acc.native_amp = True
        monkeypatch.setattr(acc.state, "_mixed_precision", "fp16")  # autocast and unscale: the fp16 paths
        scalers.append(acc.scaler)
        return dist

    monkeypatch.setattr(train_setup, "setup", float16_on_cpu)
    monkeypatch.setenv("CPTKIT_NAN_STEPS", "2")
    cfg = make_config(tmp_path, tiny_model, corpus, train={"max_steps": 4, "warmup_steps": 1, "lr": 1e-3},
                      checkpoint={"every_steps": 4, "keep_last": 1, "keep_best": 0}, eval={"every_steps": 4})
    summary = train(load_config(None, raw=cfg))
    metrics = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    assert metrics[1]["skipped"] == "non-finite loss"
    assert all("skipped" not in m and math.isfinite(m["loss"]) for m in metrics[2:])
    assert summary["skipped_steps"] == [{"step": 2, "reason": "non-finite loss"}]
    # Backed off once (the NaN step), never grown (growth_interval 1000): the scaler as designed.
    assert scalers[0].get_scale() == INIT_SCALE * scalers[0].get_backoff_factor()
