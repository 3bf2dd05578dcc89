"""Worker for test_moe_fsdp.py, run under torchrun: shards a tiny Mixtral with cptkit's FSDP set-up
and reports which parameters each sharded unit holds, and the loss with router losses on."""

from __future__ import annotations

import json
import sys
from types import SimpleNamespace

import torch
from transformers import AutoModelForCausalLM

from cptkit.distributed import setup, shard
from cptkit.train.losses import CausalLMLoss
from cptkit.train.moe import router_spec
from tests.architectures import VOCAB, tiny_config


def main(out: str) -> None:
    dist = setup("float32", cpu=True)
    torch.manual_seed(0)
    lm = AutoModelForCausalLM.from_config(tiny_config("mixtral"), attn_implementation="eager")
    module = CausalLMLoss(lm, 16, router_spec(lm.config))
    cfg = SimpleNamespace(sharding="full", reshard_after_forward=True, cpu_offload=False, reduce_dtype="float32")
    from torch.distributed.device_mesh import init_device_mesh

    shard(module, init_device_mesh("cpu", (dist.world_size,)), cfg, "float32")
    names = {id(p): n for n, p in module.named_parameters()}
    units = {}
    for name, sub in module.named_modules():
        state = getattr(sub, "_get_fsdp_state", None)
        group = state()._fsdp_param_group if state is not None else None
        if group is not None:
            units[name or "<root>"] = sorted(names[id(p.sharded_param)] for p in group.fsdp_params)
    x = torch.randint(3, VOCAB, (2, 16), generator=torch.Generator().manual_seed(dist.rank))
    labels = torch.roll(x, -1, 1)
    total, _, _, aux = module(x, torch.arange(16).expand(2, 16), labels)
    total.backward()
    experts = lm.model.layers[0].mlp.experts.gate_up_proj
    if dist.is_main:
        with open(out, "w") as fh:
            json.dump({"units": units, "world": dist.world_size, "aux": aux.tolist(), "total": float(total),
                       "expert_shard": list(experts.to_local().shape), "expert_full": list(experts.shape),
                       "expert_grad": experts.grad is not None}, fh)
    dist.barrier()


if __name__ == "__main__":
    main(sys.argv[1])
