"""Stage 1 trains only the new embedding rows, exactly: under AdamW with weight decay every other
weight and row stays bit-identical and keeps zero optimizer moments; the new rows follow plain
AdamW; the boundary switches to the configured set; a state saved in stage 1 resumes to the same
weights as an uninterrupted run.
"""

from __future__ import annotations

import copy
import json
from types import SimpleNamespace

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from cptkit.errors import UserError
from cptkit.peft.config import PeftConfig
from cptkit.train.config import TrainConfig
from cptkit.train.optim import build_optimizer, set_lr
from cptkit.train.stage_plan import check_stages, describe_stages, recorded_start
from cptkit.train.stages import EmbeddingStages, NoStages, build_stages

ROWS, START, K = 128, 96, 4  # ids 96..127 are the "new" tokens


def tiny(tied: bool, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=ROWS, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=tied)
    return LlamaForCausalLM(config)


def train_cfg(**kw):
    base = dict(lr=1e-2, weight_decay=0.1, betas=[0.9, 0.95], eps=1e-8, embedding_lr_scale=1.0,
                new_embeddings_only_steps=0, new_token_start=None, peft=PeftConfig())
    return SimpleNamespace(**{**base, **kw})


def batch(step: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(step)
    return torch.randint(0, ROWS, (2, 12), generator=g)  # old and new ids, as text after expansion


def one_step(model, optimizer, stages, step: int, lr: float = 1e-2) -> dict[str, torch.Tensor]:
    set_lr(optimizer, lr)
    ids = batch(step)
    model(input_ids=ids, labels=ids).loss.backward()
    stages.mask_gradients(step)
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    with stages.update(optimizer, step):
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return grads


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("lr_scale", [1.0, 0.5])
def test_stage_one_moves_only_the_new_rows_and_keeps_their_optimizer_state_exact(tied, lr_scale):
    model = tiny(tied)
    start = copy.deepcopy(model.state_dict())
    optimizer = build_optimizer(model, train_cfg(embedding_lr_scale=lr_scale))
    stages = EmbeddingStages(model, optimizer, START, K)
    matrices = {"model.embed_tokens.weight"} | (set() if tied else {"lm_head.weight"})
    assert {id(p) for p in stages.rows} == {id(dict(model.named_parameters())[n]) for n in matrices}
    for step in range(K):
        one_step(model, optimizer, stages, step)
    now = copy.deepcopy(model.state_dict())
    for name, before in start.items():
        if name in matrices:
            assert torch.equal(now[name][:START], before[:START]), name  # old rows bit-identical
            assert not torch.equal(now[name][START:], before[START:]), name  # new rows trained
        elif name != "lm_head.weight" or not tied:
            assert torch.equal(now[name], before), name  # everything else bit-identical
    params = dict(model.named_parameters())
    for name, p in params.items():
        state = optimizer.state[p]
        rows = slice(0, START) if name in matrices else slice(None)
        assert torch.count_nonzero(state["exp_avg"][rows]) == 0 and torch.count_nonzero(state["exp_avg_sq"][rows]) == 0
    assert all(g["weight_decay"] in (0.0, 0.1) for g in optimizer.param_groups)  # restored after each step
    assert any(g["weight_decay"] == 0.1 for g in optimizer.param_groups)
    # Past the boundary everything trains.
    one_step(model, optimizer, stages, K)
    after = model.state_dict()
    unchanged = [n for n, _ in model.named_parameters() if torch.equal(after[n], now[n])]
    assert unchanged == []
    assert not torch.equal(after["model.embed_tokens.weight"][:START], now["model.embed_tokens.weight"][:START])


def test_new_rows_follow_plain_adamw_with_weight_decay():
    """The new rows, stepped inside the whole matrix in stage 1, equal AdamW run on those rows alone."""
    model = tiny(tied=True)
    optimizer = build_optimizer(model, train_cfg())
    stages = EmbeddingStages(model, optimizer, START, K)
    embed = model.get_input_embeddings().weight
    alone = torch.nn.Parameter(embed.detach()[START:].clone())
    reference = torch.optim.AdamW([alone], lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, foreach=True)
    for step in range(K):
        set_lr(optimizer, 1e-2)
        ids = batch(step)
        model(input_ids=ids, labels=ids).loss.backward()
        stages.mask_gradients(step)
        alone.grad = embed.grad[START:].clone()
        with stages.update(optimizer, step):
            optimizer.step()
        reference.step()
        optimizer.zero_grad(set_to_none=True)
        assert torch.equal(embed.detach()[START:], alone.detach()), step


def test_a_state_saved_in_stage_one_resumes_to_the_same_weights():
    total, saved_at = K + 3, 2
    straight = tiny(tied=False)
    opt = build_optimizer(straight, train_cfg())
    stages = EmbeddingStages(straight, opt, START, K)
    for step in range(total):
        one_step(straight, opt, stages, step)
        if step + 1 == saved_at:
            weights = copy.deepcopy(straight.state_dict())
            optim_state = copy.deepcopy(opt.state_dict())
    resumed = tiny(tied=False, seed=123)  # different starting weights: everything comes from the state
    resumed.load_state_dict(weights)
    opt2 = build_optimizer(resumed, train_cfg())
    opt2.load_state_dict(optim_state)
    stages2 = EmbeddingStages(resumed, opt2, START, K)
    for step in range(saved_at, total):
        one_step(resumed, opt2, stages2, step)
    for name, tensor in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], tensor), name


