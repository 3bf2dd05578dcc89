import numpy as np
import pytest

from cptkit.data.shards import IGNORE_INDEX, ShardWriter, WindowIndex, open_split, token_dtype

START, EOS = 1, 2


def write_docs(tmp_path, lengths, seq_shard=10**9, seed=0):
    rng = np.random.default_rng(seed)
    docs = [np.concatenate([[START], rng.integers(3, 500, n), [EOS]]) for n in lengths]
    writer = ShardWriter(tmp_path / "train", token_dtype(500), seq_shard)
    for i, d in enumerate(docs):
        writer.add(d, n_bytes=10 * i)
    shards = open_split(tmp_path / "train", writer.close(), "uint16")
    return docs, shards


def test_dtype_follows_vocabulary_size():
    assert token_dtype(65536) == np.uint16
    assert token_dtype(65537) == np.uint32


@pytest.mark.parametrize("seq_len", [7, 16, 64])
def test_every_token_is_a_target_exactly_once_and_boundaries_are_masked(tmp_path, seq_len):
    lengths = [0, 3, 50, 1, 17, 120, 5]
    docs, shards = write_docs(tmp_path, lengths, seq_shard=90)
    index = WindowIndex(shards, seq_len)
    for k, shard in enumerate(shards):
        stream = np.asarray(shard.tokens, dtype=np.int64)
        lo, hi = int(index.cumulative[k]), int(index.cumulative[k + 1])
        inputs, labels, positions = zip(*(index.window(i) for i in range(lo, hi)))
        labels = np.concatenate(labels)
        real = labels[: len(stream) - 1]  # what follows is padding of the last window
        assert (labels[len(stream) - 1 :] == IGNORE_INDEX).all()
        # Target of position p is token p + 1, except where token p + 1 starts a document.
        expected = stream[1:].copy()
        expected[shard.starts[1:] - 1] = IGNORE_INDEX
        assert np.array_equal(real, expected)
        assert np.array_equal(np.concatenate(inputs)[: len(stream) - 1], stream[:-1])
    # Across shards, every document is stored whole: start token, its tokens, EOS.
    stored = np.concatenate([np.asarray(s.tokens) for s in shards])
    assert np.array_equal(stored, np.concatenate(docs))


def test_position_ids_restart_at_each_document(tmp_path):
    _, shards = write_docs(tmp_path, [2, 3, 30])
    inputs, labels, positions = WindowIndex(shards, 16).window(0)
    # docs occupy [0,4) [4,9) [9,41): positions restart at 4 and 9
    assert positions.tolist() == [0, 1, 2, 3, 0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5, 6]
    # Each EOS is predicted; an EOS never predicts the next document's start token.
    assert labels[2] == EOS and labels[3] == IGNORE_INDEX
    assert labels[7] == EOS and labels[8] == IGNORE_INDEX
    assert (labels != IGNORE_INDEX).sum() == 14
    _, _, plain = WindowIndex(shards, 16).window(0, document_masking=False)
    assert plain.tolist() == list(range(16))


def test_manifest_length_mismatch_is_detected(tmp_path):
    writer = ShardWriter(tmp_path / "s", np.dtype(np.uint16), 1000)
    writer.add(np.arange(10), 5)
    entries = writer.close()
    entries[0]["n_tokens"] = 11
    with pytest.raises(ValueError, match="manifest says 11"):
        open_split(tmp_path / "s", entries, "uint16")


@pytest.mark.parametrize("shard_tokens", [1, 7, 40, 10**6])
def test_add_many_writes_what_add_writes(tmp_path, shard_tokens):
    rng = np.random.default_rng(1)
    docs = [np.concatenate([[START], rng.integers(3, 500, n), [EOS]]) for n in [0, 5, 30, 2, 17, 1, 60]]
    one = ShardWriter(tmp_path / "one", np.dtype(np.uint16), shard_tokens)
    for i, d in enumerate(docs):
        one.add(d, n_bytes=i)
    many = ShardWriter(tmp_path / "many", np.dtype(np.uint16), shard_tokens)
    offsets = np.cumsum([0] + [len(d) for d in docs])
    many.add(docs[0], 0)  # mixing both kinds of call
    many.add_many(np.concatenate(docs[1:]), offsets[1:] - offsets[1], np.arange(1, len(docs)))
    assert many.close() == one.close() and many.hasher.digest() == one.hasher.digest()
    for entry in one.shards:
        assert (tmp_path / "one" / entry["tokens"]).read_bytes() == (tmp_path / "many" / entry["tokens"]).read_bytes()
        assert np.array_equal(np.load(tmp_path / "one" / entry["docs"]), np.load(tmp_path / "many" / entry["docs"]))
