"""AdamW param groups and per-group learning-rate multipliers.

AdamW uses decoupled weight decay on matrices only (not on norms, biases or other vectors).
The input embeddings (and an output layer tied to them) can get their own learning-rate
multiplier; `set_lr` applies every group's `lr_scale` to the schedule's value each step.
Frozen weights (`cptkit.train.freezing`) are left out of every group.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from cptkit.train.config import TrainConfig


def param_groups(model: torch.nn.Module, weight_decay: float, embedding_lr_scale: float = 1.0) -> list[dict]:
    """2-D and larger tensors decay, 1-D tensors (norm scales, biases) do not; the input
    embeddings form their own group when they have a learning-rate multiplier. `model` is the
    HF model or the loss module around it (`CausalLMLoss.lm`)."""
    embed = getattr(model, "lm", model).get_input_embeddings().weight
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


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters; under train.peft the groups of
    `cptkit.peft.adapters.peft_param_groups` (embeddings and output layer share the scale)."""
    if cfg.peft.active:
        from cptkit.peft.adapters import peft_param_groups

        groups = peft_param_groups(model, cfg.weight_decay, cfg.embedding_lr_scale)
    else:
        groups = param_groups(model, cfg.weight_decay, cfg.embedding_lr_scale)
    # foreach is the fast path on CPU and GPU alike; fused exists only for some devices.
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, foreach=True)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
