"""One optimizer step on its own: the loss it reports, accumulation, a skipped step, float16 scaling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

from cptkit.config import load_config
from cptkit.data.shards import ShardWriter, WindowIndex, open_split
from cptkit.distributed import setup
from cptkit.faults import StepFaults
from cptkit.mixing import replay_shares
from cptkit.planning import RunPlan
from cptkit.regularizers.build import Regularizer
from cptkit.train.batches import TrainStream
from cptkit.train.budget import ForgettingBudget
from cptkit.train.guard import StepGuard
from cptkit.train.losses import CausalLMLoss
from cptkit.train.optim import build_optimizer
from cptkit.train.run import Run
from cptkit.train.schedules import make_schedule
from cptkit.train.step import train_step

SEQ, ROWS, VOCAB = 16, 4, 96


def _windows(folder, seed: int) -> WindowIndex:
    rng = np.random.default_rng(seed)
    writer = ShardWriter(folder, np.dtype(np.uint16), 10**6)
    for _ in range(12):
        doc = np.concatenate([[1], rng.integers(3, VOCAB, int(rng.integers(4, 20))), [2]])
        writer.add(doc, n_bytes=len(doc))
    return WindowIndex(open_split(folder, writer.close(), "uint16"), SEQ)


def make_run(tmp_path, micro_batch_size: int, dtype: str = "float32", sgd: bool = False) -> Run:
    cfg = load_config(None, raw={"model": {"name_or_path": "tiny", "dtype": dtype},
                                 "data": {"domain": {"paths": ["x"]}, "seq_len": SEQ},
                                 "train": {"micro_batch_size": micro_batch_size, "global_batch_tokens": SEQ * ROWS,
                                           "lr": 1e-2},
                                 "output_dir": str(tmp_path / "run")}, check_paths=False)
    torch.manual_seed(0)
    lm = LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64))
    dist = setup(dtype, cpu=True)
    # SGD makes the update proportional to the gradient (Adam's first step is about its sign).
    optimizer_of = (lambda m: torch.optim.SGD(m.parameters(), lr=1.0)) if sgd else (lambda m: build_optimizer(m, cfg.train))
    module, optimizer = dist.wrap(CausalLMLoss(lm, chunk=8), optimizer_of, cfg.train.distributed, dtype)
    windows = {"domain": _windows(tmp_path / "d", 1), "general": _windows(tmp_path / "g", 2)}
    stream = TrainStream(windows, replay_shares({"domain": 1.0}, {"general": 1.0}, 0.25), seed=0)
    plan = RunPlan(seq_len=SEQ, rows_per_step=ROWS, micro_batch_size=micro_batch_size, world_size=1,
                   accumulation=ROWS // micro_batch_size, total_steps=4,
                   schedule=make_schedule("constant", peak=1e-2, total=4, warmup=0), budget_source="test",
                   domain_names=["domain"], general_names=["general"])
    return Run(cfg=cfg, dir=tmp_path / "run", dist=dist, plan=plan, model=module, optimizer=optimizer,
               tokenizer=None, stream=stream, eval_sets=[], probe_sets=[], regularizer=Regularizer(),
               guard=StepGuard(5, 0.0, scaled_fp16=dist.precision.scaler is not None),
               budget=ForgettingBudget(None))


def _weights(run: Run) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in run.lm.state_dict().items()}


def test_the_step_reports_the_token_mean_loss_of_its_global_batch_per_role(tmp_path):
    run = make_run(tmp_path, micro_batch_size=2)
    rows = run.stream.next_step(ROWS, progress=0.0)
    batch = run.stream.collate(rows)
    with torch.no_grad():
        logits = run.lm(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
    losses = F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=-100, reduction="none")
    losses, counted = losses.view(ROWS, SEQ), batch["labels"] != -100
    replay = torch.tensor([s == "general" for s in batch["sources"]])
    assert replay.sum() == 1  # 25% replay of 4 rows: exactly one
    result = train_step(run, rows)
    assert result.loss == pytest.approx(float(losses.sum() / counted.sum()), rel=1e-6)
    assert result.loss_replay == pytest.approx(float(losses[replay].sum() / counted[replay].sum()), rel=1e-6)
    assert result.loss_domain == pytest.approx(float(losses[~replay].sum() / counted[~replay].sum()), rel=1e-6)
    assert result.target_tokens == int(counted.sum()) and result.skipped is None and result.kl is None


def test_gradient_accumulation_gives_the_same_update_as_one_big_micro_batch(tmp_path):
    after = {}
    for micro in (4, 1):
        run = make_run(tmp_path / str(micro), micro_batch_size=micro, sgd=True)
        before = _weights(run)
        result = train_step(run, run.stream.next_step(ROWS, progress=0.0))
        after[micro] = (_weights(run), result)
    (w4, r4), (w1, r1) = after[4], after[1]
    assert r1.loss == pytest.approx(r4.loss, rel=1e-6) and r1.grad_norm == pytest.approx(r4.grad_norm, rel=1e-5)
    for name in w4:
        assert torch.allclose(w1[name], w4[name], atol=1e-6), name
    assert not torch.equal(w4["model.embed_tokens.weight"], before["model.embed_tokens.weight"])


def test_a_non_finite_step_is_skipped_and_changes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("CPTKIT_NAN_STEPS", "1")
    run = make_run(tmp_path, micro_batch_size=2)
    run.faults = StepFaults(run.dist.accelerator.unwrap_model(run.model))
    before = _weights(run)
    run.faults.begin(1)
    result = train_step(run, run.stream.next_step(ROWS, progress=0.0))
    assert result.skipped == "non-finite loss" and np.isnan(result.loss)
    assert all(torch.equal(before[k], v) for k, v in _weights(run).items())
    assert not run.optimizer.state  # AdamW never stepped
    run.faults.begin(2)
    assert train_step(run, run.stream.next_step(ROWS, progress=0.3)).skipped is None


def test_float16_backs_off_after_a_skipped_step_and_the_next_step_trains(tmp_path, monkeypatch):
    monkeypatch.setenv("CPTKIT_NAN_STEPS", "1")
    run = make_run(tmp_path, micro_batch_size=2, dtype="float16")
    run.faults = StepFaults(run.dist.accelerator.unwrap_model(run.model))
    scale = run.dist.precision.scale
    run.faults.begin(1)
    assert train_step(run, run.stream.next_step(ROWS, progress=0.0)).skipped == "non-finite loss"
    assert run.dist.precision.scale == scale / 2  # the scaler saw the overflow and backed off
    before = _weights(run)
    run.faults.begin(2)
    result = train_step(run, run.stream.next_step(ROWS, progress=0.3))  # before the fix: unscale_ raised here
    assert result.skipped is None and np.isfinite(result.loss)
    assert not torch.equal(before["model.embed_tokens.weight"], _weights(run)["model.embed_tokens.weight"])
    assert run.dist.precision.state_dict()["scale"] == scale / 2  # saved with every checkpoint
