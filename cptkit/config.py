"""The run config: one YAML file, typed sections, every field documented where it is declared.

`load_config(path, overrides)` reads the YAML, applies `--set dotted.key=value` overrides, parses
each section with its type, checks the combinations, and raises one `UserError` that lists every
problem with its dotted path. Only `model.name_or_path`, `data.domain` and `output_dir` are
required; everything else has the default written beside it.
"""

from __future__ import annotations

import dataclasses
import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from cptkit.data.config import DataConfig, DatasetConfig, MinHashConfig, SourceConfig
from cptkit.errors import UserError
from cptkit.schema import INVALID, option, parse, to_dict

__all__ = ["Config", "DataConfig", "DatasetConfig", "MinHashConfig", "SourceConfig", "load_config"]

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
        "sdpa", help="Attention kernel passed to from_pretrained: sdpa | eager | flash_attention_2."
    )


@dataclass
class CurriculumConfig:
    start: float = option(help="Domain share of training sequences at the first step.")
    end: float = option(help="Domain share at the last step.")
    shape: Literal["linear", "cosine"] = option(
        "linear", help="How the share moves from start to end over training progress: linear or cosine (slow, fast, slow)."
    )


@dataclass
class MixConfig:
    replay_ratio: float | None = option(
        None,
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
        help="Relative weight of each training source within its role, by source name: domain sources "
        "split the domain share, general sources the replay share. A role with several sources "
        "that names none here splits by size (training tokens); naming one names them all.",
    )


@dataclass
class DistributedConfig:
    strategy: Literal["ddp", "fsdp"] = option(
        "ddp",
        help="With several processes (torchrun): ddp keeps a whole model and optimizer per process and "
        "all-reduces gradients; fsdp shards weights, gradients and optimizer state over processes "
        "(torch FSDP2, one unit per decoder layer). Ignored with one process.",
    )
    sharding: Literal["full", "hybrid"] = option(
        "full",
        help="fsdp only. full: shard over every process. hybrid: shard within groups of "
        "shard_group_size processes (a node) and replicate across groups, so only gradient "
        "all-reduce crosses nodes.",
    )
    shard_group_size: int | None = option(
        None, help="fsdp hybrid only: processes per shard group; default: processes per node (LOCAL_WORLD_SIZE)."
    )
    reshard_after_forward: bool = option(
        True,
        help="fsdp only. true: free each layer's gathered weights after its forward and gather them again "
        "for backward (least memory). false: keep them until backward (one gather less per layer).",
    )
    reduce_dtype: Literal["float32", "bfloat16"] = option(
        "float32",
        help="fsdp only: precision in which gradients are reduced across processes. Weights are "
        "gathered and computed in model.dtype; master weights and optimizer state stay float32.",
    )
    cpu_offload: bool = option(
        False, help="fsdp only: keep the sharded weights, gradients and optimizer state in CPU memory (GPU runs)."
    )


