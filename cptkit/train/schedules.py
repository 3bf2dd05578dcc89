"""Learning-rate schedules as pure functions of the optimizer step.

`lr_at(step, ...)` returns the learning rate used for the update that ends optimizer step
`step + 1` (step counts completed steps, starting at 0). Warmup is linear from lr/warmup up to
lr, so the very first update already moves; the decay then runs from `warmup` to `total`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Schedule:
    kind: str  # cosine | constant
    peak: float
    total: int
    warmup: int
    min_ratio: float = 0.1

    def __call__(self, step: int) -> float:
        return lr_at(step, self.kind, self.peak, self.total, self.warmup, self.min_ratio)


def lr_at(step: int, kind: str, peak: float, total: int, warmup: int, min_ratio: float = 0.1) -> float:
    if warmup > 0 and step < warmup:
        return peak * (step + 1) / warmup
    if kind == "constant":
        return peak
    if kind == "cosine":
        return cosine_decay(step - warmup, total - warmup, peak, peak * min_ratio)
    raise ValueError(f"unknown schedule {kind!r}")


def cosine_decay(step: int, length: int, high: float, low: float) -> float:
    """From `high` at step 0 down to `low` at step `length - 1`, the floor honoured exactly."""
    if length <= 1:
        return high  # a single decay step has nothing to decay over
    progress = min(max(step / (length - 1), 0.0), 1.0)
    return low + 0.5 * (high - low) * (1 + math.cos(math.pi * progress))


def warmup_steps(total: int, ratio: float, steps: int | None) -> int:
    if steps is not None:
        return min(steps, total)
    return min(round(total * ratio), total)
