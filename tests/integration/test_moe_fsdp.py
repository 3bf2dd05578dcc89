"""FSDP shards a mixture-of-experts model's experts inside its decoder-layer units (2 processes, gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from cptkit.train.losses import CausalLMLoss
from cptkit.train.moe import router_spec
from tests.architectures import VOCAB, tiny_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_experts_are_sharded_with_their_layer_and_the_router_loss_is_unchanged(tmp_path):
    out = tmp_path / "units.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(ROOT / "tests/integration/moe_fsdp_worker.py"), str(out)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    units = report["units"]
    assert set(units) == {"<root>", "lm.model.layers.0", "lm.model.layers.1"}
    for layer in ("0", "1"):
        names = units[f"lm.model.layers.{layer}"]
        assert f"lm.model.layers.{layer}.mlp.experts.gate_up_proj" in names
        assert f"lm.model.layers.{layer}.mlp.experts.down_proj" in names
        assert f"lm.model.layers.{layer}.mlp.gate.weight" in names  # the router travels with its experts
    assert not any("experts" in n or "gate" in n for n in units["<root>"])
    # The fused expert weights [experts, 2 x intermediate, hidden] are split by expert across processes.
    assert report["expert_full"][0] == 4 and report["expert_shard"][0] == 2 and report["expert_grad"]
    # Rank 0's loss and router loss under FSDP equal one unsharded process on the same input.
    torch.manual_seed(0)
    lm = AutoModelForCausalLM.from_config(tiny_config("mixtral"), attn_implementation="eager")
    x = torch.randint(3, VOCAB, (2, 16), generator=torch.Generator().manual_seed(0))
    total, _, _, aux = CausalLMLoss(lm, 16, router_spec(lm.config))(x, torch.arange(16).expand(2, 16), torch.roll(x, -1, 1))
    assert report["total"] == pytest.approx(float(total), rel=1e-5)
    assert report["aux"] == pytest.approx(aux.tolist(), rel=1e-5)
