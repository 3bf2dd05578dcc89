import math

import pytest

from cptkit.train.schedules import Schedule, cosine_decay, lr_at, warmup_steps


def test_linear_warmup_reaches_peak_at_the_end_of_warmup():
    # step counts completed steps: the first update uses peak/warmup, the warmup-th uses peak.
    assert [lr_at(s, "cosine", 1.0, 100, 4) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]


def test_cosine_starts_at_peak_and_ends_exactly_at_the_floor():
    sched = Schedule("cosine", peak=2e-4, total=11, warmup=1, min_ratio=0.1)
    assert sched(0) == pytest.approx(2e-4)  # warmup of one step already at peak
    assert sched(1) == pytest.approx(2e-4)  # first decay step
    assert sched(10) == pytest.approx(2e-5, abs=0, rel=1e-12)  # last step: the floor, honoured
    # midway through the decay (step 1 + 4.5 of 9): exactly halfway between peak and floor
    assert cosine_decay(9, 19, 1.0, 0.1) == pytest.approx(0.55)


def test_cosine_values_exact():
    values = [lr_at(s, "cosine", 1.0, 6, 1, 0.0) for s in range(6)]
    expected = [1.0] + [0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(5)]
    assert values == pytest.approx(expected, abs=1e-15)
    assert values[-1] == 0.0


def test_constant_after_warmup():
    assert [lr_at(s, "constant", 3.0, 10, 2) for s in range(5)] == [1.5, 3.0, 3.0, 3.0, 3.0]


def test_never_below_floor_and_monotone_after_warmup():
    sched = Schedule("cosine", peak=1.0, total=1000, warmup=30, min_ratio=0.1)
    decay = [sched(s) for s in range(30, 1000)]
    assert min(decay) == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(decay, decay[1:]))


def test_warmup_steps_from_ratio_or_count():
    assert warmup_steps(1000, 0.03, None) == 30
    assert warmup_steps(1000, 0.03, 5) == 5
    assert warmup_steps(10, 0.5, 50) == 10


def test_unknown_schedule_is_refused():
    with pytest.raises(ValueError):
        lr_at(5, "linear", 1.0, 10, 0)
