"""Tiny base models for the vocabulary tests: a tokenizer of each kind trained here on English
text, and a Llama built from a config around it. Nothing is downloaded."""

from __future__ import annotations

import json
from pathlib import Path

SPACE = "▁"
SPECIALS = ["<unk>", "<s>", "</s>"]
BYTES = [f"<0x{b:02X}>" for b in range(256)]


def english(corpus: dict[str, Path], docs: int = 400) -> list[str]:
    lines = corpus["general"].read_text(encoding="utf-8").splitlines()[:docs]
    return [json.loads(line)["text"] for line in lines]


def byte_bpe(texts: list[str], vocab: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    return tok


def _sp_pipeline(spec: dict) -> dict:
    """Llama 2 as transformers 5 builds it: Metaspace (prepend first, no split), byte fallback."""
    spec["normalizer"] = None
    spec["pre_tokenizer"] = {"type": "Metaspace", "replacement": SPACE, "prepend_scheme": "first", "split": False}
    spec["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": SPACE}, "content": " "}, {"type": "ByteFallback"},
        {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
    spec["added_tokens"] = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                             "normalized": False, "special": True} for i, t in enumerate(SPECIALS)]
    return spec


def sp_bpe(texts: list[str], vocab: int):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="first", split=True)
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab - 259, show_progress=False))
    spec = json.loads(tok.to_str())
    learned = sorted(spec["model"]["vocab"].items(), key=lambda kv: kv[1])
    ids = {t: i for i, t in enumerate(SPECIALS + BYTES)}
    for t, _ in learned:
        ids.setdefault(t, len(ids))
    spec["model"].update(vocab=ids, unk_token="<unk>", byte_fallback=True, fuse_unk=True)
    return Tokenizer.from_str(json.dumps(_sp_pipeline(spec)))


def unigram(texts: list[str], vocab: int):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="first", split=True)
    tok.train_from_iterator(texts, trainers.UnigramTrainer(
        vocab_size=vocab - 259, special_tokens=["<unk>"], unk_token="<unk>", show_progress=False))
    spec = json.loads(tok.to_str())
    pieces = [p for p in spec["model"]["vocab"] if p[0] != "<unk>"]
    spec["model"] = {"type": "Unigram", "unk_id": 0, "byte_fallback": True,
                     "vocab": [[t, 0.0] for t in SPECIALS + BYTES] + pieces}
    spec = _sp_pipeline(spec)
    spec["pre_tokenizer"]["split"] = True
    return Tokenizer.from_str(json.dumps(spec))


BUILDERS = {"byte_bpe": byte_bpe, "sp_bpe": sp_bpe, "unigram": unigram}


def build_base(folder: Path, kind: str, texts: list[str], vocab: int = 512, tied: bool = True,
               tokenizer_class: str | None = None, seed: int = 0) -> Path:
    """A tokenizer of `kind` trained on `texts` and a randomly initialised 2-layer Llama."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(tokenizer_object=BUILDERS[kind](texts, vocab), bos_token="<s>",
                                   eos_token="</s>", unk_token="<unk>")
    config = LlamaConfig(
        vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=tied,
        bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(folder)
    fast.save_pretrained(folder)
    if tokenizer_class:
        path = folder / "tokenizer_config.json"
        meta = json.loads(path.read_text())
        meta["tokenizer_class"] = tokenizer_class
        path.write_text(json.dumps(meta))
    return folder
