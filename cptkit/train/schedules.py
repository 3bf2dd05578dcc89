"""Learning-rate schedules: one registered class each, with a pure `lr(step)`.

`lr(step)` is the learning rate of the update that ends optimizer step `step + 1` (step counts
completed steps, from 0). Every schedule warms up linearly from lr/warmup to lr, so the very
first update already moves; what follows warmup is the schedule's own:

- cosine:   cosine decay from lr to min_lr_ratio*lr, the floor reached at the last step.
- constant: lr to the end.
- wsd:      warmup-stable-decay: lr until the last `decay` steps, which fall from lr to the
            floor in the chosen shape (linear, cosine, or 1-sqrt as in Hagele et al. 2024).
- infinite: Ibrahim et al. 2024: a cooldown of `cooldown` steps from lr (cosine) to a constant
            level constant_ratio*lr, that constant until the last `decay` steps, then a final
            anneal to the floor. The constant phase can be extended without touching what came
            before, which is the point for continual pre-training in stages.

Every decay reaches its end value exactly on its last step, so a floor is always honoured.
A run that starts from saved weights (`model.name_or_path: runs/x/final`) starts its schedule at
step 0 again (re-warming, fresh optimizer); only `--resume` continues an earlier step count.

A new schedule is one class here: subclass `Schedule`, give it a `name` and a `help` line,
implement `after_warmup`, and decorate it with `@register`; `train.schedule` accepts its name,
the config reference lists its help, and `cptkit plan` prints its `describe()`. The shapes
(`SHAPES`) are shared with the mixing curricula (`cptkit.mixing`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from cptkit.train.config import TrainConfig


@dataclass(frozen=True)
class Shape:
    """How a quantity moves from its start to its end over progress p in [0, 1].

    `moved(p)` is the share of the way covered and `remaining(p)` the share left; both are
    written out per shape (not 1 - each other) so that each is exact where it is used.
    """

    moved: Callable[[float], float]
    remaining: Callable[[float], float]


SHAPES: dict[str, Shape] = {
    "linear": Shape(lambda p: p, lambda p: 1.0 - p),
    # Slow at both ends, fastest midway.
    "cosine": Shape(lambda p: 0.5 * (1 - math.cos(math.pi * p)), lambda p: 0.5 * (1 + math.cos(math.pi * p))),
    # 1 - sqrt(progress) left: stays high, drops at the end (Hagele et al. 2024 for WSD).
    "sqrt": Shape(math.sqrt, lambda p: 1.0 - math.sqrt(p)),
}


def shape(name: str) -> Shape:
    if name not in SHAPES:
        raise ValueError(f"unknown shape {name!r} (shapes: {', '.join(SHAPES)})")
    return SHAPES[name]


def shaped_decay(step: int, length: int, high: float, low: float, shape_name: str) -> float:
    """From `high` at step 0 to `low` at step `length - 1` in the given shape."""
    if length <= 0:
        return high  # no decay phase at all
    if length == 1:
        return low  # a one-step decay is its own last step: the end value
    progress = min(max(step / (length - 1), 0.0), 1.0)
    return low + (high - low) * shape(shape_name).remaining(progress)


def cosine_decay(step: int, length: int, high: float, low: float) -> float:
    """From `high` at step 0 down to `low` at step `length - 1`, the floor honoured exactly."""
    return shaped_decay(step, length, high, low, "cosine")


@dataclass(frozen=True)
class Schedule:
    """Linear warmup to `peak`, then the subclass's `after_warmup`; validated when built."""

    peak: float
    total: int
    warmup: int
    min_ratio: float = 0.1

    name: ClassVar[str] = ""
    help: ClassVar[str] = ""

    def __post_init__(self) -> None:
        if not self.peak > 0 or self.total < 0 or not 0 <= self.warmup <= max(self.total, 0):
            raise ValueError(f"{self.name}: need peak > 0 and 0 <= warmup <= total, got {self}")
        if not 0 <= self.min_ratio <= 1:
            raise ValueError(f"{self.name}: min_ratio must lie in [0, 1], got {self.min_ratio}")

    @property
    def floor(self) -> float:
        return self.peak * self.min_ratio

    def lr(self, step: int) -> float:
        if self.warmup > 0 and step < self.warmup:
            return self.peak * (step + 1) / self.warmup
        return self.after_warmup(step)

    __call__ = lr

    def after_warmup(self, step: int) -> float:
        raise NotImplementedError

    def boundaries(self) -> set[int]:
        """Steps (0-based) either side of each phase change, for `cptkit plan`'s table."""
        return {self.warmup - 1, self.warmup}

    def describe(self) -> str:
        return f"{self.name}, lr {self.peak:g}"

    @classmethod
    def from_config(cls, t: TrainConfig, total: int, warmup: int) -> Schedule:
        return cls(peak=t.lr, total=total, warmup=warmup, min_ratio=t.min_lr_ratio)

    @classmethod
    def check(cls, t: TrainConfig) -> list[str]:
        """Config problems of the train.* keys this schedule reads, beyond their own ranges."""
        return []


SCHEDULES: dict[str, type[Schedule]] = {}


def register(cls: type[Schedule]) -> type[Schedule]:
    SCHEDULES[cls.name] = cls
    return cls


