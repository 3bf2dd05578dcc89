"""Packed attention on every architecture: which kernel to load, and a per-document mask where
position ids do not give one.

Two separate decisions, both taken once at start-up:

- **The attention kernel** (`choose_attn_implementation`). `model.attn_implementation: auto`
  (and the old default `sdpa`) picks torch's scaled-dot-product attention where the model class
  supports it, else `eager`: Gemma 2, for instance, caps its attention logits, which sdpa cannot
  do, and transformers refuses to load it with sdpa. Any other name (eager, flash_attention_2,
  flex_attention) is passed to transformers as it is. The choice is logged.

- **Document masking** (`ensure_document_masking`). cptkit packs documents back to back and
  restarts position ids at each one; most transformers decoders turn restarting position ids
  into a block-diagonal causal mask by themselves. Some do not (OPT builds its causal mask
  without looking at position ids), so attention would cross documents. The check runs two
  documents packed and alone on the loaded model; when they differ, cptkit installs a forward
  pre-hook on the model's decoder stacks that builds the block-diagonal mask from the position
  ids with transformers' own mask builder (`masking_utils.create_causal_mask`, which produces
  the format the loaded kernel wants: a boolean mask for sdpa, an additive one for eager) and
  passes it as a 4-D `attention_mask`, then checks again. A model that still lets attention
  cross documents is refused, as before.

Why a hook rather than a new argument at every call site: training (chunked and full-logits
loss), evaluation, probes, the KL reference and the Fisher pass all call the model or its
decoder with `position_ids`; a hook on the model serves every one of them, and one under FSDP or
DDP too, since the wrappers call the same module. Cost: the mask is [batch, 1, T, T] (boolean
for sdpa: 64 MiB for 4 x 4096 tokens; float32 for eager: 256 MiB), built once per forward and
shared by all layers, and sdpa with an explicit mask cannot use its flash kernel. Models that
honour position ids (the usual case) pay nothing.

flash-attention's variable-length kernel needs no mask: where transformers runs a model with
`flash_attention_2`, it reads the document boundaries from the position ids itself, and the
same check confirms it on the loaded model.
"""

from __future__ import annotations

import inspect
import logging

import torch

from cptkit.errors import UserError

log = logging.getLogger("cptkit")

AUTO = ("auto", "sdpa")  # "sdpa" was the default before "auto"; both mean "the best supported"
_HOOKED = "_cptkit_document_mask"  # attribute on a hooked model: the hook handles


def causal_lm_class(config) -> type | None:
    """The transformers class AutoModelForCausalLM builds for `config` (None: remote code or unknown)."""
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM._model_mapping[type(config)]
    except KeyError:
        return None


def choose_attn_implementation(config, requested: str) -> str | None:
    """The attention kernel to load `config`'s model with, for `model.attn_implementation`.

    auto / sdpa: sdpa where the class supports it, else eager (logged). A class transformers
    does not know (remote code) gets None, which lets transformers choose by the same rule.
    Anything else is returned unchanged: an explicit kernel is the user's choice.
    """
    if requested not in AUTO:
        return requested
    cls = causal_lm_class(config)
    if cls is None:
        log.info("model type %r: attention kernel left to transformers (sdpa where supported, else eager)",
                 getattr(config, "model_type", "?"))
        return None
    if getattr(cls, "_supports_sdpa", False):
        return "sdpa"
    log.info("%s does not support sdpa attention (%s); using eager attention", cls.__name__,
             "it caps attention logits" if getattr(config, "attn_logit_softcapping", None) else "not implemented")
    return "eager"


# -- the per-document mask ----------------------------------------------------------------------


def document_attention_mask(model: torch.nn.Module, position_ids: torch.Tensor) -> torch.Tensor | None:
    """The block-diagonal causal mask of packed rows whose position ids restart at each document,
    in the format of the model's attention kernel (None where the kernel needs no mask)."""
    from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

    config = model.config
    kinds = set(getattr(config, "layer_types", None) or [])
    if len(kinds) > 1:
        # One 4-D mask serves every layer; a model mixing full and sliding-window layers needs two.
        raise UserError(f"model {type(model).__name__}: mixes attention kinds {sorted(kinds)}, so cptkit "
                        "cannot build one per-document mask for it. Set train.document_masking: false.")
    sliding = getattr(config, "sliding_window", None) and "full_attention" not in kinds
    build = create_sliding_window_causal_mask if sliding else create_causal_mask
    b, t = position_ids.shape
    dtype = model.get_input_embeddings().weight.dtype
    shape_only = torch.empty(b, t, 0, dtype=dtype, device=position_ids.device)  # read for size, dtype, device
    return build(config=config, inputs_embeds=shape_only, attention_mask=None, cache=None, position_ids=position_ids)


def _stack_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model and its decoder stacks: every module whose forward takes input embeddings,
    an attention mask and position ids (OPT: the CausalLM, OPTModel and OPTDecoder)."""
    wanted = {"inputs_embeds", "attention_mask", "position_ids"}
    found = []
    for module in model.modules():
        try:
            params = set(inspect.signature(module.forward).parameters)
        except (TypeError, ValueError):
            continue
        if wanted <= params:
            found.append(module)
    return found


def install_document_mask(model: torch.nn.Module) -> None:
    """From now on, a forward given restarting `position_ids` and no mask gets the per-document mask.

    Calls with an attention mask of their own (generation, padded batches) or with a KV cache
    are left alone. Idempotent.
    """
    if getattr(model, _HOOKED, None):
        return

    def hook(module, args, kwargs):
        if args or kwargs.get("attention_mask") is not None or kwargs.get("position_ids") is None:
            return None
        if kwargs.get("use_cache") or kwargs.get("cache") is not None or kwargs.get("past_key_values") is not None:
            return None
        kwargs["attention_mask"] = document_attention_mask(model, kwargs["position_ids"])
        return args, kwargs

    handles = [m.register_forward_pre_hook(hook, with_kwargs=True) for m in _stack_modules(model)]
    if not handles:
        raise UserError(f"model {type(model).__name__}: found no decoder forward that takes an attention "
                        "mask and position ids, so cptkit cannot mask documents apart. "
                        "Set train.document_masking: false.")
    setattr(model, _HOOKED, handles)


def remove_document_mask(model: torch.nn.Module) -> None:
    for handle in getattr(model, _HOOKED, None) or []:
        handle.remove()
    if hasattr(model, _HOOKED):
        delattr(model, _HOOKED)


def uses_document_mask(model: torch.nn.Module) -> bool:
    """Whether `install_document_mask` is in effect on this model."""
    return bool(getattr(model, _HOOKED, None))


def packed_inputs(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict:
    """Forward keyword arguments for a packed batch: ids, restarting positions, no cache, and the
    explicit per-document mask where this model needs one (the hook does the same implicitly)."""
    kwargs = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"], "use_cache": False}
    if uses_document_mask(model):
        kwargs["attention_mask"] = document_attention_mask(model, batch["position_ids"])
    return kwargs
