"""The state of one training run, each piece with one owner.

`Run` holds the components built from the config (model, optimizer, data stream, eval sets,
regularizer) and the loop's counters; the pieces of state that change during training are
owned by small objects: `StepGuard` (bad steps, spikes), `ForgettingBudget` (its lr scale and
replay shift, the rollbacks), `BestTracker` (the best evaluation and the scores that decide
which checkpoints are kept), `RunLogs` (the line files) and `Clock` (wall times). `state_dict`
gathers them for a checkpoint and `load_state_dict` puts them back, so `--resume` continues
exactly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cptkit import checkpoint
from cptkit.config import Config
from cptkit.distributed import Dist
from cptkit.durable import write_json
from cptkit.evaluation.perplexity import EvalSet
from cptkit.evaluation.probe_sets import ProbeSet
from cptkit.faults import StepFaults
from cptkit.planning import RunPlan
from cptkit.records import EvalRecord, StepRecord
from cptkit.regularizers.build import Regularizer
from cptkit.schema import to_dict
from cptkit.tracking import Trackers
from cptkit.train.batches import TrainStream
from cptkit.train.best import BestTracker
from cptkit.train.budget import ForgettingBudget
from cptkit.train.guard import StepGuard
from cptkit.train.logs import JsonLines, Progress, truncate_after
from cptkit.train.stages import EmbeddingStages, NoStages

# The layout of trainer_state.json; a checkpoint of another layout cannot be resumed by this code.
STATE_VERSION = 2

# Config keys that shape the sample stream or the optimisation; resuming with any of them
# changed would silently produce a different run, so it is refused.
RUN_DEFINING = ("model.name_or_path", "data", "mix", "train", "regularizer")
# Keys inside those sections that say how the work is done, not what is computed: processes,
# sharding, recomputation, logging, safety limits, and where and by whom data is prepared.
EXECUTION_KEYS = {
    "data": ("num_workers", "prepared_dir", "executor", "ray_address"),
    "train": ("log_every", "distributed", "gradient_checkpointing", "compile", "max_bad_steps", "spike_factor"),
}


def run_defining(cfg: Config) -> dict:
    """The part of the config a resumed run must share with the checkpoint it resumes."""
    data = to_dict(cfg)
    out = {"model.name_or_path": cfg.model.name_or_path}
    for key in RUN_DEFINING[1:]:
        out[key] = what_is_computed(key, data[key])
    return out


def what_is_computed(section: str, value: object) -> object:
    """A section's values less its execution keys (also applied to what older states saved)."""
    if section not in EXECUTION_KEYS or not isinstance(value, dict):
        return value
    return {k: v for k, v in value.items() if k not in EXECUTION_KEYS[section]}


@dataclass
class Clock:
    """Wall time of the run over all its sessions, and the part spent in training steps."""

    started: float = field(default_factory=time.time)
    before: float = 0.0  # wall time of the sessions before a resume
    train: float = 0.0  # seconds inside optimizer steps, all sessions

    def wall_s(self) -> float:
        return self.before + time.time() - self.started

    def state_dict(self) -> dict:
        return {"train_wall": self.train, "wall_s": self.wall_s()}

    def load_state_dict(self, state: dict) -> None:
        self.train, self.before = state["train_wall"], state["wall_s"]


class RunLogs:
    """Where the run's records go: metrics.jsonl, eval.jsonl and probes.jsonl (main process only),
    and the experiment trackers of `logging` (`cptkit.tracking`, likewise main process only).

    A resumed run first cuts each file back to the resumed step, so its files read exactly like
    an uninterrupted run's; a rollback does the same at the step it returns to.
    """

    FILES = {"metrics": "metrics.jsonl", "evals": "eval.jsonl", "probes": "probes.jsonl"}

    def __init__(self, folder: Path, enabled: bool, resumed_at: int | None = None,
                 trackers: Trackers | None = None):
        self.folder, self.enabled = folder, enabled
        self.trackers = trackers or Trackers()
        self.files: dict[str, JsonLines] = {}
        if enabled:
            self._open(resumed_at)

    def _open(self, keep_until: int | None) -> None:
        for key, name in self.FILES.items():
            if keep_until is not None:
                truncate_after(self.folder / name, keep_until)
            self.files[key] = JsonLines(self.folder / name, fresh=keep_until is None)

    def step(self, record: StepRecord) -> None:
        if self.enabled:
            self.files["metrics"].write(record.to_json())
            self.trackers.log_step(record.to_json(), record.step)

    def eval(self, record: EvalRecord) -> None:
        if self.enabled:
            self.files["evals"].write(record.to_json())
            self.trackers.log_eval(record.to_json(), record.step)

    def event(self, name: str, details: dict, step: int) -> None:
        """A run event the trackers show besides the line files (a rollback, a stop)."""
        if self.enabled:
            self.trackers.log_event(name, details, step)

    def probes(self, step: int, tokens: int, rows: list[dict]) -> None:
        if self.enabled:
            for row in rows:
                self.files["probes"].write({"step": step, "tokens": tokens, **row})

    def rewind(self, step: int) -> None:
        """Cut every file back to `step` (after a rollback) and keep appending."""
        if self.enabled:
            for f in self.files.values():
                f.close()
            self._open(step)

    def close(self, failed: bool = False) -> None:
        for f in self.files.values():
            f.close()
        self.files = {}
        self.trackers.close(failed)


