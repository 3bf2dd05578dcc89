"""What an adapter run leaves behind: merged plain model folders, and adapter folders beside them.

- `merged_state_dict(peft_model, weights)`: the weights of the adapted model under the plain
  Hugging Face names, each adapted matrix W replaced by W + scale * B @ A (transposed for GPT-2's
  Conv1D). Computed from the tensors, never by merging in place: peft's merge/unmerge adds and
  subtracts in floating point, which would change the training weights in their last bits and
  break bit-identical resume. `cptkit.checkpoint.export_model(base_lm(peft_model), tokenizer,
  folder, dtype, merged)` then writes a folder that `AutoModelForCausalLM.from_pretrained` loads
  with no peft installed.
- `save_adapter(peft_model, folder, weights)`: peft's own adapter format (adapter_config.json,
  adapter_model.safetensors) holding the adapters and the matrices trained in full (peft's
  `save_embedding_layers`), written atomically like the exports in checkpoint.py.
  `PeftModel.from_pretrained(base, folder)` reproduces the merged model's logits.

`weights` is the full state dict of the Hugging Face model under its own (adapted) names, as
`Dist.full_state` returns it; under FSDP the model's own tensors are shards, so it must be given.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from cptkit.checkpoint import commit_folder, export_model, written_whole
from cptkit.faults import crash_point
from cptkit.peft.adapters import ADAPTER, base_lm

PEFT_PREFIX = "base_model.model."  # PeftModel's state-dict names: this + the Hugging Face model's own


def lora_layers(lm: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """{module name: peft LoRA layer} of the adapted Hugging Face model."""
    from peft.tuners.lora import LoraLayer

    return {name: m for name, m in lm.named_modules() if isinstance(m, LoraLayer)}


def _owner(key: str, layers: dict) -> str | None:
    """The LoRA layer a state-dict key belongs to (its base layer or its adapter matrices)."""
    for marker in (".base_layer.", ".lora_"):
        if marker in key:
            owner = key[: key.index(marker)]
            if owner in layers:
                return owner
    return None


def delta_weight(layer, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """scale * B @ A in float32, laid out like the base weight (transposed for fan_in_fan_out)."""
    delta = (b.float() @ a.float()) * layer.scaling[ADAPTER]
    return delta.T if layer.fan_in_fan_out else delta


def merged_state_dict(peft_model, weights: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Plain Hugging Face names -> merged tensors (same dtypes as given); the model is not changed."""
    from cptkit.peft.quantized import dequantized_state

    lm = base_lm(peft_model)
    state = dict(lm.state_dict() if weights is None else weights)
    state = dequantized_state(lm, state)  # QLoRA: 4-bit base weights back to floating point
    layers = lora_layers(lm)
    out = {}
    for key, value in state.items():
        owner = _owner(key, layers)
        if owner is None:
            out[key] = value
            continue
        rest = key[len(owner) + 1 :]
        if not rest.startswith("base_layer."):
            continue  # lora_A / lora_B: merged into the weight below
        plain = f"{owner}.{rest.removeprefix('base_layer.')}"
        if rest == "base_layer.weight":
            a = state[f"{owner}.lora_A.{ADAPTER}.weight"]
            b = state[f"{owner}.lora_B.{ADAPTER}.weight"]
            value = (value.float() + delta_weight(layers[owner], a, b).to(value.device)).to(value.dtype)
        out[plain] = value
    return out


def adapter_state_dict(peft_model, weights: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The trainable tensors (adapters, and what trains in full) under PeftModel's names."""
    lm = base_lm(peft_model)
    state = lm.state_dict() if weights is None else weights
    trainable = [n for n, p in lm.named_parameters() if p.requires_grad]  # a tied matrix once
    return {PEFT_PREFIX + n: state[n] for n in trainable}


def save_adapter(peft_model, folder: Path, weights: dict[str, torch.Tensor] | None = None,
                 dtype: torch.dtype | None = None, base_model_name_or_path: str | None = None,
                 tokenizer=None) -> None:
    """Write `folder` (e.g. RUN_DIR/best-adapter) atomically: peft's adapter files, in `dtype`.

    `base_model_name_or_path` (the run's model.name_or_path) is recorded in adapter_config.json,
    where peft and other tools look for the base model.
    """
    folder = Path(folder)
    state = adapter_state_dict(peft_model, weights)
    if dtype is not None:
        state = {k: v.detach().to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    full_trained = any(".lora_" not in k for k in state)
    config = peft_model.peft_config[ADAPTER]
    if base_model_name_or_path is not None:
        config.base_model_name_or_path = base_model_name_or_path
    tmp = folder.with_name(f".tmp-{folder.name}-{os.getpid()}")
    with written_whole(tmp, folder):
        # save_embedding_layers: the embeddings and output layer trained in full go into the
        # adapter file under their base-model names; PeftModel.from_pretrained loads them back.
        peft_model.save_pretrained(str(tmp), state_dict=state, save_embedding_layers=full_trained,
                                   safe_serialization=True)
        crash_point(f"export:{folder.name}")
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        commit_folder(tmp, folder, point=f"export:{folder.name}")


def export_adapted(peft_model, tokenizer, folder: Path, dtype: torch.dtype, weights: dict[str, torch.Tensor],
                   base_model_name_or_path: str) -> None:
    """What an adapter run exports as `folder` (RUN_DIR/best, RUN_DIR/final): the merged plain model
    folder, then the adapter folder beside it (best-adapter, final-adapter), both in `dtype`.

    `weights`: the whole state dict, frozen base included (`Dist.full_state`). A 4-bit base is
    dequantized into the merged folder, written from a plain skeleton of the same architecture.
    """
    from cptkit.peft.quantized import is_4bit, plain_skeleton

    folder = Path(folder)
    lm = base_lm(peft_model)
    merged = merged_state_dict(peft_model, weights)
    plain = plain_skeleton(lm) if any(is_4bit(m) for m in lm.modules()) else lm
    export_model(plain, tokenizer, folder, dtype, merged)
    save_adapter(peft_model, adapter_folder(folder), weights, dtype, base_model_name_or_path, tokenizer)


def adapter_folder(folder: Path) -> Path:
    """RUN_DIR/best -> RUN_DIR/best-adapter."""
    return Path(folder).with_name(Path(folder).name + "-adapter")
