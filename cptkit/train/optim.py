"""What trains and how fast: freezing by config, AdamW param groups, per-group LR multipliers.

AdamW uses decoupled weight decay on matrices only (not on norms, biases or other vectors).
The input embeddings (and an output layer tied to them) can get their own learning-rate
multiplier; `set_lr` applies every group's `lr_scale` to the schedule's value each step.

Freezing sets `requires_grad = False` before the optimizer is built, so frozen weights get no
gradient, no optimizer state and no update. A tied output layer *is* the input embedding
matrix, so freezing either freezes both; the log says so (nothing is dropped silently).
"""

from __future__ import annotations

import logging

import torch

from cptkit.errors import UserError

log = logging.getLogger("cptkit")


def check_freezing(t) -> list[str]:
    """Config problems of train.* freezing keys (t: TrainConfig), each with its dotted path."""
    p: list[str] = []
    if t.freeze_layers < 0:
        p.append(f"train.freeze_layers: must be >= 0, got {t.freeze_layers}")
    if not t.embedding_lr_scale > 0:
        p.append(f"train.embedding_lr_scale: must be > 0, got {t.embedding_lr_scale} (to not train them: freeze_embeddings)")
    if t.freeze_embeddings and t.embedding_lr_scale != 1.0:
        p.append("train.freeze_embeddings and train.embedding_lr_scale: frozen embeddings have no learning rate; give one")
    return p


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The model's stack of decoder layers: the first ModuleList as long as num_hidden_layers."""
    n = getattr(model.config, "num_hidden_layers", None)
    for _, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n:
            return module
    raise UserError(
        f"train.freeze_layers: cannot find the decoder layers of {type(model).__name__} "
        f"(no list of {n} layers); freeze_layers supports the usual decoder-stack models"
    )


def apply_freezing(model: torch.nn.Module, cfg) -> dict[str, int]:
    """Freeze what cfg (TrainConfig) asks for; return trainable and frozen parameter counts."""
    embed = model.get_input_embeddings()
    head = model.get_output_embeddings()
    tied = head is not None and head.weight is embed.weight
    if tied and (cfg.freeze_embeddings or cfg.freeze_lm_head):
        asked = "freeze_embeddings" if cfg.freeze_embeddings else "freeze_lm_head"
        log.info("train.%s: this model ties its output layer to the input embeddings; both are frozen", asked)
    if cfg.freeze_embeddings:
        embed.requires_grad_(False)
    if cfg.freeze_lm_head:
        if head is None:
            raise UserError(f"train.freeze_lm_head: {type(model).__name__} has no output layer to freeze")
        head.requires_grad_(False)
    if cfg.freeze_layers:
        layers = decoder_layers(model)
        if cfg.freeze_layers > len(layers):
            raise UserError(f"train.freeze_layers: {cfg.freeze_layers} exceeds the model's {len(layers)} layers")
        for layer in layers[: cfg.freeze_layers]:
            layer.requires_grad_(False)
    counts = {"trainable": 0, "frozen": 0}
    for p in model.parameters():
        counts["trainable" if p.requires_grad else "frozen"] += p.numel()
    if counts["trainable"] == 0:
        raise UserError("train.freeze_*: every parameter is frozen; nothing would train")
    if counts["frozen"]:
        log.info("frozen %s parameters, training %s", f"{counts['frozen']:,}", f"{counts['trainable']:,}")
    return counts


def param_groups(model: torch.nn.Module, weight_decay: float, embedding_lr_scale: float = 1.0) -> list[dict]:
    """2-D and larger tensors decay, 1-D tensors (norm scales, biases) do not; the input
    embeddings form their own group when they have a learning-rate multiplier."""
    embed = model.get_input_embeddings().weight
    special = embedding_lr_scale != 1.0 and embed.requires_grad
    decay, no_decay = [], []
    for p in model.parameters():  # tied weights appear once
        if not p.requires_grad or (special and p is embed):
            continue
        (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay, "lr_scale": 1.0}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "lr_scale": 1.0})
    if special:
        groups.append({"params": [embed], "weight_decay": weight_decay, "lr_scale": embedding_lr_scale})
    return [g for g in groups if g["params"]]


def build_optimizer(model: torch.nn.Module, cfg) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters (cfg: TrainConfig)."""
    groups = param_groups(model, cfg.weight_decay, getattr(cfg, "embedding_lr_scale", 1.0))
    # foreach is the fast path on CPU and GPU alike; fused exists only for some devices.
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, foreach=True)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
