"""EWC / L2-SP penalties and the Fisher estimate: exact values, gradients, normalisation, files."""

import contextlib
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from cptkit.data.shards import ShardWriter, WindowIndex, open_split
from cptkit.errors import UserError
from cptkit.regularizers.ewc import AnchorPenalty, penalty, penalty_and_grad
from cptkit.regularizers.fisher import estimate_fisher, fisher_sequences, load_fisher, save_fisher


def small_llama(seed=0):
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=97, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                        num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=True))


def test_penalty_is_zero_at_the_anchor_and_exact_elsewhere():
    theta = {"a": torch.tensor([1.0, 2.0, 3.0]), "b": torch.tensor([[0.5, -1.0]])}
    fisher = {"a": torch.tensor([2.0, 0.0, 1.0]), "b": torch.tensor([[4.0, 1.0]])}
    assert penalty(theta, {k: v.clone() for k, v in theta.items()}, fisher, 0.3).item() == 0.0
    anchor = {"a": torch.tensor([0.0, 0.0, 1.0]), "b": torch.tensor([[0.0, 0.0]])}
    # (0.3 / 2) * (2*1 + 0*4 + 1*4 + 4*0.25 + 1*1) = 0.15 * 8 = 1.2
    assert penalty(theta, anchor, fisher, 0.3).item() == pytest.approx(1.2)
    # L2-SP: F = 1 -> 0.15 * (1 + 4 + 4 + 0.25 + 1) = 1.5375
    assert penalty(theta, anchor, None, 0.3).item() == pytest.approx(1.5375)


@pytest.mark.parametrize("with_fisher", [True, False])
def test_penalty_gradient_is_weight_times_fisher_times_displacement(with_fisher):
    gen = torch.Generator().manual_seed(0)
    theta = torch.randn(5, 4, generator=gen)
    anchor = torch.randn(5, 4, generator=gen)
    fisher = torch.rand(5, 4, generator=gen) if with_fisher else None
    value, grad = penalty_and_grad(theta, anchor, fisher, 0.7)
    expected = 0.7 * (fisher if with_fisher else 1.0) * (theta - anchor)
    assert torch.allclose(grad, expected, rtol=1e-6, atol=0)
    leaf = theta.clone().requires_grad_()
    auto = penalty({"w": leaf}, {"w": anchor}, None if fisher is None else {"w": fisher}, 0.7)
    auto.backward()
    assert torch.allclose(leaf.grad, grad, rtol=1e-6) and value == pytest.approx(auto.item(), rel=1e-6)


def test_anchor_penalty_adds_its_gradient_to_the_loss_gradient_of_trainable_weights_only():
    model = small_llama()
    model.model.layers[0].requires_grad_(False)
    params = dict(model.named_parameters())
    fisher = {n: torch.full_like(p, 2.0) for n, p in params.items()}
    pen = AnchorPenalty(params, weight=0.5, fisher=fisher)
    assert not any(n.startswith("model.layers.0.") for n in pen.params)
    assert pen.add_to_grads() == 0.0  # at the anchor: no penalty, zero gradient
    assert all(torch.count_nonzero(p.grad) == 0 for p in pen.params.values())
    name = "model.norm.weight"
    with torch.no_grad():
        params[name].add_(0.1)
    loss_grad = torch.full_like(params[name], 0.25)
    model.zero_grad(set_to_none=True)
    params[name].grad = loss_grad.clone()
    value = pen.add_to_grads()
    assert value == pytest.approx(0.5 / 2 * 2.0 * 0.01 * params[name].numel(), rel=1e-5)
    assert torch.allclose(params[name].grad, loss_grad + 0.5 * 2.0 * 0.1, rtol=1e-5)
    assert params["model.layers.0.mlp.up_proj.weight"].grad is None  # frozen: untouched


def windows_of(tmp_path, docs, seq_len=16):
    writer = ShardWriter(tmp_path / "g", np.dtype(np.uint16), 10**6)
    for d in docs:
        writer.add(np.asarray(d), 1)
    return WindowIndex(open_split(tmp_path / "g", writer.close(), "uint16"), seq_len)


def cpu_dist():
    return SimpleNamespace(device=torch.device("cpu"), rank=0, world_size=1, all_reduce_sum=lambda t: t)


def test_fisher_is_normalised_by_the_tokens_actually_seen(tmp_path):
    rng = np.random.default_rng(0)
    docs = [[1] + list(rng.integers(3, 97, size=n)) + [2] for n in (40, 25, 30)]
    windows = windows_of(tmp_path, docs)
    chosen, seen = fisher_sequences([windows], tokens=10**6, seed=1)
    assert len(chosen) == len(windows)  # asked for far more than there is: every window once
    assert seen == sum(len(d) - 1 for d in docs)  # every token but a document's first is a target once
    model = small_llama()
    fisher, meta = estimate_fisher(model, [windows], 10**6, "empirical", 1, cpu_dist(), contextlib.nullcontext, 5)
    assert meta["tokens"] == seen and meta["requested_tokens"] == 10**6 and meta["sequences"] == len(windows)
    # By hand: the empirical Fisher is sum over sequences of (grad of summed NLL)^2 / tokens seen.
    by_hand = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for w in range(len(windows)):
        inputs, labels, positions = (torch.from_numpy(x)[None] for x in windows.window(w))
        model.zero_grad()
        logits = model(input_ids=inputs, position_ids=positions, use_cache=False).logits[0]
        torch.nn.functional.cross_entropy(logits, labels[0], ignore_index=-100, reduction="sum").backward()
        for n, p in model.named_parameters():
            by_hand[n] += p.grad.square()
    for n in by_hand:
        assert torch.allclose(fisher[n], by_hand[n] / seen, rtol=1e-4, atol=1e-12), n


def test_true_fisher_is_deterministic_covers_frozen_weights_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    windows = windows_of(tmp_path, [[1] + list(rng.integers(3, 97, size=60)) + [2]])
    model = small_llama()
    model.model.embed_tokens.requires_grad_(False)
    args = ([windows], 40, "true", 3, cpu_dist(), contextlib.nullcontext, 7)
    first, meta = estimate_fisher(model, *args)
    again, _ = estimate_fisher(model, *args)
    # Whole windows until >= 40 targets: windows hold 16, 16, 16 and 13 targets (62 tokens); this
    # seed's order takes three, one of them the short last one.
    assert meta["sequences"] == 3 and meta["tokens"] == 45
    assert all(torch.equal(first[n], again[n]) for n in first)
    assert first["model.embed_tokens.weight"].abs().sum() > 0  # frozen here, still estimated
    assert not model.model.embed_tokens.weight.requires_grad  # and left frozen
    assert all(p.grad is None for p in model.parameters())
    path = tmp_path / "fisher.safetensors"
    save_fisher(path, first, meta)
    loaded, saved_meta = load_fisher(path, model)
    assert saved_meta == json.loads(json.dumps(meta))
    assert "model.embed_tokens.weight" not in loaded  # only what this run trains
    assert all(torch.equal(loaded[n], first[n]) for n in loaded)
    with pytest.raises(UserError, match="no Fisher for"):
        load_fisher(path, LlamaForCausalLM(LlamaConfig(vocab_size=97, hidden_size=16, intermediate_size=32,
                                                        num_hidden_layers=3, num_attention_heads=2)))
    (tmp_path / "bad.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(UserError, match="not a readable Fisher file"):
        load_fisher(tmp_path / "bad.safetensors", model)
