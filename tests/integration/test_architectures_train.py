"""A short real `cptkit train` on a tiny model of every tested family (tests/architectures.py).

Each family's tiny config is saved as a model folder with the session's tokenizer, then trained
for 2 steps by the command line, evaluated at step 0 and at the end, and exported. Gemma 2 needs
the automatic attention choice (it cannot load with sdpa), OPT the explicit per-document mask, and
the mixture-of-experts families log their router loss as `loss_aux`.
"""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.architectures import FAMILIES, MOE, tiny_config
from tests.helpers import cptkit, make_config, read_jsonl, write_config


def family_folder(tmp_path, name: str, tokenizer_from) -> str:
    tok = AutoTokenizer.from_pretrained(tokenizer_from)
    config = tiny_config(name)
    config.vocab_size = len(tok)
    config.bos_token_id, config.eos_token_id, config.pad_token_id = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    folder = tmp_path / f"{name}-init"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FAMILIES))
def test_cptkit_trains_every_family(tmp_path, tiny_model, corpus, name):
    model = family_folder(tmp_path, name, tiny_model)
    cfg = make_config(tmp_path, model, corpus, train={"max_steps": 2, "warmup_steps": 1, "micro_batch_size": 4},
                      checkpoint={"every_steps": 2, "keep_last": 1, "keep_best": 0}, eval={"every_steps": 2,
                                                                                            "max_tokens": 600})
    cfg["model"]["attn_implementation"] = "sdpa"  # the default: Gemma 2 must fall back by itself
    done = cptkit("train", str(write_config(tmp_path / "run.yaml", cfg)))
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "run"
    metrics = read_jsonl(run / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2] and all(math.isfinite(m["loss"]) for m in metrics)
    assert [e["step"] for e in read_jsonl(run / "eval.jsonl")] == [0, 2]
    if name in MOE:
        assert all(m["loss_aux"] > 0 for m in metrics)
    if name == "opt":
        assert "explicit per-document attention mask" in done.stderr
    if name == "gemma2":
        assert "using eager attention" in done.stderr
    AutoModelForCausalLM.from_pretrained(run / "final")
