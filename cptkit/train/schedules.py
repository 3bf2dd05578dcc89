"""Learning-rate schedules as pure functions of the optimizer step.

`lr_at(step, ...)` returns the learning rate used for the update that ends optimizer step
`step + 1` (step counts completed steps, starting at 0). Warmup is linear from lr/warmup up to
lr, so the very first update already moves. After warmup:

- cosine:   cosine decay from lr to min_lr_ratio*lr, the floor reached at the last step.
- constant: lr to the end.
- wsd:      warmup-stable-decay: lr until the last `decay` steps, which fall from lr to the
            floor in the chosen shape (linear, cosine, or 1-sqrt as in Hagele et al. 2024).
- infinite: Ibrahim et al. 2024: a cooldown of `cooldown` steps from lr (cosine) to a constant
            level constant_ratio*lr, that constant until the last `decay` steps, then a final
            anneal to the floor. The constant phase can be extended without touching what came
            before, which is the point for continual pre-training in stages.

Every decay reaches its end value exactly on its last step, so a floor is always honoured.
A run that starts from saved weights (`model.name_or_path: runs/x/final`) starts this schedule
at step 0 again (re-warming, fresh optimizer); only `--resume` continues an earlier step count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SHAPES = ("linear", "cosine", "sqrt")


@dataclass(frozen=True)
class Schedule:
    kind: str  # cosine | constant | wsd | infinite
    peak: float
    total: int
    warmup: int
    min_ratio: float = 0.1
    decay: int = 0  # wsd / infinite: steps of the final decay
    decay_shape: str = "linear"
    cooldown: int = 0  # infinite: steps from peak down to the constant level
    constant_ratio: float = 0.5  # infinite: the constant level as a share of peak

    def __call__(self, step: int) -> float:
        return lr_at(
            step, self.kind, self.peak, self.total, self.warmup, self.min_ratio,
            decay=self.decay, decay_shape=self.decay_shape, cooldown=self.cooldown,
            constant_ratio=self.constant_ratio,
        )


def lr_at(
    step: int,
    kind: str,
    peak: float,
    total: int,
    warmup: int,
    min_ratio: float = 0.1,
    *,
    decay: int = 0,
    decay_shape: str = "linear",
    cooldown: int = 0,
    constant_ratio: float = 0.5,
) -> float:
    if warmup > 0 and step < warmup:
        return peak * (step + 1) / warmup
    floor = peak * min_ratio
    if kind == "constant":
        return peak
    if kind == "cosine":
        return cosine_decay(step - warmup, total - warmup, peak, floor)
    decay = min(decay, total - warmup)
    decay_start = total - decay
    if kind == "wsd":
        if step < decay_start:
            return peak
        return shaped_decay(step - decay_start, decay, peak, floor, decay_shape)
    if kind == "infinite":
        level = peak * constant_ratio
        if step >= decay_start:
            return shaped_decay(step - decay_start, decay, level, floor, decay_shape)
        # The cooldown ends at the constant level on its last step (or where the decay begins).
        cooldown = min(cooldown, decay_start - warmup)
        if step < warmup + cooldown:
            return cosine_decay(step - warmup, cooldown, peak, level)
        return level
    raise ValueError(f"unknown schedule {kind!r}")


def cosine_decay(step: int, length: int, high: float, low: float) -> float:
    """From `high` at step 0 down to `low` at step `length - 1`, the floor honoured exactly."""
    return shaped_decay(step, length, high, low, "cosine")


def shaped_decay(step: int, length: int, high: float, low: float, shape: str) -> float:
    """From `high` at step 0 to `low` at step `length - 1` in the given shape.

    linear: straight line. cosine: half a cosine. sqrt: 1 - sqrt(progress), which stays high
    longer and drops at the end (the shape Hagele et al. 2024 found best for WSD).
    """
    if length <= 0:
        return high  # no decay phase at all
    if length == 1:
        return low  # a one-step decay is its own last step: the end value
    progress = min(max(step / (length - 1), 0.0), 1.0)
    if shape == "linear":
        fraction = 1.0 - progress
    elif shape == "cosine":
        fraction = 0.5 * (1 + math.cos(math.pi * progress))
    elif shape == "sqrt":
        fraction = 1.0 - math.sqrt(progress)
    else:
        raise ValueError(f"unknown decay shape {shape!r}")
    return low + (high - low) * fraction


def warmup_steps(total: int, ratio: float, steps: int | None) -> int:
    if steps is not None:
        return min(steps, total)
    return min(round(total * ratio), total)


def phase_steps(total: int, warmup: int, ratio: float) -> int:
    """Steps of a phase given as a share of the steps after warmup (at least 1 when ratio > 0)."""
    after = max(total - warmup, 0)
    if ratio <= 0 or after == 0:
        return 0
    return min(max(round(after * ratio), 1), after)


def check_schedule(t) -> list[str]:
    """Config problems of train.* schedule keys (t: TrainConfig), each with its dotted path."""
    p: list[str] = []
    for key in ("decay_ratio", "cooldown_ratio"):
        value = getattr(t, key)
        if not 0 <= value <= 1:
            p.append(f"train.{key}: must lie in [0, 1], got {value}")
    if not 0 < t.constant_lr_ratio <= 1:
        p.append(f"train.constant_lr_ratio: must lie in (0, 1], got {t.constant_lr_ratio}")
    if t.schedule == "infinite" and t.cooldown_ratio + t.decay_ratio > 1:
        p.append(
            f"train.cooldown_ratio + train.decay_ratio: {t.cooldown_ratio} + {t.decay_ratio} exceeds 1; "
            "the infinite schedule's cooldown and final anneal must fit in the steps after warmup"
        )
    return p