@dataclass
class Run:
    cfg: Config
    dir: Path
    dist: Dist
    plan: RunPlan
    model: torch.nn.Module  # CausalLMLoss around the HF model, as prepared (maybe DDP/FSDP-wrapped)
    optimizer: torch.optim.Optimizer
    tokenizer: object
    stream: TrainStream
    eval_sets: list[EvalSet]
    probe_sets: list[ProbeSet]
    regularizer: Regularizer
    guard: StepGuard
    budget: ForgettingBudget
    best: BestTracker = field(init=False)  # exports best/ through `export`
    logs: RunLogs | None = None
    faults: StepFaults = field(default_factory=StepFaults)
    stages: EmbeddingStages | NoStages = field(default_factory=NoStages)  # train.new_embeddings_only_steps
    step: int = 0  # optimizer steps done
    tokens: int = 0  # tokens of those steps (sequence positions)
    clock: Clock = field(default_factory=Clock)
    base: EvalRecord | None = None  # the step-0 evaluation of the untouched model
    last_eval: EvalRecord | None = None
    peft_model: object | None = None  # train.peft: the PeftModel around the HF model, else None
    method: dict = field(default_factory=lambda: {"method": "full"})  # peft.adapters.method_summary
    base_fingerprint: str | None = None  # train.peft: digest of the frozen weights (peft.training)
    base_key: str | None = None  # eval.reuse_base on a fresh run: names its step-0 record (base_scores)

    def __post_init__(self) -> None:
        self.best = BestTracker(self.cfg.checkpoint.metric, export=lambda: self.export("best"))

    @property
    def lm(self) -> torch.nn.Module:
        """The Hugging Face model itself, outside any DDP/FSDP wrapper and the loss module."""
        return self.dist.accelerator.unwrap_model(self.model).lm

    @property
    def trainable_only(self) -> bool:
        """Checkpoints hold the trainable weights only (adapter runs; the base is model.name_or_path)."""
        return self.peft_model is not None

    @property
    def replay_names(self) -> set[str]:
        return set(self.plan.general_names)

    def progress(self) -> Progress:
        return Progress(self.plan.total_steps, self.step, enabled=self.dist.is_main)

    def export(self, name: str) -> None:
        """Write RUN_DIR/NAME as a plain Hugging Face model folder (every process calls it); under
        train.peft with the adapters merged, and the adapter folder RUN_DIR/NAME-adapter beside it."""
        weights, _ = self.dist.full_state(self.model)  # under FSDP every process gathers its shards
        if not self.dist.is_main:
            return
        dtype = self.dist.precision.dtype
        if self.peft_model is not None:
            from cptkit.peft.export import export_adapted

            export_adapted(self.peft_model, self.tokenizer, self.dir / name, dtype, weights, self.cfg.model.name_or_path)
        else:
            checkpoint.export_model(self.lm, self.tokenizer, self.dir / name, dtype, weights)

    def apply_budget(self) -> None:
        """The data mix as the forgetting budget's rollbacks have shifted it."""
        self.stream.mixer.shares = self.budget.mix(self.plan.shares)

    def state_dict(self) -> dict:
        return {
            "state_version": STATE_VERSION,
            "step": self.step, "tokens": self.tokens, "clock": self.clock.state_dict(),
            "stream": self.stream.state_dict(), "best": self.best.state_dict(),
            "base": self.base.to_json() if self.base else None,
            "last_eval": self.last_eval.to_json() if self.last_eval else None,
            "run_defining": run_defining(self.cfg), "world_size": self.dist.world_size,
            "guard": self.guard.state_dict(), "budget": self.budget.state_dict(),
            "precision": self.dist.precision.state_dict(), "frozen_base": self.base_fingerprint,
        }

    def load_state_dict(self, state: dict, rollback: bool = False) -> None:
        """Restore a checkpoint's state. A rollback keeps the budget's history and the best
        evaluation: best/ holds the best weights within budget whichever path reached them."""
        self.step, self.tokens = state["step"], state["tokens"]
        self.clock.load_state_dict(state["clock"])
        self.stream.load_state_dict(state["stream"])
        best = self.best.best
        self.best.load_state_dict(state["best"])
        if rollback:
            self.best.best = best
        else:
            self.budget.load_state_dict(state["budget"])
        self.base = EvalRecord.from_json(state["base"]) if state["base"] else None
        self.last_eval = EvalRecord.from_json(state["last_eval"]) if state["last_eval"] else None
        self.guard.load_state_dict(state["guard"])
        self.dist.precision.load_state_dict(state["precision"])
        self.apply_budget()

    def summary(self) -> dict:
        def metrics_of(record: EvalRecord | None) -> dict:
            return {k: v for k, v in (record.to_json() if record else {}).items() if k not in ("step", "tokens")}

        best = self.best.best
        return {
            "base": metrics_of(self.base),
            "final": metrics_of(self.last_eval),
            "best": {**metrics_of(best), "step": best.step if best else None},
            "metric": self.cfg.checkpoint.metric,
            "tokens_trained": self.tokens,
            "steps": self.step,
            "wall_s": round(self.clock.wall_s(), 2),
            "train_wall_s": round(self.clock.train, 2),
            "world_size": self.dist.world_size,
            "skipped_steps": self.guard.bad_steps,
            "loss_spikes": self.guard.spikes,
            "trust_remote_code": self.cfg.model.trust_remote_code,
            "forgetting_budget": self.budget.summary(),
            **self.method,  # method, trainable_parameters, total_parameters; peft: r, alpha, ...
        }

    def write_summary(self, summary: dict) -> None:
        write_json(self.dir / "summary.json", summary)

    def close(self, failed: bool = False) -> None:
        if self.logs is not None:
            self.logs.close(failed)
