"""Memory and speed options change how a step is computed, never its result."""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from cptkit.errors import UserError
from cptkit.modeling import decoder_layers, prepare_for_training
from cptkit.train.losses import CausalLMLoss


def llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=101, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                                        num_attention_heads=2, num_key_value_heads=2))


def step(model) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
    """Loss, gradients, and bytes of tensors autograd kept for backward."""
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 101, (2, 48), generator=gen)
    kept = 0

    def pack(t):
        nonlocal kept
        kept += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        total, _, _ = CausalLMLoss(model.train(), 16)(
            input_ids=ids, position_ids=torch.arange(48).repeat(2, 1), labels=torch.roll(ids, -1, 1))
    total.backward()
    return total.detach(), {n: p.grad for n, p in model.named_parameters()}, kept


def test_gradient_checkpointing_keeps_less_and_computes_the_same():
    loss, grads, kept = step(llama())
    model = llama()
    prepare_for_training(model, gradient_checkpointing=True, compile=False)
    loss_gc, grads_gc, kept_gc = step(model)
    assert torch.equal(loss, loss_gc)
    for name, g in grads.items():
        assert torch.allclose(g, grads_gc[name], rtol=1e-5, atol=1e-7), name
    assert kept_gc < kept / 3  # only layer inputs are kept, not every activation inside the layers


def test_compile_compiles_each_decoder_layer():
    model = llama()
    layers = decoder_layers(model)
    assert [type(m).__name__ for m in layers] == ["LlamaDecoderLayer"] * 4
    prepare_for_training(model, gradient_checkpointing=False, compile=True)
    assert all(layer._compiled_call_impl is not None for layer in layers)
    assert [type(m).__name__ for m in decoder_layers(GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=8, n_head=2)))] \
        == ["GPT2Block"] * 2


def test_model_without_layer_classes_cannot_compile():
    model = llama()
    model._no_split_modules = None
    with pytest.raises(UserError, match="train.compile: found no decoder layers"):
        prepare_for_training(model, gradient_checkpointing=False, compile=True)

