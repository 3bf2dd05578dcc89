"""The training-memory estimate of `cptkit plan`: exact values on a small config, worked by hand,
and parameter counts that agree with the real models."""

import pytest
from transformers import GPT2Config, LlamaConfig, LlamaForCausalLM, Qwen2Config

from cptkit.peft.adapters import apply_peft, trainable_counts
from cptkit.peft.config import PeftConfig
from cptkit.peft.memory import Linear, describe, memory_estimate, model_shapes

# vocab 100, hidden 16, MLP 32, 2 layers, 2 heads of 8, one KV head (k and v project to 8).
SMALL = LlamaConfig(vocab_size=100, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                    num_attention_heads=2, num_key_value_heads=1)


def test_shapes_of_a_small_llama():
    s = model_shapes(SMALL)
    assert s.linears == (Linear("q_proj", 16, 16), Linear("k_proj", 16, 8), Linear("v_proj", 16, 8),
                         Linear("o_proj", 16, 16), Linear("gate_proj", 16, 32), Linear("up_proj", 16, 32),
                         Linear("down_proj", 32, 16))
    # per layer: 2,304 in linear weights + 2 norms of 16; then embeddings, output layer, final norm
    assert (s.layer_params, s.other, s.tied) == (2336, 16, False)
    assert s.total_params == 1600 + 1600 + 2 * 2336 + 16 == 7888 == LlamaForCausalLM(SMALL).num_parameters()


@pytest.mark.parametrize("config", [
    SMALL,
    Qwen2Config(vocab_size=100, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                num_key_value_heads=1, tie_word_embeddings=True),
    GPT2Config(vocab_size=100, n_embd=16, n_layer=2, n_head=2, n_positions=32),
])
def test_trainable_counts_agree_with_the_real_adapted_model(config):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(config)
    assert model_shapes(config).total_params == sum(p.numel() for p in model.parameters())
    for kw in ({}, {"train_embeddings": False, "train_lm_head": False}):
        if config is SMALL or not kw:
            peft_model = apply_peft(AutoModelForCausalLM.from_config(config), PeftConfig(method="lora", r=2, **kw))
            estimate = memory_estimate(model_shapes(config), "lora", r=2, **kw)
            assert estimate.trainable_params == trainable_counts(peft_model.get_base_model())["trainable"]


