"""LoRA adapters on a loaded Hugging Face model, with the embeddings and output layer trained in full.

`apply_peft(model, cfg)` calls peft's `get_peft_model` with adapters on every linear layer of the
decoder layers (or the layers named in `train.peft.target_modules`), then makes the input
embeddings and the output layer trainable again *as the base model's own weights*. It returns
the `PeftModel`; training runs on the Hugging Face model inside it (`base_lm`), whose modules
peft has changed in place. Why those two choices:

- The loss module gets `base_lm(peft_model)`, not the PeftModel: the fused chunked loss
  (`cptkit.train.losses.decoder_and_head`) reads `getattr(model, model.base_model_prefix)`,
  which on a PeftModel is the whole causal LM (peft forwards attribute lookups to the model
  it wraps), not the decoder stack. On the inner model it is the (adapted) decoder, and
  `get_output_embeddings()` the plain output layer.
- Embeddings and output layer are unfrozen in place rather than copied into peft's
  `modules_to_save`: a tied output layer stays one matrix; the output layer stays an
  `nn.Linear`, so the chunked loss still applies (a `ModulesToSaveWrapper` is not one); the
  optimizer finds the embeddings with `get_input_embeddings()` as in full training; FSDP
  shards them in the root unit as before; and no copy exists unless KL needs the originals
  (`reference.FrozenBase`). `export.save_adapter` saves them beside the adapters with peft's
  own `save_embedding_layers`, which `PeftModel.from_pretrained` loads back.
"""

from __future__ import annotations

import logging
import warnings

import torch

from cptkit.errors import UserError
from cptkit.modeling import decoder_layers
from cptkit.peft.config import PeftConfig

log = logging.getLogger("cptkit")

ADAPTER = "default"  # peft's adapter name; cptkit trains one adapter


def base_lm(peft_model) -> torch.nn.Module:
    """The Hugging Face model inside a PeftModel (adapted in place): what the loss module wraps."""
    return peft_model.get_base_model()


def _linear_types() -> tuple[type, ...]:
    # Conv1D: GPT-2's linear layers (weights stored transposed).
    from transformers.pytorch_utils import Conv1D

    return (torch.nn.Linear, Conv1D)


def find_stack(model: torch.nn.Module) -> tuple[str, torch.nn.ModuleList] | None:
    """(dotted name, module list) of the model's decoder layers (its `_no_split_modules` blocks)."""
    layers = decoder_layers(model)
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and layers and list(module) == layers:
            return name, module
    return None


def decoder_stack(model: torch.nn.Module, key: str = "train.peft.target_modules") -> tuple[str, torch.nn.ModuleList]:
    """`find_stack`, or a UserError naming `key` (what needs the layers)."""
    found = find_stack(model)
    if found is None:
        raise UserError(f"{key}: cannot find the decoder layers of {type(model).__name__} (it names no "
                        "_no_split_modules block class)" + ("; give train.peft.target_modules explicitly"
                                                           if key == "train.peft.target_modules" else ""))
    return found


def resolve_targets(model: torch.nn.Module, names: list[str] | None) -> list[str]:
    """Leaf names of the layers that get adapters: every linear layer inside the decoder layers
    by default, in order of appearance; or `names`, checked against the model."""
    if names is None:
        _, stack = decoder_stack(model)
    else:  # the stack only lists what there is, for the messages
        _, stack = find_stack(model) or ("", torch.nn.ModuleList())
    found: dict[str, None] = {}
    for module_name, module in stack.named_modules():
        if isinstance(module, _linear_types()) and "." in module_name:
            found.setdefault(module_name.rsplit(".", 1)[-1], None)
    if names is None:
        if not found:
            raise UserError(f"train.peft.target_modules: {type(model).__name__}'s decoder layers hold no linear layer")
        return list(found)
    outside = {id(model.get_input_embeddings()), id(model.get_output_embeddings())}
    for name in names:
        matches = [m for n, m in model.named_modules() if n == name or n.endswith("." + name)]
        if not matches:
            raise UserError(f"train.peft.target_modules: {name!r} names no layer of {type(model).__name__} "
                            f"(its decoder layers' linear layers: {', '.join(found) or 'none'})")
        if any(id(m) in outside for m in matches):
            raise UserError(f"train.peft.target_modules: {name!r} is {type(model).__name__}'s embedding or output "
                            "layer; it trains in full (train.peft.train_embeddings / train_lm_head) instead")
        if not all(isinstance(m, _linear_types()) for m in matches):
            kinds = sorted({type(m).__name__ for m in matches})
            raise UserError(f"train.peft.target_modules: {name!r} is a {', '.join(kinds)}, not a linear layer")
    return list(dict.fromkeys(names))


