"""Freezing by config: embeddings, output layer, the first N decoder layers.

Freezing sets `requires_grad = False` before the optimizer is built, so frozen weights get no
gradient, no optimizer state and no update. A tied output layer *is* the input embedding
matrix, so freezing either freezes both; the log says so (nothing is dropped silently).
This module imports torch only where it needs it, so config validation stays light.
"""

from __future__ import annotations

import logging

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


def decoder_layers(model):
    """The model's stack of decoder layers: the first ModuleList as long as num_hidden_layers."""
    import torch

    n = getattr(model.config, "num_hidden_layers", None)
    for _, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n:
            return module
    raise UserError(
        f"train.freeze_layers: cannot find the decoder layers of {type(model).__name__} "
        f"(no list of {n} layers); freeze_layers supports the usual decoder-stack models"
    )


def apply_freezing(model, cfg) -> dict[str, int]:
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