@dataclass
class TrainConfig:
    lr: float = option(2e-5, help="Peak learning rate (about a tenth of a typical pre-training peak).")
    schedule: Literal["cosine", "constant", "wsd", "infinite"] = option(
        "cosine",
        help="cosine: linear warmup, cosine decay to min_lr_ratio*lr. constant: warmup, then flat. "
        "wsd: warmup, flat, then the last decay_ratio of steps decays to the floor. infinite: warmup, "
        "cooldown to constant_lr_ratio*lr, flat, then a final anneal (the last decay_ratio) to the floor.",
    )
    warmup_ratio: float = option(0.03, help="Warmup length as a share of the total steps.")
    warmup_steps: int | None = option(None, help="Warmup length in steps; overrides warmup_ratio.")
    min_lr_ratio: float = option(0.1, help="The floor every decaying schedule ends at, as a share of lr.")
    decay_ratio: float = option(
        0.1, help="wsd and infinite: the final decay's length as a share of the steps after warmup."
    )
    decay_shape: Literal["linear", "cosine", "sqrt"] = option(
        "linear", help="wsd and infinite: shape of the final decay; sqrt is 1 - sqrt(progress)."
    )
    cooldown_ratio: float = option(
        0.1, help="infinite: length of the cooldown from lr to the constant level, as a share of the steps after warmup."
    )
    constant_lr_ratio: float = option(0.5, help="infinite: the constant level as a share of lr.")
    weight_decay: float = option(0.01, help="Decoupled AdamW weight decay (not applied to norms, biases).")
    betas: list[float] = option(default_factory=lambda: [0.9, 0.95], help="AdamW betas.")
    eps: float = option(1e-8, help="AdamW epsilon.")
    max_grad_norm: float = option(1.0, help="Clip the global gradient norm to this; 0 turns clipping off.")
    global_batch_tokens: int = option(
        524288, help="Tokens per optimizer step over all processes; rounded down to whole sequences."
    )
    micro_batch_size: int = option(4, help="Sequences per forward pass per process (gradient accumulation fills the rest).")
    max_tokens: int | None = option(
        None, help="Training budget in tokens. Default (with max_steps unset): one pass over the domain data plus its replay."
    )
    max_steps: int | None = option(None, help="Training budget in optimizer steps (instead of max_tokens).")
    seed: int = option(42, help="Seed for weights that start random, data order and every other random draw.")
    log_every: int = option(1, help="Write a metrics.jsonl line every this many optimizer steps.")
    document_masking: bool = option(
        True, help="Restart position ids at each document so attention never crosses documents in a pack."
    )
    loss_chunk_tokens: int = option(
        1024,
        help="Tokens per chunk of the fused output-layer + cross-entropy, so full float32 logits never "
        "exist; 0 uses the model's full logits. Models with scaled or capped logits fall back to full.",
    )
    freeze_embeddings: bool = option(
        False, help="Do not train the input embeddings. With tied embeddings this freezes the output layer too."
    )
    freeze_lm_head: bool = option(
        False, help="Do not train the output layer. With tied embeddings this freezes the input embeddings too."
    )
    freeze_layers: int = option(0, help="Do not train the first this many decoder layers.")
    embedding_lr_scale: float = option(
        1.0, help="Learning-rate multiplier for the input embeddings (and a tied output layer), e.g. 0.1."
    )
    max_bad_steps: int = option(
        5,
        help="A step with a NaN or Inf loss or gradient is skipped (no update) and counted; this many in a "
        "row stop the run, leaving the newest checkpoint as it was.",
    )
    spike_factor: float = option(
        3.0, help="Report a step whose loss exceeds this many times the mean of the last 50 steps; 0: off."
    )
    forgetting_budget: float | None = option(
        None,
        help="Largest allowed relative rise of general perplexity over the base model (e.g. 0.05): best/ is "
        "the best domain checkpoint within it, and forgetting_action says what an over-budget evaluation does.",
    )
    forgetting_action: Literal["keep_going", "stop", "rollback"] = option(
        "rollback",
        help="Over budget: keep_going (only best/ respects the budget), stop the run, or rollback to the "
        "newest checkpoint within budget and continue with a lower lr and more replay.",
    )
    rollback_lr_factor: float = option(0.5, help="rollback: multiply the learning rate by this at each rollback.")
    rollback_replay: float = option(
        0.05, help="rollback: move this much of the domain share to replay at each rollback."
    )
    max_rollbacks: int = option(3, help="rollback: after this many rollbacks an over-budget evaluation stops the run.")
    gradient_checkpointing: bool = option(
        False,
        help="Recompute each decoder layer's activations during backward instead of keeping them: "
        "activation memory of about one layer instead of all, for about a third more compute.",
    )
    compile: bool = option(
        False, help="torch.compile each decoder layer (the first steps are slower while it compiles)."
    )
    distributed: DistributedConfig = option(
        default_factory=DistributedConfig, help="How several processes (torchrun) share the model and the work."
    )


@dataclass
class RegularizerConfig:
    kind: Literal["none", "kl", "ewc", "l2sp"] = option(
        "none",
        help="Penalty against forgetting. kl: KL divergence to the frozen starting model on the training "
        "tokens. ewc: (weight/2) * sum F (theta - theta0)^2 with a diagonal Fisher F from data.general. "
        "l2sp: the same with F = 1.",
    )
    weight: float = option(
        0.1, help="Weight of the penalty in the loss (beta for kl, lambda for ewc and l2sp)."
    )
    kl_direction: Literal["forward", "reverse"] = option(
        "forward",
        help="forward: KL(reference || current), mass-covering, what kl_div(log_softmax(current), "
        "softmax(reference)) computes. reverse: KL(current || reference), mode-seeking.",
    )
    kl_on: Literal["all", "replay"] = option(
        "all", help="Tokens the KL term covers: all training tokens, or only those of data.general rows."
    )
    kl_every: int = option(1, help="Compute the KL term on every this many optimizer steps (1: every step).")
    reference_dtype: Literal["float32", "bfloat16"] = option(
        "float32", help="Weights of the frozen reference model for kl; bfloat16 halves its memory."
    )
    fisher_path: str | None = option(
        None,
        help="ewc: a Fisher saved by an earlier run (RUN_DIR/fisher.safetensors) to reuse; without "
        "it the Fisher is estimated on data.general at the start and saved there.",
    )
    fisher_tokens: int = option(
        200_000, help="ewc: training tokens of data.general to estimate the Fisher on (fewer if the data holds fewer)."
    )
    fisher_kind: Literal["true", "empirical"] = option(
        "true",
        help="ewc: true: labels sampled from the model's own predictions (the Fisher information). "
        "empirical: the data's own next tokens (the empirical Fisher, an approximation).",
    )


