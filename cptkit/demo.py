"""`cptkit demo`: continued pre-training end to end, offline, on CPU, from text every machine has.

1. Corpora from the Python installation itself: *general* English is the standard library's
   docstrings and the language reference shipped in `pydoc_data`; the *domain* is the standard
   library's source code with its docstrings taken out (so the general held-out text never
   appears in the domain training data).
2. A byte-level BPE tokenizer trained on both, and a small Llama built from a config.
3. The base model: pre-trained from scratch by `cptkit train` on the general corpus.
4. Continued pre-training of that base on the code domain with 5% general replay, evaluated
   on held-out domain and general text from step 0 (the base) on.
5. summary.json, report.html and a before/after table in the output folder.
"""

from __future__ import annotations

import ast
import json
import logging
import random
import shutil
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from cptkit.errors import UserError

log = logging.getLogger("cptkit")

MARKER = ".cptkit-demo"
SKIP_TOP = {"site-packages", "test", "idlelib", "lib2to3", "tkinter", "turtledemo", "ensurepip", "pydoc_data"}


@dataclass(frozen=True)
class DemoSize:
    vocab: int
    hidden: int
    layers: int
    heads: int
    seq_len: int
    batch_rows: int
    micro: int
    pretrain_tokens: int
    cpt_tokens: int
    code_files: int  # at most this many stdlib modules in the domain corpus
    eval_tokens: int


# Sized for about six minutes on two CPU cores: the model is compute-bound at ~5k tokens/s there.
FULL = DemoSize(vocab=4096, hidden=192, layers=4, heads=4, seq_len=256, batch_rows=16, micro=8,
                pretrain_tokens=1_000_000, cpt_tokens=600_000, code_files=10_000, eval_tokens=30_000)
QUICK = DemoSize(vocab=2048, hidden=96, layers=2, heads=2, seq_len=128, batch_rows=16, micro=8,
                 pretrain_tokens=150_000, cpt_tokens=100_000, code_files=120, eval_tokens=12_000)


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _modules(limit: int) -> list[Path]:
    root = stdlib_root()
    files = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[0] in SKIP_TOP or "tests" in rel.parts or "test" in rel.parts:
            continue
        files.append(path)
    random.Random(0).shuffle(files)
    return sorted(files[:limit])


