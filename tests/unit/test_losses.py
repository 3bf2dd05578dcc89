"""The chunked loss equals the plain full-logits loss, in value and in every gradient."""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from cptkit.data.shards import IGNORE_INDEX
from cptkit.train.checks import chunked_head_is_exact
from cptkit.train.losses import LinearCrossEntropy, chunked_loss, full_loss


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
    assert chunked_head_is_exact(model, torch.device("cpu"))


def test_linear_cross_entropy_with_bias_matches_autograd():
    torch.manual_seed(0)
    h = torch.randn(10, 8, requires_grad=True)
    w = torch.randn(13, 8, requires_grad=True)
    b = torch.randn(13, requires_grad=True)
    t = torch.randint(0, 13, (10,))
    total, per_token, kls = LinearCrossEntropy.apply(h, w, b, t, 3)
    assert kls.numel() == 0  # no reference: no KL term
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
    assert not chunked_head_is_exact(model, torch.device("cpu"))


def kl_reference(model, on="all", reverse=False, chunked=True):
    import copy

    from cptkit.regularizers.kl import KLToReference

    ref = KLToReference(copy.deepcopy(model), weight=1.0, on=on, every=1, reverse=reverse)
    ref.chunked = chunked
    return ref


def test_kl_to_an_identical_reference_is_exactly_zero_and_leaves_the_gradient_alone():
    torch.manual_seed(0)
    model = llama(True).train()  # train mode: the student as it trains; the reference is in eval mode
    b = batch()
    plain = chunked_loss(model, b, chunk=7)
    plain.total.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    ref = kl_reference(model).reference(b, torch.ones(3, dtype=torch.bool), coef=3.0)
    out = chunked_loss(model, b, chunk=7, ref=ref)
    out.total.backward()
    assert out.kl_sum.item() == 0.0  # exactly, not approximately
    assert torch.equal(out.total, plain.total)
    for name, p in model.named_parameters():
        assert torch.equal(p.grad, grads[name]), name


def autograd_objective(model, ref_model, b, rows, coef, reverse):
    """CE sum + coef * sum of per-token KL over real targets of `rows`, by plain autograd."""
    logits = model(input_ids=b["input_ids"], position_ids=b["position_ids"], use_cache=False).logits
    with torch.no_grad():
        ref_logits = ref_model(input_ids=b["input_ids"], position_ids=b["position_ids"], use_cache=False).logits
    real = b["labels"] != IGNORE_INDEX
    ce = torch.nn.functional.cross_entropy(logits[real], b["labels"][real], reduction="sum")
    take = real & rows[:, None]
    cur, refp = logits[take].log_softmax(-1), ref_logits[take].log_softmax(-1)
    if reverse:
        kl = (cur.exp() * (cur - refp)).sum(-1)
    else:  # KL(ref || cur), what kl_div(log_softmax(cur), softmax(ref)) computes, per token
        kl = torch.nn.functional.kl_div(cur, refp, log_target=True, reduction="none").sum(-1)
    return ce + coef * kl.sum(), kl.sum()


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("chunked", [True, False])
def test_fused_kl_matches_autograd_in_value_and_every_gradient(reverse, chunked):
    torch.manual_seed(0)
    model = llama(False).eval()
    ref = kl_reference(model, on="replay", reverse=reverse, chunked=chunked)
    with torch.no_grad():  # move the student away from the reference
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    b = batch()
    rows = torch.tensor([True, False, True])  # KL on the "replay" rows 0 and 2 only
    want, want_kl = autograd_objective(model, ref.model, b, rows, coef=0.7, reverse=reverse)
    want.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    r = ref.reference(b, rows, coef=0.7)
    out = chunked_loss(model, b, chunk=6, ref=r) if chunked else full_loss(model, b, ref=r)
    out.total.backward()
    assert want_kl > 1e-3  # a real divergence is being compared
    assert torch.allclose(out.kl_sum, want_kl, rtol=1e-5)
    assert torch.allclose(out.total, want, rtol=1e-5)
    for name, p in model.named_parameters():
        assert torch.allclose(p.grad, grads[name], rtol=1e-4, atol=1e-6), name


def test_no_full_vocabulary_float32_tensor_outlives_a_chunk():
    from torch.utils._python_dispatch import TorchDispatchMode

    class Largest(TorchDispatchMode):
        biggest = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else [out]:
                if isinstance(t, torch.Tensor) and t.dtype == torch.float32:
                    Largest.biggest = max(Largest.biggest, t.numel())
            return out

    torch.manual_seed(0)
    model = llama(False).train()
    ref = kl_reference(model)
    b = batch()  # 3 x 20 tokens, vocabulary 211, chunks of 6 tokens
    r = ref.reference(b, torch.ones(3, dtype=torch.bool), coef=1.0)
    with Largest():
        chunked_loss(model, b, chunk=6, ref=r).total.backward()
    assert Largest.biggest < 3 * 20 * 211  # never [B, T, V]
    assert Largest.biggest <= max(6 * 211, 211 * 32)  # one chunk of logits, or the output layer's gradient