def lora_config(model: torch.nn.Module, cfg: PeftConfig, freeze_layers: int = 0):
    """peft's LoraConfig for `cfg`; `freeze_layers` (train.freeze_layers) leaves the first layers without adapters."""
    from peft import LoraConfig

    targets = resolve_targets(model, cfg.target_modules)
    layers, stack_name = None, ""
    if freeze_layers:
        stack_name, stack = decoder_stack(model, "train.freeze_layers")
        if freeze_layers > len(stack):
            raise UserError(f"train.freeze_layers: {freeze_layers} exceeds the model's {len(stack)} layers")
        layers = list(range(freeze_layers, len(stack)))
    conv1d = any(type(m).__name__ == "Conv1D" for m in model.modules())
    return LoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=targets,
        use_rslora=cfg.rslora,
        bias="none",
        # Zero-initialised B (peft's default): the adapted model at step 0 *is* the base model, so
        # the step-0 evaluation and the KL reference are the starting weights exactly.
        init_lora_weights=True,
        layers_to_transform=layers or None,
        layers_pattern=stack_name.rsplit(".", 1)[-1] if layers else None,
        fan_in_fan_out=conv1d,
        task_type="CAUSAL_LM",
    )


def apply_peft(model: torch.nn.Module, cfg: PeftConfig, freeze_layers: int = 0, quiet: bool = False):
    """The PeftModel around `model` (changed in place): adapters trainable, base weights frozen
    except the input embeddings and output layer as `cfg` asks. Call it instead of
    `cptkit.train.freezing.apply_freezing`, before the optimizer is built. `quiet`: no log line
    (the check on the meta device, `training.check_against_model`)."""
    from peft import get_peft_model

    if not cfg.active:
        raise ValueError("apply_peft: train.peft.method is none")
    embed, head = model.get_input_embeddings(), model.get_output_embeddings()
    tied = head is not None and head.weight is embed.weight
    if tied and cfg.train_embeddings != cfg.train_lm_head:
        raise UserError(
            f"train.peft.train_embeddings and train.peft.train_lm_head: {type(model).__name__} ties its output "
            "layer to the input embeddings (one matrix), so both must be true or both false"
        )
    if cfg.train_lm_head and head is None:
        raise UserError(f"train.peft.train_lm_head: {type(model).__name__} has no output layer to train")
    config = lora_config(model, cfg, freeze_layers)
    try:
        with warnings.catch_warnings():
            # peft reads transformers' deprecated `is_gradient_checkpointing`; nothing for a user to do.
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            peft_model = get_peft_model(model, config, adapter_name=ADAPTER)
    except ValueError as exc:  # e.g. every layer excluded by train.freeze_layers
        raise UserError(f"train.peft: peft could not add adapters to {type(model).__name__} "
                        f"({str(exc).strip().splitlines()[0][:300]})") from None
    if cfg.train_embeddings:
        embed.requires_grad_(True)
    if cfg.train_lm_head:
        head.requires_grad_(True)
    if quiet:
        return peft_model
    counts = trainable_counts(model)
    base = counts["total"] - counts["adapter"]
    log.info("train.peft %s: r %d on %s; training %s parameters (%s in adapters), %.2f%% of the model's %s",
             cfg.method, cfg.r, ", ".join(sorted(config.target_modules)), f"{counts['trainable']:,}",
             f"{counts['adapter']:,}", 100 * counts["trainable"] / max(base, 1), f"{base:,}")
    return peft_model


