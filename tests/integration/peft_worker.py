"""One LoRA training run of a few steps, in 1 process or under torchrun (gloo): the optimizer step
of cptkit's loop (global batch split over processes, the loss a mean over the global batch's
targets), on the real `Dist` (DDP or FSDP2), with the full-state checkpoint format.

    python tests/integration/peft_worker.py BASE_DIR OUT_DIR --strategy ddp|fsdp [--resume STATE] [--bfloat16]

--bfloat16: bfloat16 autocast (FSDP: bfloat16 weights gathered) with the frozen linear weights
stored in bfloat16 (`keep_frozen_in`), the adapters and full-trained matrices float32.

Writes OUT_DIR/losses.json, OUT_DIR/final.safetensors (every weight, gathered), a resumable
state at --save-at, OUT_DIR/final/ (merged) and OUT_DIR/final-adapter/ (peft).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

from cptkit import checkpoint  # noqa: E402
from cptkit.config import DistributedConfig  # noqa: E402
from cptkit.distributed import setup  # noqa: E402
from cptkit.peft.adapters import apply_peft, base_lm, keep_frozen_in, peft_param_groups  # noqa: E402
from cptkit.peft.config import PeftConfig  # noqa: E402
from cptkit.peft.export import merged_state_dict, save_adapter  # noqa: E402
from cptkit.peft.reference import FrozenBase  # noqa: E402
from cptkit.train.losses import CausalLMLoss  # noqa: E402

ROWS, MICRO, SEQ = 8, 2, 16


def step_rows(step: int, vocab: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The global batch of optimizer step `step`: the same on every process, whatever their count."""
    gen = torch.Generator().manual_seed(1000 + step)
    ids = torch.randint(0, vocab, (ROWS, SEQ), generator=gen)
    positions = torch.arange(SEQ).repeat(ROWS, 1)
    positions[::2, 7:] -= 7  # a second document in every other row
    labels = torch.roll(ids, -1, 1)
    labels[:, -1] = -100
    labels[::2, 6] = -100  # no target across the document boundary
    return ids, positions, labels


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("out")
    ap.add_argument("--strategy", default="ddp")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--save-at", type=int, default=2)
    ap.add_argument("--resume", default=None)
    ap.add_argument("--bfloat16", action="store_true")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)  # the adapters' random initialisation: the same in every process
    dtype = "bfloat16" if args.bfloat16 else "float32"
    dist = setup(dtype, cpu=True)
    peft_model = apply_peft(AutoModelForCausalLM.from_pretrained(args.base), PeftConfig(method="lora", r=4, dropout=0.0))
    vocab = base_lm(peft_model).config.vocab_size
    if args.bfloat16:
        keep_frozen_in(peft_model, torch.bfloat16)
    reference = FrozenBase(peft_model)  # before any update: the starting embeddings and output layer
    module, optimizer = dist.wrap(
        CausalLMLoss(base_lm(peft_model), 8),
        lambda m: torch.optim.AdamW(peft_param_groups(m, 0.01, 0.5), lr=1e-2, foreach=True),
        DistributedConfig(strategy=args.strategy), dtype)
    for group in optimizer.param_groups:
        group["lr"] = 1e-2 * group["lr_scale"]
    start, losses = 0, {}
    if args.resume:
        weights, optim, state = checkpoint.load_state(Path(args.resume))
        dist.load_full_state(module, optimizer, weights, optim, where=args.resume)
        start = state["step"]
    for step in range(start, args.steps):
        ids, positions, labels = (t[dist.rank :: dist.world_size] for t in step_rows(step, vocab))
        global_targets = int((step_rows(step, vocab)[2] != -100).sum())
        scale = dist.world_size / global_targets
        total = torch.zeros((), dtype=torch.float64)
        for i in range(0, len(ids), MICRO):
            last = i + MICRO >= len(ids)
            with dist.gradient_sync(module, sync=last):
                with dist.autocast():
                    loss_sum, _, _ = module(input_ids=ids[i : i + MICRO], position_ids=positions[i : i + MICRO],
                                            labels=labels[i : i + MICRO])
                dist.precision.backward(loss_sum * scale)
            total += loss_sum.detach().double()
        dist.clip_grad_norm(module, optimizer, 1.0)
        dist.optimizer_step(optimizer, apply=True)
        optimizer.zero_grad(set_to_none=True)
        losses[step + 1] = float(dist.all_reduce_sum(total)) / global_targets
        if step + 1 == args.save_at:
            weights, optim = dist.full_state(module, optimizer)
            if dist.is_main:
                checkpoint.save_state(out, step + 1, weights, optim, {"step": step + 1})
            dist.barrier()
    # The KL reference after training, on whole weights (gathered under FSDP), both loss paths.
    ids, positions, _ = step_rows(0, vocab)
    inputs = {"input_ids": ids[:2], "position_ids": positions[:2], "use_cache": False}
    with dist.autocast():
        logits = dist.call_gathered(module, lambda lm: reference(**inputs).logits).float()
        hidden = dist.call_gathered(module, lambda lm: reference.decoder(**inputs).last_hidden_state).float()
    weights, _ = dist.full_state(module)
    merged = merged_state_dict(peft_model, weights) if dist.is_main else {}
    if dist.is_main:
        save_file({k: v.contiguous() for k, v in weights.items()}, str(out / "final.safetensors"))
        checkpoint.export_model(base_lm(peft_model), None, out / "final", torch.float32, merged)
        save_adapter(peft_model, out / "final-adapter", weights, torch.float32, base_model_name_or_path=args.base)
        (out / "losses.json").write_text(json.dumps(losses))
        head = reference.get_output_embeddings()
        save_file({"logits": logits.contiguous(), "hidden_logits": (hidden @ head.weight.float().T).contiguous()},
                  str(out / "reference.safetensors"))
    dist.barrier()


if __name__ == "__main__":
    main()
