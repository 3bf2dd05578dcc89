"""The config's cross-field rules: combinations that types and per-field ranges cannot rule out.

They run on the normalised config (`cptkit.config.normalise`: sources are lists, named, with
their pipelines parsed), so no rule handles a raw YAML value. `check` returns every problem at
once, each naming its dotted key; `check_paths` looks at the file system. Per-field ranges are
declared where each field is declared (`option(..., gt=0)`) and checked by the parser.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from cptkit.data.lang import missing_segmenters
from cptkit.data.paths import expand_paths
from cptkit.evaluation.probe_sets import check_spec, file_problems
from cptkit.peft.config import check_peft
from cptkit.train.config import DistributedConfig
from cptkit.train.schedules import SCHEDULES
from cptkit.train.stage_plan import check_stages

if TYPE_CHECKING:
    from cptkit.config import Config
    from cptkit.data.config import SourceConfig

LANGUAGE_CODE = re.compile(r"^[a-z]{2,3}$")


def check(cfg: Config) -> list[str]:
    """Every cross-field problem of a normalised config."""
    return [
        *_check_train(cfg), *_check_distributed(cfg.train.distributed, cfg.model.dtype), *_check_sources(cfg),
        *_check_mix(cfg), *_check_regularizer(cfg), *_check_eval(cfg), *_check_budget(cfg),
        # What the machine lacks (qlora without CUDA) is checked by `cptkit train` alone, so that a
        # GPU config can be planned anywhere.
        *check_peft(cfg, check_machine=False),
    ]


def _check_train(cfg: Config) -> list[str]:
    t, d, p = cfg.train, cfg.data, []
    if len(t.betas) != 2:
        p.append(f"train.betas: must be two numbers in [0, 1), got {t.betas}")
    if t.max_tokens is not None and t.max_steps is not None:
        p.append("train.max_tokens and train.max_steps: give one budget, not both")
    if t.global_batch_tokens < d.seq_len * t.micro_batch_size:
        p.append(
            f"train.global_batch_tokens, data.seq_len and train.micro_batch_size: {t.global_batch_tokens} "
            f"tokens per step is less than one micro batch ({d.seq_len} x {t.micro_batch_size})"
        )
    # Under an adapter method the scale also applies to the output layer (train.peft's own rule).
    if t.freeze_embeddings and t.embedding_lr_scale != 1.0 and not t.peft.active:
        p.append("train.freeze_embeddings and train.embedding_lr_scale: frozen embeddings have no learning rate; give one")
    return p + SCHEDULES[t.schedule].check(t) + check_stages(cfg)


def _check_distributed(dc: DistributedConfig, dtype: str) -> list[str]:
    p: list[str] = []
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


def _all_sources(cfg: Config) -> list[SourceConfig]:
    return cfg.data.domain + cfg.data.general + list(cfg.data.eval.values())


def _check_sources(cfg: Config) -> list[str]:
    p: list[str] = []
    for src in _all_sources(cfg):
        if src.dataset is not None and src.paths:
            p.append(f"{src.where}: give paths or dataset, not both")
        if src.dataset is None and not src.paths:
            p.append(f"{src.where}.paths: required: files, folders or globs (or give dataset)")
        if not src.language:
            p.append(f"{src.where}.language: name at least one language (ISO 639-1 code, e.g. en, ko)")
        for code in src.language:
            if not LANGUAGE_CODE.match(code):
                p.append(f"{src.where}.language: {code!r} is not an ISO 639-1 code (two lowercase letters: en, ko, zh)")
        p += missing_segmenters(src.language, f"{src.where}.language")
    return p


def _check_mix(cfg: Config) -> list[str]:
    p: list[str] = []
    m, cur = cfg.mix, cfg.mix.curriculum
    if m.replay_ratio and not cfg.general_sources:
        p.append("mix.replay_ratio: replay needs data.general (the text to replay)")
    if cur is not None:
        if m.replay_ratio is not None:
            p.append("mix.replay_ratio and mix.curriculum: give one (the curriculum sets the replay share as 1 - domain share)")
        if min(cur.start, cur.end) < 1 and not cfg.general_sources:
            p.append("mix.curriculum: a domain share below 1 needs data.general (the rest of the mix)")
    roles = {role: [s.name for s in sources] for role, sources in (("domain", cfg.domain_sources),
                                                                    ("general", cfg.general_sources))}
    known = roles["domain"] + roles["general"]
    p += [f"mix.weights.{name}: no training source has this name (sources: {', '.join(known)})"
          for name in m.weights if name not in known]
    for role, names in roles.items():
        named = [n for n in names if n in m.weights]
        if named and len(named) < len(names):
            missing = ", ".join(n for n in names if n not in m.weights)
            p.append(f"mix.weights: names {role} source(s) {', '.join(named)} but not {missing}; "
                     f"give a weight to every {role} source or to none")
    return p


def _check_regularizer(cfg: Config) -> list[str]:
    p: list[str] = []
    r = cfg.regularizer
    kl_options = r.kl_on != "all" or r.kl_every != 1 or r.kl_direction != "forward" or r.reference_dtype != "float32"
    if r.kind != "kl" and kl_options:
        p.append("regularizer.kl_on / kl_every / kl_direction / reference_dtype: only used with "
                 f"regularizer.kind kl, not {r.kind!r}")
    if r.kind != "ewc" and r.fisher_path is not None:
        p.append(f"regularizer.fisher_path: only used with regularizer.kind ewc, not {r.kind!r}")
    if r.kind == "kl" and r.kl_on == "replay" and not cfg.replay_in_use:
        p.append("regularizer.kl_on: replay needs replayed data.general rows (mix.replay_ratio > 0 or a curriculum)")
    if r.kind == "ewc" and r.fisher_path is None and not cfg.general_sources:
        p.append("regularizer.kind: ewc estimates its Fisher on data.general; give data.general or regularizer.fisher_path")
    return p


def _check_eval(cfg: Config) -> list[str]:
    p: list[str] = []
    metric, names = cfg.checkpoint.metric, cfg.eval_set_names()
    stem, _, kind = metric.rpartition("_")
    if kind not in ("ppl", "loss", "bpb") or stem not in names:
        options = ", ".join(f"{n}_ppl" for n in names)
        p.append(f"checkpoint.metric: {metric!r} is not an eval metric of this run (e.g. {options})")
    for name, spec in cfg.eval.probes.items():
        p += check_spec(f"eval.probes.{name}", name, spec, check_path=False)
    return p


def _check_budget(cfg: Config) -> list[str]:
    t, p = cfg.train, []
    if t.forgetting_budget is None:
        return p
    if "general" not in cfg.eval_set_names():
        p.append("train.forgetting_budget: needs a `general` eval set (data.general, or data.eval.general)")
    if t.forgetting_action == "rollback" and t.rollback_replay > 0 and not cfg.replay_in_use:
        p.append("train.rollback_replay: raising replay on rollback needs replay in use (mix.replay_ratio > 0 "
                 "or mix.curriculum with data.general); set it to 0 to only lower the learning rate")
    return p


def check_paths(cfg: Config) -> list[str]:
    """Inputs that match no file, a missing Fisher file or model folder, missing probe files."""
    p: list[str] = []
    for src in _all_sources(cfg):
        if src.dataset is None:
            p += [f"{src.where}.paths: {pattern!r} matches no file" for pattern in src.paths
                  if not expand_paths([pattern])]
    fisher = cfg.regularizer.fisher_path
    if fisher is not None and not Path(fisher).expanduser().is_file():
        p.append(f"regularizer.fisher_path: {fisher!r} is not a file")
    model = cfg.model.name_or_path
    looks_local = model.startswith(("/", ".", "~")) or model.count("/") != 1 or os.sep in model[:1]
    if looks_local and not Path(model).expanduser().exists():
        p.append(f"model.name_or_path: {model!r} is not an existing folder (nor a hub id of the form org/name)")
    for name, spec in cfg.eval.probes.items():
        p += file_problems(f"eval.probes.{name}", spec)
    return p
