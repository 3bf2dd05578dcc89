"""Freezing by config and per-group learning rates."""


import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from cptkit.errors import UserError
from cptkit.train.config import TrainConfig
from cptkit.train.freezing import apply_freezing
from cptkit.train.optim import build_optimizer, param_groups, set_lr


def llama(tied):
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=3,
                                        num_attention_heads=2, tie_word_embeddings=tied))


def train_cfg(**kw) -> TrainConfig:
    base = dict(freeze_embeddings=False, freeze_lm_head=False, freeze_layers=0, embedding_lr_scale=1.0,
                weight_decay=0.1, lr=1e-3, betas=[0.9, 0.95], eps=1e-8)
    return TrainConfig(**{**base, **kw})


def test_freezing_embeddings_head_and_first_layers_stops_their_updates():
    model = llama(tied=False)
    counts = apply_freezing(model, train_cfg(freeze_embeddings=True, freeze_lm_head=True, freeze_layers=2))
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert "model.embed_tokens.weight" in frozen and "lm_head.weight" in frozen
    assert any(n.startswith("model.layers.1.") for n in frozen)
    assert not any(n.startswith("model.layers.2.") for n in frozen)
    assert counts["frozen"] == sum(p.numel() for n, p in model.named_parameters() if n in frozen)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = build_optimizer(model, train_cfg())
    ids = torch.randint(0, 64, (2, 10))
    model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
    opt.step()
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]) == (n in frozen), n


def test_tied_head_is_the_embedding_so_freezing_either_freezes_both():
    model = llama(tied=True)
    apply_freezing(model, train_cfg(freeze_lm_head=True))
    assert not model.model.embed_tokens.weight.requires_grad and not model.lm_head.weight.requires_grad


def test_errors_name_the_key():
    with pytest.raises(UserError, match="train.freeze_layers: 4 exceeds the model's 3 layers"):
        apply_freezing(llama(False), train_cfg(freeze_layers=4))
    model = llama(False)
    model.requires_grad_(False)
    with pytest.raises(UserError, match="every parameter is frozen"):
        apply_freezing(model, train_cfg())


@pytest.mark.parametrize("tied", [True, False])
def test_embeddings_get_their_own_learning_rate_multiplier(tied):
    model = llama(tied)
    groups = param_groups(model, 0.1, embedding_lr_scale=0.1)
    embed = model.get_input_embeddings().weight
    special = [g for g in groups if g["lr_scale"] == 0.1]
    assert len(special) == 1 and special[0]["params"] == [embed] and special[0]["weight_decay"] == 0.1
    listed = [p for g in groups for p in g["params"]]
    assert len(listed) == len({id(p) for p in listed}) == len(list(model.parameters()))  # each weight once
    opt = torch.optim.AdamW(groups, lr=1.0)
    set_lr(opt, 2e-4)
    assert sorted(g["lr"] for g in opt.param_groups) == pytest.approx(sorted([2e-5] + [2e-4] * (len(groups) - 1)))
    assert len(param_groups(model, 0.1)) == 2  # without a multiplier: decay and no-decay only
