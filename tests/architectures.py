"""Tiny random configs of the Hugging Face families cptkit is tested on (built here, never downloaded).

Each config is small enough that a forward takes milliseconds, and keeps what matters for these
tests: the attention and masking code of its family, sliding windows where the family has them,
and for the mixture-of-experts families more than top-k experts, so that routing chooses.
"""

from __future__ import annotations

import transformers as tf

VOCAB = 300


def _decoder(**extra) -> dict:
    base = {"vocab_size": VOCAB, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256,
            "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
    base.update(extra)
    return base


# name -> (config class, keyword arguments)
FAMILIES: dict[str, tuple[type, dict]] = {
    "llama": (tf.LlamaConfig, _decoder()),
    "mistral": (tf.MistralConfig, _decoder(sliding_window=16)),
    "qwen2": (tf.Qwen2Config, _decoder()),
    "qwen3": (tf.Qwen3Config, _decoder(head_dim=8)),
    "gemma": (tf.GemmaConfig, _decoder(head_dim=8)),
    "gemma2": (tf.Gemma2Config, _decoder(head_dim=8, sliding_window=16)),
    "gemma3": (tf.Gemma3TextConfig, _decoder(head_dim=8, sliding_window=16)),
    "phi3": (tf.Phi3Config, _decoder()),
    "gpt2": (tf.GPT2Config, {"vocab_size": VOCAB, "n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 256,
                             "bos_token_id": 1, "eos_token_id": 2}),
    "gpt_neox": (tf.GPTNeoXConfig, _decoder()),
    "falcon": (tf.FalconConfig, {"vocab_size": VOCAB, "hidden_size": 32, "num_hidden_layers": 2,
                                 "num_attention_heads": 4, "bos_token_id": 1, "eos_token_id": 2}),
    "opt": (tf.OPTConfig, {"vocab_size": VOCAB, "hidden_size": 32, "ffn_dim": 64, "num_hidden_layers": 2,
                           "num_attention_heads": 4, "max_position_embeddings": 256, "word_embed_proj_dim": 32,
                           "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}),
    "starcoder2": (tf.Starcoder2Config, _decoder(sliding_window=16)),
    "mixtral": (tf.MixtralConfig, _decoder(num_local_experts=4, num_experts_per_tok=2, router_aux_loss_coef=0.02)),
    "olmoe": (tf.OlmoeConfig, _decoder(num_experts=4, num_experts_per_tok=2)),
    "qwen2_moe": (tf.Qwen2MoeConfig, _decoder(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16,
                                              shared_expert_intermediate_size=32)),
}

MOE = ("mixtral", "olmoe", "qwen2_moe")


def tiny_config(name: str):
    cls, kwargs = FAMILIES[name]
    return cls(**kwargs)
