"""KL divergence to the frozen starting model, on the training tokens themselves.

The reference is a second copy of the starting weights (`model.name_or_path`), loaded once, in
eval mode, with no gradients, optionally in bfloat16 (half the memory). For each micro batch it
runs its decoder under no_grad on the rows that carry KL and hands the hidden states of their
real target tokens to the student's loss (`train.losses.Reference`); the student's single
forward then forms CE, KL and their combined gradient chunk by chunk.

Direction: forward KL(reference || current) by default, the mass-covering one; reverse
KL(current || reference) on request. The term is a mean over real target tokens (boundaries
and padding excluded), scaled by regularizer.weight. Options: only on replay rows
(kl_on: replay), only every k-th optimizer step (kl_every).
"""

from __future__ import annotations

import torch

from cptkit.data.shards import IGNORE_INDEX
from cptkit.train.losses import Reference, decoder_and_head, model_inputs


class KLToReference:
    def __init__(self, reference: torch.nn.Module, weight: float, on: str, every: int, reverse: bool):
        self.model = reference.eval().requires_grad_(False)
        self.weight = weight
        self.on = on
        self.every = every
        self.reverse = reverse
        self.chunked = True  # set False by setup when the student falls back to full logits

    def active(self, step: int) -> bool:
        """Whether optimizer step `step` (completed steps so far, from 0) computes the KL term."""
        return step % self.every == 0

    def rows(self, replay: torch.Tensor) -> torch.Tensor:
        """[B] bool: the rows of a micro batch that carry KL, given which rows are replay."""
        return replay if self.on == "replay" else torch.ones_like(replay)

    def targets(self, labels: torch.Tensor, replay: torch.Tensor) -> int:
        """Real target tokens that carry KL in a micro batch (for the token mean)."""
        return int(((labels != IGNORE_INDEX) & self.rows(replay)[:, None]).sum())

    @torch.no_grad()
    def reference(self, batch: dict[str, torch.Tensor], replay: torch.Tensor, coef: float) -> Reference | None:
        """The reference side for one micro batch, or None when none of its rows carries KL.

        `coef` multiplies the summed KL; the loop sets it so that the step's KL is a token mean.
        """
        rows = self.rows(replay)
        if not bool(rows.any()):
            return None
        mask = rows[:, None].expand_as(batch["labels"])
        if not self.chunked:
            logits = self.model(**model_inputs(batch)).logits
            return Reference(mask, logits, None, None, coef, self.reverse)
        decoder, head = decoder_and_head(self.model)
        # Only the rows that carry KL go through the reference (all of them when kl_on: all).
        sub = batch if bool(rows.all()) else {k: v[rows] for k, v in batch.items()}
        hidden = decoder(**model_inputs(sub)).last_hidden_state
        states = hidden[sub["labels"] != IGNORE_INDEX]
        return Reference(mask, states, head.weight, head.bias, coef, self.reverse)
