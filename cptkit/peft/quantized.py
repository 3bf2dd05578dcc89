"""QLoRA: the frozen base weights in 4 bits (bitsandbytes NF4 or FP4), adapters in float32.

The product path requires CUDA (`config.check_peft` refuses `method: qlora` elsewhere, exit 2):
bitsandbytes' 4-bit kernels are what make QLoRA worth it, and on a CPU they are slow. The
functions here run wherever bitsandbytes does (its CPU backend included, which is how the
tests exercise them on a machine without a GPU).

- `quantization_config(cfg, compute_dtype)`: the `BitsAndBytesConfig` to pass to
  `from_pretrained` (`quantization_config=`): every linear layer of the model in 4 bits, except
  the output layer, which transformers leaves in full precision.
- `prepare_quantized(model, gradient_checkpointing)`: peft's `prepare_model_for_kbit_training`
  (layer norms and the non-quantized weights to float32, inputs that need gradients).
- `dequantized_state(lm, state)`: the 4-bit weights of a state dict back to floating point
  (for the merged `best/` and `final/`), their quantisation constants removed.
"""

from __future__ import annotations

import torch

from cptkit.peft.config import PeftConfig


def quantization_config(cfg: PeftConfig, compute_dtype: torch.dtype):
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=cfg.quant_type,
        bnb_4bit_use_double_quant=cfg.double_quant,
        bnb_4bit_compute_dtype=compute_dtype,
    )


def prepare_quantized(model: torch.nn.Module, gradient_checkpointing: bool) -> torch.nn.Module:
    from peft import prepare_model_for_kbit_training

    # Non-reentrant recomputation, as cptkit uses elsewhere (works with inputs that need no gradient).
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing,
                                           gradient_checkpointing_kwargs={"use_reentrant": False})


def is_4bit(module: torch.nn.Module) -> bool:
    """A bitsandbytes 4-bit linear layer (checked by class, so bitsandbytes need not be imported)."""
    cls = type(module)
    return cls.__name__ == "Linear4bit" and cls.__module__.startswith("bitsandbytes")


def dequantized_state(lm: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` with every 4-bit weight of `lm` dequantized (in the dtype it was quantized from)."""
    quantized = {name: m for name, m in lm.named_modules() if is_4bit(m)}
    if not quantized:
        return state
    from peft.utils.integrations import dequantize_module_weight

    out = dict(state)
    for name, module in quantized.items():
        for key in [k for k in out if k.startswith(f"{name}.weight.")]:
            del out[key]  # absmax, quant_map, nested constants, the packed quant state
        out[f"{name}.weight"] = dequantize_module_weight(module).detach()
    return out


def plain_skeleton(lm: torch.nn.Module) -> torch.nn.Module:
    """The same architecture without quantisation, on the meta device (no memory), to export with.

    `save_pretrained` on a 4-bit model writes bitsandbytes' own format and a quantization_config;
    a merged `best/` or `final/` must be a plain folder, so `cptkit.checkpoint.export_model` is given
    this skeleton and the merged weights (`export.merged_state_dict`) instead.
    """
    import copy

    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(lm.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, dtype=torch.float32)
