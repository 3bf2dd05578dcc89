"""The `train.peft` config section and its rules.

`PeftConfig` is declared here, with `cptkit.schema.option` fields, so that it can move into
`TrainConfig` unchanged (`peft: PeftConfig = option(default_factory=PeftConfig, help=...)`).
`check_peft(cfg)` returns every combination that cannot work, each naming its dotted keys; the
rules and their reasons are listed in docs/lora.md. Importing this module does not import torch.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass
from typing import Literal

from cptkit.schema import option

# Names that the usual architectures give their input embeddings or output layer. Adapters on
# them are refused when the config loads: those matrices train in full (train_embeddings,
# train_lm_head) or not at all. `apply_peft` checks the actual modules of the loaded model too.
EMBEDDING_NAMES = ("lm_head", "embed_tokens", "wte", "wpe", "embed_in", "embed_out")

ADAPTER_KEYS = ("r", "alpha", "dropout", "target_modules", "rslora", "train_embeddings", "train_lm_head")
QLORA_KEYS = ("quant_type", "double_quant")


@dataclass
class PeftConfig:
    method: Literal["none", "lora", "qlora"] = option(
        "none",
        help="none: train every parameter. lora: freeze the base weights and train low-rank adapters "
        "(the peft library). qlora: lora over 4-bit base weights (bitsandbytes; needs a CUDA GPU).",
    )
    r: int = option(16, gt=0, help="Rank of each adapter (Unsloth's continued-pretraining recipe uses 128).")
    alpha: float = option(
        32.0, gt=0, help="Adapter scale numerator: updates are scaled by alpha / r (alpha / sqrt(r) with rslora)."
    )
    dropout: float = option(0.0, ge=0, lt=1, help="Dropout on each adapter's input (0: none, usual for pre-training).")
    target_modules: list[str] | None = option(
        None,
        help="Layer names (the last part, e.g. q_proj) that get adapters. Default: every linear layer inside "
        "the decoder layers (attention and MLP), found per architecture; never the output layer.",
    )
    rslora: bool = option(
        False, help="Rank-stabilised LoRA: scale by alpha / sqrt(r) instead of alpha / r (recommended for r >= 64)."
    )
    train_embeddings: bool = option(
        True,
        help="Train the input embeddings in full (not through an adapter), at train.lr * train.embedding_lr_scale.",
    )
    train_lm_head: bool = option(
        True,
        help="Train the output layer in full, at train.lr * train.embedding_lr_scale. A tied output layer is the "
        "input embedding matrix: then this must equal train_embeddings.",
    )
    quant_type: Literal["nf4", "fp4"] = option("nf4", help="qlora: 4-bit data type of the base weights.")
    double_quant: bool = option(True, help="qlora: quantise the quantisation constants too (about 0.4 bits/weight less).")

    @property
    def active(self) -> bool:
        return self.method != "none"


# Under an adapter method the base learning rate is the adapters' (5e-5 in Unsloth's recipe, several
# times a full fine-tune's); the matrices trained in full follow 2-10x more slowly (their 1e-5).
LORA_EMBEDDING_LR_SCALE = 0.2


def default_embedding_lr_scale(train) -> float:
    """train.embedding_lr_scale when the config leaves it unset (train: TrainConfig).

    1 for full training. 0.2 under an adapter method when a matrix trains in full: the recipe's
    embedding learning rate a fifth of the adapters'. 1 when neither does (it would scale nothing).
    """
    pc = getattr(train, "peft", None) or PeftConfig()
    if pc.active and (pc.train_embeddings or pc.train_lm_head):
        return LORA_EMBEDDING_LR_SCALE
    return 1.0


def fill_defaults(cfg) -> None:
    """The context defaults of the train.peft keys, filled in by `cptkit.config.normalise` so that
    the resolved config.yaml shows the value used."""
    if cfg.train.embedding_lr_scale is None:
        cfg.train.embedding_lr_scale = default_embedding_lr_scale(cfg.train)


def peft_of(cfg) -> PeftConfig:
    """`cfg.train.peft`, or the default (full training) while the config has no such section."""
    return getattr(cfg.train, "peft", None) or PeftConfig()


def check_peft(cfg, peft: PeftConfig | None = None, check_machine: bool = True) -> list[str]:
    """Problems of train.peft.* and of the keys it interacts with (cfg: cptkit.config.Config).

    `check_machine` adds what depends on this machine (qlora needs CUDA and bitsandbytes); a
    `cptkit plan` on a machine without a GPU can leave it off.
    """
    pc = peft if peft is not None else peft_of(cfg)
    if not pc.active:
        return _unused(pc, ADAPTER_KEYS + QLORA_KEYS, "lora or qlora", "none")
    p: list[str] = []
    t = cfg.train
    if pc.method == "lora":
        p += _unused(pc, QLORA_KEYS, "qlora", "lora")
    if pc.target_modules is not None:
        if not pc.target_modules:
            p.append("train.peft.target_modules: an empty list adapts nothing; leave it unset for every linear "
                     "layer of the decoder")
        for name in pc.target_modules:
            if name.rsplit(".", 1)[-1] in EMBEDDING_NAMES:
                p.append(f"train.peft.target_modules: {name!r} is an embedding or output layer; those train in full "
                         "(train.peft.train_embeddings, train.peft.train_lm_head) rather than through an adapter")
    if t.freeze_embeddings and pc.train_embeddings:
        p.append("train.freeze_embeddings and train.peft.train_embeddings: both set; to keep the embeddings "
                 "frozen under an adapter method, set train.peft.train_embeddings: false")
    if t.freeze_lm_head and pc.train_lm_head:
        p.append("train.freeze_lm_head and train.peft.train_lm_head: both set; to keep the output layer "
                 "frozen under an adapter method, set train.peft.train_lm_head: false")
    if t.embedding_lr_scale not in (None, 1.0) and not (pc.train_embeddings or pc.train_lm_head):
        p.append("train.embedding_lr_scale: no matrix trains in full (train.peft.train_embeddings and "
                 "train_lm_head are false), so it scales nothing; leave it at 1")
    if pc.method == "qlora":
        p += _check_qlora(cfg, check_machine)
    return p


def machine_problems(cfg) -> list[str]:
    """What this machine lacks for the configured method (qlora: CUDA, bitsandbytes). `cptkit train`
    checks it before preparing any data; `cptkit plan` does not, so a GPU config plans anywhere."""
    return _qlora_machine() if peft_of(cfg).method == "qlora" else []


def _qlora_machine() -> list[str]:
    import torch

    if not torch.cuda.is_available():
        return ["train.peft.method: qlora keeps the base weights in 4 bits with bitsandbytes kernels, which "
                "need a CUDA GPU, and none is visible here; use method lora (the same adapters over "
                "full-precision base weights)"]
    if importlib.util.find_spec("bitsandbytes") is None:
        return ["train.peft.method: qlora needs the bitsandbytes package: pip install 'cptkit[qlora]'"]
    return []


def _check_qlora(cfg, check_machine: bool) -> list[str]:
    p: list[str] = []
    if cfg.train.distributed.strategy == "fsdp":
        p.append("train.peft.method qlora with train.distributed.strategy fsdp: sharding 4-bit weights is not "
                 "supported yet; use strategy ddp (each process holds the whole 4-bit model)")
    if cfg.regularizer.kind == "ewc":
        p.append("train.peft.method qlora with regularizer.kind ewc: the Fisher needs gradients of the base "
                 "weights, which are 4-bit and have none; use regularizer.kind l2sp or kl")
    return p + (_qlora_machine() if check_machine else [])


def _unused(pc: PeftConfig, keys: tuple[str, ...], needs: str, method: str) -> list[str]:
    """'train.peft.KEY: only used with ...' for every key set away from its default."""
    defaults = {f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())
                for f in dataclasses.fields(PeftConfig)}
    return [f"train.peft.{key}: only used with train.peft.method {needs} (method is {method!r})"
            for key in keys if getattr(pc, key) != defaults[key]]
