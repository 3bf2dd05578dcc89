"""`cptkit vocab CONFIG --add N [--out DIR]`: the base model with up to N domain tokens added.

1. `cptkit prepare` curates the sources (shards are reused when up to date).
2. A tokenizer of the base's kind is trained on a sample of the curated domain text; its
   tokens that the base lacks are the candidates (candidates.py).
3. The new tokens are chosen greedily by the domain tokens they save, refusing those frequent
   in general text (select.py), and appended so every old id keeps its meaning (extend.py).
4. The embeddings are resized to a multiple of `pad_to_multiple_of`; new rows are means of the
   original pieces' rows (embeddings.py).
5. DIR gets the resized model, the extended tokenizer and `vocab.json` (tokens per byte and per
   character before and after on the held-out sets, the share of domain tokens that are new,
   every new token with its pieces). It is written in a temporary folder, checked (the saved
   tokenizer reloads with AutoTokenizer and gives the extended ids; the saved config has the new
   row count) and renamed into place, so DIR is never half written.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from cptkit.durable import fsync_tree, replace_folder
from cptkit.errors import RunFailure, UserError
from cptkit.schema import to_dict
from cptkit.vocab.base import BaseTokenizer, inspect
from cptkit.vocab.candidates import Candidates, candidate_strings, train_domain_tokenizer
from cptkit.vocab.config import VocabConfig
from cptkit.vocab.corpus import heldout_texts, require_domain_text, training_sample
from cptkit.vocab.embeddings import Resized, resize_and_initialise
from cptkit.vocab.extend import NewToken, extend
from cptkit.vocab.measure import measure
from cptkit.vocab.select import Selection, segmentations, select

if TYPE_CHECKING:
    from cptkit.config import Config
    from cptkit.data.manifest import Manifest

log = logging.getLogger("cptkit")

FORMAT = 1
RECORD = "vocab.json"
CHECK_DOCS = 64  # held-out documents the saved tokenizer is checked on


@dataclass
class Learned:
    selection: Selection
    candidates: Candidates
    sample: dict  # statistics of the training samples
    size: int  # tokens of the domain tokenizer


def expand_vocabulary(cfg: Config, add: int, out: Path | None = None, options: VocabConfig | None = None,
                      language: str = "en") -> dict:
    """Write the expanded model folder; return its vocab.json record."""
    from cptkit.data.prepare import prepare
    from cptkit.modeling import load_model, load_tokenizer

    options = options or VocabConfig()
    if add < 1:
        raise UserError(f"--add: must be at least 1, got {add}")
    out = Path(out) if out else Path(cfg.output_dir) / "vocab"
    claim_folder(out, cfg)
    tok = load_tokenizer(cfg.model)
    base = inspect(tok, f"model.name_or_path {cfg.model.name_or_path!r}")  # before the long prepare
    manifests = prepare(cfg)
    size_before = len(tok)
    learned = learn(cfg, manifests, base, add, options)
    backend, tokens = extend(base, learned.selection)
    dtype = saved_dtype(cfg.model)
    model = load_model(cfg.model)
    resized = resize_and_initialise(model, tokens, base.next_id, options.pad_to_multiple_of, options.rescale_norm)
    roles = ["domain"] + (["general"] if cfg.general_sources or "general" in cfg.data.eval else [])
    texts = {role: heldout_texts(cfg, role) for role in roles}
    heldout = {role: measure(t, base.backend, backend, base.next_id) for role, t in texts.items() if t}
    record = make_record(cfg, base, add, language, learned, resized, heldout, options, tokens)
    record["tokenizer_size"] = {"before": size_before, "after": size_before + len(tokens)}
    if len(tokens) < add:
        log.warning("added %d of the %d tokens asked for: %s", len(tokens), add,
                    _why_fewer(learned.selection.stopped, options))
    check = [t for texts_of_role in texts.values() for t in texts_of_role[:CHECK_DOCS]]
    write_folder(out, model.to(dtype), tok, backend, record, check, resized.rows_after)
    return record


def make_record(cfg: Config, base: BaseTokenizer, add: int, language: str, learned: Learned, resized: Resized,
                heldout: dict, options: VocabConfig, tokens: list[NewToken]) -> dict:
    """The vocab.json content (README and docs/vocabulary.md describe every key)."""
    selection, candidates = learned.selection, learned.candidates
    return {
        "format": FORMAT, "base_model": cfg.model.name_or_path, "kind": base.kind, "language": language,
        "requested": add, "added": len(tokens), "stopped": selection.stopped, "first_new_id": base.next_id,
        "embedding_rows": {"before": resized.rows_before, "after": resized.rows_after},
        "pad_to_multiple_of": options.pad_to_multiple_of, "tied_embeddings": resized.tied,
        "rescale_norm": options.rescale_norm,
        "tokens_per_byte": _pair(heldout, "tokens_per_byte"), "tokens_per_char": _pair(heldout, "tokens_per_char"),
        "new_token_share": {r: m["new_token_share"] for r, m in heldout.items()},
        "heldout": heldout, "sample": learned.sample,
        "candidates": {"domain_tokenizer_size": learned.size, "domain_tokenizer_tokens": candidates.domain_vocab,
                       "new_strings": len(candidates.strings), "dropped": dict(candidates.dropped),
                       "refused_common_in_general": selection.rejected_general},
        "settings": to_dict(options),
        # text: what the token stands for; a byte-level token may end inside a character (shown as \xNN).
        "tokens": [{"id": t.id, "token": t.token,
                    "text": base.token_bytes(t.token).decode("utf-8", "backslashreplace"),
                    "pieces": t.pieces, "domain_saved": t.gain, "general_changed": t.general} for t in tokens],
    }


def learn(cfg: Config, manifests: dict[str, Manifest], base: BaseTokenizer, add: int, options: VocabConfig) -> Learned:
    """Candidates and the chosen tokens, from samples of the curated domain and general text."""
    domain = training_sample(cfg, manifests, "domain", options.sample_bytes)
    require_domain_text(domain, cfg)
    general = training_sample(cfg, manifests, "general", options.sample_bytes) if cfg.general_sources else []
    size = options.domain_tokenizer_size(add)
    n_domain, n_general = (sum(len(t.encode("utf-8")) for t in x) for x in (domain, general))
    log.info("vocab: training a %s domain tokenizer of %s tokens on %s documents (%.1f MB)", base.kind,
             f"{size:,}", f"{len(domain):,}", n_domain / 1e6)
    candidates = candidate_strings(base, train_domain_tokenizer(base, domain, size))
    if len(candidates.strings) < add:
        reasons = ", ".join(f"{n:,} {r.replace('_', ' ')}" for r, n in candidates.dropped.most_common())
        raise UserError(
            f"--add {add}: the domain tokenizer ({candidates.domain_vocab:,} tokens learned from {n_domain:,} bytes "
            f"of curated domain text) proposes only {len(candidates.strings):,} tokens the base vocabulary "
            f"lacks ({reasons or 'no others'}). Ask for at most {len(candidates.strings):,}, or give more domain text."
        )
    domain_words = segmentations(base, base.words(domain))
    general_words = segmentations(base, base.words(general))
    log.info("vocab: choosing up to %s of %s candidates on %s domain and %s general word forms", f"{add:,}",
             f"{len(candidates.strings):,}", f"{len(domain_words):,}", f"{len(general_words):,}")
    selection = select(base, candidates.strings, domain_words, general_words, add, options.min_count,
                       options.max_general_ratio, n_domain, n_general)
    sample = {role: {"documents": len(texts), "bytes": n, "tokens_before": counts[0], "tokens_after": counts[1]}
              for role, texts, n, counts in (("domain", domain, n_domain, selection.domain_tokens),
                                             ("general", general, n_general, selection.general_tokens))}
    return Learned(selection, candidates, sample, size)


def _pair(heldout: dict, what: str) -> dict:
    return {r: {"before": m[f"{what}_before"], "after": m[f"{what}_after"]} for r, m in heldout.items()}


def _why_fewer(stopped: str, options: VocabConfig) -> str:
    if stopped == "min_gain":
        return f"no other candidate saves at least min_count ({options.min_count}) tokens on the domain sample"
    return "no other candidate occurs in the domain sample or is rare enough in general text"


def saved_dtype(model_cfg) -> torch.dtype:
    """The precision the base checkpoint is stored in (the expanded one is stored the same way)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_cfg.name_or_path, revision=model_cfg.revision,
                                        trust_remote_code=model_cfg.trust_remote_code)
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    return dtype if isinstance(dtype, torch.dtype) else torch.float32


