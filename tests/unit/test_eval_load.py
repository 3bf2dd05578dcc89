"""`cptkit eval --checkpoint checkpoints/step-N` loads every weight of the state, or refuses."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from cptkit import checkpoint
from cptkit.config import ModelConfig, TrainConfig
from cptkit.errors import UserError
from cptkit.evaluation.run import load_for_eval

CPU = torch.device("cpu")

def model_folder(tmp_path, layers=2, tie=False):
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=layers,
                                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=tie))
    folder = tmp_path / f"base-{layers}-{tie}"
    model.save_pretrained(folder)
    return folder, model


def state_with(tmp_path, weights: dict) -> object:
    return checkpoint.save_state(tmp_path / "run", 3, weights, {"state": {}}, {"step": 3})


def cfg_for(folder) -> SimpleNamespace:
    return SimpleNamespace(model=ModelConfig(name_or_path=str(folder), dtype="float32", attn_implementation="eager"),
                           train=TrainConfig())


def trained(model) -> dict:
    # What a run saves: every weight once (tied aliases dropped), changed from the base.
    return {k: v + 0.5 for k, v in model.state_dict().items()}


@pytest.mark.parametrize("tie", [False, True])
def test_a_matching_state_loads_every_weight(tmp_path, tie):
    folder, base = model_folder(tmp_path, tie=tie)
    weights = trained(base)
    if tie:
        del weights["lm_head.weight"]  # saved once, under the embedding's name
    model = load_for_eval(cfg_for(folder), state_with(tmp_path, weights), CPU)
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in weights.items())
    assert not torch.equal(state["model.norm.weight"], base.state_dict()["model.norm.weight"])


def test_a_state_missing_weights_is_refused_naming_them(tmp_path):
    folder, base = model_folder(tmp_path)
    _, smaller = model_folder(tmp_path, layers=1)
    with pytest.raises(UserError, match=r"do not fit .*missing \['model\.layers\.1\."):
        load_for_eval(cfg_for(folder), state_with(tmp_path, trained(smaller)), CPU)


def test_a_state_with_unknown_weights_or_other_shapes_is_refused(tmp_path):
    folder, base = model_folder(tmp_path)
    extra = {**trained(base), "model.layers.9.mlp.up_proj.weight": torch.zeros(32, 16)}
    with pytest.raises(UserError, match=r"unexpected \['model\.layers\.9\.mlp\.up_proj\.weight'\]"):
        load_for_eval(cfg_for(folder), state_with(tmp_path, extra), CPU)
    wrong = {**trained(base), "model.norm.weight": torch.zeros(8)}
    with pytest.raises(UserError, match="size mismatch for model.norm.weight"):
        load_for_eval(cfg_for(folder), checkpoint.save_state(tmp_path / "run2", 3, wrong, {"state": {}}, {"step": 3}), CPU)
