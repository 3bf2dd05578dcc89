"""The run config: one YAML file, typed sections, every field documented where it is declared.

`load_config(path, overrides)` reads the YAML and applies `--set dotted.key=value` overrides, then

1. parses every section into its dataclass, checking types and each field's declared range
   (`option(..., gt=0)`), and listing every unknown key;
2. normalises: single values become lists, every source gets its name and its dotted path, each
   source's `pipeline` is parsed once into typed step specs (`SourceConfig.steps`) that every
   later stage uses, and the documented context-dependent defaults are filled in, so that the
   resolved `config.yaml` shows what was used;
3. checks the cross-field rules on the normalised config (`cptkit.validation`), then the paths;

and raises one `UserError` that lists every problem with its dotted path. Only
`model.name_or_path`, `data.domain` and `output_dir` are required. This module and everything it
imports stay free of torch, so reading a config is fast.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from cptkit import validation
from cptkit.data.config import DataConfig, DatasetConfig, MinHashConfig, SourceConfig
from cptkit.data.paths import expand_paths
from cptkit.data.pipelines import parse_pipeline
from cptkit.durable import write_text
from cptkit.errors import UserError
from cptkit.peft.config import fill_defaults as fill_peft_defaults
from cptkit.regularizers.config import RegularizerConfig
from cptkit.schema import INVALID, option, parse, to_dict
from cptkit.tracking.config import LoggingConfig
from cptkit.train.config import DistributedConfig, TrainConfig

__all__ = [
    "Config", "DataConfig", "DatasetConfig", "DistributedConfig", "MinHashConfig", "RegularizerConfig",
    "SourceConfig", "TrainConfig", "expand_paths", "load_config",
]

Dtype = Literal["float32", "bfloat16", "float16"]


@dataclass
class ModelConfig:
    name_or_path: str = option(
        help="Starting weights: a local Hugging Face model folder or a hub id "
        "(any AutoModelForCausalLM). These are weights only; resuming a run is `--resume`."
    )
    dtype: Dtype = option(
        "bfloat16",
        help="Compute precision. float32: plain. bfloat16: autocast with float32 master weights. "
        "float16: autocast with float32 master weights and dynamic loss scaling.",
    )
    trust_remote_code: bool = option(
        False, help="Run modelling code shipped inside the model folder. Off unless you trust it."
    )
    revision: str | None = option(None, help="Hub revision (branch, tag or commit) of a hub id.")
    attn_implementation: str = option(
        "auto", help="Attention kernel: auto (sdpa where the model supports it, else eager; logged) or a name "
        "passed to from_pretrained as it is: sdpa | eager | flash_attention_2 | flex_attention.",
    )


@dataclass
class CurriculumConfig:
    start: float = option(gt=0, le=1, subject="the domain share", help="Domain share of training sequences at the first step.")
    end: float = option(gt=0, le=1, subject="the domain share", help="Domain share at the last step.")
    shape: Literal["linear", "cosine"] = option(
        "linear", help="How the share moves from start to end over training progress: linear or cosine (slow, fast, slow)."
    )


@dataclass
class MixConfig:
    replay_ratio: float | None = option(
        None,
        ge=0,
        lt=1,
        help="Share of training tokens drawn from data.general (compute-equivalent: they come out of "
        "the token budget). Default: 0.05 when data.general is given and no curriculum is set, else 0.",
    )
    curriculum: CurriculumConfig | None = option(
        None,
        help="A domain share that moves over training, e.g. {start: 0.5, end: 0.9}; the rest is "
        "data.general. Instead of replay_ratio.",
    )
    weights: dict[str, float] = option(
        default_factory=dict,
        gt=0,
        help="Relative weight of each training source within its role, by source name: domain sources "
        "split the domain share, general sources the replay share. A role with several sources "
        "that names none here splits by size (training tokens); naming one names them all.",
    )


@dataclass
class CheckpointConfig:
    every_steps: int = option(1000, gt=0, help="Save a resumable state every this many steps (and at the end).")
    keep_last: int = option(2, gt=0, help="Keep the newest this many resumable states.")
    keep_best: int = option(3, ge=0, help="Also keep this many states with the best checkpoint.metric.")
    metric: str = option(
        "domain_ppl", help="NAME_ppl, NAME_loss or NAME_bpb of an eval set; lower is better. Chooses best/."
    )


@dataclass
class EvalConfig:
    every_steps: int = option(500, gt=0, help="Evaluate every this many steps; always at step 0 and at the end.")
    max_tokens: int = option(2_000_000, gt=0, help="Tokens scored per eval set (the first ones, in order).")
    micro_batch_size: int | None = option(None, gt=0, help="Sequences per eval forward; default: train.micro_batch_size.")
    probes: dict[str, str] = option(
        default_factory=lambda: {"general": "builtin:general"},
        help="Named probe sets scored at every evaluation (answer log-likelihood, greedy exact match, "
        "choice among distractors): NAME: a JSONL file of {prompt, answer, distractors?} lines, or "
        "builtin:general (shipped general knowledge) / builtin:template. {} turns probes off.",
    )
    probe_new_tokens: int = option(
        16, gt=0, help="Greedy tokens generated per probe; the continuation must begin with the answer."
    )
    probe_batch_size: int = option(32, gt=0, help="Probe sequences per forward (they are short).")
    reuse_base: bool = option(
        True, help="A fresh run reuses the step-0 scores an earlier run kept in PREPARED_DIR/base-scores/ when the "
        "weights, eval windows, probes, tokenizer, settings and code are all the same; false scores the base again.",
    )


@dataclass
class Config:
    model: ModelConfig = option(help="The model to start from.")
    data: DataConfig = option(help="Corpora, eval sets and packing.")
    output_dir: str = option(help="The run folder: config, shards, metrics, checkpoints, report.")
    mix: MixConfig = option(default_factory=MixConfig, help="How domain and general data are mixed.")
    train: TrainConfig = option(default_factory=TrainConfig, help="Optimisation.")
    regularizer: RegularizerConfig = option(default_factory=RegularizerConfig, help="Forgetting penalties.")
    checkpoint: CheckpointConfig = option(default_factory=CheckpointConfig, help="Resumable states and best/.")
    eval: EvalConfig = option(default_factory=EvalConfig, help="Perplexity and bits-per-byte evaluation.")
    logging: LoggingConfig = option(
        default_factory=LoggingConfig, help="Experiment trackers (TensorBoard, W&B, MLflow); none by default."
    )

    @property
    def domain_sources(self) -> list[SourceConfig]:
        return self.data.domain

    @property
    def general_sources(self) -> list[SourceConfig]:
        return self.data.general

    @property
    def training_sources(self) -> list[SourceConfig]:
        return self.data.domain + self.data.general

    @property
    def prepared_dir(self) -> Path:
        return Path(self.data.prepared_dir or Path(self.output_dir) / "data")

    @property
    def replay_in_use(self) -> bool:
        """Whether any training sequence comes from data.general (replay ratio or curriculum)."""
        cur = self.mix.curriculum
        if cur is not None:
            return min(cur.start, cur.end) < 1.0
        return bool(self.mix.replay_ratio)

    def eval_set_names(self) -> list[str]:
        names = ["domain"]
        if self.general_sources:
            names.append("general")
        names += [n for n in self.data.eval if n not in names]
        return names


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def set_dotted(data: dict, dotted: str, value: Any) -> None:
    """Apply one `--set a.b.c=value` override to the raw mapping."""
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[keys[-1]] = value


def parse_overrides(items: list[str]) -> list[tuple[str, Any]]:
    out = []
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set {item!r}: expected dotted.key=value, e.g. --set train.lr=2e-5")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        out.append((key.strip(), value))
    return out


def load_raw(path: str | os.PathLike) -> dict:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: config file not found")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{p}:{mark.line + 1}" if mark else str(p)
        raise UserError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    except UnicodeDecodeError:
        raise UserError(f"{p}: not UTF-8 text") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{p}: the config must be a YAML mapping of sections, got {type(data).__name__}")
    return data


def load_config(
    path: str | os.PathLike | None,
    overrides: list[str] | None = None,
    raw: dict | None = None,
    check_paths: bool = True,
) -> Config:
    """Read, override, parse, normalise and check a run config; raise UserError listing every problem."""
    data = raw if raw is not None else load_raw(path)
    for key, value in parse_overrides(overrides or []):
        set_dotted(data, key, value)
    problems: list[str] = []
    cfg = parse(Config, data, "", problems)
    if cfg is INVALID:
        raise UserError(f"{path or 'config'}: {len(problems)} problem(s):", problems)
    normalise(cfg, problems)
    problems += validation.check(cfg)
    if check_paths:
        problems += validation.check_paths(cfg)
    if problems:
        raise UserError(f"{path or 'config'}: {len(problems)} problem(s):", problems)
    return cfg


def normalise(cfg: Config, problems: list[str]) -> None:
    """Lists, names, dotted paths and parsed pipelines of every source; the context defaults."""
    d = cfg.data
    d.domain, d.general = _as_list(d.domain), _as_list(d.general)
    for role, sources in (("domain", d.domain), ("general", d.general)):
        for i, src in enumerate(sources):
            src.where = f"data.{role}" + (f"[{i}]" if len(sources) > 1 else "")
            src.name = source_name(role, i, sources)
            _normalise_source(src, problems)
    for name, src in d.eval.items():
        src.where = f"data.eval.{name}"
        _normalise_source(src, problems)
    if cfg.mix.replay_ratio is None and cfg.mix.curriculum is None:
        cfg.mix.replay_ratio = 0.05 if d.general else 0.0
    fill_peft_defaults(cfg)  # train.embedding_lr_scale: 0.2 under an adapter method


def _normalise_source(src: SourceConfig, problems: list[str]) -> None:
    src.paths = _as_list(src.paths)
    src.language = _as_list(src.language)
    src.steps = parse_pipeline(src.pipeline, f"{src.where}.pipeline", problems, language=src.language)


def source_name(role: str, index: int, sources: list[SourceConfig]) -> str:
    """A source's name in logs, manifests and mix.weights: its own, else role or role<index>."""
    src = sources[index]
    if src.name is not None:
        return src.name
    return role if len(sources) == 1 else f"{role}{index}"


def save_config(cfg: Config, path: Path) -> None:
    """The resolved config as YAML, written atomically."""
    write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True))
