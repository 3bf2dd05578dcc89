"""Which source each training sequence comes from, and which window of that source.

Everything here is deterministic given the seed and fully described by a small state dict, so a
resumed run continues the exact sample stream without re-reading any data.

- `MixSchedule(progress)` is a pure function: the share of each source at a point of training
  (a fixed replay ratio, or a curriculum whose domain share moves from `start` to `end`).
- `Mixer` turns shares into a per-sequence assignment with the largest-deficit rule: each new
  sequence goes to the source whose realised count lags its running target the most. The
  realised count of every source stays within one sequence of its target at every step, so a
  replay ratio of 5% means 5% of the sequences (and tokens), not 5% on average over luck.
- `SourceStream` walks one source's windows in a fresh seeded permutation per epoch.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from cptkit.data.shards import WindowIndex
from cptkit.train.schedules import shape as shape_of

if TYPE_CHECKING:
    from cptkit.config import Config

Shares = Callable[[float], dict[str, float]]


def curriculum_share(progress: float, start: float, end: float, shape: str = "linear") -> float:
    """The domain share at `progress` in [0, 1]: `start` at 0, `end` at 1.

    linear moves at a steady rate; cosine moves slowly at both ends and fastest midway. The shapes
    are the learning-rate schedules' own (`cptkit.train.schedules.SHAPES`).
    """
    p = min(max(progress, 0.0), 1.0)
    return start + (end - start) * shape_of(shape).moved(p)


@dataclass(frozen=True)
class MixSchedule:
    """Shares of every training source as a pure function of training progress.

    The domain share moves from `start` to `end` (equal for a fixed replay ratio); the domain
    sources split it by their weights, the general sources split the rest by theirs.
    """

    domain: dict[str, float]
    general: dict[str, float]
    start: float
    end: float
    shape: str = "linear"

    def domain_share(self, progress: float) -> float:
        if not self.general:
            return 1.0
        return curriculum_share(progress, self.start, self.end, self.shape)

    def __call__(self, progress: float) -> dict[str, float]:
        d = self.domain_share(progress)
        out = _split(self.domain, d)
        out.update(_split(self.general, 1.0 - d))
        return out

    @property
    def mean_domain_share(self) -> float:
        """The domain share averaged over training (both shapes are symmetric about midway)."""
        return 1.0 if not self.general else (self.start + self.end) / 2


def _split(weights: dict[str, float], share: float) -> dict[str, float]:
    total = sum(weights.values())
    return {name: share * w / total for name, w in weights.items()} if total > 0 else {}


def replay_shares(
    domain: dict[str, float], general: dict[str, float], replay_ratio: float
) -> MixSchedule:
    """Shares for a fixed replay ratio; within a role, sources split by the given weights."""
    return MixSchedule(domain, general, 1.0 - replay_ratio, 1.0 - replay_ratio)


def mix_schedule(cfg: Config, sizes: dict[str, int]) -> MixSchedule:
    """The run's MixSchedule from its config and each source's training windows.

    Within a role, sources follow mix.weights when given, else their size (their natural mixture).
    """
    domain = [s.name for s in cfg.domain_sources]
    general = [s.name for s in cfg.general_sources] if cfg.replay_in_use else []

    def weights(names: list[str]) -> dict[str, float]:
        if any(n in cfg.mix.weights for n in names):
            return {n: float(cfg.mix.weights[n]) for n in names}
        return {n: float(sizes[n]) for n in names}

    cur = cfg.mix.curriculum
    if cur is not None:
        return MixSchedule(weights(domain), weights(general), cur.start, cur.end, cur.shape)
    return replay_shares(weights(domain), weights(general), cfg.mix.replay_ratio or 0.0)


class Mixer:
    """Assigns training sequences to sources following `shares(progress)` exactly."""

    def __init__(self, names: list[str], shares: Shares):
        self.names = list(names)
        self.shares = shares
        self.target = dict.fromkeys(self.names, 0.0)
        self.count = dict.fromkeys(self.names, 0)

    def assign(self, n: int, progress: float) -> list[str]:
        share = self.shares(progress)
        out = []
        for _ in range(n):
            for name in self.names:
                self.target[name] += share.get(name, 0.0)
            # Ties go to the earlier source, so the assignment never depends on dict order.
            best = max(self.names, key=lambda s: self.target[s] - self.count[s])
            self.count[best] += 1
            out.append(best)
        return out

    def state_dict(self) -> dict:
        return {"target": dict(self.target), "count": dict(self.count)}

    def load_state_dict(self, state: dict) -> None:
        self.target = {n: float(state["target"].get(n, 0.0)) for n in self.names}
        self.count = {n: int(state["count"].get(n, 0)) for n in self.names}


class SourceStream:
    """Windows of one source in a seeded random order, a new permutation every epoch."""

    def __init__(self, name: str, windows: WindowIndex, seed: int):
        if len(windows) == 0:
            raise ValueError(f"source {name!r} has no complete training window")
        self.name = name
        self.windows = windows
        self.seed = seed
        self.consumed = 0
        self._epoch = -1
        self._order: np.ndarray | None = None

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            rng = np.random.default_rng([self.seed, zlib.crc32(self.name.encode()), epoch])
            self._order = rng.permutation(len(self.windows))
            self._epoch = epoch
        return self._order

    def take(self) -> int:
        """The next window's index (into `windows`), advancing the stream."""
        epoch, offset = divmod(self.consumed, len(self.windows))
        self.consumed += 1
        return int(self._permutation(epoch)[offset])

    @property
    def epochs(self) -> float:
        return self.consumed / len(self.windows)
