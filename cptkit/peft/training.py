"""What `cptkit train` calls under `train.peft`, one function per place in the core.

- `check_against_model(cfg)`: the rules that need the model, on the meta device, before any
  data is prepared (`cptkit plan` and `cptkit train`).
- `load_options(cfg, device)`: extra `from_pretrained` arguments (QLoRA: 4-bit quantisation and
  the process's device); `modeling.load_model` passes them on.
- `adapt(model, cfg)`: freezing for full training, or the adapters (`adapters.apply_peft`) and,
  for QLoRA, peft's preparation of the 4-bit model. Returns the PeftModel or None.
- `store_frozen_low(peft_model, cfg)`: under LoRA with bfloat16 / float16 autocast the frozen
  linear weights are stored in the compute dtype (`adapters.keep_frozen_in`): the same forward,
  2 bytes per frozen weight instead of 4 + 2. After the start-up checks that run in float32.
- `kl_reference(peft_model, cfg, device)`: the KL reference without a second model, and
  `bind_reference` for FSDP, where it must run with the weights gathered.
- `base_fingerprint(lm)` / `check_same_base`: adapter checkpoints hold the trainable weights
  only and the frozen base is reloaded from `model.name_or_path` on resume; a digest of the
  frozen weights, saved with each checkpoint, refuses a resume onto a base that changed.
- `adapted_from_state(cfg, folder)`: the adapted model of an adapter checkpoint, for `cptkit eval`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path

import torch

from cptkit.errors import UserError
from cptkit.peft.adapters import apply_peft, base_lm, keep_frozen_in
from cptkit.peft.config import machine_problems, peft_of

log = logging.getLogger("cptkit")

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
SAMPLE = 4096  # values per frozen tensor in the fingerprint


def require_machine(cfg) -> None:
    """Refuse (exit 2) a method this machine cannot run, before any data is prepared."""
    problems = machine_problems(cfg)
    if problems:
        raise UserError("train.peft: this machine cannot run the configured method:", problems)


def check_against_model(cfg) -> None:
    """The rules of train.peft that need the model (target_modules naming no linear layer, a tied
    output layer trained apart from the embeddings, train.freeze_layers beyond the layers), on the
    architecture built on the meta device from its config.json: no weights are read, and the run
    is refused (exit 2) before any data is prepared. Nothing to check when the config cannot be
    read here (loading the model then says why)."""
    pc = peft_of(cfg)
    if not pc.active:
        return
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        hf_config = AutoConfig.from_pretrained(cfg.model.name_or_path, revision=cfg.model.revision,
                                               trust_remote_code=cfg.model.trust_remote_code)
    except (OSError, ValueError):
        return
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf_config, trust_remote_code=cfg.model.trust_remote_code)
    # The same adapters as training adds, over full-precision layers (QLoRA's are linear layers too).
    apply_peft(model, dataclasses.replace(pc, method="lora"), cfg.train.freeze_layers, quiet=True)


def load_options(cfg, device: torch.device) -> dict:
    """Extra `from_pretrained` arguments for the configured method ({} but for QLoRA)."""
    pc = peft_of(cfg)
    if pc.method != "qlora":
        return {}
    from cptkit.peft.quantized import quantization_config

    # The 4-bit kernels compute in the run's precision (bfloat16 in the recipes); the weights are
    # quantised while loading, on this process's device.
    compute = DTYPES[cfg.model.dtype]
    return {"quantization_config": quantization_config(pc, compute), "device_map": {"": device}}


def adapt(model: torch.nn.Module, cfg):
    """Freeze what train.* asks (full training: returns None) or add the adapters (returns the
    PeftModel; `model` is adapted in place and stays the Hugging Face model that trains)."""
    pc, t = peft_of(cfg), cfg.train
    if not pc.active:
        from cptkit.train.freezing import apply_freezing

        apply_freezing(model, t)
        return None
    if pc.method == "qlora":
        from cptkit.peft.quantized import prepare_quantized

        prepare_quantized(model, t.gradient_checkpointing)
    return apply_peft(model, pc, t.freeze_layers)


def store_frozen_low(peft_model, cfg) -> int:
    """LoRA under autocast: the frozen linear weights in the compute dtype; returns how many."""
    if peft_model is None or peft_of(cfg).method != "lora" or cfg.model.dtype == "float32":
        return 0
    count = keep_frozen_in(peft_model, DTYPES[cfg.model.dtype])
    log.info("train.peft: %s frozen linear weights stored in %s (the %s forward is the same)",
             f"{count:,}", cfg.model.dtype, cfg.model.dtype)
    return count


def kl_reference(peft_model, cfg, dist):
    """The starting model for regularizer.kind kl: the training model with its adapters off and
    the original embeddings and output layer (`reference.FrozenBase`), on the run's device."""
    from cptkit.peft.reference import FrozenBase

    # Under FSDP the live output layer is a shard outside the model's forward; the reference keeps
    # its own copy of the original even when the output layer is frozen.
    sharded = dist.world_size > 1 and cfg.train.distributed.strategy == "fsdp"
    dtype = DTYPES[cfg.regularizer.reference_dtype]
    reference = FrozenBase(peft_model, dtype, own_head=sharded).to(dist.device)
    log.info("regularizer kl: the base model is the training model with its adapters off; %s MiB of "
             "original matrices kept instead of a second model", f"{reference.extra_bytes() / 2**20:,.1f}")
    return reference


