"""Load the starting model and its tokenizer, turning loading failures into clear user errors."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from cptkit.config import ModelConfig
from cptkit.errors import UserError

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _where(cfg: ModelConfig) -> str:
    return f"model.name_or_path {cfg.name_or_path!r}"


def load_tokenizer(cfg: ModelConfig):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(
            cfg.name_or_path, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code
        )
    except (OSError, ValueError) as exc:
        raise UserError(f"{_where(cfg)}: cannot load its tokenizer ({_first_line(exc)})") from None
    if tok.eos_token_id is None:
        raise UserError(
            f"{_where(cfg)}: the tokenizer defines no EOS token; cptkit marks document ends with it. "
            "Set eos_token in the tokenizer's config."
        )
    return tok


def load_model(cfg: ModelConfig, master_dtype: torch.dtype = torch.float32, **options):
    """The model with float32 master weights (autocast supplies the compute precision).

    `options` go to `from_pretrained` as well (QLoRA's quantization_config and device_map:
    `cptkit.peft.training.load_options`)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from cptkit.train.attention import choose_attn_implementation

    _check_weights(cfg)
    try:
        hf_config = AutoConfig.from_pretrained(cfg.name_or_path, revision=cfg.revision,
                                               trust_remote_code=cfg.trust_remote_code)
        kernel = choose_attn_implementation(hf_config, cfg.attn_implementation)
        model = AutoModelForCausalLM.from_pretrained(
            cfg.name_or_path,
            revision=cfg.revision,
            trust_remote_code=cfg.trust_remote_code,
            dtype=master_dtype,
            use_safetensors=True,  # weights never come from a pickle (pytorch_model.bin)
            **({"attn_implementation": kernel} if kernel else {}),
            **options,
        )
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise UserError(f"{_where(cfg)}: cannot load the model ({_first_line(exc)})") from None
    # Training and evaluation forwards never use a KV cache: with a cache, transformers does not
    # derive the per-document mask from position ids and attention crosses packed documents.
    model.config.use_cache = False
    return model


def _check_weights(cfg: ModelConfig) -> None:
    """A local folder must hold readable weights; a truncated safetensors file is named."""
    folder = Path(cfg.name_or_path).expanduser()
    if not folder.is_dir():
        return
    if not (folder / "config.json").is_file():
        raise UserError(f"{_where(cfg)}: {folder / 'config.json'} is missing; not a Hugging Face model folder")
    if not any(folder.glob("*.safetensors")):
        pickles = sorted(p.name for p in folder.glob("*.bin"))
        hint = (f"; {', '.join(pickles)} is a pickle, which cptkit does not load since it can run code: "
                "convert it to safetensors with a tool you trust") if pickles else ""
        raise UserError(f"{_where(cfg)}: no weights (*.safetensors) in {folder}{hint}")
    from safetensors import safe_open

    for path in folder.glob("*.safetensors"):
        try:
            with safe_open(str(path), framework="pt") as fh:
                fh.keys()
        except Exception as exc:  # safetensors raises its own error type for corrupt headers
            raise UserError(f"{path}: not a readable safetensors file ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's repeated blocks (its `_no_split_modules` classes, e.g. LlamaDecoderLayer).

    These are the units that FSDP shards one at a time and that torch.compile compiles one at a
    time: every block has the same code, so one compiled graph serves them all.
    """
    names = set(getattr(model, "_no_split_modules", None) or [])
    return [m for m in model.modules() if type(m).__name__ in names]


def prepare_for_training(model: torch.nn.Module, gradient_checkpointing: bool, compile: bool) -> None:
    """Memory and speed options that leave the maths unchanged (train.gradient_checkpointing, train.compile)."""
    if gradient_checkpointing:
        if not getattr(model, "supports_gradient_checkpointing", False):
            raise UserError(
                f"train.gradient_checkpointing: {type(model).__name__} does not support gradient checkpointing"
            )
        # Non-reentrant checkpointing works under FSDP and with inputs that need no gradient.
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):  # the name since transformers 5.x
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    if compile:
        layers = decoder_layers(model)
        if not layers:
            raise UserError(f"train.compile: found no decoder layers to compile in {type(model).__name__}")
        for layer in layers:
            layer.compile()
