"""A document's logits inside a pack equal its logits alone (no attention across documents)."""

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from cptkit.data.shards import ShardWriter, WindowIndex, open_split
from cptkit.train.losses import forward_logits


def llama():
    return LlamaForCausalLM(LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128))


def gpt2():
    return GPT2LMHeadModel(GPT2Config(vocab_size=300, n_embd=32, n_layer=2, n_head=4, n_positions=128))


@pytest.mark.parametrize("build", [llama, gpt2])
def test_document_logits_in_a_pack_equal_logits_alone(tmp_path, build):
    torch.manual_seed(0)
    model = build().eval()
    rng = np.random.default_rng(0)
    docs = [np.concatenate([[1], rng.integers(3, 300, n), [2]]) for n in (5, 11, 7, 30)]
    writer = ShardWriter(tmp_path / "s", np.dtype(np.uint16), 10**6)
    for d in docs:
        writer.add(d, 1)
    window = WindowIndex(open_split(tmp_path / "s", writer.close(), "uint16"), 48).window(0)
    inputs, _, positions = (torch.from_numpy(x)[None] for x in window)
    with torch.no_grad():
        packed = forward_logits(model, {"input_ids": inputs, "position_ids": positions})[0]
        offset = 0
        for d in docs:
            n = min(len(d), 48 - offset)
            if n <= 0:
                break
            alone = model(input_ids=torch.from_numpy(d[:n])[None], use_cache=False).logits[0]
            assert torch.allclose(packed[offset : offset + n], alone, atol=1e-5), f"document at {offset}"
            offset += n
        # The check is not vacuous: without restarting positions, later documents' logits change.
        crossed = model(input_ids=inputs, position_ids=torch.arange(48)[None], use_cache=False).logits[0]
        assert not torch.allclose(crossed[7:24], packed[7:24], atol=1e-3)
