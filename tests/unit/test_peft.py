"""LoRA on tiny models built from configs (Llama untied, Qwen2 tied, GPT-2 with Conv1D layers):
the train.peft rules, adapters and what trains in full, the fused loss through the adapted model,
the KL reference without a second copy, merged and adapter exports, exact resume, EWC names."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from cptkit import checkpoint
from cptkit.config import load_config
from cptkit.distributed import setup
from cptkit.errors import UserError
from cptkit.modeling import prepare_for_training
from cptkit.peft.adapters import (
    apply_peft,
    base_lm,
    keep_frozen_in,
    method_summary,
    peft_param_groups,
    resolve_targets,
)
from cptkit.peft.config import PeftConfig, check_peft
from cptkit.peft.export import merged_state_dict, save_adapter
from cptkit.peft.reference import FrozenBase
from cptkit.regularizers.ewc import AnchorPenalty
from cptkit.regularizers.kl import KLToReference
from cptkit.schema import parse
from cptkit.train.losses import CausalLMLoss, chunked_loss, decoder_and_head, full_loss

V, H = 211, 32
LLAMA_LINEARS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def build(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "llama":
        return LlamaForCausalLM(LlamaConfig(vocab_size=V, hidden_size=H, intermediate_size=64, num_hidden_layers=2,
                                            num_attention_heads=4, num_key_value_heads=2))
    if kind == "qwen2-tied":
        return Qwen2ForCausalLM(Qwen2Config(vocab_size=V, hidden_size=H, intermediate_size=64, num_hidden_layers=2,
                                            num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True))
    return GPT2LMHeadModel(GPT2Config(vocab_size=V, n_embd=H, n_layer=2, n_head=4, n_positions=64,
                                      bos_token_id=0, eos_token_id=0))  # tied, Conv1D layers


KINDS = ["llama", "qwen2-tied", "gpt2"]


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("bases")
    for kind in KINDS:
        build(kind).save_pretrained(root / kind)
    return {kind: root / kind for kind in KINDS}


def load(folder):
    return AutoModelForCausalLM.from_pretrained(folder)


def lora(**kw) -> PeftConfig:
    return PeftConfig(method="lora", r=4, **kw)


def batch(seed: int, rows: int = 2, seq: int = 12) -> dict:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, V, (rows, seq), generator=gen)
    positions = torch.arange(seq).repeat(rows, 1)
    positions[0, 5:] -= 5  # two documents in the first row
    labels = torch.roll(ids, -1, 1)
    labels[:, -1] = labels[0, 4] = -100
    return {"input_ids": ids, "position_ids": positions, "labels": labels}


def train(peft_model, steps: int, lr: float = 1e-2, seed: int = 0):
    loss = CausalLMLoss(base_lm(peft_model), 5)
    opt = torch.optim.AdamW(peft_param_groups(loss, 0.01, 0.5), lr=lr)
    for s in range(steps):
        total, _, _ = loss(**batch(seed + s))
        total.backward()
        opt.step()
        opt.zero_grad()
    return loss, opt


@torch.no_grad()
def logits(model, b) -> torch.Tensor:
    was = model.training
    model.eval()
    out = model(input_ids=b["input_ids"], position_ids=b["position_ids"], use_cache=False).logits
    model.train(was)
    return out


# -- config ------------------------------------------------------------------------------------


def config(peft: dict | None = None, **train):
    cfg = load_config(None, raw={"model": {"name_or_path": "x/y"}, "data": {"domain": {"paths": ["a"]}},
                                 "train": train, "output_dir": "o"}, check_paths=False)
    problems: list[str] = []
    cfg.train.peft = parse(PeftConfig, peft or {}, "train.peft", problems)
    return cfg, problems


def test_ranges_and_types_are_named_by_dotted_key():
    _, problems = config({"method": "lora", "r": 0, "dropout": 1.0, "alpha": -1, "method2": 1})
    assert problems == [
        "train.peft.r: must be > 0, got 0",
        "train.peft.dropout: must lie in [0, 1), got 1.0",
        "train.peft.alpha: must be > 0, got -1.0",
        "train.peft.method2: unknown key (known keys here: alpha, double_quant, dropout, method, quant_type, r, "
        "rslora, target_modules, train_embeddings, train_lm_head)",
    ]


def test_every_combination_that_cannot_work_is_named():
    cfg, _ = config({"r": 8, "quant_type": "fp4"})
    assert check_peft(cfg) == [
        "train.peft.r: only used with train.peft.method lora or qlora (method is 'none')",
        "train.peft.quant_type: only used with train.peft.method lora or qlora (method is 'none')",
    ]
    cfg, _ = config({"method": "lora", "target_modules": ["q_proj", "lm_head"], "double_quant": False,
                     "train_embeddings": True, "train_lm_head": False},
                    freeze_embeddings=True)
    assert check_peft(cfg) == [
        "train.peft.double_quant: only used with train.peft.method qlora (method is 'lora')",
        "train.peft.target_modules: 'lm_head' is an embedding or output layer; those train in full "
        "(train.peft.train_embeddings, train.peft.train_lm_head) rather than through an adapter",
        "train.freeze_embeddings and train.peft.train_embeddings: both set; to keep the embeddings frozen under "
        "an adapter method, set train.peft.train_embeddings: false",
    ]
    cfg, _ = config({"method": "lora", "target_modules": [], "train_embeddings": False, "train_lm_head": False},
                    freeze_lm_head=True, embedding_lr_scale=0.5)
    assert check_peft(cfg) == [
        "train.peft.target_modules: an empty list adapts nothing; leave it unset for every linear layer of the "
        "decoder",
        "train.embedding_lr_scale: no matrix trains in full (train.peft.train_embeddings and train_lm_head are "
        "false), so it scales nothing; leave it at 1",
    ]
    assert check_peft(config({"method": "lora", "r": 128, "rslora": True}, embedding_lr_scale=0.2)[0]) == []


def test_qlora_needs_cuda_and_names_the_method(monkeypatch):
    cfg, _ = config({"method": "qlora"}, distributed={"strategy": "fsdp"})
    cfg.regularizer.kind = "ewc"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    problems = check_peft(cfg)
    assert problems[0].startswith("train.peft.method qlora with train.distributed.strategy fsdp:")
    assert problems[1].startswith("train.peft.method qlora with regularizer.kind ewc:")
    assert problems[2].startswith("train.peft.method: qlora keeps the base weights in 4 bits with bitsandbytes "
                                  "kernels, which need a CUDA GPU, and none is visible here; use method lora")
    assert len(check_peft(cfg, check_machine=False)) == 2  # e.g. `cptkit plan` on a machine without the GPU


# -- adapters ----------------------------------------------------------------------------------


def test_default_targets_are_every_linear_layer_of_the_decoder_never_the_output_layer():
    assert resolve_targets(build("llama"), None) == LLAMA_LINEARS
    assert resolve_targets(build("qwen2-tied"), None) == LLAMA_LINEARS
    assert resolve_targets(build("gpt2"), None) == ["c_attn", "c_proj", "c_fc"]  # Conv1D: GPT-2's linear layers


@pytest.mark.parametrize("kind", KINDS)
def test_adapters_train_with_the_embeddings_and_output_layer_in_full(kind):
    peft_model = apply_peft(build(kind), lora())
    lm = base_lm(peft_model)
    trainable = {n for n, p in lm.named_parameters() if p.requires_grad}
    embed, head = lm.get_input_embeddings(), lm.get_output_embeddings()
    names = {id(p): n for n, p in lm.named_parameters()}
    full = {names[id(embed.weight)], names[id(head.weight)]}  # one name when tied
    assert trainable - full == {n for n, _ in lm.named_parameters() if ".lora_A." in n or ".lora_B." in n}
    assert full <= trainable and (len(full) == 1) == (kind != "llama")
    # Exact count: r * (in + out) per adapted layer, plus V x H once when tied, twice when not.
    per_layer = {"llama": 4 * (2 * (H + H) + 2 * (H + 16) + 2 * (H + 64) + (64 + H)),
                 "qwen2-tied": 4 * (2 * (H + H) + 2 * (H + 16) + 2 * (H + 64) + (64 + H)),
                 "gpt2": 4 * ((H + 3 * H) + (H + H) + (H + 4 * H) + (4 * H + H))}[kind]
    summary = method_summary(lm, lora())
    assert summary["peft"]["adapter_parameters"] == 2 * per_layer
    assert summary["peft"]["full_parameters"] == V * H * (2 if kind == "llama" else 1)
    assert summary["trainable_parameters"] == 2 * per_layer + summary["peft"]["full_parameters"]
    assert summary["method"] == "lora" and summary["peft"]["r"] == 4
    assert summary["peft"]["target_modules"] == sorted(resolve_targets(build(kind), None))
    full = method_summary(build(kind), PeftConfig())
    assert full["method"] == "full" and full["peft"] is None
    assert full["trainable_parameters"] == full["total_parameters"] == summary["total_parameters"]


def test_what_cannot_be_adapted_is_refused_with_the_key():
    with pytest.raises(UserError, match=r"target_modules: 'qkv' names no layer of LlamaForCausalLM \(its decoder "
                                        r"layers' linear layers: q_proj, k_proj"):
        apply_peft(build("llama"), lora(target_modules=["qkv"]))
    with pytest.raises(UserError, match="'lm_head' is LlamaForCausalLM's embedding or output layer"):
        apply_peft(build("llama"), lora(target_modules=["lm_head"]))
    with pytest.raises(UserError, match="'input_layernorm' is a LlamaRMSNorm, not a linear layer"):
        apply_peft(build("llama"), lora(target_modules=["input_layernorm"]))
    with pytest.raises(UserError, match="train_embeddings and train.peft.train_lm_head: Qwen2ForCausalLM ties"):
        apply_peft(build("qwen2-tied"), lora(train_lm_head=False))
    with pytest.raises(UserError, match="train.freeze_layers: 3 exceeds the model's 2 layers"):
        apply_peft(build("llama"), lora(), freeze_layers=3)


def test_freeze_layers_leaves_the_first_layers_without_adapters():
    lm = base_lm(apply_peft(build("llama"), lora(target_modules=["q_proj", "v_proj"]), freeze_layers=1))
    adapted = sorted(n.split(".lora_A")[0] for n, _ in lm.named_parameters() if ".lora_A." in n)
    assert adapted == ["model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj"]


def test_full_trained_matrices_share_the_embedding_learning_rate():
    lm = base_lm(apply_peft(build("llama"), lora()))
    groups = peft_param_groups(CausalLMLoss(lm, 5), 0.01, 0.2)
    scaled = [p for g in groups if g["lr_scale"] == 0.2 for p in g["params"]]
    assert {id(p) for p in scaled} == {id(lm.model.embed_tokens.weight), id(lm.lm_head.weight)}
    adapters = [g for g in groups if g["lr_scale"] == 1.0]
    assert len(adapters) == 1 and adapters[0]["weight_decay"] == 0.01
    assert len(adapters[0]["params"]) == 2 * 7 * 2  # A and B of 7 layers in 2 decoder layers


def saved_for_backward(lm, b) -> int:
    """Bytes autograd keeps for backward in one bfloat16-autocast forward (the parameters not counted)."""
    params, seen = {p.data_ptr() for p in lm.parameters()}, {}

    def pack(t):
        if t.data_ptr() not in params:
            seen[(t.data_ptr(), t.dtype, tuple(t.shape))] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", dtype=torch.bfloat16):
        chunked_loss(lm, b, chunk=5)
    return sum(seen.values())


def test_frozen_weights_in_bfloat16_give_the_same_autocast_forward_and_keep_no_cast_copies():
    peft_model = apply_peft(build("llama"), lora())
    lm = base_lm(peft_model).train()
    b = batch(8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        before = logits(lm, b)
    kept_before = saved_for_backward(lm, b)
    count = keep_frozen_in(peft_model, torch.bfloat16)
    assert count == 2 * (2 * H * H + 2 * H * 16 + 3 * H * 64)  # every frozen linear weight of both layers
    assert all(p.dtype == torch.float32 for n, p in lm.named_parameters() if p.requires_grad or "norm" in n)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(logits(lm, b), before)
    # A float32 frozen weight is cast at every forward and the copy kept until backward: 2 bytes each.
    assert kept_before - saved_for_backward(lm, b) == 2 * count


# -- the loss through the adapted model --------------------------------------------------------


def test_the_fused_loss_needs_the_model_inside_the_peft_model():
    peft_model = apply_peft(build("llama"), lora())
    # On the PeftModel, base_model_prefix leads to the whole causal LM, not its decoder stack...
    decoder, _ = decoder_and_head(peft_model)
    assert isinstance(decoder, LlamaForCausalLM)
    # ...on the model inside it, to the adapted decoder; chunked and full losses agree there.
    lm = base_lm(peft_model).eval()
    b = batch(1)
    with torch.no_grad():
        for n, p in lm.named_parameters():
            if ".lora_B." in n:
                p.normal_(0, 0.01)  # B starts at zero, where A gets no gradient
    full = full_loss(lm, b)
    full.total.backward()
    grads = {n: p.grad.clone() for n, p in lm.named_parameters() if p.requires_grad}
    lm.zero_grad()
    chunked = chunked_loss(lm, b, chunk=5)
    chunked.total.backward()
    assert torch.allclose(chunked.total, full.total, rtol=1e-5)
    for n, p in lm.named_parameters():
        if p.requires_grad:
            assert torch.allclose(p.grad, grads[n], rtol=1e-4, atol=1e-6), n
            assert torch.count_nonzero(p.grad) > 0, n  # every adapter and both full matrices learn


def test_gradient_checkpointing_reaches_the_adapters_with_frozen_embeddings():
    lm = base_lm(apply_peft(build("llama"), lora(train_embeddings=False, train_lm_head=False)))
    prepare_for_training(lm, gradient_checkpointing=True, compile=False)
    lm.train()
    with torch.no_grad():
        for n, p in lm.named_parameters():
            if ".lora_B." in n:
                p.normal_(0, 0.01)
    chunked_loss(lm, batch(2), chunk=5).total.backward()
    grads = [p.grad for n, p in lm.named_parameters() if ".lora_A." in n]
    assert len(grads) == 14 and all(g is not None and torch.count_nonzero(g) > 0 for g in grads)


# -- KL to the base model without a second copy ------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_frozen_base_gives_the_base_models_logits_after_training(bases, kind):
    peft_model = apply_peft(load(bases[kind]), lora(dropout=0.1))
    base_lm(peft_model).train()  # from_pretrained leaves a model in eval mode; training runs in train mode
    reference = FrozenBase(peft_model)
    assert reference.extra_bytes() == V * H * 4 * (2 if kind == "llama" else 1)  # only the full-trained originals
    assert list(reference.state_dict()) == []  # nothing of it would enter a checkpoint
    train(peft_model, steps=3)
    lm = base_lm(peft_model)
    b = batch(7)
    base = logits(load(bases[kind]), b)
    assert (logits(lm, b) - base).abs().max() > 0.1  # the training model moved away from the base...
    assert torch.equal(reference(**b).logits, base)  # ...its adapters-off view with the originals did not
    decoder, head = decoder_and_head(reference)  # the chunked loss's path
    hidden = decoder(input_ids=b["input_ids"], position_ids=b["position_ids"], use_cache=False).last_hidden_state
    assert torch.equal(torch.nn.functional.linear(hidden, head.weight, head.bias), base)
    # The view left the training model as it was: train mode, adapters on and trainable.
    assert lm.training and all(p.requires_grad for n, p in lm.named_parameters() if ".lora_" in n)
    assert not torch.equal(logits(lm, b), base)


def test_kl_to_the_frozen_base_is_zero_at_the_start_and_equals_kl_to_a_loaded_copy_after(bases):
    peft_model = apply_peft(load(bases["llama"]), lora())
    lm = base_lm(peft_model).train()
    shared = KLToReference(FrozenBase(peft_model), 1.0, "all", 1, reverse=False)
    assert lm.training and all(p.requires_grad for n, p in lm.named_parameters() if ".lora_" in n)
    copy = KLToReference(load(bases["llama"]), 1.0, "all", 1, reverse=False)
    b = batch(3)
    replay = torch.zeros(2, dtype=torch.bool)
    at_start = chunked_loss(lm, b, 5, shared.reference(b, replay, coef=1.0))
    assert at_start.kl_sum.item() == 0.0  # B = 0 and the originals: the student is the reference
    train(peft_model, steps=3)
    mine = chunked_loss(lm, b, 5, shared.reference(b, replay, coef=1.0)).kl_sum
    theirs = chunked_loss(lm, b, 5, copy.reference(b, replay, coef=1.0)).kl_sum
    assert mine.item() > 1e-3 and torch.allclose(mine, theirs, rtol=1e-6)


# -- exports -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_merged_folder_loads_without_peft_and_adapter_folder_onto_the_base(bases, tmp_path, kind):
    from peft import PeftModel
    from safetensors import safe_open

    peft_model = apply_peft(load(bases[kind]), lora())
    train(peft_model, steps=3)
    lm = base_lm(peft_model)
    before = {k: v.clone() for k, v in lm.state_dict().items()}
    merged = merged_state_dict(peft_model)
    assert all(torch.equal(before[k], v) for k, v in lm.state_dict().items())  # the training model is untouched
    assert set(merged) == set(build(kind).state_dict())  # plain Hugging Face names
    checkpoint.export_model(lm, None, tmp_path / "final", torch.float32, merged)
    save_adapter(peft_model, tmp_path / "final-adapter", dtype=torch.float32, base_model_name_or_path=str(bases[kind]))
    assert checkpoint.is_committed(tmp_path / "final") and checkpoint.is_committed(tmp_path / "final-adapter")
    b = batch(5)
    expected = logits(lm, b)
    plain = load(tmp_path / "final")
    assert type(plain) is type(build(kind))  # no peft layer in it
    assert torch.allclose(logits(plain, b), expected, atol=1e-5, rtol=0)
    with safe_open(str(tmp_path / "final-adapter" / "adapter_model.safetensors"), "pt") as fh:
        names = fh.keys()  # a safe_open handle is not iterable itself
    full = sorted(k for k in names if ".lora_" not in k)
    embed = {"llama": "model.embed_tokens", "qwen2-tied": "model.embed_tokens", "gpt2": "transformer.wte"}[kind]
    assert full == sorted([f"base_model.model.{embed}.weight"] + (["base_model.model.lm_head.weight"]
                                                                   if kind == "llama" else []))
    loaded = PeftModel.from_pretrained(load(bases[kind]), tmp_path / "final-adapter")
    assert torch.allclose(logits(loaded, b), expected, atol=1e-6, rtol=0)


def test_merge_matches_peft_merge_and_unload(bases):
    import copy

    peft_model = apply_peft(load(bases["gpt2"]), lora(rslora=True))
    train(peft_model, steps=2)
    ours = merged_state_dict(peft_model)
    theirs = copy.deepcopy(peft_model).merge_and_unload().state_dict()
    assert set(theirs) <= set(ours)  # peft leaves out the tied alias lm_head.weight
    assert max(float((ours[k] - theirs[k]).abs().max()) for k in theirs) < 1e-6


# -- resume, regularizers ----------------------------------------------------------------------


def test_resumed_state_continues_to_bit_identical_adapters_and_embeddings(bases, tmp_path):
    """Dist.full_state / load_full_state work unchanged on the adapted model (1 process)."""
    dist = setup("float32", cpu=True)

    def fresh():
        torch.manual_seed(0)
        peft_model = apply_peft(load(bases["llama"]), lora(dropout=0.1))
        module = CausalLMLoss(base_lm(peft_model), 5)
        return dist.wrap(module, lambda m: torch.optim.AdamW(peft_param_groups(m, 0.01, 0.5), lr=1e-2),
                         config()[0].train.distributed, "float32")

    def step(module, optimizer, seed):
        module(**batch(seed))[0].backward()
        optimizer.step()
        optimizer.zero_grad()

    module, optimizer = fresh()
    for s in range(2):
        step(module, optimizer, s)
    weights, optim = dist.full_state(module, optimizer)
    at_save = {k: v.clone() for k, v in weights.items()}  # on CPU these are the live tensors
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    assert set(optim["state"]) == trainable  # optimizer state by name, for the trainable parameters only
    folder = checkpoint.save_state(tmp_path, 2, weights, optim, {"step": 2})  # RNG too: dropout draws
    for s in range(2, 4):
        step(module, optimizer, s)
    expected = {k: v.clone() for k, v in module.lm.state_dict().items()}

    module2, optimizer2 = fresh()
    w, o, _ = checkpoint.load_state(folder)
    dist.load_full_state(module2, optimizer2, w, o, where=str(folder))
    for s in range(2, 4):
        step(module2, optimizer2, s)
    assert all(torch.equal(v, expected[k]) for k, v in module2.lm.state_dict().items())
    moved = [k for k in trainable if not torch.equal(expected[k[3:]], at_save[k[3:]])]
    assert len(moved) == len(trainable)  # every adapter and full matrix changed in steps 3-4


def test_ewc_and_l2sp_see_the_adapters_and_full_trained_matrices(bases):
    peft_model = apply_peft(load(bases["llama"]), lora())
    lm = base_lm(peft_model)
    pen = AnchorPenalty(dict(lm.named_parameters()), weight=2.0)
    assert set(pen.params) == {n for n, p in lm.named_parameters() if p.requires_grad}
    assert not any(".base_layer." in n for n in pen.params)  # frozen weights: no anchor, no memory
    # At the start B = 0, so no adapter A receives a gradient: a Fisher estimated there is 0 for
    # every A, and EWC holds the adapters through B (and the full matrices) only.
    chunked_loss(lm, batch(4), chunk=5).total.backward()
    assert all(torch.count_nonzero(p.grad) == 0 for n, p in lm.named_parameters() if ".lora_A." in n)
    assert all(torch.count_nonzero(p.grad) > 0 for n, p in lm.named_parameters() if ".lora_B." in n)
    lm.zero_grad()
    train(peft_model, steps=2)
    expected = 0.5 * 2.0 * sum(float(((p.detach() - pen.anchors[n]) ** 2).sum()) for n, p in pen.params.items())
    assert pen.value() == pytest.approx(expected, rel=1e-6) and expected > 0


# -- QLoRA: the 4-bit path, run here on bitsandbytes' CPU backend ------------------------------


def test_qlora_adapters_over_4bit_weights_merge_into_a_plain_folder(bases, tmp_path):
    pytest.importorskip("bitsandbytes")
    from cptkit.peft.quantized import (
        is_4bit,
        plain_skeleton,
        prepare_quantized,
        quantization_config,
    )

    torch.manual_seed(0)
    # bitsandbytes' CPU inference kernel wants layers of at least one 64-weight block per row.
    LlamaForCausalLM(LlamaConfig(vocab_size=V, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2)).save_pretrained(tmp_path / "base")
    qcfg = PeftConfig(method="qlora", r=4)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "base", dtype=torch.float32, device_map="cpu",
                                                 quantization_config=quantization_config(qcfg, torch.bfloat16))
    assert sum(is_4bit(m) for m in model.modules()) == 14  # every decoder linear layer; lm_head stays full
    peft_model = apply_peft(prepare_quantized(model, gradient_checkpointing=False), qcfg)
    train(peft_model, steps=2, lr=1e-2)
    lm = base_lm(peft_model)
    merged = merged_state_dict(peft_model)
    assert set(merged) == set(load(tmp_path / "base").state_dict())  # dequantized, constants gone
    checkpoint.export_model(plain_skeleton(lm), None, tmp_path / "final", torch.float32, merged)
    b = batch(6)
    plain = load(tmp_path / "final")
    # The 4-bit forward computes in bfloat16: the merged float32 model agrees to bfloat16 rounding.
    assert (logits(plain, b) - logits(lm, b)).abs().max() < 5e-2
    base = logits(load(tmp_path / "base"), b)
    assert (logits(plain, b) - base).abs().max() > 0.1  # and carries the training


# -- start-up checks, step 0 and probes on the adapted model -----------------------------------


def test_adapted_model_at_step_0_is_the_base_model_for_checks_evaluation_and_probes(tiny_model):
    import contextlib

    from transformers import AutoTokenizer

    from cptkit.evaluation.probe_sets import ProbeSet, load_probe_set
    from cptkit.evaluation.probes import score_probe_sets
    from cptkit.train.checks import chunked_head_is_exact, ensure_document_masking

    tok = AutoTokenizer.from_pretrained(tiny_model)
    base = load(tiny_model).eval()
    lm = base_lm(apply_peft(load(tiny_model), lora()))
    cpu = torch.device("cpu")
    assert chunked_head_is_exact(lm, cpu)  # the fused loss applies to the adapted model
    assert ensure_document_masking(lm, cpu) == "position_ids"  # attention still stops at document boundaries
    ids = torch.randint(0, tok.vocab_size, (2, 20), generator=torch.Generator().manual_seed(0))
    b = {"input_ids": ids, "position_ids": torch.arange(20).repeat(2, 1)}
    assert torch.equal(logits(lm, b), logits(base, b))  # B = 0: step 0 evaluates the base model exactly
    probes = [ProbeSet("g", "x", load_probe_set("general", "builtin:general").probes[:6])]
    ours = score_probe_sets(lm, tok, probes, cpu, contextlib.nullcontext, chunk=7, new_tokens=6)
    theirs = score_probe_sets(base, tok, probes, cpu, contextlib.nullcontext, chunk=7, new_tokens=6)
    assert ours == theirs  # log-likelihoods, greedy continuations (generate with a cache), choices
