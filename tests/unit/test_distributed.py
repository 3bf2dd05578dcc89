"""One checkpoint format for every strategy, config checks for train.distributed, and evaluation
that runs the same number of forwards on every process (as sharded models need)."""

import contextlib
import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from cptkit import checkpoint
from cptkit.config import load_config
from cptkit.data.prepare import prepare
from cptkit.distributed import hybrid_shape, setup, tied_aliases
from cptkit.errors import UserError
from cptkit.evaluation.perplexity import build_eval_set, evaluate
from cptkit.train.losses import CausalLMLoss
from cptkit.train.optim import build_optimizer


def llama(tied: bool) -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=101, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                        num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=tied))


def train_cfg():
    return load_config(None, raw={"model": {"name_or_path": "x/y"}, "data": {"domain": {"paths": ["a"]}},
                                  "output_dir": "o"}, check_paths=False).train


def one_step(module, optimizer, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 101, (2, 9), generator=gen)
    total, _, _ = module(input_ids=ids, position_ids=torch.arange(9).repeat(2, 1), labels=torch.roll(ids, -1, 1))
    total.backward()
    optimizer.step()
    optimizer.zero_grad()


def fresh(tied: bool, dist):
    return dist.wrap(CausalLMLoss(llama(tied), 4), lambda m: build_optimizer(m, train_cfg()), train_cfg().distributed,
                     "float32")


@pytest.mark.parametrize("tied", [True, False])
def test_full_state_round_trip_continues_exactly(tmp_path, tied):
    dist = setup("float32", cpu=True)
    module, optimizer = fresh(tied, dist)
    one_step(module, optimizer, seed=1)
    weights, optim = dist.full_state(module, optimizer)
    # Weights under the model's own names, a tied weight once; optimizer state by parameter name.
    assert set(weights) == set(module.lm.state_dict()) - ({"lm_head.weight"} if tied else set())
    assert set(optim["state"]) == {n for n, _ in module.named_parameters()}
    folder = checkpoint.save_state(tmp_path, 1, weights, optim, {"step": 1})
    one_step(module, optimizer, seed=2)
    expected = {k: v.clone() for k, v in module.lm.state_dict().items()}

    module2, optimizer2 = fresh(tied, dist)
    with torch.no_grad():
        for p in module2.parameters():
            p.add_(1.0)  # unlike the saved weights, so that loading has to overwrite them
    w, o, state = checkpoint.load_state(folder)
    assert state == {"step": 1}
    dist.load_full_state(module2, optimizer2, w, o, where=str(folder))
    if tied:
        assert module2.lm.lm_head.weight is module2.lm.model.embed_tokens.weight
    one_step(module2, optimizer2, seed=2)
    for k, v in module2.lm.state_dict().items():
        assert torch.equal(v, expected[k]), k


def test_state_of_another_model_or_format_is_refused(tmp_path):
    dist = setup("float32", cpu=True)
    module, optimizer = fresh(True, dist)
    weights, optim = dist.full_state(module, optimizer)
    wrong = {k: v for k, v in weights.items() if k != "model.norm.weight"}
    with pytest.raises(UserError, match=r"ckpt: weights do not fit this model \(missing \['lm.model.norm.weight'\]"):
        dist.load_full_state(module, optimizer, wrong, optim, where="ckpt")
    by_index = optimizer.state_dict()  # what a plain optimizer.state_dict() holds: integer keys
    by_index["state"] = {0: {}}
    with pytest.raises(UserError, match="optimizer state by parameter index"):
        dist.load_full_state(module, optimizer, weights, by_index, where="ckpt")


def test_tied_aliases_name_the_second_registration():
    assert tied_aliases(llama(True)) == {"lm_head.weight": "model.embed_tokens.weight"}
    assert tied_aliases(llama(False)) == {}


def test_hybrid_shard_groups_must_divide_the_processes():
    assert hybrid_shape(16, 8) == (2, 8)
    assert hybrid_shape(2, 1) == (2, 1)
    with pytest.raises(UserError, match="shard_group_size: 3 does not divide the 8 processes"):
        hybrid_shape(8, 3)


def config_problems(distributed: dict, dtype: str = "bfloat16") -> list[str]:
    raw = {"model": {"name_or_path": "x/y", "dtype": dtype}, "data": {"domain": {"paths": ["a"]}},
           "train": {"distributed": distributed}, "output_dir": "o"}
    try:
        load_config(None, raw=raw, check_paths=False)
    except UserError as exc:
        return exc.problems
    return []


def test_distributed_keys_are_checked_together():
    assert config_problems({"strategy": "fsdp", "sharding": "hybrid", "shard_group_size": 8}) == []
    assert config_problems({"strategy": "ddp", "sharding": "hybrid", "cpu_offload": True}) == [
        "train.distributed.sharding: applies to strategy fsdp only (strategy is ddp)",
        "train.distributed.cpu_offload: applies to strategy fsdp only (strategy is ddp)",
    ]
    problems = config_problems({"strategy": "fsdp", "shard_group_size": 0}, dtype="float16")
    assert problems[0] == "train.distributed.shard_group_size: must be > 0, got 0"
    assert problems[1].startswith("train.distributed.strategy: fsdp trains in model.dtype float32 or bfloat16")
    assert problems[2] == "train.distributed.shard_group_size: applies to sharding: hybrid only"
    assert config_problems({"strategy": "zero3"})[0].startswith("train.distributed.strategy:")


def test_every_process_runs_as_many_eval_forwards(tmp_path, tiny_model):
    data = tmp_path / "eval.jsonl"
    data.write_text("".join(json.dumps({"text": f"document {i} " + "word " * (3 + 5 * i)}) + "\n" for i in range(5)))
    cfg = load_config(None, raw={
        "model": {"name_or_path": str(tiny_model), "dtype": "float32"},
        "data": {"seq_len": 16, "domain": {"paths": [str(data)]}, "eval": {"domain": {"paths": [str(data)]}},
                 "num_workers": 1},
        "output_dir": str(tmp_path / "run"),
    })
    manifests = prepare(cfg)
    es = build_eval_set("domain", [(cfg.prepared_dir / "eval-domain", manifests["eval-domain"])], 16, 10**6)
    es.windows = es.windows[:5]  # 3 windows for process 0 (2 micro batches of 2), 2 for process 1 (1)
    batches = [-(-len(es.windows[rank::2]) // 2) for rank in (0, 1)]
    assert batches[0] != batches[1]  # on their own, the two processes would run different numbers of forwards
    from transformers import AutoModelForCausalLM

    loss = CausalLMLoss(AutoModelForCausalLM.from_pretrained(tiny_model).eval(), None)
    calls, tokens = [], []
    for rank in (0, 1):
        def counted(**batch):
            calls[-1] += 1
            return loss(**batch)

        calls.append(0)
        r = evaluate(counted, [es], seq_len=16, micro_batch_size=2, device=torch.device("cpu"),
                     autocast=contextlib.nullcontext, rank=rank, world_size=2)
        tokens.append(r["domain_tokens"])
    whole = evaluate(loss, [es], seq_len=16, micro_batch_size=2, device=torch.device("cpu"),
                     autocast=contextlib.nullcontext)
    assert calls == [max(batches)] * 2
    assert sum(tokens) == whole["domain_tokens"]  # the extra forward is not counted
