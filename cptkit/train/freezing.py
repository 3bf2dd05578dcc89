"""Freezing by config: embeddings, output layer, the first N decoder layers.

Freezing sets `requires_grad = False` before the optimizer is built, so frozen weights get no
gradient, no optimizer state and no update. A tied output layer *is* the input embedding
matrix, so freezing either freezes both; the log says so (nothing is dropped silently).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from cptkit.errors import UserError

if TYPE_CHECKING:
    from cptkit.train.config import TrainConfig

log = logging.getLogger("cptkit")


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


def apply_freezing(model, cfg: TrainConfig) -> dict[str, int]:
    """Freeze what `train.*` asks for; return trainable and frozen parameter counts."""
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
