"""The `train` section of the run config: optimisation, precision, schedules, safety nets,
forgetting budget and how several processes share the work. Part of `cptkit.config.Config`.

Kept free of torch so that loading a config stays light; the schedule names come from the
schedule registry (`cptkit.train.schedules`), so a new schedule is one class in that file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cptkit.peft.config import PeftConfig
from cptkit.schema import option
from cptkit.train.schedules import SCHEDULE_NAMES, schedules_help


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
        None, gt=0, help="fsdp hybrid only: processes per shard group; default: processes per node (LOCAL_WORLD_SIZE)."
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
class RouterLossConfig:
    """`train.router`: the router losses of mixture-of-experts models (ignored for dense models)."""

    aux_loss_coef: float | None = option(
        None, ge=0,
        help="Weight of the router load-balancing loss added to the training loss. Default: the model's "
        "own router_aux_loss_coef from its config; 0 turns it off.",
    )
    z_loss_coef: float | None = option(
        None, ge=0,
        help="Weight of the router z-loss (mean squared log-sum-exp of router logits, ST-MoE). Default: the "
        "model's own router_z_loss_coef where its config has one, else 0 (off).",
    )


@dataclass
class TrainConfig:
    lr: float = option(2e-5, gt=0, help="Peak learning rate (about a tenth of a typical pre-training peak).")
    schedule: Literal[SCHEDULE_NAMES] = option("cosine", help=schedules_help())
    warmup_ratio: float = option(0.03, ge=0, lt=1, help="Warmup length as a share of the total steps.")
    warmup_steps: int | None = option(None, ge=0, help="Warmup length in steps; overrides warmup_ratio.")
    min_lr_ratio: float = option(0.1, ge=0, le=1, help="The floor every decaying schedule ends at, as a share of lr.")
    decay_ratio: float = option(
        0.1, ge=0, le=1, help="wsd and infinite: the final decay's length as a share of the steps after warmup."
    )
    decay_shape: Literal["linear", "cosine", "sqrt"] = option(
        "linear", help="wsd and infinite: shape of the final decay; sqrt is 1 - sqrt(progress)."
    )
    cooldown_ratio: float = option(
        0.1, ge=0, le=1, help="infinite: length of the cooldown from lr to the constant level, as a share of the steps after warmup."
    )
    constant_lr_ratio: float = option(0.5, gt=0, le=1, help="infinite: the constant level as a share of lr.")
    weight_decay: float = option(0.01, ge=0, help="Decoupled AdamW weight decay (not applied to norms, biases).")
    betas: list[float] = option(default_factory=lambda: [0.9, 0.95], ge=0, lt=1, help="AdamW betas.")
    eps: float = option(1e-8, gt=0, help="AdamW epsilon.")
    max_grad_norm: float = option(1.0, ge=0, help="Clip the global gradient norm to this; 0 turns clipping off.")
    global_batch_tokens: int = option(
        524288, gt=0, help="Tokens per optimizer step over all processes; rounded down to whole sequences."
    )
    micro_batch_size: int = option(4, gt=0, help="Sequences per forward pass per process (gradient accumulation fills the rest).")
    max_tokens: int | None = option(
        None, gt=0, help="Training budget in tokens. Default (with max_steps unset): one pass over the domain data plus its replay."
    )
    max_steps: int | None = option(None, gt=0, help="Training budget in optimizer steps (instead of max_tokens).")
    seed: int = option(42, help="Seed for weights that start random, data order and every other random draw.")
    log_every: int = option(1, gt=0, help="Write a metrics.jsonl line every this many optimizer steps.")
    document_masking: bool = option(
        True, help="Restart position ids at each document so attention never crosses documents in a pack."
    )
    loss_chunk_tokens: int = option(
        1024,
        ge=0,
        help="Tokens per chunk of the fused output-layer + cross-entropy, so full float32 logits never "
        "exist; 0 uses the model's full logits. Models with scaled or capped logits fall back to full.",
    )
    freeze_embeddings: bool = option(
        False, help="Do not train the input embeddings. With tied embeddings this freezes the output layer too."
    )
    freeze_lm_head: bool = option(
        False, help="Do not train the output layer. With tied embeddings this freezes the input embeddings too."
    )
    freeze_layers: int = option(0, ge=0, help="Do not train the first this many decoder layers.")
    embedding_lr_scale: float | None = option(
        None, gt=0,
        help="Learning-rate multiplier for the input embeddings (and a tied output layer), e.g. 0.1; under "
        "train.peft for every matrix trained in full (embeddings and output layer). Default: 1, or 0.2 under "
        "train.peft when a matrix trains in full (the adapters' lr is several times a full fine-tune's). "
        "To not train them at all: freeze_embeddings."
    )
    max_bad_steps: int = option(
        5,
        gt=0,
        help="A step with a NaN or Inf loss or gradient is skipped (no update) and counted; this many in a "
        "row stop the run, leaving the newest checkpoint as it was.",
    )
    spike_factor: float = option(
        3.0, ge=0, help="Report a step whose loss exceeds this many times the mean of the last 50 steps; 0: off."
    )
    forgetting_budget: float | None = option(
        None,
        ge=0,
        help="Largest allowed relative rise of general perplexity over the base model (e.g. 0.05): best/ is "
        "the best domain checkpoint within it, and forgetting_action says what an over-budget evaluation does.",
    )
    forgetting_action: Literal["keep_going", "stop", "rollback"] = option(
        "rollback",
        help="Over budget: keep_going (only best/ respects the budget), stop the run, or rollback to the "
        "newest checkpoint within budget and continue with a lower lr and more replay.",
    )
    rollback_lr_factor: float = option(0.5, gt=0, le=1, help="rollback: multiply the learning rate by this at each rollback.")
    rollback_replay: float = option(
        0.05, ge=0, lt=1, help="rollback: move this much of the domain share to replay at each rollback."
    )
    max_rollbacks: int = option(3, ge=0, help="rollback: after this many rollbacks an over-budget evaluation stops the run.")
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
    new_embeddings_only_steps: int = option(
        0, ge=0,
        help="After `cptkit vocab`: train only the new tokens' rows of the input and output embeddings for the "
        "first this many optimizer steps, then what the config trains (full, frozen layers, LoRA). The other "
        "weights get zero gradients and no weight decay in those steps, so they and their optimizer state stay "
        "exactly as they were. 0: off.",
    )
    new_token_start: int | None = option(
        None, ge=0,
        help="The first id of the new tokens; default: first_new_id of model.name_or_path/vocab.json "
        "(written by cptkit vocab).",
    )
    router: RouterLossConfig = option(
        default_factory=RouterLossConfig,
        help="Mixture-of-experts models: the router losses added to the training loss (logged as loss_aux).",
    )
    peft: PeftConfig = option(
        default_factory=PeftConfig,
        help="Parameter-efficient training (LoRA, QLoRA) instead of training every parameter: e.g. "
        "{method: lora, r: 128, alpha: 32, rslora: true}. best/ and final/ stay plain merged model folders.",
    )
