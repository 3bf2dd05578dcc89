"""Compute precision: autocast around forwards and, for float16, dynamic loss scaling.

Master weights and optimizer state stay float32 (`modeling.load_model`); `model.dtype` picks the
precision of the forward and backward:

- float32: no autocast.
- bfloat16: `torch.autocast` with bfloat16; no scaling (bfloat16 has float32's range).
- float16: `torch.autocast` with float16 and a `torch.amp.GradScaler` on the same device (CPU
  included), which multiplies the loss before backward, unscales the gradients before clipping,
  skips an update whose gradients overflowed and lowers its scale, raising it again after a run
  of good steps. Its state is part of every checkpoint, so a resumed run scales as it would have.

cptkit owns this rather than leaving it to accelerate, whose float16 on CPU is a no-op, so the
float16 path runs (and is tested) on CPU exactly as on a GPU.
"""

from __future__ import annotations

import contextlib

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class Precision:
    def __init__(self, dtype: str, device: torch.device):
        self.dtype = DTYPES[dtype]
        self.device_type = device.type
        self.scaler = torch.amp.GradScaler(device.type) if dtype == "float16" else None

    def autocast(self):
        """Context for a forward in the compute precision."""
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """Bring the gradients back to their true size (before clipping and the norm)."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer, apply: bool) -> None:
        """Apply the update (unless the step was judged bad), then let the scaler adapt.

        The scaler is updated on a skipped step too: it records that step's overflow and backs
        off, and without its update the next step's unscale would find this one's still pending.
        """
        if self.scaler is None:
            if apply:
                optimizer.step()
            return
        if apply:
            self.scaler.step(optimizer)  # itself skips the update if the gradients overflowed
        self.scaler.update()

    @property
    def scale(self) -> float | None:
        return float(self.scaler.get_scale()) if self.scaler is not None else None

    def state_dict(self) -> dict:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
