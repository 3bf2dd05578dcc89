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

Unset (the normal case) every check is one dictionary lookup. The recovery tests in
tests/integration/test_faults.py use these points; RELIABILITY.md lists the promises they check.
"""

from __future__ import annotations

import os
import signal

_ENV = "CPTKIT_CRASH_AT"
_NAN_ENV = "CPTKIT_NAN_STEPS"


def crash_point(name: str) -> None:
    """Die here, at once, if CPTKIT_CRASH_AT names this point."""
    if os.environ.get(_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def nan_step(step: int) -> bool:
    """True if CPTKIT_NAN_STEPS lists this optimizer step (counted from 1)."""
    listed = os.environ.get(_NAN_ENV)
    return bool(listed) and str(step) in listed.split(",")