@register
@dataclass(frozen=True)
class Cosine(Schedule):
    name: ClassVar[str] = "cosine"
    help: ClassVar[str] = "linear warmup, cosine decay to min_lr_ratio*lr."

    def after_warmup(self, step: int) -> float:
        return cosine_decay(step - self.warmup, self.total - self.warmup, self.peak, self.floor)

    def describe(self) -> str:
        return f"cosine, peak lr {self.peak:g}, floor {self.floor:g}"


@register
@dataclass(frozen=True)
class Constant(Schedule):
    name: ClassVar[str] = "constant"
    help: ClassVar[str] = "warmup, then flat."

    def after_warmup(self, step: int) -> float:
        return self.peak


@register
@dataclass(frozen=True)
class WSD(Schedule):
    decay: int = 0  # steps of the final decay
    decay_shape: str = "linear"

    name: ClassVar[str] = "wsd"
    help: ClassVar[str] = "warmup, flat, then the last decay_ratio of steps decays to the floor."

    def __post_init__(self) -> None:
        super().__post_init__()
        shape(self.decay_shape)  # an unknown shape is refused when the schedule is built

    @property
    def decay_start(self) -> int:
        return self.total - min(self.decay, self.total - self.warmup)

    def after_warmup(self, step: int) -> float:
        if step < self.decay_start:
            return self.peak
        return shaped_decay(step - self.decay_start, self.total - self.decay_start, self.peak, self.floor,
                            self.decay_shape)

    def boundaries(self) -> set[int]:
        return super().boundaries() | ({self.decay_start - 1, self.decay_start} if self.decay else set())

    def describe(self) -> str:
        return f"wsd, peak lr {self.peak:g}, {self.decay:,}-step {self.decay_shape} decay to floor {self.floor:g} at the end"

    @classmethod
    def from_config(cls, t: TrainConfig, total: int, warmup: int) -> Schedule:
        return cls(peak=t.lr, total=total, warmup=warmup, min_ratio=t.min_lr_ratio,
                   decay=phase_steps(total, warmup, t.decay_ratio), decay_shape=t.decay_shape)


@register
@dataclass(frozen=True)
class Infinite(WSD):
    cooldown: int = 0  # steps from peak down to the constant level
    constant_ratio: float = 0.5  # the constant level as a share of peak

    name: ClassVar[str] = "infinite"
    help: ClassVar[str] = ("warmup, cooldown to constant_lr_ratio*lr, flat, then a final anneal "
                           "(the last decay_ratio) to the floor.")

    def after_warmup(self, step: int) -> float:
        level = self.peak * self.constant_ratio
        if step >= self.decay_start:
            return shaped_decay(step - self.decay_start, self.total - self.decay_start, level, self.floor,
                                self.decay_shape)
        # The cooldown ends at the constant level on its last step (or where the decay begins).
        cooldown = min(self.cooldown, self.decay_start - self.warmup)
        if step < self.warmup + cooldown:
            return cosine_decay(step - self.warmup, cooldown, self.peak, level)
        return level

    def boundaries(self) -> set[int]:
        return super().boundaries() | ({self.warmup + self.cooldown - 1} if self.cooldown else set())

    def describe(self) -> str:
        return (f"infinite, peak lr {self.peak:g}, {self.cooldown:,}-step cooldown to "
                f"{self.peak * self.constant_ratio:g}, {self.decay:,}-step {self.decay_shape} anneal to "
                f"floor {self.floor:g} at the end")

    @classmethod
    def from_config(cls, t: TrainConfig, total: int, warmup: int) -> Schedule:
        return cls(peak=t.lr, total=total, warmup=warmup, min_ratio=t.min_lr_ratio,
                   decay=phase_steps(total, warmup, t.decay_ratio), decay_shape=t.decay_shape,
                   cooldown=phase_steps(total, warmup, t.cooldown_ratio), constant_ratio=t.constant_lr_ratio)

    @classmethod
    def check(cls, t: TrainConfig) -> list[str]:
        if t.cooldown_ratio + t.decay_ratio > 1:
            return [f"train.cooldown_ratio + train.decay_ratio: {t.cooldown_ratio} + {t.decay_ratio} exceeds 1; "
                    "the infinite schedule's cooldown and final anneal must fit in the steps after warmup"]
        return []


SCHEDULE_NAMES = tuple(SCHEDULES)


def schedules_help() -> str:
    """`train.schedule`'s help text: every registered schedule with its one-line description."""
    return " ".join(f"{name}: {cls.help}" for name, cls in SCHEDULES.items())


def make_schedule(kind: str, **params) -> Schedule:
    """The registered schedule `kind` built from its parameters (ValueError for an unknown kind
    or a parameter that schedule does not take)."""
    if kind not in SCHEDULES:
        raise ValueError(f"unknown schedule {kind!r} (schedules: {', '.join(SCHEDULES)})")
    cls = SCHEDULES[kind]
    own = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in params.items() if k in own})


def lr_at(step: int, kind: str, peak: float, total: int, warmup: int, min_ratio: float = 0.1, **params) -> float:
    """The learning rate of schedule `kind` at `step`, as a plain function (for tables and tests)."""
    return make_schedule(kind, peak=peak, total=total, warmup=warmup, min_ratio=min_ratio, **params).lr(step)


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


def schedule_for(t: TrainConfig, total: int) -> Schedule:
    """The run's schedule from `train.*` and its length in optimizer steps."""
    return SCHEDULES[t.schedule].from_config(t, total, warmup_steps(total, t.warmup_ratio, t.warmup_steps))
