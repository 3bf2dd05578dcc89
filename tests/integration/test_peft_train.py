"""`train.peft` through `cptkit train` on the tiny Llama: LoRA with replay, document masking, the fused
chunked loss, KL to the base (the same model with its adapters off), probes and evaluation from step 0;
EWC with a curriculum, frozen layers and bfloat16; the outputs (merged best/ and final/, adapter
folders beside them, trainable-only checkpoints, summary.json, the report); `cptkit eval` of a LoRA
checkpoint; and the refusals at config time (exit 2, the keys named)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from cptkit.config import load_config
from cptkit.train.loop import train
from tests.helpers import cptkit, make_config, read_jsonl, write_config

LORA = {"method": "lora", "r": 4, "dropout": 0.1}
PROBES = [{"id": "cap", "prompt": "The capital of France is", "answer": "Paris"},
          {"id": "def", "prompt": "def add(a, b):\n    return", "answer": "a + b", "distractors": ["a - b"]}]


def adapter_count(model, r: int, targets: set[str] | None = None, first_layer: int = 0) -> int:
    """r * (in + out) over the decoder layers' linear layers (those named in `targets`)."""
    return sum(r * (m.in_features + m.out_features) for layer in model.model.layers[first_layer:]
               for n, m in layer.named_modules()
               if isinstance(m, torch.nn.Linear) and (targets is None or n.rsplit(".", 1)[-1] in targets))


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_model, corpus):
    tmp = tmp_path_factory.mktemp("lora")
    probes = tmp / "probes.jsonl"
    probes.write_text("".join(json.dumps(p) + "\n" for p in PROBES))
    raw = make_config(tmp, tiny_model, corpus, train={"max_steps": 8, "lr": 1e-2, "peft": LORA},
                      regularizer={"kind": "kl", "weight": 0.5},
                      eval={"every_steps": 4, "max_tokens": 2000, "probes": {"mini": str(probes)}})
    cfg = load_config(None, raw=raw)
    summary = train(cfg)
    return tmp / "run", summary, cfg


def test_kl_to_the_model_with_its_adapters_off_is_zero_until_the_first_update(lora_run):
    run, _, cfg = lora_run
    assert cfg.train.embedding_lr_scale == 0.2  # the LoRA default when the config leaves it unset
    metrics = read_jsonl(run / "metrics.jsonl")
    assert [m["step"] for m in metrics] == list(range(1, 9))
    # B = 0 and the original embeddings and output layer: the student *is* the reference at step 1.
    assert metrics[0]["kl"] == 0.0 and metrics[0]["loss_reg"] == 0.0
    assert all(m["kl"] > 0 for m in metrics[1:])
    assert metrics[0]["loss_domain"] is not None and metrics[0]["loss_replay"] is not None  # replay 25%
    assert sum(m["loss"] for m in metrics[-2:]) < sum(m["loss"] for m in metrics[:2]) - 0.2


def test_summary_names_the_method_the_rank_and_the_trainable_parameter_count(lora_run, tiny_model):
    _, summary, _ = lora_run
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    tied = base.lm_head.weight is base.model.embed_tokens.weight
    vocab, hidden = base.model.embed_tokens.weight.shape
    adapters = adapter_count(base, 4)
    full = vocab * hidden * (1 if tied else 2)
    assert summary["method"] == "lora"
    assert summary["trainable_parameters"] == adapters + full
    assert summary["total_parameters"] == sum(p.numel() for p in base.parameters())
    assert summary["peft"]["r"] == 4 and summary["peft"]["adapter_parameters"] == adapters
    assert summary["peft"]["target_modules"] == sorted(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                        "up_proj", "down_proj"])


