"""Everything the loop needs, built from the config: data, plan, model, optimizer, resume state.

`build_run` decides between a fresh run and a resumed one. Starting weights come from
`model.name_or_path`; a resumed run restores model, optimizer, RNG and data position from the
newest committed `checkpoints/step-N/` (or the one named) and must use the same config, since a
different batch, mix or schedule would not continue the same run.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import torch

from cptkit import checkpoint
from cptkit.config import Config, save_config
from cptkit.data.prepare import prepare, source_plans
from cptkit.data.shards import WindowIndex, open_split
from cptkit.distributed import Dist, setup
from cptkit.errors import UserError
from cptkit.evaluation.perplexity import EvalSet, build_eval_set
from cptkit.evaluation.probes import ProbeSet, load_probe_sets
from cptkit.modeling import (
    DTYPES,
    count_parameters,
    load_model,
    load_tokenizer,
    prepare_for_training,
)
from cptkit.planning import RunPlan, make_plan
from cptkit.regularizers.build import Regularizer, build_regularizer
from cptkit.schema import to_dict
from cptkit.train.batches import TrainStream
from cptkit.train.budget import ForgettingBudget, boosted
from cptkit.train.freezing import apply_freezing
from cptkit.train.guard import StepGuard
from cptkit.train.logs import JsonLines, Progress, truncate_after
from cptkit.train.losses import CausalLMLoss, check_chunked_head
from cptkit.train.optim import build_optimizer

log = logging.getLogger("cptkit")

# Config keys that shape the sample stream or the optimisation; resuming with any of them
# changed would silently produce a different run, so it is refused.
RUN_DEFINING = ("model.name_or_path", "data", "mix", "train", "regularizer")
HOW_NOT_WHAT = ("log_every", "distributed", "gradient_checkpointing", "compile", "max_bad_steps", "spike_factor")


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
    replay_names: set[str]
    save_dtype: torch.dtype
    regularizer: Regularizer = field(default_factory=Regularizer)
    metrics: JsonLines | None = None
    evals: JsonLines | None = None
    probe_sets: list[ProbeSet] = field(default_factory=list)
    probe_log: JsonLines | None = None  # probes.jsonl: one line per probe per evaluation
    step: int = 0
    tokens: int = 0
    train_wall: float = 0.0
    wall_before: float = 0.0
    started: float = field(default_factory=time.time)
    best: dict | None = None
    base: dict | None = None
    last_eval: dict | None = None
    metric_at: dict[int, float | None] = field(default_factory=dict)
    guard: StepGuard = field(default_factory=lambda: StepGuard(5, 0.0))
    budget: ForgettingBudget = field(default_factory=lambda: ForgettingBudget(None))

    @property
    def lm(self) -> torch.nn.Module:
        """The Hugging Face model itself, outside any DDP/FSDP wrapper and the loss module."""
        return self.dist.accelerator.unwrap_model(self.model).lm

    def log_metrics(self, record: dict) -> None:
        if self.metrics is not None:
            self.metrics.write(record)

    def log_eval(self, record: dict) -> None:
        if self.step == 0:
            self.base = record
        self.last_eval = record
        if self.evals is not None:
            self.evals.write(record)

    def log_probes(self, rows: list[dict]) -> None:
        if self.probe_log is not None:
            for row in rows:
                self.probe_log.write({"step": self.step, "tokens": self.tokens, **row})

    def progress(self) -> Progress:
        return Progress(self.plan.total_steps, self.step, enabled=self.dist.is_main)

    def wall_s(self) -> float:
        return self.wall_before + time.time() - self.started

    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "tokens": self.tokens,
            "train_wall": self.train_wall,
            "wall_s": self.wall_s(),
            "stream": self.stream.state_dict(),
            "best": self.best,
            "base": self.base,
            "last_eval": self.last_eval,
            "metric_at": {str(k): v for k, v in self.metric_at.items()},
            "run_defining": run_defining(self.cfg),
            "world_size": self.dist.world_size,
            "guard": self.guard.state_dict(),
            "budget": self.budget.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.step, self.tokens = state["step"], state["tokens"]
        self.train_wall, self.wall_before = state["train_wall"], state["wall_s"]
        self.stream.load_state_dict(state["stream"])
        self.best, self.base, self.last_eval = state["best"], state["base"], state["last_eval"]
        self.metric_at = {int(k): v for k, v in state["metric_at"].items()}
        self.guard.load_state_dict(state["guard"])
        self.budget.load_state_dict(state["budget"])
        self.stream.mixer.shares = boosted(self.plan.shares, self.budget.replay_boost)

    def summary(self) -> dict:
        def metrics_of(record: dict | None) -> dict:
            return {k: v for k, v in (record or {}).items() if k not in ("step", "tokens")}

        return {
            "base": metrics_of(self.base),
            "final": metrics_of(self.last_eval),
            "best": {**metrics_of(self.best), "step": (self.best or {}).get("step")},
            "metric": self.cfg.checkpoint.metric,
            "tokens_trained": self.tokens,
            "steps": self.step,
            "wall_s": round(self.wall_s(), 2),
            "train_wall_s": round(self.train_wall, 2),
            "world_size": self.dist.world_size,
            "skipped_steps": self.guard.bad_steps,
            "loss_spikes": self.guard.spikes,
            "trust_remote_code": self.cfg.model.trust_remote_code,
            "forgetting_budget": self.budget.summary(),
        }

    def rewind_logs(self) -> None:
        """Cut the line files back to the current step (after a rollback) and keep appending."""
        if not self.dist.is_main:
            return
        for attr, name in (("metrics", "metrics.jsonl"), ("evals", "eval.jsonl"), ("probe_log", "probes.jsonl")):
            getattr(self, attr).close()
            truncate_after(self.dir / name, self.step)
            setattr(self, attr, JsonLines(self.dir / name, fresh=False))

    def close(self) -> None:
        for f in (self.metrics, self.evals, self.probe_log):
            if f is not None:
                f.close()


def run_defining(cfg: Config) -> dict:
    data = to_dict(cfg)
    out = {"model.name_or_path": cfg.model.name_or_path}
    for key in RUN_DEFINING[1:]:
        out[key] = data[key]
    out["data"] = {k: v for k, v in out["data"].items() if k not in ("num_workers", "prepared_dir")}
    # How the steps are computed (processes, sharding, recomputation) does not change the run.
    out["train"] = {k: v for k, v in out["train"].items() if k not in HOW_NOT_WHAT}
    return out


def resume_target(run_dir: Path, resume: bool | str) -> Path | None:
    """The state to resume from, or None for a fresh run; refuses to overwrite an earlier run."""
    if resume and resume is not True:
        folder = Path(resume)
        if not checkpoint.is_committed(folder):
            raise UserError(f"--resume {folder}: not a complete checkpoint folder (no valid COMMITTED marker)")
        return folder
    latest = checkpoint.latest_state(run_dir)
    if resume and latest is None:
        raise UserError(f"--resume: no complete checkpoint under {run_dir / 'checkpoints'}; nothing to resume")
    if not resume and latest is not None:
        raise UserError(
            f"output_dir {run_dir} already holds checkpoints of a run (newest {latest.name}). "
            "Pass --resume to continue it, or choose another output_dir; to start a new run from its "
            f"weights, set model.name_or_path to {run_dir / 'final'}."
        )
    return latest if resume else None


def _check_same_run(cfg: Config, saved: dict, folder: Path) -> None:
    now = run_defining(cfg)
    changed = [k for k in now if now[k] != saved.get(k)]
    if changed:
        raise UserError(
            f"--resume {folder}: the config changed since this checkpoint was written "
            f"({', '.join(changed)}), so resuming would not continue the same run. Restore those "
            "settings, or start a new run (another output_dir) from the weights you want."
        )


def build_run(cfg: Config, resume: bool | str) -> Run:
    run_dir = Path(cfg.output_dir)
    target = resume_target(run_dir, resume)
    probe_sets = load_probe_sets(cfg.eval.probes)  # a malformed probe file stops the run before it starts
    dist = setup(cfg.model.dtype, timeout=timedelta(hours=2))
    manifests = prepared_data(cfg, dist)
    plan = make_plan(cfg, manifests, dist.world_size)
    if dist.is_main:
        checkpoint.remove_partial_writes(run_dir)
        save_config(cfg, run_dir / "config.yaml")
        log.info("run folder %s: %s steps of %s tokens", run_dir, f"{plan.total_steps:,}", f"{plan.tokens_per_step:,}")
    torch.manual_seed(cfg.train.seed)
    tokenizer = load_tokenizer(cfg.model)
    model = load_model(cfg.model)
    prepare_for_training(model, cfg.train.gradient_checkpointing, cfg.train.compile)
    log.info("model %s: %s parameters", cfg.model.name_or_path, f"{count_parameters(model):,}")
    apply_freezing(model, cfg.train)
    windows = train_windows(cfg, manifests, plan.domain_names + plan.general_names)
    stream = TrainStream(windows, plan.shares, cfg.train.seed, cfg.train.document_masking)
    chunk = None
    if cfg.train.loss_chunk_tokens:
        # On the unwrapped model where it was loaded: one 12-token forward, even for a large model.
        if check_chunked_head(model, next(model.parameters()).device):
            chunk = cfg.train.loss_chunk_tokens
        else:
            log.info("model %s: logits are not a plain linear head; using full logits for the loss", type(model).__name__)
    # Before the model is wrapped (DDP, FSDP) and before a resume loads its checkpoint: the
    # Fisher and the KL reference are always those of the starting weights.
    general = []
    if cfg.regularizer.kind == "ewc":
        general = [s.name for s in cfg.general_sources]
        model.to(dist.device)  # the Fisher pass runs on the starting weights, unsharded
    regularizer = build_regularizer(cfg, model, dist, run_dir, list(train_windows(cfg, manifests, general).values()),
                                    resuming=target is not None, chunk=chunk)
    module, optimizer = dist.wrap(
        CausalLMLoss(model, chunk), lambda m: build_optimizer(m, cfg.train), cfg.train.distributed, cfg.model.dtype
    )
    # The anchors follow the parameters as wrapped: under FSDP each process holds its shards.
    regularizer.anchor_to(dist.accelerator.unwrap_model(module).lm)
    # The check calls the model directly, so under FSDP it runs with its weights gathered.
    if cfg.train.document_masking:
        dist.call_gathered(module, check_document_masking, dist.device)
    run = Run(
        cfg=cfg, dir=run_dir, dist=dist, plan=plan, model=module, optimizer=optimizer, tokenizer=tokenizer,
        stream=stream, eval_sets=eval_sets(cfg, manifests), replay_names=set(plan.general_names),
        save_dtype=DTYPES[cfg.model.dtype], probe_sets=probe_sets, regularizer=regularizer,
        guard=StepGuard(cfg.train.max_bad_steps, cfg.train.spike_factor,
                        scaled_fp16=getattr(dist.accelerator, "scaler", None) is not None),
        budget=ForgettingBudget(cfg.train.forgetting_budget, cfg.train.forgetting_action,
                                cfg.train.rollback_lr_factor, cfg.train.rollback_replay, cfg.train.max_rollbacks),
    )
    if target is not None:
        weights, optimizer_state, state = checkpoint.load_state(target)
        _check_same_run(cfg, state["run_defining"], target)
        dist.load_full_state(module, optimizer, weights, optimizer_state, where=str(target))
        run.load_state_dict(state)
        if state.get("world_size", 1) != dist.world_size:
            log.info("resuming a %d-process state with %d process(es)", state.get("world_size", 1), dist.world_size)
        log.info("resumed from %s at step %d", target, run.step)
    if dist.is_main:
        if target is not None:
            truncate_after(run_dir / "metrics.jsonl", run.step)
            truncate_after(run_dir / "eval.jsonl", run.step)
            truncate_after(run_dir / "probes.jsonl", run.step)
        run.metrics = JsonLines(run_dir / "metrics.jsonl", fresh=target is None)
        run.evals = JsonLines(run_dir / "eval.jsonl", fresh=target is None)
        run.probe_log = JsonLines(run_dir / "probes.jsonl", fresh=target is None)
    return run


def train_windows(cfg: Config, manifests: dict[str, dict], names: list[str]) -> dict[str, WindowIndex]:
    root = cfg.prepared_dir
    return {
        n: WindowIndex(open_split(root / n / "train", manifests[n]["shards"]["train"], manifests[n]["dtype"]), cfg.data.seq_len)
        for n in names
    }


def prepared_data(cfg: Config, dist: Dist) -> dict[str, dict]:
    """Prepare on the main process (reusing up-to-date shards); the others wait for its result."""
    outcome: object = None
    if dist.is_main:
        try:
            outcome = prepare(cfg)
        except UserError as exc:
            outcome = exc
    outcome = dist.broadcast_object(outcome)
    if isinstance(outcome, UserError):
        raise outcome
    for p in source_plans(cfg):
        m = outcome[p.name]
        if (p.heldout or p.eval_only) and m["documents"]["eval"] == 0:
            raise UserError(
                f"data: no document of source {p.name!r} was held out for evaluation "
                f"({m['documents']['kept']} documents, data.heldout_fraction {cfg.data.heldout_fraction}). "
                f"Raise data.heldout_fraction or give data.eval.{p.role if p.role != 'eval' else p.name[5:]}."
            )
    return outcome


def eval_sets(cfg: Config, manifests: dict[str, dict]) -> list[EvalSet]:
    root = cfg.prepared_dir
    plans = source_plans(cfg)
    sets = []
    for name in cfg.eval_set_names():
        if name in cfg.data.eval:
            parts = [f"eval-{name}"]
        else:
            parts = [p.name for p in plans if p.role == name and p.heldout]
        sets.append(
            build_eval_set(name, [(root / n, manifests[n]) for n in parts], cfg.data.seq_len, cfg.eval.max_tokens)
        )
    return sets


def check_document_masking(model: torch.nn.Module, device: torch.device) -> None:
    """Refuse to train packed if this architecture lets attention cross documents.

    Two short documents are run packed (position ids restarting) and alone; the second one's
    logits must not change. transformers derives the block mask from position ids for most
    decoder models, but not for every architecture or attention kernel.
    """
    vocab = model.get_input_embeddings().weight.shape[0]
    gen = torch.Generator().manual_seed(0)
    a = torch.randint(0, vocab, (1, 7), generator=gen).to(device)
    b = torch.randint(0, vocab, (1, 9), generator=gen).to(device)
    pos_a, pos_b = torch.arange(7, device=device), torch.arange(9, device=device)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        alone = model(input_ids=b, position_ids=pos_b[None], use_cache=False).logits
        packed = model(
            input_ids=torch.cat([a, b], 1), position_ids=torch.cat([pos_a, pos_b])[None], use_cache=False
        ).logits[:, 7:]
    model.train(was_training)
    diff = float((alone.float() - packed.float()).abs().max())
    # Under FSDP mixed precision the weights are bfloat16 here, and the two shapes round
    # differently by up to ~1e-2; attention across documents moves logits by ~1.
    if diff > (1e-3 if alone.dtype == torch.float32 else 5e-2):
        raise UserError(
            f"model {type(model).__name__}: attention crosses document boundaries in packed sequences "
            f"(logit difference {diff:.3g}) with attn_implementation "
            f"{getattr(model.config, '_attn_implementation', '?')!r}. Set train.document_masking: false "
            "to train packed without per-document attention, or try model.attn_implementation: sdpa."
        )

