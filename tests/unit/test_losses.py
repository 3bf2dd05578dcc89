"""The chunked loss equals the plain full-logits loss, in value and in every gradient."""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from cptkit.data.shards import IGNORE_INDEX
from cptkit.train.losses import LinearCrossEntropy, check_chunked_head, chunked_loss, full_loss


def llama(tied):
    return LlamaForCausalLM(LlamaConfig(vocab_size=211, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tied))


def gpt2():
    return GPT2LMHeadModel(GPT2Config(vocab_size=211, n_embd=32, n_layer=2, n_head=4, n_positions=64))


def batch():
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 211, (3, 20), generator=gen)
    labels = torch.roll(ids, -1, 1)
    labels[0, 5] = labels[1, :4] = labels[2, -1] = IGNORE_INDEX
    positions = torch.arange(20).repeat(3, 1)
    positions[1, 9:] -= 9  # a second document in row 1
    return {"input_ids": ids, "labels": labels, "position_ids": positions}


@pytest.mark.parametrize("build", [lambda: llama(True), lambda: llama(False), gpt2])
def test_chunked_loss_and_gradients_equal_full_logits(build):
    torch.manual_seed(0)
    model = build().eval()  # no dropout: both paths must see the same network
    b = batch()
    full = full_loss(model, b)
    full.total.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    chunked = chunked_loss(model, b, chunk=7)
    (chunked.total * 0.5).backward()  # a scalar upstream gradient is applied
    assert torch.allclose(chunked.total, full.total, rtol=1e-5)
    assert torch.allclose(chunked.row_sums, full.row_sums, rtol=1e-5)
    assert torch.equal(chunked.row_counts, full.row_counts)
    for name, p in model.named_parameters():
        assert torch.allclose(p.grad * 2, grads[name], rtol=1e-4, atol=1e-6), name
    assert check_chunked_head(model, torch.device("cpu"))


def test_linear_cross_entropy_with_bias_matches_autograd():
    torch.manual_seed(0)
    h = torch.randn(10, 8, requires_grad=True)
    w = torch.randn(13, 8, requires_grad=True)
    b = torch.randn(13, requires_grad=True)
    t = torch.randint(0, 13, (10,))
    total, per_token = LinearCrossEntropy.apply(h, w, b, t, 3)
    total.backward()
    ref_h, ref_w, ref_b = (x.detach().clone().requires_grad_() for x in (h, w, b))
    ref = torch.nn.functional.cross_entropy(ref_h @ ref_w.T + ref_b, t, reduction="sum")
    ref.backward()
    assert torch.allclose(total, ref) and not per_token.requires_grad
    for mine, theirs in ((h, ref_h), (w, ref_w), (b, ref_b)):
        assert torch.allclose(mine.grad, theirs.grad, atol=1e-5)


def test_scaled_logits_fall_back_to_full():
    model = llama(True)
    original = model.forward

    def capped(*args, **kwargs):
        out = original(*args, **kwargs)
        out.logits = out.logits * 4.0  # logit scaling, as in Cohere models
        return out

    model.forward = capped  # an architecture whose logits are not the plain head output
    assert not check_chunked_head(model, torch.device("cpu"))
