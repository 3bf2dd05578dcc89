"""Config rules that types alone cannot express: value ranges, combinations, paths.

`check` returns every problem at once, each naming its dotted key; `cptkit.config.load_config`
runs it once the types are right. The rules of the forgetting mitigations live beside the code
that reads those keys (mixing, schedules, freezing, regularizers) and are gathered here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cptkit.config import Config, DistributedConfig, SourceConfig, expand_paths


def check(cfg: Config, base_dir: Path, check_paths: bool = True) -> list[str]:
    """Combinations and values that types alone cannot rule out."""
    p: list[str] = []
    t, d, m = cfg.train, cfg.data, cfg.mix

    def positive(path: str, value: float | None, allow_zero: bool = False) -> None:
        if value is None:
            return
        if value < 0 or (value == 0 and not allow_zero):
            p.append(f"{path}: must be {'>= 0' if allow_zero else '> 0'}, got {value}")

    def unit(path: str, value: float | None, closed: bool = True) -> None:
        if value is not None and not (0 <= value <= 1 if closed else 0 <= value < 1):
            p.append(f"{path}: must lie in [0, 1{']' if closed else ')'}, got {value}")

    positive("train.lr", t.lr)
    positive("data.seq_len", d.seq_len)
    positive("train.micro_batch_size", t.micro_batch_size)
    positive("train.global_batch_tokens", t.global_batch_tokens)
    positive("train.max_tokens", t.max_tokens)
    positive("train.max_steps", t.max_steps)
    positive("train.weight_decay", t.weight_decay, allow_zero=True)
    positive("train.max_grad_norm", t.max_grad_norm, allow_zero=True)
    positive("train.eps", t.eps)
    positive("train.log_every", t.log_every)
    positive("train.warmup_steps", t.warmup_steps, allow_zero=True)
    positive("train.loss_chunk_tokens", t.loss_chunk_tokens, allow_zero=True)
    positive("data.shard_tokens", d.shard_tokens)
    positive("data.num_workers", d.num_workers, allow_zero=True)
    positive("data.heldout_max_docs", d.heldout_max_docs, allow_zero=True)
    positive("data.part_bytes", d.part_bytes)
    positive("data.max_document_bytes", d.max_document_bytes)
    positive("data.minhash.ngram", d.minhash.ngram)
    positive("data.minhash.bands", d.minhash.bands)
    positive("data.minhash.rows", d.minhash.rows)
    p += _check_sources(cfg)
    positive("checkpoint.every_steps", cfg.checkpoint.every_steps)
    positive("checkpoint.keep_last", cfg.checkpoint.keep_last)
    positive("checkpoint.keep_best", cfg.checkpoint.keep_best, allow_zero=True)
    positive("eval.every_steps", cfg.eval.every_steps)
    positive("eval.max_tokens", cfg.eval.max_tokens)
    positive("eval.micro_batch_size", cfg.eval.micro_batch_size)
    positive("eval.probe_new_tokens", cfg.eval.probe_new_tokens)
    positive("eval.probe_batch_size", cfg.eval.probe_batch_size)
    positive("regularizer.weight", cfg.regularizer.weight, allow_zero=True)
    unit("train.warmup_ratio", t.warmup_ratio, closed=False)
    unit("train.min_lr_ratio", t.min_lr_ratio)
    unit("data.heldout_fraction", d.heldout_fraction, closed=False)
    unit("mix.replay_ratio", m.replay_ratio, closed=False)
    if len(t.betas) != 2 or not all(0 <= b < 1 for b in t.betas):
        p.append(f"train.betas: must be two numbers in [0, 1), got {t.betas}")
    if t.max_tokens is not None and t.max_steps is not None:
        p.append("train.max_tokens and train.max_steps: give one budget, not both")
    if t.global_batch_tokens < d.seq_len * t.micro_batch_size and t.global_batch_tokens > 0:
        p.append(
            f"train.global_batch_tokens: {t.global_batch_tokens} is less than one micro batch "
            f"(data.seq_len {d.seq_len} x train.micro_batch_size {t.micro_batch_size})"
        )
    p += _check_distributed(t.distributed, cfg.model.dtype)
    if m.replay_ratio and not cfg.general_sources:
        p.append("mix.replay_ratio: replay needs data.general (the text to replay)")
    # The rules of the forgetting mitigations live beside the code that reads those keys.
    from cptkit.mixing import check_mix
    from cptkit.regularizers.checks import check_regularizer
    from cptkit.train.freezing import check_freezing
    from cptkit.train.schedules import check_schedule

    p += check_mix(cfg) + check_schedule(t) + check_freezing(t) + check_regularizer(cfg)
    metric = cfg.checkpoint.metric
    names = cfg.eval_set_names()
    stem, _, kind = metric.rpartition("_")
    if kind not in ("ppl", "loss", "bpb") or stem not in names:
        options = ", ".join(f"{n}_ppl" for n in names)
        p.append(f"checkpoint.metric: {metric!r} is not an eval metric of this run (e.g. {options})")
    from cptkit.evaluation.probes import check_spec

    for name, spec in cfg.eval.probes.items():
        p += check_spec(f"eval.probes.{name}", name, spec, check_path=check_paths)
    p += _check_budget(cfg)
    if check_paths:
        p += _check_paths(cfg, base_dir)
    return p


def _check_budget(cfg: Config) -> list[str]:
    t, p = cfg.train, []
    if t.forgetting_budget is None:
        return p
    if t.forgetting_budget < 0:
        p.append(f"train.forgetting_budget: must be >= 0 (the allowed relative rise), got {t.forgetting_budget}")
    if "general" not in cfg.eval_set_names():
        p.append("train.forgetting_budget: needs a `general` eval set (data.general, or data.eval.general)")
    if not 0 < t.rollback_lr_factor <= 1:
        p.append(f"train.rollback_lr_factor: must lie in (0, 1], got {t.rollback_lr_factor}")
    if not 0 <= t.rollback_replay < 1:
        p.append(f"train.rollback_replay: must lie in [0, 1), got {t.rollback_replay}")
    if t.forgetting_action == "rollback" and t.rollback_replay > 0 and not cfg.replay_in_use:
        p.append("train.rollback_replay: raising replay on rollback needs replay in use (mix.replay_ratio > 0 "
                 "or mix.curriculum with data.general); set it to 0 to only lower the learning rate")
    if t.max_rollbacks < 0:
        p.append(f"train.max_rollbacks: must be >= 0, got {t.max_rollbacks}")
    return p


def _check_distributed(dc: DistributedConfig, dtype: str) -> list[str]:
    p: list[str] = []
    if dc.shard_group_size is not None and dc.shard_group_size <= 0:
        p.append(f"train.distributed.shard_group_size: must be > 0, got {dc.shard_group_size}")
    if dc.strategy == "fsdp":
        if dtype == "float16":
            p.append("train.distributed.strategy: fsdp trains in model.dtype float32 or bfloat16, not float16 "
                     "(float16 needs loss scaling across shards); use bfloat16")
        if dc.shard_group_size is not None and dc.sharding != "hybrid":
            p.append("train.distributed.shard_group_size: applies to sharding: hybrid only")
        return p
    defaults = DistributedConfig()
    for key in ("sharding", "shard_group_size", "reshard_after_forward", "reduce_dtype", "cpu_offload"):
        if getattr(dc, key) != getattr(defaults, key):
            p.append(f"train.distributed.{key}: applies to strategy fsdp only (strategy is {dc.strategy})")
    return p


def _sources(cfg: Config) -> list[tuple[str, SourceConfig]]:
    """Every source with its dotted path in the config."""
    roles: list[tuple[str, Any]] = []
    for role in ("domain", "general"):
        value = getattr(cfg.data, role)
        if isinstance(value, list):
            roles += [(f"data.{role}[{i}]", s) for i, s in enumerate(value)]
        elif value is not None:
            roles.append((f"data.{role}", value))
    return roles + [(f"data.eval.{name}", s) for name, s in cfg.data.eval.items()]


def _check_sources(cfg: Config) -> list[str]:
    from cptkit.data.pipelines import parse_pipeline

    p: list[str] = []
    for path, src in _sources(cfg):
        if src.dataset is not None and src.paths:
            p.append(f"{path}: give paths or dataset, not both")
        if src.dataset is None and not src.paths:
            p.append(f"{path}.paths: required: files, folders or globs (or give dataset)")
        parse_pipeline(src.pipeline, f"{path}.pipeline", p)
    return p


def _check_paths(cfg: Config, base_dir: Path) -> list[str]:
    p: list[str] = []
    for path, src in _sources(cfg):
        if src.dataset is not None:
            continue
        patterns = [src.paths] if isinstance(src.paths, str) else src.paths
        for pattern in patterns:
            if not expand_paths([pattern]):
                p.append(f"{path}.paths: {pattern!r} matches no file")
    fisher = cfg.regularizer.fisher_path
    if fisher is not None and not Path(fisher).expanduser().is_file():
        p.append(f"regularizer.fisher_path: {fisher!r} is not a file")
    model = cfg.model.name_or_path
    looks_local = model.startswith(("/", ".", "~")) or model.count("/") != 1 or os.sep in model[:1]
    if looks_local and not Path(model).expanduser().exists():
        p.append(f"model.name_or_path: {model!r} is not an existing folder (nor a hub id of the form org/name)")
    return p
