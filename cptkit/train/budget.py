"""The forgetting budget: the largest rise of general perplexity a run may cost.

With `train.forgetting_budget: b`, an evaluation is *within budget* when

    general_ppl <= (1 + b) * general_ppl at step 0 (the untouched base model)

Only evaluations within budget can make `best/` or be kept as a best checkpoint, so `best/` is
the best domain checkpoint within the budget. Every checkpoint step is evaluated, so each
checkpoint is known to be within budget or not. When an evaluation is over budget,
`train.forgetting_action` says what happens:

- `keep_going`: nothing more (only `best/` respects the budget);
- `stop`: the run ends there (final/ and summary.json are written as usual, with the reason);
- `rollback`: the run goes back to the newest checkpoint within budget (a checkpoint of the
  base model is written at step 0 for this), restoring weights, optimizer, data position and
  RNG, and continues with the learning rate multiplied by `train.rollback_lr_factor` and the
  replay share raised by `train.rollback_replay`. After `train.max_rollbacks` rollbacks, an
  over-budget evaluation stops the run.

The adjustments and the rollbacks are part of the run's state, so `--resume` continues exactly.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cptkit.records import EvalRecord

log = logging.getLogger("cptkit")

GENERAL = "general_ppl"


@dataclasses.dataclass
class ForgettingBudget:
    budget: float | None
    action: str = "rollback"
    lr_factor: float = 0.5
    replay_step: float = 0.05
    max_rollbacks: int = 3
    lr_scale: float = 1.0
    replay_boost: float = 0.0
    rollbacks: list[dict] = dataclasses.field(default_factory=list)
    stopped: str | None = None

    @property
    def active(self) -> bool:
        return self.budget is not None

    @property
    def rolls_back(self) -> bool:
        return self.active and self.action == "rollback"

    def lr(self, scheduled: float) -> float:
        """The learning rate after this budget's rollbacks lowered it."""
        return scheduled * self.lr_scale

    def mix(self, shares):
        """The planned MixSchedule with this budget's replay shift applied."""
        return boosted(shares, self.replay_boost)

    def protected_steps(self) -> set[int]:
        """Checkpoint steps never pruned: the base model's state, the rollback of last resort."""
        return {0} if self.rolls_back else set()

    def rise(self, base: EvalRecord | None, results: EvalRecord) -> float | None:
        """Relative change of general perplexity against step 0 (None without both numbers)."""
        if base is None or base.get(GENERAL) is None or results.get(GENERAL) is None:
            return None
        return results[GENERAL] / base[GENERAL] - 1.0

    def within(self, base: EvalRecord | None, results: EvalRecord) -> bool:
        return self.allows(self.rise(base, results))

    def allows(self, rise: float | None) -> bool:
        # A NaN rise (diverged model) is over budget: `nan <= b` is False.
        return not self.active or rise is None or rise <= self.budget

    def next_action(self) -> str:
        """What to do about an over-budget evaluation now."""
        if self.action == "rollback" and len(self.rollbacks) >= self.max_rollbacks:
            return "stop"
        return self.action

    def rollback_target(self, scores: dict[int, float | None], committed: list[int], now: int) -> int | None:
        """The newest committed checkpoint step before `now` whose evaluation was within budget
        (scored: `BestTracker.scores`)."""
        good = [s for s in committed if s < now and s in scores and scores[s] is not None]
        return max(good) if good else None

    def adjust(self, at_step: int, to_step: int, rise: float) -> dict:
        """Record a rollback and tighten the run: lower LR, more replay."""
        self.lr_scale *= self.lr_factor
        self.replay_boost += self.replay_step
        record = {"at_step": at_step, "to_step": to_step, "general_rise": rise,
                  "lr_scale": self.lr_scale, "replay_boost": self.replay_boost}
        self.rollbacks.append(record)
        return record

    def state_dict(self) -> dict:
        return {"lr_scale": self.lr_scale, "replay_boost": self.replay_boost, "rollbacks": self.rollbacks,
                "stopped": self.stopped}

    def load_state_dict(self, state: dict) -> None:
        self.lr_scale, self.replay_boost = state["lr_scale"], state["replay_boost"]
        self.rollbacks, self.stopped = state["rollbacks"], state["stopped"]

    def summary(self) -> dict | None:
        if not self.active:
            return None
        return {"budget": self.budget, "action": self.action, "rollbacks": self.rollbacks,
                "stopped": self.stopped, "lr_scale": self.lr_scale, "replay_boost": self.replay_boost}


def boosted(shares, boost: float):
    """A MixSchedule with `boost` moved from the domain share to replay (at least 0 domain)."""
    if boost <= 0 or not shares.general:
        return shares
    return dataclasses.replace(shares, start=max(shares.start - boost, 0.0), end=max(shares.end - boost, 0.0))
