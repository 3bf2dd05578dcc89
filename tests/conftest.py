"""Shared fixtures: real text from the standard library, a tokenizer trained here, a tiny Llama.

Nothing is downloaded: HF_HUB_OFFLINE is set before transformers is imported.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from cptkit.demo import DemoSize, build_base_init, build_corpora  # noqa: E402

TINY = DemoSize(vocab=512, hidden=32, layers=2, heads=2, seq_len=64, batch_rows=8, micro=4,
                pretrain_tokens=0, cpt_tokens=0, code_files=25, eval_tokens=4000)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("corpus")
    general, code = build_corpora(folder, TINY)
    # Keep the general corpus small: the first 400 documents are plenty for these tests.
    lines = general.read_text(encoding="utf-8").splitlines()[:400]
    general.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"general": general, "code": code}


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, corpus) -> Path:
    return build_base_init(tmp_path_factory.mktemp("tiny-llama"), [corpus["general"], corpus["code"]], TINY)
