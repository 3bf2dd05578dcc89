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