def claim_folder(out: Path, cfg: Config) -> None:
    """DIR may be new, empty, or an earlier `cptkit vocab` output; never the base model or anything else."""
    base = Path(cfg.model.name_or_path).expanduser()
    if base.exists() and out.exists() and out.resolve() == base.resolve():
        raise UserError(f"--out {out}: is the base model's folder; choose a new folder")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not is_vocab_folder(out))):
        raise UserError(f"--out {out}: exists and is not a folder written by cptkit vocab; choose a new or empty folder")


def is_vocab_folder(folder: Path) -> bool:
    try:
        record = json.loads((folder / RECORD).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and "first_new_id" in record and "format" in record


def write_folder(out: Path, model, tok, backend, record: dict, check: list[str], rows: int) -> None:
    """Save model, tokenizer and vocab.json in a temporary folder, check them, move into place."""
    tmp = out.with_name(f".tmp-{out.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        model.config.use_cache = True  # loading for training turned it off; the folder is also for generation
        model.save_pretrained(tmp)
        tok._tokenizer = backend  # the transformers tokenizer now wraps the extended tokenizer
        tok.save_pretrained(tmp)
        # A SentencePiece model file beside tokenizer.json would still hold the old vocabulary.
        (tmp / "tokenizer.model").unlink(missing_ok=True)
        (tmp / RECORD).write_text(json.dumps(record, indent=1, ensure_ascii=False), encoding="utf-8")
        verify(tmp, backend, check, rows)
        fsync_tree(tmp)
        replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("vocab: wrote %s", out)


def verify(folder: Path, backend, texts: list[str], rows: int) -> None:
    """The folder as transformers loads it must give the extended tokenizer's ids and the new row count."""
    from transformers import AutoConfig, AutoTokenizer

    loaded = AutoTokenizer.from_pretrained(folder)
    want = [e.ids for e in backend.encode_batch(texts, add_special_tokens=False)]
    got = loaded(texts, add_special_tokens=False)["input_ids"] if texts else []
    if got != want:
        raise RunFailure(
            f"the tokenizer saved in {folder} does not reproduce the extended tokenizer when AutoTokenizer "
            f"loads it (tokenizer class {type(loaded).__name__} rebuilds it differently); nothing was written"
        )
    vocab_size = getattr(AutoConfig.from_pretrained(folder).get_text_config(), "vocab_size", rows)
    if vocab_size != rows or len(loaded) > rows:
        raise RunFailure(f"{folder}: config.json says {vocab_size} rows for {len(loaded)} tokens, expected {rows}")
