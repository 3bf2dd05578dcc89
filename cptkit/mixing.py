"""Which source each training sequence comes from, and which window of that source.

Everything here is deterministic given the seed and fully described by a small state dict, so a
resumed run continues the exact sample stream without re-reading any data.

- `role_shares(progress)` is a pure function: the share of each source at a point of training.
- `Mixer` turns shares into a per-sequence assignment with the largest-deficit rule: each new
  sequence goes to the source whose realised count lags its running target the most. The
  realised count of every source stays within one sequence of its target at every step, so a
  replay ratio of 5% means 5% of the sequences (and tokens), not 5% on average over luck.
- `SourceStream` walks one source's windows in a fresh seeded permutation per epoch.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import numpy as np

from cptkit.data.shards import WindowIndex

Shares = Callable[[float], dict[str, float]]


def replay_shares(
    domain: dict[str, float], general: dict[str, float], replay_ratio: float
) -> Shares:
    """Shares for a fixed replay ratio; within a role, sources split by the given weights."""
    d_total = sum(domain.values())
    g_total = sum(general.values())

    def shares(progress: float) -> dict[str, float]:
        del progress  # a fixed ratio does not move
        out = {name: (1 - replay_ratio) * w / d_total for name, w in domain.items()}
        if g_total > 0:
            out.update({name: replay_ratio * w / g_total for name, w in general.items()})
        return out

    return shares


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
