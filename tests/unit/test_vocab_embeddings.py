"""The resized model: new rows are the means of the original pieces' rows, old rows and old logits
are untouched, and the written folder loads back with no shape mismatch.

Tiny Llamas (tied and untied) with tokenizers trained here on English; Korean generated text.
"""

from __future__ import annotations

import random

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from benchmarks.korean_corpus import document
from cptkit.vocab.base import inspect
from cptkit.vocab.candidates import candidate_strings, train_domain_tokenizer
from cptkit.vocab.embeddings import padded_rows, resize_and_initialise
from cptkit.vocab.extend import extend
from cptkit.vocab.run import is_vocab_folder, write_folder
from cptkit.vocab.select import segmentations, select
from tests.vocab_models import build_base, english

ADD = 150


@pytest.fixture(scope="module")
def korean():
    rng = random.Random(3)
    return [document(rng, 8) for _ in range(300)]


def expand(folder, korean, english_texts, multiple=64, rescale=False):
    """(base model, extended tokenizers.Tokenizer, new tokens, expanded model, Resized, HF tokenizer)."""
    tok = AutoTokenizer.from_pretrained(folder)
    base = inspect(tok, str(folder))
    cand = candidate_strings(base, train_domain_tokenizer(base, korean, 2000))
    sel = select(base, cand.strings, segmentations(base, base.words(korean)),
                 segmentations(base, base.words(english_texts)), ADD, 3, 0.25,
                 sum(len(t.encode()) for t in korean), sum(len(t.encode()) for t in english_texts))
    backend, tokens = extend(base, sel)
    before = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    resized = resize_and_initialise(model, tokens, base.next_id, multiple, rescale)
    return before, backend, tokens, model, resized, tok


@pytest.fixture(scope="module", params=[("byte_bpe", True), ("byte_bpe", False), ("sp_bpe", False), ("unigram", True)],
                ids=lambda p: f"{p[0]}-{'tied' if p[1] else 'untied'}")
def expanded(request, tmp_path_factory, corpus, korean):
    kind, tied = request.param
    folder = build_base(tmp_path_factory.mktemp(f"{kind}-{tied}"), kind, english(corpus), 512, tied=tied)
    return (folder, kind, tied, *expand(folder, korean, english(corpus)))


def test_new_rows_are_the_means_of_the_original_pieces(expanded):
    _, _, tied, before, _, tokens, model, resized, _ = expanded
    first, rows = resized.first_new, resized.rows_before
    assert first == rows == before.config.vocab_size  # these tokenizers use every row of their model
    assert resized.tied == tied and resized.rows_after % 64 == 0 and resized.rows_after >= first + ADD
    assert resized.rows_after == padded_rows(first + len(tokens), rows, 64)
    matrices = [(before.get_input_embeddings().weight, model.get_input_embeddings().weight)]
    if not tied:
        matrices.append((before.get_output_embeddings().weight, model.get_output_embeddings().weight))
    else:
        assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    for old, new in matrices:
        assert torch.equal(new[:first], old)  # existing rows untouched
        for t in tokens:
            assert len(t.pieces) >= 2 and max(t.pieces) < first  # pieces are ORIGINAL tokens
            assert torch.equal(new[t.id], old[t.pieces].mean(0))
        pad = new[resized.used:]
        assert len(pad) == resized.rows_after - resized.used
        assert torch.equal(pad, old.mean(0).expand_as(pad))


def test_rescaled_rows_have_the_mean_norm_of_the_old_rows(tmp_path, corpus, korean):
    folder = build_base(tmp_path / "m", "byte_bpe", english(corpus), 512)
    before, _, tokens, model, _, _ = expand(folder, korean, english(corpus), rescale=True)
    old = before.get_input_embeddings().weight
    new = model.get_input_embeddings().weight
    target = old.norm(dim=1).mean()
    norms = torch.stack([new[t.id].norm() for t in tokens])
    assert torch.allclose(norms, target.expand_as(norms), rtol=1e-5)
    direction = torch.nn.functional.cosine_similarity(new[tokens[0].id], old[tokens[0].pieces].mean(0), dim=0)
    assert direction > 0.99999


