"""The pieces `cptkit train` calls under train.peft, each on its own: config defaults and rules,
trainable-only checkpoint states, the frozen base's fingerprint, the KL reference's own output layer
(FSDP), frozen weights in the compute dtype, the optimizer's groups, plan estimates, QLoRA's loading
options, and the report's line."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from cptkit import checkpoint
from cptkit.config import load_config
from cptkit.distributed import setup
from cptkit.errors import UserError
from cptkit.peft import training
from cptkit.peft.adapters import apply_peft, base_lm
from cptkit.peft.config import PeftConfig
from cptkit.peft.reference import FrozenBase
from cptkit.train.losses import CausalLMLoss
from cptkit.train.optim import build_optimizer

V, H = 101, 16


def llama(tied: bool = False, seed: int = 0):
    torch.manual_seed(seed)
    cls, conf = (Qwen2ForCausalLM, Qwen2Config) if tied else (LlamaForCausalLM, LlamaConfig)
    return cls(conf(vocab_size=V, hidden_size=H, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                    num_key_value_heads=2, tie_word_embeddings=tied))


def config(peft: dict | None = None, dtype: str = "float32", **train):
    raw = {"model": {"name_or_path": "x/y", "dtype": dtype}, "data": {"domain": {"paths": ["a"]}},
           "train": {**train, **({"peft": peft} if peft is not None else {})}, "output_dir": "o"}
    return load_config(None, raw=raw, check_paths=False)


# -- config ------------------------------------------------------------------------------------


def test_embedding_lr_scale_defaults_to_a_fifth_under_an_adapter_method():
    assert config().train.embedding_lr_scale == 1.0
    assert config({"method": "lora"}).train.embedding_lr_scale == 0.2
    assert config({"method": "lora", "train_embeddings": False, "train_lm_head": False}).train.embedding_lr_scale == 1.0
    assert config({"method": "lora"}, embedding_lr_scale=0.5).train.embedding_lr_scale == 0.5  # given: kept


def test_peft_rules_run_when_the_config_loads_and_allow_a_scaled_output_layer_with_frozen_embeddings():
    with pytest.raises(UserError) as err:
        config({"method": "lora", "target_modules": []})
    assert "train.peft.target_modules: an empty list adapts nothing" in str(err.value)
    # Frozen embeddings, an output layer trained in full at a scaled lr: LoRA's legitimate case...
    cfg = config({"method": "lora", "train_embeddings": False}, freeze_embeddings=True, embedding_lr_scale=0.5)
    assert cfg.train.embedding_lr_scale == 0.5
    # ...while in full training a scale for frozen embeddings is still refused.
    with pytest.raises(UserError, match="train.freeze_embeddings and train.embedding_lr_scale"):
        config(freeze_embeddings=True, embedding_lr_scale=0.5)


def test_qlora_loading_options_and_the_machine_check(monkeypatch):
    assert training.load_options(config({"method": "lora"}), torch.device("cpu")) == {}
    options = training.load_options(config({"method": "qlora", "quant_type": "fp4"}, dtype="bfloat16"),
                                    torch.device("cpu"))
    q = options["quantization_config"]
    assert (q.load_in_4bit, q.bnb_4bit_quant_type, q.bnb_4bit_compute_dtype) == (True, "fp4", torch.bfloat16)
    assert options["device_map"] == {"": torch.device("cpu")}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    training.require_machine(config({"method": "lora"}))  # nothing to refuse
    with pytest.raises(UserError, match="qlora keeps the base weights in 4 bits .* need a CUDA GPU"):
        training.require_machine(config({"method": "qlora"}))


# -- checkpoints -------------------------------------------------------------------------------


def adapted(tied: bool = False, seed: int = 0, **kw):
    return apply_peft(llama(tied, seed), PeftConfig(method="lora", r=2, **kw))


def wrapped(peft_model, dist):
    return dist.wrap(CausalLMLoss(base_lm(peft_model), 4),
                     lambda m: build_optimizer(m, config({"method": "lora"}).train),
                     config().train.distributed, "float32")


def one_step(module, optimizer, seed: int) -> None:
    ids = torch.randint(0, V, (2, 9), generator=torch.Generator().manual_seed(seed))
    module(input_ids=ids, position_ids=torch.arange(9).repeat(2, 1), labels=torch.roll(ids, -1, 1))[0].backward()
    optimizer.step()
    optimizer.zero_grad()


@pytest.mark.parametrize("tied,kw", [(False, {}), (True, {"train_embeddings": False, "train_lm_head": False})])
def test_trainable_only_states_leave_out_the_frozen_base_and_load_back(tmp_path, tied, kw):
    dist = setup("float32", cpu=True)
    module, optimizer = wrapped(adapted(tied, **kw), dist)
    one_step(module, optimizer, 0)
    weights, optim = dist.full_state(module, optimizer, trainable_only=True)
    trainable = {n for n, p in module.lm.named_parameters() if p.requires_grad}
    assert set(weights) == trainable and not any(".base_layer." in n for n in weights)
    assert set(optim["state"]) == {"lm." + n for n in trainable}
    folder = checkpoint.save_state(tmp_path, 1, weights, optim, {"step": 1})
    # A fresh model with other adapter values (and the same base) takes the state back exactly.
    module2, optimizer2 = wrapped(adapted(tied, seed=0, **kw), dist)
    with torch.no_grad():
        for n, p in module2.lm.named_parameters():
            if ".lora_A." in n:
                p.add_(1.0)
    w, o, _ = checkpoint.load_state(folder)
    dist.load_full_state(module2, optimizer2, w, o, where=str(folder), trainable_only=True)
    mine, theirs = module.lm.state_dict(), module2.lm.state_dict()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    one_step(module, optimizer, 1)
    one_step(module2, optimizer2, 1)  # the optimizer state came back too: the next step agrees
    assert all(torch.equal(a, b) for a, b in zip(module.lm.state_dict().values(), module2.lm.state_dict().values()))
    del w[next(iter(w))]
    with pytest.raises(UserError, match="weights do not fit this model"):
        dist.load_full_state(module2, optimizer2, w, o, where=str(folder), trainable_only=True)


def test_the_fingerprint_of_the_frozen_base_tells_another_base_apart():
    a, b = base_lm(adapted()), base_lm(adapted())
    assert training.base_fingerprint(a) == training.base_fingerprint(b)
    with torch.no_grad():
        for n, p in b.named_parameters():
            if ".lora_B." in n or n == "model.embed_tokens.weight":
                p.add_(1.0)  # trainable: not part of the base
    assert training.base_fingerprint(a) == training.base_fingerprint(b)
    with torch.no_grad():
        b.model.layers[1].mlp.down_proj.base_layer.weight[0, 0] += 1e-3  # the first value is always sampled
    assert training.base_fingerprint(a) != training.base_fingerprint(b)
    training.check_same_base(None, None, "--resume x")  # full training: nothing to compare
    with pytest.raises(UserError, match="--resume ckpt: the frozen base weights loaded from model.name_or_path"):
        training.check_same_base(training.base_fingerprint(a), training.base_fingerprint(b), "--resume ckpt")
    assert training.base_fingerprint(llama()) is None  # nothing frozen


# -- the KL reference under FSDP, frozen weights in the compute dtype --------------------------


@pytest.mark.parametrize("tied", [False, True])
def test_the_reference_can_keep_its_own_copy_of_a_frozen_output_layer(tied):
    peft_model = adapted(tied, train_embeddings=False, train_lm_head=False)
    plain = FrozenBase(peft_model)
    own = FrozenBase(peft_model, own_head=True)
    assert plain.extra_bytes() == 0 and own.extra_bytes() == V * H * 4
    assert plain.head_weight is None and torch.equal(own.head_weight, base_lm(peft_model).lm_head.weight)
    assert own.head_weight.data_ptr() != base_lm(peft_model).lm_head.weight.data_ptr()
    ids = torch.randint(0, V, (1, 8), generator=torch.Generator().manual_seed(2))
    assert torch.equal(own(ids).logits, plain(ids).logits)
    calls = []
    own.runner = lambda fn: calls.append(1) or fn()  # what bind_reference sets under FSDP
    own(ids)
    own.decoder(input_ids=ids, position_ids=None, use_cache=False)
    assert calls == [1, 1]


def test_frozen_linear_weights_are_stored_in_the_compute_dtype_under_lora_autocast_only():
    peft_model = adapted()
    assert training.store_frozen_low(peft_model, config({"method": "lora"})) == 0  # float32: nothing to gain
    assert training.store_frozen_low(None, config(dtype="bfloat16")) == 0  # full training
    count = training.store_frozen_low(peft_model, config({"method": "lora"}, dtype="bfloat16"))
    lm = base_lm(peft_model)
    assert count == sum(p.numel() for n, p in lm.named_parameters() if ".base_layer." in n)
    assert {p.dtype for n, p in lm.named_parameters() if ".base_layer." in n} == {torch.bfloat16}
    assert {p.dtype for n, p in lm.named_parameters() if p.requires_grad or "norm" in n} == {torch.float32}


# -- optimizer, plan, report -------------------------------------------------------------------


def test_the_optimizer_scales_the_embeddings_and_the_output_layer_under_lora():
    lm = base_lm(adapted())
    optimizer = build_optimizer(CausalLMLoss(lm, 4), config({"method": "lora"}).train)
    scaled = {id(p) for g in optimizer.param_groups if g["lr_scale"] == 0.2 for p in g["params"]}
    assert scaled == {id(lm.model.embed_tokens.weight), id(lm.lm_head.weight)}
    assert sum(len(g["params"]) for g in optimizer.param_groups) == 2 + 2 * 7 * 2


def test_plan_estimates_count_frozen_weights_as_they_are_stored():
    from cptkit.peft.memory import estimates_for, memory_estimate, model_shapes

    conf = LlamaConfig(vocab_size=V, hidden_size=H, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2)
    cfg = config({"method": "lora", "r": 2}, dtype="bfloat16", micro_batch_size=2, global_batch_tokens=4096)
    mine, full = estimates_for(cfg, conf)
    common = {"micro_batch": 2, "seq_len": cfg.data.seq_len, "dtype": "bfloat16"}
    assert mine == memory_estimate(model_shapes(conf), "lora", 2, frozen_bytes=2, **common)
    assert full == memory_estimate(model_shapes(conf), "full", **common)


def test_the_report_line_names_method_rank_targets_and_trainable_share():
    from cptkit.report.render import _method

    lora = {"method": "lora", "trainable_parameters": 250, "total_parameters": 1000,
            "peft": {"r": 16, "alpha": 32.0, "rslora": True, "target_modules": ["q_proj", "v_proj"],
                     "train_embeddings": True, "train_lm_head": False}}
    assert _method(lora) == ("lora r 16 (alpha 32, rsLoRA) on q_proj, v_proj, embeddings in full: "
                             "250 of 1,000 parameters trained (25.00%)")
    assert _method({"method": "full", "trainable_parameters": 10, "total_parameters": 10, "peft": None}) == (
        "full training: 10 of 10 parameters trained (100.00%)")
    assert _method({}) == "training method not recorded"


def test_a_qlora_state_holds_the_trainable_weights_not_the_quantisation_constants(tmp_path):
    """On bitsandbytes' CPU backend: the 4-bit layers' constants are state-dict entries but no
    parameters; a trainable-only state leaves them out, and loads back."""
    pytest.importorskip("bitsandbytes")
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=V, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2)).save_pretrained(tmp_path / "base")
    cfg = config({"method": "qlora", "r": 2}, dtype="bfloat16")
    cfg.model.name_or_path = str(tmp_path / "base")

    def fresh():
        model = AutoModelForCausalLM.from_pretrained(tmp_path / "base", dtype=torch.float32,
                                                     **training.load_options(cfg, torch.device("cpu")))
        return training.adapt(model, cfg)

    peft_model = fresh()
    assert "model.layers.0.mlp.up_proj.base_layer.weight.absmax" in base_lm(peft_model).state_dict()
    dist = setup("bfloat16", cpu=True)
    module, optimizer = dist.wrap(CausalLMLoss(base_lm(peft_model), 4), lambda m: build_optimizer(m, cfg.train),
                                  cfg.train.distributed, "bfloat16")
    weights, optim = dist.full_state(module, optimizer, trainable_only=True)
    assert set(weights) == {n for n, p in module.lm.named_parameters() if p.requires_grad}
    module2, optimizer2 = dist.wrap(CausalLMLoss(base_lm(fresh()), 4), lambda m: build_optimizer(m, cfg.train),
                                    cfg.train.distributed, "bfloat16")
    dist.load_full_state(module2, optimizer2, weights, optim, where="x", trainable_only=True)
    assert training.base_fingerprint(module.lm) == training.base_fingerprint(module2.lm)