def split_module(source: str) -> tuple[list[str], str] | None:
    """(docstrings, code with each docstring replaced by `...`), or None if it does not parse."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    lines = source.splitlines(keepends=True)
    docs, spans = [], []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                docs.append(ast.get_docstring(node) or "")
                spans.append((first.lineno, first.end_lineno, first.col_offset))
    for start, end, col in sorted(spans, reverse=True):
        if lines[start - 1][:col].strip():
            continue  # a docstring on the same line as code: leave it
        lines[start - 1 : end] = [" " * col + "...\n"]
    return [d for d in docs if d.strip()], "".join(lines)


def build_corpora(folder: Path, size: DemoSize) -> tuple[Path, Path]:
    """general.jsonl (English prose) and code.jsonl (Python source) from the standard library."""
    import pydoc_data.topics

    folder.mkdir(parents=True, exist_ok=True)
    general, code = folder / "general.jsonl", folder / "code.jsonl"
    root = stdlib_root()
    with open(general, "w", encoding="utf-8") as g, open(code, "w", encoding="utf-8") as c:
        for topic, text in sorted(pydoc_data.topics.topics.items()):
            g.write(json.dumps({"id": f"pydoc:{topic}", "text": text.strip()}) + "\n")
        for path in _modules(size.code_files):
            rel = str(path.relative_to(root))
            parsed = split_module(path.read_text(encoding="utf-8", errors="replace"))
            if parsed is None:
                continue
            docs, source = parsed
            for i, doc in enumerate(d for d in docs if len(d) >= 80):
                g.write(json.dumps({"id": f"doc:{rel}#{i}", "text": doc}) + "\n")
            c.write(json.dumps({"id": rel, "text": source}) + "\n")
    return general, code


def build_base_init(folder: Path, corpora: list[Path], size: DemoSize) -> Path:
    """A byte-level BPE tokenizer trained on the corpora and a randomly initialised Llama."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    def texts():
        for path in corpora:
            with open(path, encoding="utf-8") as fh:
                for line in fh:
                    yield json.loads(line)["text"]

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=size.vocab, special_tokens=["<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(texts(), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    config = LlamaConfig(
        vocab_size=len(fast), hidden_size=size.hidden, intermediate_size=size.hidden * 8 // 3 // 16 * 16,
        num_hidden_layers=size.layers, num_attention_heads=size.heads, num_key_value_heads=size.heads,
        max_position_embeddings=1024, tie_word_embeddings=True,
        bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


def _run_config(model: Path, out: Path, domain: Path, general: Path | None, size: DemoSize,
                tokens: int, lr: float, replay: float) -> dict:
    cfg = {
        "model": {"name_or_path": str(model), "dtype": "float32"},
        "data": {
            "seq_len": size.seq_len,
            "domain": {"paths": [str(domain)], "text_field": "text", "id_field": "id"},
            "heldout_fraction": 0.03,
            "heldout_max_docs": 200,
        },
        "train": {
            "lr": lr, "schedule": "cosine", "warmup_ratio": 0.05, "min_lr_ratio": 0.1, "weight_decay": 0.1,
            "global_batch_tokens": size.batch_rows * size.seq_len, "micro_batch_size": size.micro,
            "max_tokens": tokens, "log_every": 1,
        },
        "checkpoint": {"every_steps": 10_000, "keep_last": 1, "keep_best": 0, "metric": "domain_ppl"},
        "eval": {"every_steps": max(tokens // (size.batch_rows * size.seq_len) // 5, 1), "max_tokens": size.eval_tokens},
        "output_dir": str(out),
    }
    if general is not None:
        cfg["data"]["general"] = {"paths": [str(general)], "text_field": "text", "id_field": "id"}
        cfg["mix"] = {"replay_ratio": replay}
    return cfg


def _claim(out: Path) -> None:
    """Refuse to clear a folder that is not a previous demo's (or empty)."""
    if out.exists() and any(out.iterdir()) and not (out / MARKER).exists():
        raise UserError(f"--out {out}: exists and is not a cptkit demo folder; choose an empty or new folder")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text("created by `cptkit demo`; the demo clears this folder when it runs again\n")


def run_demo(out: Path, quick: bool = False) -> dict:
    import yaml

    from cptkit.config import load_config
    from cptkit.report.render import write_report
    from cptkit.report.tables import before_after_table
    from cptkit.train.loop import train

    size = QUICK if quick else FULL
    _claim(out)
    log.info("demo: building corpora from the Python standard library at %s", stdlib_root())
    general, code = build_corpora(out / "corpus", size)
    log.info("demo: training a %d-token BPE tokenizer and building a %d-layer Llama", size.vocab, size.layers)
    init = build_base_init(out / "base-init", [general, code], size)

    log.info("demo: 1/2 pre-training the base model on general English (%s tokens)", f"{size.pretrain_tokens:,}")
    pre_cfg = _run_config(init, out / "pretrain", general, None, size, size.pretrain_tokens, lr=3e-3, replay=0.0)
    _write_yaml(out / "pretrain.yaml", pre_cfg, yaml)
    train(load_config(None, raw=pre_cfg))

    log.info("demo: 2/2 continued pre-training on Python code with 5%% general replay (%s tokens)", f"{size.cpt_tokens:,}")
    cpt_cfg = _run_config(out / "pretrain" / "final", out, code, general, size, size.cpt_tokens, lr=1e-3, replay=0.05)
    _write_yaml(out / "cpt.yaml", cpt_cfg, yaml)
    summary = train(load_config(None, raw=cpt_cfg))
    report = write_report([out])
    print()
    print("Continued pre-training of a general-English model on Python code (held-out perplexity):")
    print(before_after_table(summary))
    print(f"\nrun folder: {out}   report: {report}   configs: {out / 'pretrain.yaml'}, {out / 'cpt.yaml'}")
    return summary


def _write_yaml(path: Path, cfg: dict, yaml) -> None:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
