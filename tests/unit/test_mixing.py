import numpy as np
import pytest

from cptkit.data.shards import ShardWriter, WindowIndex, open_split
from cptkit.mixing import Mixer, SourceStream, replay_shares


@pytest.mark.parametrize("ratio", [0.05, 0.25, 0.5, 1 / 3])
def test_replay_share_is_exact_within_one_sequence_at_every_point(ratio):
    mixer = Mixer(["domain", "general"], replay_shares({"domain": 1.0}, {"general": 1.0}, ratio))
    seen = mixer.assign(2000, 0.0)
    replay = np.cumsum([s == "general" for s in seen])
    n = np.arange(1, 2001)
    assert np.all(np.abs(replay - ratio * n) < 1.0 + 1e-9)
    # Over any window of w sequences the realised count is within 2 of ratio * w.
    for w in (20, 64, 500):
        counts = replay[w:] - replay[:-w]
        assert np.all(np.abs(counts - ratio * w) <= 2)


def test_sources_within_a_role_follow_their_weights():
    shares = replay_shares({"a": 3.0, "b": 1.0}, {"g": 1.0}, 0.2)
    assert shares(0.0) == pytest.approx({"a": 0.6, "b": 0.2, "g": 0.2})
    mixer = Mixer(["a", "b", "g"], shares)
    seen = mixer.assign(1000, 0.0)
    assert [seen.count(k) for k in "abg"] == [600, 200, 200]


def test_mixer_state_round_trip_continues_identically():
    shares = replay_shares({"d": 1.0}, {"g": 1.0}, 0.07)
    full = Mixer(["d", "g"], shares)
    expected = full.assign(300, 0.0)
    first = Mixer(["d", "g"], shares)
    head = first.assign(123, 0.0)
    second = Mixer(["d", "g"], shares)
    second.load_state_dict(first.state_dict())
    assert head + second.assign(177, 0.0) == expected


def test_source_stream_is_a_seeded_permutation_per_epoch(tmp_path):
    writer = ShardWriter(tmp_path / "s", np.dtype(np.uint16), 10**6)
    writer.add(np.arange(1, 102), 1)
    windows = WindowIndex(open_split(tmp_path / "s", writer.close(), "uint16"), 10)
    assert len(windows) == 10
    stream = SourceStream("d", windows, seed=1)
    first, second = [stream.take() for _ in range(10)], [stream.take() for _ in range(10)]
    assert sorted(first) == sorted(second) == list(range(10))
    assert first != second  # a new order each epoch
    again = SourceStream("d", windows, seed=1)
    again.consumed = 10
    assert [again.take() for _ in range(10)] == second  # resuming needs only the count
    assert [SourceStream("d", windows, seed=2).take() for _ in range(10)] != first


def test_curriculum_share_exact_values():
    from cptkit.mixing import curriculum_share

    assert [curriculum_share(p, 0.5, 0.9) for p in (0.0, 0.25, 0.5, 1.0)] == pytest.approx([0.5, 0.6, 0.7, 0.9])
    cos = [curriculum_share(p, 0.5, 0.9, "cosine") for p in (0.0, 0.25, 0.5, 0.75, 1.0)]
    moved = [0.0, (1 - np.sqrt(0.5)) / 2, 0.5, (1 + np.sqrt(0.5)) / 2, 1.0]
    assert cos == pytest.approx([0.5 + 0.4 * m for m in moved], abs=1e-15)
    assert curriculum_share(1.7, 0.5, 0.9) == 0.9  # clamped to the schedule's ends
    with pytest.raises(ValueError):
        curriculum_share(0.5, 0.5, 0.9, "step")


def test_mix_schedule_splits_roles_by_weight_as_progress_moves():
    from cptkit.mixing import MixSchedule

    mix = MixSchedule({"pubmed": 3.0, "notes": 1.0}, {"web": 1.0, "books": 1.0}, start=0.5, end=0.9)
    assert mix(0.0) == pytest.approx({"pubmed": 0.375, "notes": 0.125, "web": 0.25, "books": 0.25})
    assert mix(1.0) == pytest.approx({"pubmed": 0.675, "notes": 0.225, "web": 0.05, "books": 0.05})
    assert sum(mix(0.37).values()) == pytest.approx(1.0)
    assert mix.mean_domain_share == pytest.approx(0.7)
    assert MixSchedule({"d": 1.0}, {}, 0.5, 0.9)(0.3) == {"d": 1.0}  # nothing to replay: all domain


@pytest.mark.parametrize("shape", ["linear", "cosine"])
def test_curriculum_realised_share_tracks_the_moving_target_within_one_sequence(shape):
    from cptkit.mixing import MixSchedule, curriculum_share

    rows, steps = 16, 200
    mixer = Mixer(["d", "g"], MixSchedule({"d": 1.0}, {"g": 1.0}, 0.5, 0.9, shape))
    seen, target = [], []
    for step in range(steps):
        progress = step / (steps - 1)
        seen += mixer.assign(rows, progress)
        target += [curriculum_share(progress, 0.5, 0.9, shape)] * rows
    domain = np.cumsum([s == "d" for s in seen])
    expected = np.cumsum(target)
    assert np.all(np.abs(domain - expected) < 1.0 + 1e-9)
    # Over any window of w sequences (here: every micro batch of 4 and every step of 16 rows),
    # the realised domain count is within 2 of the target summed over that window.
    for w in (4, 16, 160):
        got = domain[w:] - domain[:-w]
        want = expected[w:] - expected[:-w]
        assert np.all(np.abs(got - want) <= 2)
    first, last = seen[:rows * 10], seen[-rows * 10:]
    assert first.count("d") / len(first) < 0.55 and last.count("d") / len(last) > 0.85


def test_three_sources_realised_counts_stay_within_one_of_their_targets():
    from cptkit.mixing import MixSchedule

    mix = MixSchedule({"a": 5.0, "b": 2.0}, {"g": 1.0}, 0.6, 0.95, "cosine")
    mixer = Mixer(["a", "b", "g"], mix)
    counts = {k: 0 for k in "abg"}
    targets = {k: 0.0 for k in "abg"}
    for step in range(300):
        share = mix(step / 299)
        for name in mixer.assign(8, step / 299):
            counts[name] += 1
        for k in targets:
            targets[k] += 8 * share[k]
        assert all(abs(counts[k] - targets[k]) < 1.0 + 1e-9 for k in "abg"), (step, counts, targets)


def test_curriculum_mixer_resumes_identically():
    from cptkit.mixing import MixSchedule

    mix = MixSchedule({"d": 1.0}, {"g": 1.0}, 0.5, 0.9, "cosine")
    full = Mixer(["d", "g"], mix)
    expected = [full.assign(8, s / 49) for s in range(50)]
    first = Mixer(["d", "g"], mix)
    head = [first.assign(8, s / 49) for s in range(20)]
    second = Mixer(["d", "g"], mix)
    second.load_state_dict(first.state_dict())
    assert head + [second.assign(8, s / 49) for s in range(20, 50)] == expected