def test_best_and_final_are_merged_plain_folders_and_the_adapters_load_onto_the_base(lora_run, tiny_model):
    from peft import PeftModel

    run, summary, _ = lora_run
    ids = torch.randint(0, 512, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        base = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
        before = base(ids).logits
        for name in ("best", "final"):
            merged = AutoModelForCausalLM.from_pretrained(run / name).eval()
            assert not any("lora" in k or "base_layer" in k for k in merged.state_dict())
            adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), run / f"{name}-adapter")
            assert torch.allclose(merged(ids).logits, adapted.eval()(ids).logits, atol=1e-5, rtol=0), name
            assert (merged(ids).logits - before).abs().max() > 0.05, name  # it carries the training
    config = json.loads((run / "final-adapter" / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["base_model_name_or_path"] == str(tiny_model)
    # A merged folder needs no peft: loaded in a process where importing peft fails.
    code = ("import sys; sys.modules['peft'] = None\nfrom transformers import AutoModelForCausalLM\n"
            f"m = AutoModelForCausalLM.from_pretrained({str(run / 'final')!r}); print(type(m).__name__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "LlamaForCausalLM", done.stderr[-2000:]


def test_checkpoints_hold_the_trainable_weights_and_a_fingerprint_of_the_base(lora_run):
    run, summary, _ = lora_run
    state = run / "checkpoints" / "step-8"
    with safe_open(str(state / "model.safetensors"), "pt") as fh:
        names = set(fh.keys())
    assert not any(".base_layer." in n for n in names)
    assert sum(".lora_A." in n for n in names) == sum(".lora_B." in n for n in names) == 14  # 7 layers x 2
    assert {n for n in names if ".lora_" not in n} == {"model.embed_tokens.weight"}  # tied: the output layer too
    numel = sum(t.numel() for t in load_file(state / "model.safetensors").values())
    assert numel == summary["trainable_parameters"]
    assert len(json.loads((state / "trainer_state.json").read_text())["frozen_base"]) == 64  # sha256


def test_step_0_evaluation_and_probes_are_the_base_models(lora_run, tiny_model):
    from cptkit.evaluation.run import evaluate_checkpoint

    run, _, cfg = lora_run
    first = read_jsonl(run / "eval.jsonl")[0]
    plain = evaluate_checkpoint(cfg, tiny_model)  # the base model folder, no adapters
    for key in ("domain_loss", "general_loss", "probe_mini_logprob", "probe_mini_exact"):
        assert first[key] == plain[key], key
    base_rows = [r for r in read_jsonl(run / "probes.jsonl") if r["step"] == 0]
    assert [r["greedy"] for r in base_rows] == [r["greedy"] for r in plain["probe_results"]]


def test_cptkit_eval_of_a_lora_checkpoint_matches_the_run(lora_run):
    from cptkit.evaluation.run import evaluate_checkpoint

    run, _, cfg = lora_run
    at_8 = read_jsonl(run / "eval.jsonl")[-1]
    got = evaluate_checkpoint(cfg, run / "checkpoints" / "step-8")
    assert got["domain_ppl"] == pytest.approx(at_8["domain_ppl"], rel=1e-6)
    assert got["general_ppl"] == pytest.approx(at_8["general_ppl"], rel=1e-6)


def test_the_report_states_method_rank_and_trainable_count(lora_run):
    from cptkit.report.render import write_report

    run, summary, _ = lora_run
    page = write_report([run]).read_text()
    assert "lora r 4 (alpha 32) on down_proj, gate_proj" in page
    assert f"{summary['trainable_parameters']:,} of {summary['total_parameters']:,} parameters trained" in page


def test_ewc_with_a_curriculum_frozen_layers_and_bfloat16(tmp_path, tiny_model, corpus):
    """EWC anchors and Fisher cover the trainable parameters only; train.freeze_layers leaves the first
    layer without adapters (its weights in final/ are the base's); the frozen linear weights are held in
    bfloat16 under bfloat16 autocast; gradient checkpointing reaches the adapters."""
    raw = make_config(tmp_path, tiny_model, corpus, mix={"replay_ratio": None, "curriculum": {"start": 0.5, "end": 0.9}},
                      train={"max_steps": 4, "lr": 1e-2, "freeze_layers": 1, "gradient_checkpointing": True,
                             "peft": {"method": "lora", "r": 2, "target_modules": ["q_proj", "v_proj", "down_proj"]}},
                      regularizer={"kind": "ewc", "weight": 100.0, "fisher_tokens": 2000},
                      checkpoint={"every_steps": 4, "keep_best": 0}, eval={"every_steps": 4, "probes": {}})
    raw["model"]["dtype"] = "bfloat16"
    summary = train(load_config(None, raw=raw))
    run = tmp_path / "run"
    fisher = load_file(run / "fisher.safetensors")
    trained = set(load_file(run / "checkpoints" / "step-4" / "model.safetensors"))
    assert set(fisher) == trained  # no Fisher (nor gradient) of a frozen base weight
    assert sorted(n.split(".lora_")[0] for n in trained if ".lora_A." in n) == [
        "model.layers.1.mlp.down_proj", "model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj"]
    metrics = read_jsonl(run / "metrics.jsonl")
    assert metrics[0]["loss_reg"] == 0.0 and metrics[-1]["loss_reg"] > 0
    base_model = AutoModelForCausalLM.from_pretrained(tiny_model)
    adapters = adapter_count(base_model, 2, {"q_proj", "v_proj", "down_proj"}, first_layer=1)
    assert summary["trainable_parameters"] == adapters + base_model.model.embed_tokens.weight.numel()
    final = load_file(run / "final" / "model.safetensors")
    base = load_file(tiny_model / "model.safetensors")
    layer0 = [k for k in base if k.startswith("model.layers.0.")]
    assert layer0 and all(torch.equal(final[k], base[k].to(torch.bfloat16)) for k in layer0)
    assert not torch.equal(final["model.layers.1.self_attn.q_proj.weight"],
                           base["model.layers.1.self_attn.q_proj.weight"].to(torch.bfloat16))


def test_combinations_that_cannot_work_exit_2_naming_the_keys(tmp_path, tiny_model, corpus):
    cfg = make_config(tmp_path, tiny_model, corpus, train={
        "freeze_embeddings": True, "peft": {"method": "lora", "target_modules": ["q_proj", "lm_head"],
                                            "quant_type": "fp4", "r": 0}})
    out = cptkit("plan", str(write_config(tmp_path / "bad.yaml", cfg)))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "train.peft.r: must be > 0, got 0" in out.stderr
    cfg["train"]["peft"]["r"] = 8
    out = cptkit("plan", str(write_config(tmp_path / "bad.yaml", cfg)))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    for key in ("train.peft.quant_type: only used with train.peft.method qlora",
                "train.peft.target_modules: 'lm_head' is an embedding or output layer",
                "train.freeze_embeddings and train.peft.train_embeddings: both set"):
        assert key in out.stderr, key


def test_what_the_model_does_not_have_is_refused_before_any_data_is_prepared(tmp_path, tiny_model, corpus):
    cfg = make_config(tmp_path, tiny_model, corpus, train={"freeze_layers": 3, "peft": {"method": "lora"}})
    path = str(write_config(tmp_path / "layers.yaml", cfg))
    for command in ("plan", "train"):
        out = cptkit(command, path)
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
        assert "train.freeze_layers: 3 exceeds the model's 2 layers" in out.stderr, command
    cfg["train"] = {**cfg["train"], "freeze_layers": 0, "peft": {"method": "lora", "target_modules": ["qkv"]}}
    out = cptkit("train", str(write_config(tmp_path / "targets.yaml", cfg)))
    assert out.returncode == 2 and "'qkv' names no layer of LlamaForCausalLM (its decoder layers' linear layers: " \
        "q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)" in out.stderr
    assert not (tmp_path / "run" / "data").exists()


def test_qlora_plans_anywhere_and_trains_only_where_cuda_is(tmp_path, tiny_model, corpus):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the refusal is for machines without it")
    cfg = make_config(tmp_path, tiny_model, corpus, train={"peft": {"method": "qlora", "r": 8}})
    path = str(write_config(tmp_path / "qlora.yaml", cfg))
    plan = cptkit("plan", path)
    assert plan.returncode == 0, plan.stderr[-2000:]
    rows = [line.split() for line in plan.stdout.splitlines() if line.split()[:1] in (["qlora"], ["full"])]
    assert [r[0] for r in rows] == ["qlora", "full"]
    out = cptkit("train", path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "train.peft.method: qlora keeps the base weights in 4 bits" in out.stderr and "need a CUDA GPU" in out.stderr
    assert not (tmp_path / "run" / "data").exists()  # refused before preparing any data
