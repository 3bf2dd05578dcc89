"""Deterministic crash points for testing recovery with real processes.

Set `CPTKIT_CRASH_AT` to a point name and the process kills itself with SIGKILL when it gets
there: no exception handlers, no `finally` blocks, no flushing, exactly like a power cut or an
out-of-memory kill. Points (N is an optimizer step):

    step:N                    right after optimizer step N, before it is logged
    eval:N                    in the middle of the evaluation at step N
    save:N:written            checkpoint step N: every file written, the COMMITTED marker not yet
    save:N:committed          checkpoint step N: sealed in its temporary folder, not yet renamed
    export:NAME               while writing the exported model folder NAME (best, final)
    prepare:parts:K           prepare: when K parts are finished
    prepare:write:SOURCE      prepare: SOURCE's shards and manifest written, not yet moved into place

`CPTKIT_NAN_STEPS=3,4` makes the loss of those optimizer steps NaN (and so their gradients), to
test how the loop handles numerical faults (cptkit.train.guard).

The training loop meets both through one object, `StepFaults`: `begin(step)` before an
optimizer step and `end(step)` after it. The NaN is injected by a forward hook on the loss
module, so the step's maths holds no test code. Unset (the normal case) every check is one
dictionary lookup and no hook is installed. The recovery tests in
tests/integration/test_faults.py use these points; RELIABILITY.md lists the promises they check.
"""

from __future__ import annotations

import math
import os
import signal

_ENV = "CPTKIT_CRASH_AT"
_NAN_ENV = "CPTKIT_NAN_STEPS"


def crash_point(name: str) -> None:
    """Die here, at once, if CPTKIT_CRASH_AT names this point."""
    if os.environ.get(_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


class StepFaults:
    """The training loop's fault hook: NaN losses at CPTKIT_NAN_STEPS, crash points step:N."""

    def __init__(self, loss_module=None):
        listed = os.environ.get(_NAN_ENV)
        self.nan_steps = {int(s) for s in listed.split(",") if s.strip()} if listed else set()
        self.current = 0
        if self.nan_steps and loss_module is not None:
            loss_module.register_forward_hook(self._poison)

    def begin(self, step: int) -> None:
        """Optimizer step `step` (counted from 1) is about to run."""
        self.current = step

    def end(self, step: int) -> None:
        """Optimizer step `step` is done (applied or skipped), before it is logged."""
        crash_point(f"step:{step}")

    def _poison(self, module, args, output):
        if self.current not in self.nan_steps:
            return None
        total, row_sums, *rest = output
        return (total * math.nan, row_sums * math.nan, *rest)
