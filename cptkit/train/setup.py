"""Everything the loop needs, built from the config: data, plan, model, optimizer, resume state.

`build_run` decides between a fresh run and a resumed one. Starting weights come from
`model.name_or_path`; a resumed run restores model, optimizer, RNG and data position from the
newest committed `checkpoints/step-N/` (or the one named) and must use the same config, since a
different batch, mix or schedule would not continue the same run.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

import torch

from cptkit import checkpoint
from cptkit.config import Config, save_config
from cptkit.data.manifest import Manifest
from cptkit.data.prepare import prepare, source_plans
from cptkit.data.shards import WindowIndex, open_split
from cptkit.distributed import Dist, setup
from cptkit.errors import UserError
from cptkit.evaluation import base_scores
from cptkit.evaluation.perplexity import EvalSet, build_eval_set
from cptkit.evaluation.probe_sets import load_probe_sets
from cptkit.faults import StepFaults
from cptkit.modeling import count_parameters, load_model, load_tokenizer, prepare_for_training
from cptkit.peft import training as peft
from cptkit.peft.adapters import method_summary
from cptkit.peft.config import peft_of
from cptkit.planning import make_plan
from cptkit.regularizers.build import Regularizer, build_regularizer
from cptkit.schema import to_dict
from cptkit.tracking import Trackers
from cptkit.train.batches import TrainStream
from cptkit.train.budget import ForgettingBudget
from cptkit.train.checks import chunked_head_is_exact, ensure_document_masking
from cptkit.train.guard import StepGuard
from cptkit.train.losses import CausalLMLoss
from cptkit.train.moe import router_spec
from cptkit.train.optim import build_optimizer
from cptkit.train.run import STATE_VERSION, Run, RunLogs, run_defining, what_is_computed
from cptkit.train.stages import build_stages

log = logging.getLogger("cptkit")


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
    changed = [k for k in now if now[k] != what_is_computed(k, saved.get(k))]
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
    # qlora without CUDA, target_modules naming no layer, ...: refused before any data is prepared.
    peft.require_machine(cfg)
    peft.check_against_model(cfg)
    dist = setup(cfg.model.dtype, timeout=timedelta(hours=2))
    manifests = prepared_data(cfg, dist)
    plan = make_plan(cfg, manifests, dist.world_size)
    if dist.is_main:
        checkpoint.remove_partial_writes(run_dir)
        save_config(cfg, run_dir / "config.yaml")
        log.info("run folder %s: %s steps of %s tokens", run_dir, f"{plan.total_steps:,}", f"{plan.tokens_per_step:,}")
    torch.manual_seed(cfg.train.seed)
    tokenizer, model, chunk, peft_model = starting_model(cfg, dist.device)
    method = method_summary(model, peft_of(cfg))  # counted before wrapping (FSDP shards)
    base = peft.base_fingerprint(model) if peft_model is not None else None
    sets = eval_sets(cfg, manifests)
    key = base_scores.base_key(cfg, model, tokenizer, sets, probe_sets, chunk, dist) \
        if target is None and cfg.eval.reuse_base else None
    stream = TrainStream(train_windows(cfg, manifests, plan.domain_names + plan.general_names), plan.shares,
                         cfg.train.seed, cfg.train.document_masking)
    # Before the model is wrapped (DDP, FSDP) and before a resume loads its checkpoint: the
    # Fisher and the KL reference are always those of the starting weights.
    regularizer = regularizer_of(cfg, model, dist, manifests, resuming=target is not None, chunk=chunk,
                                 peft_model=peft_model)
    router = router_spec(model.config, cfg.train.router)
    module, optimizer = dist.wrap(
        CausalLMLoss(model, chunk, router), lambda m: build_optimizer(m, cfg.train), cfg.train.distributed,
        cfg.model.dtype,
    )
    # The anchors follow the parameters as wrapped: under FSDP each process holds its shards.
    regularizer.anchor_to(dist.accelerator.unwrap_model(module).lm)
    peft.bind_reference(regularizer, dist, module)
    run = Run(
        cfg=cfg, dir=run_dir, dist=dist, plan=plan, model=module, optimizer=optimizer, tokenizer=tokenizer,
        stream=stream, eval_sets=sets, probe_sets=probe_sets, regularizer=regularizer,
        guard=StepGuard(cfg.train.max_bad_steps, cfg.train.spike_factor, scaled_fp16=dist.precision.scaler is not None),
        budget=ForgettingBudget(cfg.train.forgetting_budget, cfg.train.forgetting_action,
                                cfg.train.rollback_lr_factor, cfg.train.rollback_replay, cfg.train.max_rollbacks),
        faults=StepFaults(dist.accelerator.unwrap_model(module)),
        stages=build_stages(cfg.train, dist.accelerator.unwrap_model(module).lm, optimizer, cfg.model.name_or_path),
        peft_model=peft_model, method=method, base_fingerprint=base, base_key=key,
    )
    if target is not None:
        resume_from(run, target)
    resumed_at = run.step if target is not None else None
    trackers = Trackers.open(cfg.logging, run_dir, is_main=dist.is_main, resume_step=resumed_at)
    trackers.log_params(to_dict(cfg))
    run.logs = RunLogs(run_dir, enabled=dist.is_main, resumed_at=resumed_at, trackers=trackers)
    return run


def starting_model(cfg: Config, device: torch.device) -> tuple[object, torch.nn.Module, int | None, object]:
    """(tokenizer, model ready to train, loss chunk size or None for the full-logits loss, the
    PeftModel around the model under train.peft or None)."""
    tokenizer = load_tokenizer(cfg.model)
    model = load_model(cfg.model, **peft.load_options(cfg, device))
    prepare_for_training(model, cfg.train.gradient_checkpointing, cfg.train.compile)
    log.info("model %s: %s parameters", cfg.model.name_or_path, f"{count_parameters(model):,}")
    peft_model = peft.adapt(model, cfg)  # freezing, or adapters (the model is adapted in place)
    chunk = None
    if cfg.train.loss_chunk_tokens:
        # On the unwrapped model where it was loaded: one 12-token forward, even for a large model.
        if chunked_head_is_exact(model, next(model.parameters()).device):
            chunk = cfg.train.loss_chunk_tokens
        else:
            log.info("model %s: logits are not a plain linear head; using full logits for the loss", type(model).__name__)
    if cfg.train.document_masking:
        # Here, before the regularizer's reference copies the choice of mask, in float32 as above.
        ensure_document_masking(model, next(model.parameters()).device)
    peft.store_frozen_low(peft_model, cfg)  # after the float32 checks above
    return tokenizer, model, chunk, peft_model


def regularizer_of(cfg: Config, model: torch.nn.Module, dist: Dist, manifests: dict[str, Manifest],
                   resuming: bool, chunk: int | None, peft_model=None) -> Regularizer:
    general = []
    if cfg.regularizer.kind == "ewc":
        general = [s.name for s in cfg.general_sources]
        model.to(dist.device)  # the Fisher pass runs on the starting weights, unsharded
    windows = list(train_windows(cfg, manifests, general).values())
    return build_regularizer(cfg, model, dist, Path(cfg.output_dir), windows, resuming=resuming, chunk=chunk,
                             peft_model=peft_model)


def resume_from(run: Run, target: Path) -> None:
    """Model, optimizer, RNG, data position and loop state of the checkpoint `target`."""
    weights, optimizer_state, state = checkpoint.load_state(target)
    if state.get("state_version") != STATE_VERSION:
        raise UserError(
            f"--resume {target}: this checkpoint was written by another version of cptkit (trainer state "
            f"{state.get('state_version', 1)}, this version reads {STATE_VERSION}). Resume it with the version "
            f"that wrote it, or start a new run from its weights (model.name_or_path: {run.dir / 'final'})."
        )
    _check_same_run(run.cfg, state["run_defining"], target)
    peft.check_same_base(state.get("frozen_base"), run.base_fingerprint, f"--resume {target}")
    run.dist.load_full_state(run.model, run.optimizer, weights, optimizer_state, where=str(target),
                             trainable_only=run.trainable_only)
    run.load_state_dict(state)
    if state.get("world_size", 1) != run.dist.world_size:
        log.info("resuming a %d-process state with %d process(es)", state.get("world_size", 1), run.dist.world_size)
    log.info("resumed from %s at step %d", target, run.step)


def train_windows(cfg: Config, manifests: dict[str, Manifest], names: list[str]) -> dict[str, WindowIndex]:
    root = cfg.prepared_dir
    return {
        n: WindowIndex(open_split(root / n / "train", manifests[n].shards["train"], manifests[n].dtype), cfg.data.seq_len)
        for n in names
    }


def prepared_data(cfg: Config, dist: Dist) -> dict[str, Manifest]:
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
        if (p.heldout or p.eval_only) and m.documents["eval"] == 0:
            raise UserError(
                f"data: no document of source {p.name!r} was held out for evaluation "
                f"({m.documents['kept']} documents, data.heldout_fraction {cfg.data.heldout_fraction}). "
                f"Raise data.heldout_fraction or give data.eval.{p.role if p.role != 'eval' else p.name[5:]}."
            )
    return outcome


def eval_sets(cfg: Config, manifests: dict[str, Manifest]) -> list[EvalSet]:
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
