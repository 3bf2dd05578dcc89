"""`cptkit vocab` end to end with real processes: a base whose tokenizer knows only English,
Korean domain text generated here; the folder it writes trains with `cptkit train`; bad inputs
exit 2; a staged run killed with SIGKILL on either side of the stage boundary resumes exactly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from benchmarks.korean_corpus import write_korean
from cptkit.cli import main
from tests.helpers import cptkit, make_config, read_jsonl, write_config

ADD = 120


def korean_config(tmp, model, corpus, name="run", **sections):
    domain = write_korean(tmp / "ko.jsonl", 400, seed=5)
    cfg = make_config(tmp, model, corpus, output_dir=str(tmp / name), **sections)
    cfg["data"]["domain"] = {"paths": [str(domain)], "id_field": "id"}
    return cfg


@pytest.fixture(scope="module")
def expanded(tmp_path_factory, tiny_model, corpus):
    """The CLI run once: (its config dict, the folder it wrote, the process result)."""
    tmp = tmp_path_factory.mktemp("vocab")
    cfg = korean_config(tmp, tiny_model, corpus)
    path = write_config(tmp / "cfg.yaml", cfg)
    result = cptkit("vocab", str(path), "--add", str(ADD), "--out", str(tmp / "expanded"), "--language", "ko")
    return cfg, tmp / "expanded", result


@pytest.mark.slow
def test_vocab_writes_a_model_folder_that_loads_and_trains(expanded, tmp_path):
    cfg, folder, result = expanded
    assert result.returncode == 0, result.stderr[-3000:]
    assert "tok/byte before" in result.stdout and f"added {ADD} of {ADD} tokens" in result.stdout
    record = json.loads((folder / "vocab.json").read_text())
    assert record["kind"] == "byte_bpe" and record["language"] == "ko" and record["first_new_id"] == 512
    assert record["added"] == len(record["tokens"]) == ADD
    assert record["embedding_rows"] == {"before": 512, "after": 640}
    domain, general = record["tokens_per_byte"]["domain"], record["tokens_per_byte"]["general"]
    assert domain["after"] < 0.5 * domain["before"]  # Korean: from about a token per byte
    assert abs(general["after"] - general["before"]) < 0.02 * general["before"]  # English barely moves
    assert record["new_token_share"]["domain"] > 0.4 and record["new_token_share"]["general"] < 0.01
    model = AutoModelForCausalLM.from_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    assert model.get_input_embeddings().weight.shape[0] == 640 and len(tok) == 512 + ADD

    # The folder is a starting point for cptkit train: the data is re-tokenized with its tokenizer.
    run_cfg = {**cfg, "model": {"name_or_path": str(folder), "dtype": "float32"},
               "output_dir": str(tmp_path / "train")}
    run_cfg["train"] = {**cfg["train"], "max_steps": 2}
    trained = cptkit("train", str(write_config(tmp_path / "train.yaml", run_cfg)))
    assert trained.returncode == 0, trained.stderr[-3000:]
    old = json.loads((folder.parent / "run" / "data" / "domain" / "manifest.json").read_text())
    new = json.loads((tmp_path / "train" / "data" / "domain" / "manifest.json").read_text())
    assert new["vocab_size"] == 512 + ADD and new["tokens"]["total"] < 0.6 * old["tokens"]["total"]
    final = AutoModelForCausalLM.from_pretrained(tmp_path / "train" / "final")
    assert final.config.vocab_size == 640
    assert "domain_bpb" in json.loads((tmp_path / "train" / "summary.json").read_text())["final"]
    # The report shows the vocabulary the run started from, beside bits per byte.
    assert cptkit("report", str(tmp_path / "train")).returncode == 0
    page = (tmp_path / "train" / "report.html").read_text()
    assert "Vocabulary" in page and f"{ADD:,} tokens added" in page and f"{domain['after']:.3f}" in page


@pytest.mark.slow
def test_bad_inputs_exit_2_with_a_clear_message(expanded, tmp_path, corpus, capsys):
    cfg, folder, _ = expanded
    shared = {**cfg["data"], "prepared_dir": str(folder.parent / "run" / "data")}  # shards of the first run, reused
    path = write_config(tmp_path / "cfg.yaml", {**cfg, "data": shared, "output_dir": str(tmp_path / "run")})

    # A real process: asking for more tokens than the domain tokenizer proposes.
    too_many = cptkit("vocab", str(path), "--add", "100000", "--out", str(tmp_path / "x"))
    assert too_many.returncode == 2 and "proposes only" in too_many.stderr and "Ask for at most" in too_many.stderr
    assert "Traceback" not in too_many.stderr and not (tmp_path / "x").exists()

    def vocab(*args, config=path) -> str:  # the same command line, in this process (faster)
        assert main(["vocab", str(config), *args]) == 2
        return capsys.readouterr().err

    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    assert "not a folder written by cptkit vocab" in vocab("--add", "10", "--out", str(taken))
    assert (taken / "notes.txt").read_text() == "mine"
    assert "--pad-to-multiple-of: must be >= 1" in vocab("--add", "10", "--pad-to-multiple-of", "0")
    assert "--add: must be at least 1" in vocab("--add", "0")
    wordpiece = _wordpiece_model(tmp_path / "wordpiece", corpus)
    other = write_config(tmp_path / "wp.yaml", {**cfg, "model": {"name_or_path": str(wordpiece)},
                                               "output_dir": str(tmp_path / "wp")})
    assert "WordPiece tokenizer cannot be extended" in vocab("--add", "10", config=other)
    assert not (tmp_path / "wp").exists()  # refused before preparing anything


def _wordpiece_model(folder, corpus):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM

    texts = [json.loads(line)["text"] for line in corpus["general"].read_text().splitlines()[:100]]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=400, special_tokens=["[UNK]", "[SEP]"],
                                                             show_progress=False))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", eos_token="[SEP]")
    config = LlamaConfig(vocab_size=len(fast), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2)
    LlamaForCausalLM(config).save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


def _run(*args, crash=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("CPTKIT_CRASH_AT", None)
    if crash:
        env["CPTKIT_CRASH_AT"] = crash
    return subprocess.run([sys.executable, "-m", "cptkit", *args], env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_a_killed_staged_run_resumes_exactly_across_the_stage_boundary(expanded, tmp_path):
    cfg, folder, _ = expanded

    def staged(name):
        c = {**cfg, "model": {"name_or_path": str(folder), "dtype": "float32"}, "output_dir": str(tmp_path / name)}
        c["train"] = {**cfg["train"], "max_steps": 8, "new_embeddings_only_steps": 4, "weight_decay": 0.1}
        c["checkpoint"] = {"every_steps": 2, "keep_last": 10, "keep_best": 0}
        c["data"] = {**cfg["data"], "prepared_dir": str(tmp_path / "shards")}
        return str(write_config(tmp_path / f"{name}.yaml", c))

    straight = staged("straight")
    assert _run("train", straight).returncode == 0
    broken = staged("broken")
    assert _run("train", broken, crash="step:3").returncode == -signal.SIGKILL  # in stage 1
    assert _run("train", broken, "--resume", crash="step:6").returncode == -signal.SIGKILL  # in stage 2
    resumed = _run("train", broken, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr and "step-4" in resumed.stderr
    a = load_file(str(tmp_path / "straight" / "final" / "model.safetensors"))
    b = load_file(str(tmp_path / "broken" / "final" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    losses = [[(m["step"], m["loss"], m["grad_norm"]) for m in read_jsonl(tmp_path / n / "metrics.jsonl")]
              for n in ("straight", "broken")]
    assert losses[0] == losses[1] and len(losses[0]) == 8

    # Stage 1 held everything but the new rows; stage 2 trained the rest.
    base = load_file(str(folder / "model.safetensors"))
    at4 = load_file(str(tmp_path / "straight" / "checkpoints" / "step-4" / "model.safetensors"))
    embed = "model.embed_tokens.weight"
    assert torch.equal(at4[embed][:512], base[embed][:512]) and not torch.equal(at4[embed][512:], base[embed][512:])
    assert all(torch.equal(at4[k], base[k]) for k in base if k != embed)
    at8 = load_file(str(tmp_path / "straight" / "checkpoints" / "step-8" / "model.safetensors"))
    assert not any(torch.equal(at8[k], at4[k]) for k in at4)
