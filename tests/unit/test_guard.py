import math

import pytest

from cptkit.errors import RunFailure
from cptkit.train.guard import SPIKE_MIN_HISTORY, StepGuard


def test_non_finite_loss_or_gradient_is_a_bad_step():
    guard = StepGuard(max_bad_steps=3, spike_factor=0)
    assert guard.bad_reason(2.5, 1.0) is None
    assert guard.bad_reason(math.nan, 1.0) == "non-finite loss"
    assert guard.bad_reason(math.inf, 1.0) == "non-finite loss"
    assert guard.bad_reason(2.5, math.inf) == "non-finite gradient"
    # With float16 loss scaling an overflowing gradient is the scaler's to skip, not a fault.
    assert StepGuard(3, 0, scaled_fp16=True).bad_reason(2.5, math.inf) is None
    assert StepGuard(3, 0, scaled_fp16=True).bad_reason(math.nan, 1.0) == "non-finite loss"


def test_bad_steps_in_a_row_stop_the_run_and_a_good_step_resets_the_count():
    guard = StepGuard(max_bad_steps=3, spike_factor=0)
    guard.skipped(4, "non-finite loss", "runs/x/checkpoints/step-4")
    guard.skipped(5, "non-finite loss", "runs/x/checkpoints/step-4")
    guard.applied(6, 2.0)
    guard.skipped(7, "non-finite gradient", "runs/x/checkpoints/step-4")
    guard.skipped(8, "non-finite gradient", "runs/x/checkpoints/step-4")
    with pytest.raises(RunFailure) as err:
        guard.skipped(9, "non-finite loss", "runs/x/checkpoints/step-4")
    assert "3 steps in a row" in str(err.value) and "(steps 7-9)" in str(err.value)
    assert "runs/x/checkpoints/step-4, is intact" in str(err.value)
    assert [b["step"] for b in guard.bad_steps] == [4, 5, 7, 8, 9]


def test_spikes_are_measured_against_the_running_mean_of_good_steps():
    guard = StepGuard(max_bad_steps=5, spike_factor=2.0)
    assert not guard.applied(1, 100.0)  # no report before enough history
    for step in range(2, SPIKE_MIN_HISTORY + 2):
        assert not guard.applied(step, 2.0)
    mean = (100.0 + 2.0 * SPIKE_MIN_HISTORY) / (SPIKE_MIN_HISTORY + 1)
    assert not guard.applied(50, 2.0 * mean - 1e-9)
    mean = (100.0 + 2.0 * SPIKE_MIN_HISTORY + 2.0 * mean - 1e-9) / (SPIKE_MIN_HISTORY + 2)
    assert guard.applied(51, 2.0 * mean + 1e-6)
    assert guard.spikes[-1]["step"] == 51 and guard.spikes[-1]["running_mean"] == pytest.approx(mean)
    assert not StepGuard(5, spike_factor=0).applied(1, 1e9)  # 0 turns reporting off


def test_state_round_trip():
    guard = StepGuard(max_bad_steps=5, spike_factor=2.0)
    for step in range(1, 20):
        guard.applied(step, 3.0)
    guard.skipped(20, "non-finite loss", None)
    again = StepGuard(max_bad_steps=5, spike_factor=2.0)
    again.load_state_dict(guard.state_dict())
    assert again.state_dict() == guard.state_dict()
