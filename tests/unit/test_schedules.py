import math

import pytest

from cptkit.train.schedules import cosine_decay, lr_at, make_schedule, warmup_steps


def test_linear_warmup_reaches_peak_at_the_end_of_warmup():
    # step counts completed steps: the first update uses peak/warmup, the warmup-th uses peak.
    assert [lr_at(s, "cosine", 1.0, 100, 4) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]


def test_cosine_starts_at_peak_and_ends_exactly_at_the_floor():
    sched = make_schedule("cosine", peak=2e-4, total=11, warmup=1, min_ratio=0.1)
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
    sched = make_schedule("cosine", peak=1.0, total=1000, warmup=30, min_ratio=0.1)
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


def test_wsd_is_flat_then_decays_linearly_to_the_floor_exactly():
    # total 10, warmup 2, decay 4: steps 0-1 warm up, 2-5 flat, 6-9 fall from peak to floor.
    values = [lr_at(s, "wsd", 1.0, 10, 2, 0.1, decay=4) for s in range(10)]
    assert values[:6] == [0.5, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert values[6:] == pytest.approx([1.0, 0.7, 0.4, 0.1], abs=1e-15)
    assert values[-1] == 0.1


def test_wsd_decay_shapes_exact():
    # decay over 5 steps from 1.0 to 0.0: progress 0, 1/4, 1/2, 3/4, 1
    p = [0.0, 0.25, 0.5, 0.75, 1.0]
    cos = [lr_at(5 + k, "wsd", 1.0, 10, 0, 0.0, decay=5, decay_shape="cosine") for k in range(5)]
    sqrt = [lr_at(5 + k, "wsd", 1.0, 10, 0, 0.0, decay=5, decay_shape="sqrt") for k in range(5)]
    assert cos == pytest.approx([0.5 * (1 + math.cos(math.pi * x)) for x in p], abs=1e-15)
    assert sqrt == pytest.approx([1 - math.sqrt(x) for x in p], abs=1e-15)
    assert sqrt[1] == pytest.approx(0.5)  # 1 - sqrt(1/4): stays high, then drops late
    assert lr_at(4, "wsd", 1.0, 10, 0, 0.0, decay=5, decay_shape="sqrt") == 1.0  # last flat step


def test_infinite_warmup_cooldown_constant_anneal_exact():
    # total 12, warmup 2, cooldown 3 (peak 1.0 -> level 0.5, cosine), decay 3 (0.5 -> 0.1, linear)
    sched = make_schedule("infinite", peak=1.0, total=12, warmup=2, min_ratio=0.1, decay=3, cooldown=3,
                     constant_ratio=0.5)
    values = [sched(s) for s in range(12)]
    assert values[:2] == [0.5, 1.0]  # warmup
    assert values[2:5] == pytest.approx([1.0, 0.75, 0.5], abs=1e-15)  # cosine cooldown to the level
    assert values[5:9] == [0.5, 0.5, 0.5, 0.5]  # constant: extendable without touching the rest
    assert values[9:] == pytest.approx([0.5, 0.3, 0.1], abs=1e-15)  # final anneal to the floor
    assert values[-1] == pytest.approx(0.1, abs=0, rel=1e-15)


def test_infinite_cooldown_is_cut_where_the_anneal_begins():
    # cooldown 10 steps would run into the anneal at step 6: it is shortened to end at the level.
    values = [lr_at(s, "infinite", 1.0, 8, 0, 0.0, decay=2, cooldown=10, constant_ratio=0.5) for s in range(8)]
    assert values[0] == 1.0 and values[5] == pytest.approx(0.5)
    assert values[6:] == [0.5, 0.0]


def test_a_one_step_decay_lands_on_the_floor_and_zero_steps_change_nothing():
    assert lr_at(9, "wsd", 1.0, 10, 0, 0.2, decay=1) == 0.2
    assert [lr_at(s, "wsd", 1.0, 10, 0, 0.2, decay=0) for s in range(10)] == [1.0] * 10


def test_phase_steps_from_ratios():
    from cptkit.train.schedules import phase_steps

    assert phase_steps(1000, 30, 0.1) == 97  # 10% of the 970 steps after warmup
    assert phase_steps(10, 0, 0.01) == 1  # a phase asked for is at least one step
    assert phase_steps(10, 0, 0.0) == 0
    assert phase_steps(10, 10, 0.5) == 0


def test_unknown_decay_shape_is_refused():
    with pytest.raises(ValueError):
        lr_at(9, "wsd", 1.0, 10, 0, 0.1, decay=3, decay_shape="step")


def test_every_registered_schedule_is_a_config_choice_with_its_help_and_warms_up_linearly():
    import typing

    from cptkit.train.config import TrainConfig
    from cptkit.train.schedules import SCHEDULES, schedules_help

    choices = typing.get_args(typing.get_type_hints(TrainConfig)["schedule"])
    assert choices == tuple(SCHEDULES) == ("cosine", "constant", "wsd", "infinite")
    for name, cls in SCHEDULES.items():
        assert f"{name}: {cls.help}" in schedules_help()
        sched = make_schedule(name, peak=1.0, total=20, warmup=4, min_ratio=0.1, decay=4, cooldown=4)
        assert [sched(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
        assert min(sched(s) for s in range(20)) >= 0.1 and sched.describe().startswith(name)


def test_a_schedule_checks_its_own_parameters_when_built():
    with pytest.raises(ValueError, match="warmup <= total"):
        make_schedule("cosine", peak=1.0, total=5, warmup=6)
    with pytest.raises(ValueError, match="min_ratio"):
        make_schedule("wsd", peak=1.0, total=5, warmup=0, min_ratio=1.5)
    with pytest.raises(ValueError, match="unknown shape"):
        make_schedule("infinite", peak=1.0, total=5, warmup=0, decay_shape="step")


def test_the_mix_curricula_move_along_the_schedules_own_shapes():
    from cptkit.mixing import curriculum_share
    from cptkit.train.schedules import SHAPES

    for shape in ("linear", "cosine"):
        for p in (0.0, 0.3, 0.5, 0.9, 1.0):
            assert curriculum_share(p, 0.0, 1.0, shape) == SHAPES[shape].moved(p)
            assert lr_at(round(p * 10), "wsd", 1.0, 11, 0, 0.0, decay=11, decay_shape=shape) == pytest.approx(
                SHAPES[shape].remaining(round(p * 10) / 10), abs=1e-15)