def keep_frozen_in(peft_model, dtype: torch.dtype) -> int:
    """Store the frozen linear weights of the decoder layers in the compute `dtype`; return how many.

    Under LoRA these weights never change, so a float32 master copy buys nothing; and under
    autocast a float32 weight is cast to the compute dtype at every forward, that copy kept until
    backward. Stored in bfloat16 they cost 2 bytes per weight instead of 4 + 2, and the bfloat16
    forward is bit-identical (autocast rounds them the same way). Norms, embeddings, output layer
    and adapters stay float32. Lossless for checkpoints stored in bfloat16, as most are.
    """
    _, stack = decoder_stack(base_lm(peft_model), "train.peft")
    count = 0
    for module in stack.modules():
        if isinstance(module, _linear_types()):
            for p in module.parameters(recurse=False):
                if not p.requires_grad and p.is_floating_point() and p.dtype != dtype:
                    p.data = p.data.to(dtype)
                    count += p.numel()
    return count


def trainable_counts(model: torch.nn.Module) -> dict[str, int]:
    """Parameters by kind: total, trainable, adapter (LoRA matrices), full (trained in full)."""
    counts = {"total": 0, "trainable": 0, "adapter": 0, "full": 0}
    for name, p in model.named_parameters():  # a tied weight once
        counts["total"] += p.numel()
        if p.requires_grad:
            counts["trainable"] += p.numel()
            counts["adapter" if ".lora_" in name else "full"] += p.numel()
    return counts


def method_summary(model: torch.nn.Module, cfg: PeftConfig) -> dict:
    """What summary.json and the report state about the training method (any method): `method`
    (full, lora, qlora), `trainable_parameters`, `total_parameters` (the model's own, adapters not
    counted, so the share reads as in the memory estimate), and under an adapter method `peft` with
    the rank, scale, adapted layers and how the trainable count splits."""
    counts = trainable_counts(model)
    out = {"method": cfg.method if cfg.active else "full", "trainable_parameters": counts["trainable"],
           "total_parameters": counts["total"] - counts["adapter"], "peft": None}
    if cfg.active:
        from peft.tuners.lora import LoraLayer

        adapted = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, LoraLayer)}
        out["peft"] = {"r": cfg.r, "alpha": cfg.alpha, "rslora": cfg.rslora, "dropout": cfg.dropout,
                       "target_modules": sorted(adapted), "adapter_parameters": counts["adapter"],
                       "full_parameters": counts["full"], "train_embeddings": cfg.train_embeddings,
                       "train_lm_head": cfg.train_lm_head}
    return out


def peft_param_groups(model: torch.nn.Module, weight_decay: float, embedding_lr_scale: float = 1.0) -> list[dict]:
    """AdamW groups under an adapter method, in the format of `cptkit.train.optim.param_groups`.

    Adapter matrices decay (they are 2-D) at the base learning rate. The matrices trained in
    full, the input embeddings *and* the output layer, share `embedding_lr_scale`: unlike full
    training, where only the embeddings are scaled, because under LoRA the base learning rate is
    the adapters' (several times a full fine-tune's) and a full V x H output layer at that rate
    moves far more than the adapters do. Unsloth's recipe scales both the same way.
    """
    lm = getattr(model, "lm", model)
    full = [lm.get_input_embeddings(), lm.get_output_embeddings()]
    full_ids = {id(p) for m in full if m is not None for p in m.parameters() if p.requires_grad}
    # (trained in full, decays) -> parameters; matrices decay, vectors (biases, norms) do not.
    groups: dict[tuple[bool, bool], list] = {(f, d): [] for f in (False, True) for d in (True, False)}
    for p in model.parameters():  # tied weights appear once
        if p.requires_grad:
            groups[(id(p) in full_ids, p.dim() >= 2)].append(p)
    return [
        {"params": params, "weight_decay": weight_decay if decays else 0.0,
         "lr_scale": embedding_lr_scale if in_full else 1.0}
        for (in_full, decays), params in groups.items() if params
    ]