def test_off_by_default_and_built_from_the_config(tmp_path):
    assert isinstance(build_stages(train_cfg(), tiny(True), None, str(tmp_path)), NoStages)
    fields = TrainConfig()
    assert fields.new_embeddings_only_steps == 0 and fields.new_token_start is None
    (tmp_path / "vocab.json").write_text(json.dumps({"format": 1, "first_new_id": START, "embedding_rows": {"after": ROWS}}))
    assert recorded_start(str(tmp_path)) == START
    model = tiny(True)
    optimizer = build_optimizer(model, train_cfg())
    stages = build_stages(train_cfg(new_embeddings_only_steps=K), model, optimizer, str(tmp_path))
    assert isinstance(stages, EmbeddingStages) and stages.start == START and stages.active(K - 1) and not stages.active(K)
    explicit = build_stages(train_cfg(new_embeddings_only_steps=K, new_token_start=100), model, optimizer, str(tmp_path))
    assert explicit.start == 100
    with pytest.raises(UserError, match="new_token_start"):
        build_stages(train_cfg(new_embeddings_only_steps=K), model, optimizer, str(tmp_path / "none"))


def test_frozen_embeddings_cannot_have_a_stage_one(tmp_path):
    model = tiny(True)
    model.get_input_embeddings().requires_grad_(False)
    optimizer = build_optimizer(model, train_cfg())
    with pytest.raises(UserError, match="input embeddings are not trained"):
        EmbeddingStages(model, optimizer, START, K)
    cfg = SimpleNamespace(train=train_cfg(new_embeddings_only_steps=K, freeze_embeddings=True),
                          model=SimpleNamespace(name_or_path=str(tmp_path)))
    problems = check_stages(cfg)
    assert len(problems) == 2 and "vocab.json" in problems[0] and "freeze_embeddings" in problems[1]


def test_plan_lines_name_both_stages(tmp_path):
    (tmp_path / "vocab.json").write_text(json.dumps({"format": 1, "first_new_id": 512}))
    text = describe_stages(train_cfg(new_embeddings_only_steps=200), str(tmp_path), 1000, rows=1024)
    assert "1) steps 1-200: only the new rows" in text and "ids 512-1,023" in text
    assert "2) steps 201-1,000: the configured parameters" in text
    assert describe_stages(train_cfg(), str(tmp_path), 1000) == ""
    (tmp_path / "vocab.json").write_text(json.dumps({"format": 1, "first_new_id": 512, "embedding_rows": {"after": 640}}))
    assert "ids 512-639" in describe_stages(train_cfg(new_embeddings_only_steps=5), str(tmp_path), 3)
    assert "covers all 3 steps" in describe_stages(train_cfg(new_embeddings_only_steps=5), str(tmp_path), 3)


def test_zeroed_gradients_alone_would_let_weight_decay_move_the_old_rows():
    """Why stage 1 takes the weight decay out of the step: AdamW decays rows with zero gradient."""
    model = tiny(tied=True)
    optimizer = build_optimizer(model, train_cfg())
    stages = EmbeddingStages(model, optimizer, START, K)
    old = model.get_input_embeddings().weight.detach()[:START].clone()
    ids = batch(0)
    model(input_ids=ids, labels=ids).loss.backward()
    stages.mask_gradients(0)
    optimizer.step()  # a plain step, outside stages.update
    assert not torch.equal(model.get_input_embeddings().weight.detach()[:START], old)
    assert torch.allclose(model.get_input_embeddings().weight.detach()[:START], old * (1 - 1e-2 * 0.1))


@pytest.mark.parametrize("tied", [True, False])
def test_stage_one_under_lora_trains_only_the_new_rows_of_the_embedding_copies(tied):
    """LoRA with embed_tokens and lm_head trained in full (modules_to_save, the Chinese-LLaMA /
    Unsloth recipe): stage 1 finds the trained copies; adapters and old rows stay as they were."""
    peft = pytest.importorskip("peft")
    targets = ["embed_tokens"] + ([] if tied else ["lm_head"])
    lora = peft.get_peft_model(tiny(tied), peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                           modules_to_save=targets, init_lora_weights=False))
    optimizer = build_optimizer(lora, train_cfg())
    stages = EmbeddingStages(lora, optimizer, START, K)
    assert len(stages.rows) == len(targets) and all(p.requires_grad for p in stages.rows)
    trained = {n: p.detach().clone() for n, p in lora.named_parameters() if p.requires_grad}
    for step in range(K):
        one_step(lora, optimizer, stages, step)
    now = {n: p.detach().clone() for n, p in lora.named_parameters() if p.requires_grad}
    copies = [n for n in now if "modules_to_save" in n]
    assert len(copies) == len(targets)
    for name in now:
        if name in copies:
            assert torch.equal(now[name][:START], trained[name][:START])
            assert not torch.equal(now[name][START:], trained[name][START:])
        else:
            assert torch.equal(now[name], trained[name]), name  # the LoRA adapters
    one_step(lora, optimizer, stages, K)
    assert all(not torch.equal(p.detach(), now[n]) for n, p in lora.named_parameters() if "lora_" in n)


def test_row_offsets_of_a_sharded_tensor(tmp_path):
    """FSDP parameters and gradients are DTensors holding a slice of rows: the mask and the decay
    address their local rows (here one process, which holds them all)."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    from cptkit.train.stages import _local

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        mesh = init_device_mesh("cpu", (1,))
        full = torch.arange(ROWS * 2, dtype=torch.float32).reshape(ROWS, 2)
        sharded = distribute_tensor(full.clone(), mesh, [Shard(0)])
        local, first = _local(sharded, START)
        assert first == START and local.shape == full.shape
        local[:first].zero_()
        assert torch.count_nonzero(sharded.full_tensor()[:START]) == 0
        assert torch.equal(sharded.full_tensor()[START:], full[START:])
    finally:
        dist.destroy_process_group()