def bind_reference(regularizer, dist, module: torch.nn.Module) -> None:
    """Under FSDP, run the KL reference with the weights gathered (as the start-up checks run)."""
    from cptkit.peft.reference import FrozenBase

    kl = regularizer.kl
    if kl is not None and isinstance(kl.model, FrozenBase) and dist.strategy == "fsdp":
        kl.model.runner = lambda fn: dist.call_gathered(module, lambda lm: fn())


def base_fingerprint(lm: torch.nn.Module) -> str | None:
    """A digest of the frozen weights: names, shapes, dtypes and a strided sample of each one's
    values (any other model or checkpoint differs in the sample). None when nothing is frozen."""
    digest, frozen = hashlib.sha256(), False
    for name, p in lm.named_parameters():
        if p.requires_grad:
            continue
        frozen = True
        flat = p.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // SAMPLE)].cpu().contiguous()
        digest.update(f"{name}:{tuple(p.shape)}:{p.dtype};".encode())
        digest.update(sample.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest() if frozen else None


def check_same_base(saved: str | None, now: str | None, where: str) -> None:
    """Refuse to resume adapters onto frozen weights other than those they were trained on
    (`where`: the option and folder, for the message)."""
    if saved != now:
        raise UserError(
            f"{where}: the frozen base weights loaded from model.name_or_path are not the ones this "
            "run trained its adapters on (their fingerprint differs; adapter checkpoints hold the trainable "
            "weights only). Restore the original model folder, or start a new run."
        )


def adapted_from_state(cfg, folder: Path, device: torch.device) -> torch.nn.Module:
    """The adapted Hugging Face model of an adapter run's checkpoint `folder` (checkpoints/step-N)."""
    from safetensors.torch import load_file

    from cptkit.modeling import load_model

    peft_model = adapt(load_model(cfg.model, **load_options(cfg, device)), cfg)
    lm = base_lm(peft_model)
    weights = load_file(str(folder / "model.safetensors"))
    wanted = {n for n, p in lm.named_parameters() if p.requires_grad}
    if set(weights) != wanted:
        raise UserError(f"--checkpoint {folder}: its weights are not those of this config's train.peft adapters "
                        f"(missing {sorted(wanted - set(weights))[:3]}, unexpected {sorted(set(weights) - wanted)[:3]})")
    state = json.loads((folder / "trainer_state.json").read_text())
    check_same_base(state.get("frozen_base"), base_fingerprint(lm), f"--checkpoint {folder}")
    lm.load_state_dict(weights, strict=False)
    return lm