def test_logits_over_the_old_vocabulary_are_unchanged_on_old_text(expanded, corpus):
    """Text the extended tokenizer still writes with old tokens: the expanded model's step-0
    logits over the old ids equal the base model's."""
    _, _, _, before, backend, _, model, resized, tok = expanded
    prose = ["The quick brown fox jumps over the lazy dog.", english(corpus)[3][:400]]
    ids = [e.ids for e in backend.encode_batch(prose, add_special_tokens=False)]
    assert ids == [e.ids for e in tok.backend_tokenizer.encode_batch(prose, add_special_tokens=False)]
    assert all(max(x) < resized.first_new for x in ids)
    for x in ids:
        inputs = torch.tensor([x])
        with torch.no_grad():
            a = before(input_ids=inputs).logits
            b = model(input_ids=inputs).logits
        assert b.shape[-1] == resized.rows_after
        assert (a - b[..., : a.shape[-1]]).abs().max() <= 1e-6


def test_the_written_folder_loads_back_without_shape_mismatch(expanded, tmp_path, korean):
    folder, kind, _, _, backend, tokens, model, resized, tok = expanded
    out = tmp_path / "expanded"
    record = {"format": 1, "first_new_id": resized.first_new, "kind": kind}
    write_folder(out, model, tok, backend, record, korean[:20], resized.rows_after)
    assert is_vocab_folder(out) and not list(tmp_path.glob(".tmp-*"))
    loaded = AutoModelForCausalLM.from_pretrained(out)
    again = AutoTokenizer.from_pretrained(out)
    assert loaded.config.vocab_size == resized.rows_after == loaded.get_input_embeddings().weight.shape[0]
    assert loaded.get_output_embeddings().weight.shape[0] == resized.rows_after
    assert len(again) == resized.used
    assert again(korean[:5], add_special_tokens=False)["input_ids"] == [e.ids for e in backend.encode_batch(korean[:5], add_special_tokens=False)]
    new_id = tokens[-1].id
    assert again.convert_ids_to_tokens(new_id) == tokens[-1].token
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    with torch.no_grad():
        out_logits = loaded(input_ids=torch.tensor([[1, new_id, 5]])).logits
    assert out_logits.shape == (1, 3, resized.rows_after)


@pytest.mark.parametrize("kind,cls", [("sp_bpe", "LlamaTokenizer"), ("byte_bpe", "GPT2Tokenizer")])
def test_tokenizer_classes_that_rebuild_their_backend_reload_the_extension(tmp_path, corpus, korean, kind, cls):
    """transformers 5 rebuilds LlamaTokenizer / GPT2Tokenizer from the vocabulary and merges in
    tokenizer.json with the class's own pipeline; the saved folder must still give the extended
    ids (write_folder checks it and refuses otherwise). GPT-2's slow vocabulary file is also
    called vocab.json: the record beside it does not confuse the loader."""
    folder = build_base(tmp_path / "base", kind, english(corpus), 512, tokenizer_class=cls)
    _, backend, tokens, model, resized, tok = expand(folder, korean, english(corpus))
    assert type(tok).__name__ == cls
    out = tmp_path / "expanded"
    write_folder(out, model, tok, backend, {"format": 1, "first_new_id": resized.first_new}, korean[:20], resized.rows_after)
    again = AutoTokenizer.from_pretrained(out)
    assert type(again).__name__ == cls and len(again) == resized.used
    ids = again(korean[20:40], add_special_tokens=False)["input_ids"]
    assert ids == [e.ids for e in backend.encode_batch(korean[20:40], add_special_tokens=False)]
    assert any(i >= resized.first_new for x in ids for i in x)
