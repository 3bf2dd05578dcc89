"""Staged training after `cptkit vocab`: first only the new embedding rows, then the configured set.

For the first `train.new_embeddings_only_steps` optimizer steps only the rows of the new tokens
(ids from `new_token_start` on, padding rows included) of the input embeddings, and of the
output layer when it is not tied to them, are trained; then everything the config trains
(full, frozen layers, LoRA). This is stage 1 of Chinese-LLaMA and of EEVE: the new rows start
as means of their pieces and first learn to fit a model that does not move.

How stage 1 holds the rest, exactly (every choice keeps the optimizer state exact and
needs no change to how the optimizer, DDP or FSDP were built):
- After backward (and after an EWC/L2-SP penalty is added), every gradient except the new
  rows' is set to zero: old rows of the embedding matrices by masking, every other trainable
  parameter whole. Gradient clipping then sees the new rows' norm only.
- Adam's moments of a zero gradient stay zero and its update is then exactly zero, so those
  weights do not move; but AdamW's decoupled weight decay shrinks every parameter it steps,
  gradient or not. So for a stage-1 step every group's weight decay is set to 0, the new rows
  are decayed by hand by (1 - lr * weight_decay) of their group (AdamW's own factor, applied
  before the update as AdamW does), and the groups' decay is restored after the step.
- Parameters are never frozen with requires_grad (DDP and FSDP fix the set of parameters with
  gradients when they wrap the model): stage 1 computes the other weights' gradients and drops
  them, a backward that costs about as much as a full one. Stage 1 is short.

At the boundary the other weights start with zero moments while the optimizer's step count is
already K, so AdamW's bias correction (1 - beta^t) is about 1 for them: their first updates are
smaller than a fresh optimizer's, growing to full size within about 1 / (1 - beta2) steps,
a built-in warmup. Which stage a step is in depends on the step number alone, so `--resume`
continues bit-identically on either side of the boundary.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import torch

from cptkit.errors import UserError
from cptkit.train.stage_plan import new_token_start

if TYPE_CHECKING:
    from cptkit.train.config import TrainConfig


def _local(t: torch.Tensor, start: int) -> tuple[torch.Tensor, int]:
    """(this process's rows of `t`, the index of row `start` among them, clipped to them).

    A plain tensor is whole; an FSDP parameter or gradient is a DTensor holding a slice of rows.
    """
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch built without distributed
        return t, start
    if not isinstance(t, DTensor):
        return t, start
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    _, offset = compute_local_shape_and_global_offset(t.shape, t.device_mesh, t.placements)
    local = t.to_local()
    return local, min(max(start - offset[0], 0), local.shape[0])


class EmbeddingStages:
    """Stage 1 for `steps` optimizer steps, then the configured training (see the module doc)."""

    def __init__(self, lm: torch.nn.Module, optimizer, start: int, steps: int):
        self.start, self.steps = start, steps
        trained = {id(p) for g in optimizer.param_groups for p in g["params"]}
        rows = lm.get_input_embeddings().weight.shape[0]
        modules = [lm.get_input_embeddings(), lm.get_output_embeddings()]
        # Every trained tensor of those modules indexed by token id (a tied head is the same
        # tensor; LoRA's trained copies of embed_tokens / lm_head are found the same way).
        seen: dict[int, torch.Tensor] = {}
        for module in modules:
            for p in module.parameters() if module is not None else []:
                if id(p) in trained and p.shape[0] == rows:
                    seen[id(p)] = p
        if not seen:
            raise UserError("train.new_embeddings_only_steps: the input embeddings are not trained (frozen, or "
                            "outside the trained modules); stage 1 trains their new rows")
        if not 0 < start <= rows:
            raise UserError(f"train.new_token_start: {start} is not inside the model's {rows} embedding rows")
        self.rows = list(seen.values())
        self.others = [p for g in optimizer.param_groups for p in g["params"] if id(p) not in seen]

    def active(self, step: int) -> bool:
        """Whether optimizer step `step` (0-based: the step about to be taken) is in stage 1."""
        return step < self.steps

    @torch.no_grad()
    def mask_gradients(self, step: int) -> None:
        """After backward, before clipping: keep only the new rows' gradients in stage 1."""
        if not self.active(step):
            return
        for p in self.others:
            if p.grad is not None:
                p.grad.zero_()
        for p in self.rows:
            if p.grad is not None:
                grad, first = _local(p.grad, self.start)
                grad[:first].zero_()

    @contextlib.contextmanager
    def update(self, optimizer, step: int):
        """Around optimizer step `step`'s update: in stage 1 AdamW's decoupled weight decay is
        applied by hand to the new rows only, and switched off for the update itself."""
        if not self.active(step):
            yield
            return
        rows = {id(p) for p in self.rows}
        decays = [g["weight_decay"] for g in optimizer.param_groups]
        with torch.no_grad():
            for group in optimizer.param_groups:
                factor = 1 - group["lr"] * group["weight_decay"]
                for p in group["params"]:
                    if id(p) in rows and group["weight_decay"] and p.grad is not None:
                        weight, first = _local(p.data, self.start)
                        weight[first:].mul_(factor)  # AdamW's decoupled decay, new rows only
                group["weight_decay"] = 0.0
        try:
            yield
        finally:
            for group, decay in zip(optimizer.param_groups, decays):
                group["weight_decay"] = decay


class NoStages:
    """Training without stages: the same two calls, doing what the loop did without them."""

    steps = 0

    def active(self, step: int) -> bool:
        return False

    def mask_gradients(self, step: int) -> None:
        return None

    def update(self, optimizer, step: int):
        return contextlib.nullcontext()


def build_stages(train: TrainConfig, lm: torch.nn.Module, optimizer, name_or_path: str):
    """EmbeddingStages for `train.*` on the unwrapped model, or NoStages when off."""
    steps = train.new_embeddings_only_steps
    if not steps:
        return NoStages()
    start = new_token_start(train, name_or_path)
    if start is None:
        raise UserError(f"train.new_embeddings_only_steps: no first new token id (no vocab.json in "
                        f"{name_or_path}); set train.new_token_start")
    return EmbeddingStages(lm, optimizer, start, steps)