@dataclass
class CheckpointConfig:
    every_steps: int = option(1000, help="Save a resumable state every this many steps (and at the end).")
    keep_last: int = option(2, help="Keep the newest this many resumable states.")
    keep_best: int = option(3, help="Also keep this many states with the best checkpoint.metric.")
    metric: str = option(
        "domain_ppl", help="NAME_ppl, NAME_loss or NAME_bpb of an eval set; lower is better. Chooses best/."
    )


@dataclass
class EvalConfig:
    every_steps: int = option(500, help="Evaluate every this many steps; always at step 0 and at the end.")
    max_tokens: int = option(2_000_000, help="Tokens scored per eval set (the first ones, in order).")
    micro_batch_size: int | None = option(None, help="Sequences per eval forward; default: train.micro_batch_size.")
    probes: dict[str, str] = option(
        default_factory=lambda: {"general": "builtin:general"},
        help="Named probe sets scored at every evaluation (answer log-likelihood, greedy exact match, "
        "choice among distractors): NAME: a JSONL file of {prompt, answer, distractors?} lines, or "
        "builtin:general (shipped general knowledge) / builtin:template. {} turns probes off.",
    )
    probe_new_tokens: int = option(
        16, help="Greedy tokens generated per probe; the continuation must begin with the answer."
    )
    probe_batch_size: int = option(32, help="Probe sequences per forward (they are short).")


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

    # Derived views, filled by resolve(); not part of the YAML.
    @property
    def domain_sources(self) -> list[SourceConfig]:
        return _as_list(self.data.domain)

    @property
    def general_sources(self) -> list[SourceConfig]:
        return _as_list(self.data.general)

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
    """Read, override, parse and check a run config; raise UserError listing every problem."""
    data = raw if raw is not None else load_raw(path)
    for key, value in parse_overrides(overrides or []):
        set_dotted(data, key, value)
    problems: list[str] = []
    cfg = parse(Config, data, "", problems)
    if cfg is INVALID:
        raise UserError(f"{path or 'config'}: {len(problems)} problem(s):", problems)
    from cptkit.validation import check

    problems += check(cfg, base_dir=Path(path).parent if path else Path.cwd(), check_paths=check_paths)
    if problems:
        raise UserError(f"{path or 'config'}: {len(problems)} problem(s):", problems)
    resolve(cfg)
    return cfg


def resolve(cfg: Config) -> None:
    """Fill the documented context-dependent defaults so config.yaml shows what was used."""
    if cfg.mix.replay_ratio is None and cfg.mix.curriculum is None:
        cfg.mix.replay_ratio = 0.05 if cfg.general_sources else 0.0
    cfg.data.domain = cfg.domain_sources
    cfg.data.general = cfg.general_sources or None
    for role, sources in (("domain", cfg.domain_sources), ("general", cfg.general_sources)):
        for i, src in enumerate(sources):
            if isinstance(src.paths, str):
                src.paths = [src.paths]
            src.name = source_name(role, i, sources)
    for src in cfg.data.eval.values():
        if isinstance(src.paths, str):
            src.paths = [src.paths]


def source_name(role: str, index: int, sources: list[SourceConfig]) -> str:
    """A source's name in logs, manifests and mix.weights: its own, else role or role<index>."""
    src = sources[index]
    if src.name is not None:
        return src.name
    return role if len(sources) == 1 else f"{role}{index}"


def expand_paths(patterns: list[str]) -> list[Path]:
    """Files named by paths, folders (recursive) and globs, sorted and without repeats."""
    seen: dict[Path, None] = {}
    for pattern in patterns:
        pattern = os.path.expanduser(pattern)
        matches = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        for match in matches:
            path = Path(match)
            if path.is_dir():
                for f in sorted(path.rglob("*")):
                    if f.is_file() and not f.name.startswith("."):
                        seen.setdefault(f, None)
            elif path.is_file():
                seen.setdefault(path, None)
    return list(seen)


def save_config(cfg: Config, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def replace(cfg: Config, **sections: Any) -> Config:
    return dataclasses.replace(cfg, **sections)
