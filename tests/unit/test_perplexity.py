import contextlib
import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from cptkit.config import load_config
from cptkit.data.prepare import prepare
from cptkit.evaluation.perplexity import build_eval_set, evaluate
from cptkit.train.losses import CausalLMLoss

TEXTS = ["The cat sat on the mat.", "Ünïcödé — bytes are not characters: 漢字.", "def f(x):\n    return x + 1\n",
         "A longer sentence about perplexity, bits and bytes, written for a test."]


@pytest.fixture()
def prepared(tmp_path, tiny_model):
    data = tmp_path / "eval.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    cfg = load_config(None, raw={
        "model": {"name_or_path": str(tiny_model), "dtype": "float32"},
        "data": {"seq_len": 256, "domain": {"paths": [str(data)]}, "eval": {"domain": {"paths": [str(data)]}},
                 "num_workers": 1},
        "output_dir": str(tmp_path / "run"),
    })
    manifests = prepare(cfg)
    es = build_eval_set("domain", [(cfg.prepared_dir / "eval-domain", manifests["eval-domain"])], 256, 10**6)
    return es, manifests


def run_eval(model, es, chunk=None):
    return evaluate(CausalLMLoss(model.eval(), chunk), [es], seq_len=256, micro_batch_size=2, device=torch.device("cpu"),
                    autocast=contextlib.nullcontext)


def test_bits_per_byte_by_hand_with_uniform_predictions(prepared, tiny_model):
    es, manifests = prepared
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    with torch.no_grad():
        model.get_output_embeddings().weight.zero_()  # every logit 0: each token costs exactly ln V
    tok = AutoTokenizer.from_pretrained(tiny_model)
    vocab = model.config.vocab_size
    targets = sum(len(tok(t, add_special_tokens=False)["input_ids"]) + 1 for t in TEXTS)  # text tokens + EOS
    n_bytes = sum(len(t.encode("utf-8")) for t in TEXTS)
    assert es.n_bytes == n_bytes == manifests["eval-domain"].text_bytes["eval"]
    r = run_eval(model, es)
    assert r["domain_tokens"] == targets
    assert r["domain_loss"] == pytest.approx(math.log(vocab), rel=1e-6)
    assert r["domain_ppl"] == pytest.approx(vocab, rel=1e-5)
    assert r["domain_bpb"] == pytest.approx(targets * math.log(vocab) / math.log(2) / n_bytes, rel=1e-6)


def test_packed_evaluation_equals_scoring_each_document_alone(prepared, tiny_model):
    es, _ = prepared
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # not a uniform model
    tok = AutoTokenizer.from_pretrained(tiny_model)
    total, count = 0.0, 0
    for text in TEXTS:
        ids = [tok.bos_token_id] + tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        x = torch.tensor([ids])
        with torch.no_grad():
            logits = model(input_ids=x, use_cache=False).logits[0, :-1]
        total += float(torch.nn.functional.cross_entropy(logits, x[0, 1:], reduction="sum"))
        count += len(ids) - 1
    for chunk in (None, 5):  # full logits and the chunked loss agree
        r = run_eval(model, es, chunk)
        assert r["domain_tokens"] == count
        assert r["domain_loss"] == pytest.approx(total / count, rel=1e-5)


def test_max_tokens_cuts_at_a_document_boundary(prepared, tmp_path):
    es, manifests = prepared
    (shard, _, end), = es.windows  # all four short documents fit one window
    assert end == len(shard)
    folder = tmp_path / "run" / "data" / "eval-domain"
    cut = build_eval_set("domain", [(folder, manifests["eval-domain"])], 256, int(shard.starts[1]) + 1)
    # One token into the second document: the set ends after it, both documents whole.
    assert [(s, e) for _, s, e in cut.windows] == [(0, int(shard.starts[2]))]
    assert cut.n_bytes == sum(len(t.encode()) for t in TEXTS[:2])
