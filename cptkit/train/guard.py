"""Numerical faults: skip a step whose loss or gradient is not finite, stop after too many, report spikes.

A bad step (NaN or Inf in the loss, or in the global gradient norm) is not applied: the
optimizer does not step, its gradients are dropped, and the run moves on to the next batch. The
step still counts (its data is consumed and the schedule advances), so a run's length and its
sample stream do not depend on faults; `metrics.jsonl` marks it `"skipped": REASON`.
`train.max_bad_steps` bad steps in a row stop the run with a message (exit status 1) without
saving: the newest checkpoint, written before the fault, stays the one to resume from.

With float16 and loss scaling, an overflowing gradient is the scaler's business: it skips that
update and lowers the scale itself, so only a non-finite *loss* counts as a bad step there.

A loss above `train.spike_factor` times the mean of the last `SPIKE_WINDOW` good steps is
reported (a warning, `"spike": true` in metrics.jsonl, the list in summary.json) but applied:
spikes often recover by themselves, and the user decides what to do about them.
"""

from __future__ import annotations

import logging
import math
from collections import deque

from cptkit.errors import RunFailure

log = logging.getLogger("cptkit")

SPIKE_WINDOW = 50  # good steps in the running mean
SPIKE_MIN_HISTORY = 10  # no spike is reported before this many good steps


class StepGuard:
    def __init__(self, max_bad_steps: int, spike_factor: float, scaled_fp16: bool = False):
        self.max_bad_steps = max_bad_steps
        self.spike_factor = spike_factor
        self.scaled_fp16 = scaled_fp16
        self.in_row = 0
        self.bad_steps: list[dict] = []
        self.spikes: list[dict] = []
        self.recent: deque[float] = deque(maxlen=SPIKE_WINDOW)

    def bad_reason(self, loss: float, grad_norm: float) -> str | None:
        """Why this step must not be applied, or None. Both numbers are global (all processes)."""
        if not math.isfinite(loss):
            return "non-finite loss"
        if not math.isfinite(grad_norm) and not self.scaled_fp16:
            return "non-finite gradient"
        return None

    def skipped(self, step: int, reason: str, last_good_checkpoint: object) -> None:
        """Count a skipped step; raise RunFailure once `max_bad_steps` came in a row."""
        self.in_row += 1
        self.bad_steps.append({"step": step, "reason": reason})
        log.warning("step %d: %s; update skipped (%d in a row, the run stops at %d)",
                    step, reason, self.in_row, self.max_bad_steps)
        if self.in_row >= self.max_bad_steps:
            where = f"the newest checkpoint, {last_good_checkpoint}, is intact" if last_good_checkpoint else \
                "no checkpoint was written yet"
            raise RunFailure(
                f"step {step}: {self.in_row} steps in a row had a non-finite loss or gradient "
                f"(steps {step - self.in_row + 1}-{step}); the run stopped without saving and {where}. "
                "Lower train.lr, check the data of these steps, or raise train.max_bad_steps; then --resume."
            )

    def applied(self, step: int, loss: float) -> bool:
        """Record an applied step's loss; True when it is a spike."""
        self.in_row = 0
        spike = False
        if self.spike_factor > 0 and len(self.recent) >= SPIKE_MIN_HISTORY:
            mean = sum(self.recent) / len(self.recent)
            if loss > self.spike_factor * mean:
                spike = True
                self.spikes.append({"step": step, "loss": loss, "running_mean": mean})
                log.warning("step %d: loss spike %.4f, %.1fx the running mean %.4f",
                            step, loss, loss / mean, mean)
        self.recent.append(loss)
        return spike

    def state_dict(self) -> dict:
        return {"in_row": self.in_row, "bad_steps": self.bad_steps, "spikes": self.spikes,
                "recent": list(self.recent)}

    def load_state_dict(self, state: dict) -> None:
        self.in_row, self.bad_steps, self.spikes = state["in_row"], state["bad_steps"], state["spikes"]
        self.recent = deque(state["recent"], maxlen=SPIKE_WINDOW)