def test_exact_bytes_for_full_lora_and_qlora():
    s = model_shapes(SMALL)
    common = {"micro_batch": 2, "seq_len": 8, "dtype": "bfloat16"}  # 16 tokens, 2-byte activations
    full = memory_estimate(s, "full", **common)
    # 7,888 trainable: 4 + 4 + 8 bytes each. Activations per token: 2 layers x 2 bytes x (sum of linear
    # in + out = 256, + 2 x 16 norm inputs) + 4 x 16 (float32 embedding output) + 2 x 2 x 16 (loss
    # hidden states and gradient), x 16 tokens; + one 16-token chunk of float32 logits and gradient.
    assert (full.trainable_params, full.weights, full.gradients, full.optimizer) == (7888, 31552, 31552, 63104)
    assert full.activations == 16 * (2 * 2 * 288 + 64 + 64) + 8 * 16 * 100 == 33280
    lora = memory_estimate(s, "lora", r=2, **common)
    # adapters: 2 x (2 x (32 + 24 + 24 + 32 + 48 + 48 + 48)) = 1,024; embeddings and output layer 3,200
    assert lora.trainable_params == 1024 + 3200
    assert (lora.weights, lora.gradients, lora.optimizer) == (4 * 7888 + 4 * 1024, 4 * 4224, 8 * 4224)
    assert lora.activations == 16 * (2 * 2 * (288 + 7 * 2) + 128) + 12800 == 34176
    qlora = memory_estimate(s, "qlora", r=2, **common)
    # 4,608 linear weights in 4 bits = 2,304 bytes, 72 blocks of 64: 72 one-byte scales + one float32
    # second-level scale; the other 80 frozen parameters (norms) stay 4 bytes.
    assert qlora.weights == 4 * 4224 + 2304 + 72 + 4 + 4 * 80 == 19596
    single = memory_estimate(s, "qlora", r=2, double_quant=False, **common)
    assert single.weights == 4 * 4224 + 2304 + 4 * 72 + 4 * 80
    recompute = memory_estimate(s, "lora", r=2, gradient_checkpointing=True, **common)
    assert recompute.activations == 16 * (4 * 16 * 2 + 2 * 302 + 128) + 12800 == 26560
    frozen = memory_estimate(s, "lora", r=2, train_embeddings=False, train_lm_head=False, freeze_layers=1, **common)
    assert frozen.trainable_params == 512  # adapters of layer 2 only
    assert frozen.activations == 16 * (2 * 302 + 128) + 12800  # no backward through layer 1
    # autocast's bfloat16 copies of float32 linear weights (4,608 in the layers), kept for backward
    assert (full.casts, lora.casts, qlora.casts) == (2 * 4608, 2 * (4608 + 1024), 2 * 1024)
    assert memory_estimate(s, "lora", r=2, frozen_bytes=2, **common).casts == 2 * 1024
    assert recompute.casts == 2 * (4608 // 2 + 1024)  # one layer's frozen weights at a time, all adapters
    assert memory_estimate(s, "lora", r=2, micro_batch=2, seq_len=8, dtype="float32").casts == 0
    assert full.total == 31552 + 31552 + 63104 + 33280 + 9216
    assert memory_estimate(s, "full", kl_reference_dtype="bfloat16", **common).reference == 2 * 7888
    assert memory_estimate(s, "lora", kl_reference_dtype="float32", **common).reference == 4 * 3200
    assert memory_estimate(s, "full", loss_chunk_tokens=0, **common).activations == 20480 + 12 * 16 * 100


def test_the_plan_table_shows_each_method_beside_full_training():
    s = model_shapes(SMALL)
    lines = describe([memory_estimate(s, "lora", r=2), memory_estimate(s, "full")])
    assert lines[0].split() == ["method", "trainable", "weights", "gradients", "optimizer", "activations", "casts",
                                "KL", "ref", "total"]
    assert lines[1].split()[:3] == ["lora", "4,224", "(53.5%)"]
    assert lines[2].split()[:3] == ["full", "7,888", "(100.0%)"]


def test_a_7b_llama_in_round_numbers():
    """Llama-2-7B, r 16 on every linear layer, 1 x 2048 tokens, bfloat16: full training ~123 GiB, LoRA
    ~52 GiB over a float32 base (weights 25 GiB and their autocast copies 12 GiB), ~27 GiB over a
    bfloat16 one, QLoRA ~19 GiB."""
    s = model_shapes(LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                                 num_attention_heads=32, num_key_value_heads=32))
    assert s.total_params == 6_738_415_616
    gib = {m: memory_estimate(s, m, r=16, micro_batch=1, seq_len=2048).total / 2**30 for m in ("full", "lora", "qlora")}
    assert gib == pytest.approx({"full": 123.31, "lora": 51.62, "qlora": 18.54}, abs=0.01)
    lora_bf16 = memory_estimate(s, "lora", r=16, micro_batch=1, seq_len=2048, frozen_bytes=2)
    assert lora_bf16.weights / 2**30 == pytest.approx(13.19, abs=0.01)  # frozen weights kept in bfloat16
    assert lora_bf16.total / 2**30 == pytest.approx(27.49, abs=0.01)


def test_plan_estimates_follow_the_run_config():
    from cptkit.config import load_config

    cfg = load_config(None, raw={"model": {"name_or_path": "x/y", "dtype": "bfloat16"},
                                 "data": {"seq_len": 8, "domain": {"paths": ["a"]}},
                                 "train": {"micro_batch_size": 2, "global_batch_tokens": 16, "freeze_layers": 1},
                                 "regularizer": {"kind": "kl", "reference_dtype": "bfloat16"}, "output_dir": "o"},
                      check_paths=False)
    from cptkit.peft.memory import estimates_for

    (full,) = estimates_for(cfg, SMALL)  # no train.peft yet: full training only
    assert full == memory_estimate(model_shapes(SMALL), "full", micro_batch=2, seq_len=8, kl_reference_dtype="bfloat16")
    cfg.train.peft = PeftConfig(method="lora", r=2, train_embeddings=False, train_lm_head=False)
    mine, again = estimates_for(cfg, SMALL)
    assert again == full and mine.method == "lora"
    assert mine.trainable_params == 512 and mine.reference == 0  # layer 2's adapters; nothing full to copy
