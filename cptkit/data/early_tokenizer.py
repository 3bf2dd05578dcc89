"""Tokenize while transformers is still loading the tokenizer: an early start for fresh prepares.

Loading the model's tokenizer through transformers (`save_tokenizer`) costs seconds before any
document is read, most of it importing torch and transformers; on a small corpus that serial
time is a quarter of the command, with every worker idle. What the workers need is much less:
the `tokenizer.json` they run through the `tokenizers` library, the start and EOS ids, and the
token width. Those can be read from the model folder directly, so a prepare with nothing to
reuse (a fresh prepared folder, or `--force`) starts the workers on that guess while a thread
loads and saves the tokenizer through transformers as before.

The guess is then checked against what transformers saved: the same `tokenizer.json` (as
parsed JSON), the backend path chosen (transformers' ids agree with the backend's), the same
start and EOS ids and the same token width. Parts made from a guess that holds are exactly the
parts the saved tokenizer makes, so the output is byte-identical either way. A guess that does
not hold costs the parts made so far: they are discarded and made again with the saved
tokenizer. No guess is made for a hub id, remote code, a folder without `tokenizer.json`, or a
`tokenizer_config.json` that names no EOS token; those load first, as before.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from cptkit.data.shards import token_dtype
from cptkit.data.tokenize import TokenizerSpec
from cptkit.data.tokenizer_stamp import Saved

log = logging.getLogger(__name__)


def _token(value) -> str | None:
    """A special token as tokenizer_config.json writes it: a string, or a dict with its content."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def guess(model) -> tuple[TokenizerSpec, int] | None:
    """(worker spec, vocabulary size) read from the model folder without transformers, or None."""
    path = Path(model.name_or_path)
    if model.trust_remote_code or not (path / "tokenizer.json").is_file():
        return None
    try:
        config = json.loads((path / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict) or "auto_map" in config:
        return None
    from tokenizers import Tokenizer

    try:
        backend = Tokenizer.from_file(str(path / "tokenizer.json"))
    except Exception:  # noqa: BLE001 - transformers will say what is wrong with it
        return None
    bos, eos = (_token(config.get(k)) for k in ("bos_token", "eos_token"))
    eos_id = backend.token_to_id(eos) if eos else None
    bos_id = backend.token_to_id(bos) if bos else None
    if eos_id is None or (bos and bos_id is None):
        return None
    start = bos_id if bos_id is not None else eos_id
    return TokenizerSpec(str(path), start, eos_id, True), backend.get_vocab_size(with_added_tokens=True)


class EarlyStart:
    """The guessed spec for the workers, and the thread loading the tokenizer that decides it."""

    def __init__(self, spec: TokenizerSpec, vocab: int, load: Callable[[], Saved]):
        self.spec, self.vocab = spec, vocab
        self._saved: Saved | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(load,), name="cptkit-tokenizer", daemon=True)
        self._thread.start()

    def _run(self, load: Callable[[], Saved]) -> None:
        try:
            self._saved = load()
        except BaseException as exc:  # noqa: BLE001 - raised again in the main thread by saved()
            self._error = exc

    def join(self) -> None:
        self._thread.join()

    def saved(self) -> Saved:
        """What transformers saved (waits for it); the loader's error, if it failed, is raised here."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._saved

    def holds(self) -> bool:
        """Whether the parts made with the guessed spec are the ones the saved tokenizer makes."""
        spec, _, vocab = self.saved()
        if not spec.use_backend or (spec.start_id, spec.eos_id) != (self.spec.start_id, self.spec.eos_id):
            return False
        if token_dtype(vocab) != token_dtype(self.vocab):
            return False
        saved, guessed = (json.loads((Path(s.folder) / "tokenizer.json").read_text(encoding="utf-8"))
                          for s in (spec, self.spec))
        return saved == guessed


def early_start(model, load: Callable[[], Saved]) -> EarlyStart | None:
    """Start `load` in a thread and return the guess the workers may use now, if there is one."""
    found = guess(model)
    if found is None:
        return None
    log.debug("tokenizing with %s/tokenizer.json while transformers loads the tokenizer", model.name_or_path)
    return EarlyStart(*found, load)
