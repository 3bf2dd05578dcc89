"""Packed documents stay apart on every tested architecture, and each loads with a kernel it supports.

For each family (tests/architectures.py): the attention kernel cptkit chooses, the start-up
check (`ensure_document_masking`), then a window of four packed documents through cptkit's own
forwards (the full-logits forward and the chunked loss, which calls the decoder directly): every
document's logits and loss inside the pack equal those of the document alone.
"""

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from cptkit.data.shards import IGNORE_INDEX, ShardWriter, WindowIndex, open_split
from cptkit.errors import UserError
from cptkit.train import attention, checks
from cptkit.train.attention import (
    choose_attn_implementation,
    document_attention_mask,
    packed_inputs,
    uses_document_mask,
)
from cptkit.train.checks import ensure_document_masking
from cptkit.train.losses import chunked_loss, forward_logits
from tests.architectures import FAMILIES, VOCAB, tiny_config

CPU = torch.device("cpu")
SEQ = 48
LENGTHS = (5, 11, 7, 30)  # the last one runs past the window (and past the 16-token sliding windows)


def build(name: str):
    config = tiny_config(name)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, attn_implementation=choose_attn_implementation(config, "auto")).eval()


def packed_window(tmp_path):
    rng = np.random.default_rng(0)
    docs = [np.concatenate([[1], rng.integers(3, VOCAB, n), [2]]) for n in LENGTHS]
    writer = ShardWriter(tmp_path / "s", np.dtype(np.uint16), 10**6)
    for d in docs:
        writer.add(d, 1)
    window = WindowIndex(open_split(tmp_path / "s", writer.close(), "uint16"), SEQ).window(0)
    inputs, labels, positions = (torch.from_numpy(x)[None] for x in window)
    return docs, {"input_ids": inputs, "labels": labels, "position_ids": positions}


@pytest.mark.parametrize("name", list(FAMILIES))
def test_documents_in_a_pack_score_as_they_do_alone(tmp_path, name):
    model = build(name)
    mode = ensure_document_masking(model, CPU)
    assert mode == ("explicit_mask" if name == "opt" else "position_ids")
    docs, batch = packed_window(tmp_path)
    with torch.no_grad():
        packed = forward_logits(model, batch)[0]
        loss = chunked_loss(model, batch, chunk=16)
        offset, alone_loss = 0, 0.0
        for d in docs:
            n = min(len(d), SEQ - offset)
            if n <= 0:
                break
            alone = model(input_ids=torch.from_numpy(d[:n])[None], use_cache=False).logits[0]
            assert torch.allclose(packed[offset : offset + n], alone, atol=1e-5), f"{name}: document at {offset}"
            labels = batch["labels"][0, offset : offset + n]
            keep = labels != IGNORE_INDEX
            alone_loss += float(torch.nn.functional.cross_entropy(alone[keep], labels[keep], reduction="sum"))
            offset += n
        # Not vacuous: with positions running on across documents, later documents' logits change.
        crossed = model(input_ids=batch["input_ids"], position_ids=torch.arange(SEQ)[None], use_cache=False).logits[0]
    assert not torch.allclose(crossed[5:24], packed[5:24], atol=1e-3)
    # The chunked loss (the decoder called directly, as in training) sees the same per-document attention.
    assert float(loss.row_sums[0]) == pytest.approx(alone_loss, rel=1e-5)


def test_gemma2_loads_with_eager_attention_since_it_cannot_use_sdpa():
    config = tiny_config("gemma2")
    assert choose_attn_implementation(config, "sdpa") == "eager"
    assert choose_attn_implementation(config, "auto") == "eager"
    assert choose_attn_implementation(tiny_config("llama"), "auto") == "sdpa"
    assert choose_attn_implementation(config, "flash_attention_2") == "flash_attention_2"  # explicit: as asked
    with pytest.raises(ValueError, match="scaled_dot_product_attention"):
        AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    # Transformers itself picks the same kernel when left to choose.
    assert AutoModelForCausalLM.from_config(tiny_config("gemma2")).config._attn_implementation == "eager"


def test_an_unknown_model_class_is_left_to_transformers():
    class Unknown:
        model_type = "remote"

    assert choose_attn_implementation(Unknown(), "auto") is None


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_the_explicit_mask_is_block_diagonal_and_causal_in_the_kernels_format(impl):
    model = AutoModelForCausalLM.from_config(tiny_config("opt"), attn_implementation=impl)
    mask = document_attention_mask(model, torch.tensor([[0, 1, 2, 0, 1, 0]]))
    expected = torch.tensor([[1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0],
                             [0, 0, 0, 1, 0, 0], [0, 0, 0, 1, 1, 0], [0, 0, 0, 0, 0, 1]], dtype=torch.bool)
    assert mask.shape == (1, 1, 6, 6)
    if impl == "sdpa":
        assert mask.dtype == torch.bool and torch.equal(mask[0, 0], expected)
    else:  # eager adds the mask to the attention scores: 0 where allowed, the dtype's minimum elsewhere
        assert torch.equal(mask[0, 0] == 0, expected) and float(mask.min()) == torch.finfo(torch.float32).min


def test_packed_inputs_carry_the_mask_only_where_the_model_needs_it():
    batch = {"input_ids": torch.tensor([[5, 6, 7, 8]]), "position_ids": torch.tensor([[0, 1, 0, 1]])}
    llama, opt = build("llama"), build("opt")
    ensure_document_masking(llama, CPU)
    ensure_document_masking(opt, CPU)
    assert not uses_document_mask(llama) and "attention_mask" not in packed_inputs(llama, batch)
    kwargs = packed_inputs(opt, batch)
    assert kwargs["use_cache"] is False and kwargs["attention_mask"][0, 0, 2].tolist() == [False, False, True, False]


def test_a_model_that_still_crosses_documents_is_refused(monkeypatch):
    model = build("opt")
    monkeypatch.setattr(attention, "document_attention_mask", lambda m, p: None)  # a mask that does nothing
    with pytest.raises(UserError, match="attention crosses document boundaries"):
        ensure_document_masking(model, CPU)
    assert not uses_document_mask(model)  # the hooks are removed again


@pytest.mark.parametrize("name, mode", [("llama", "position_ids"), ("opt", "explicit_mask")])
def test_the_check_allows_bfloat16_rounding_but_not_crossing(name, mode):
    # As under FSDP mixed precision, where the check runs on bfloat16 weights.
    model = build(name).to(torch.bfloat16)
    assert ensure_document_masking(model, CPU) == mode
    diff, tolerance = checks.packed_vs_alone(model, CPU)
    assert tolerance == 5e-2 and diff <= tolerance
