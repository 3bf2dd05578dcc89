"""Training memory of full and adapter training, estimated from the model's shapes (for `cptkit plan`).

`model_shapes(hf_config)` reads the shapes from the model built on the meta device (no memory,
no weights: any architecture transformers knows); `memory_estimate(shapes, ...)` is a pure
function of them. Assumptions, following how cptkit trains:

- weights: float32 master weights, 4 bytes per parameter (`frozen_bytes` for frozen ones:
  4 today; 2 if frozen weights are kept in bfloat16). QLoRA: the decoder layers' linear
  weights in 4 bits plus their quantisation constants (blocks of 64: a float32 scale per block,
  or with double quantisation an 8-bit scale per block and a float32 one per 256 blocks);
  embeddings, output layer and norms unquantised.
- gradients: 4 bytes per trainable parameter; optimizer: AdamW's two float32 moments, 8 bytes.
- activations of one micro batch (T = micro_batch x seq_len tokens), in the compute dtype
  (2 bytes for bfloat16 / float16, 4 for float32), per token and decoder layer: the input and
  the output of every linear layer and the inputs of the two norms (2 x hidden), plus under an
  adapter method r per adapted layer (the low-rank intermediate) and, with adapter dropout, the
  dropped copy of its input. Attention is assumed memory-efficient (no T x T score matrix).
  Layers below the first trainable one keep nothing (no backward runs through them).
  With gradient checkpointing, each layer keeps only its float32 input, plus one layer's
  activations while it is recomputed. On top: the float32 embedding output, and the fused
  loss's hidden states and their gradient (2 x hidden per token) and one chunk of float32
  logits and its gradient (2 x chunk x vocabulary; 3 x T x vocabulary with loss_chunk_tokens 0).
- casts: under autocast (bfloat16 / float16), the forward casts every float32 linear weight to
  the compute dtype: 2 bytes per decoder linear weight stored in float32. Trainable weights'
  casts (full training, adapters) stay in autocast's cache through the forward; frozen ones'
  are kept for backward, or with gradient checkpointing one layer's at a time. None for weights
  stored in the compute dtype (`frozen_bytes` 2) nor for QLoRA's 4-bit weights.
- reference (KL to the base model): a whole second model in `kl_reference_dtype` for full
  training; under an adapter method only the original embeddings (and an untied output
  layer) when they train in full (`reference.FrozenBase`).

These are estimates of what autograd keeps, not a measurement; allocator slack, CUDA context and
temporary buffers come on top.
"""

from __future__ import annotations

from dataclasses import dataclass

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class Linear:
    name: str  # leaf name, e.g. q_proj
    fan_in: int
    fan_out: int
    bias: bool = False

    @property
    def params(self) -> int:
        return self.fan_in * self.fan_out + (self.fan_out if self.bias else 0)


@dataclass(frozen=True)
class ModelShapes:
    """What the estimate needs: the sizes of one decoder layer (all layers alike) and the rest."""

    vocab: int
    hidden: int
    layers: int
    linears: tuple[Linear, ...]  # one decoder layer's linear layers
    layer_other: int  # one decoder layer's other parameters (norms)
    other: int  # parameters outside the layers, embeddings and output layer (final norm, positions)
    tied: bool
    head_bias: int = 0

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def head_params(self) -> int:
        return 0 if self.tied else self.vocab * self.hidden + self.head_bias

    @property
    def layer_params(self) -> int:
        return sum(lin.params for lin in self.linears) + self.layer_other

    @property
    def total_params(self) -> int:
        return self.embedding_params + self.head_params + self.layers * self.layer_params + self.other


@dataclass(frozen=True)
class MemoryEstimate:
    method: str
    total_params: int
    trainable_params: int
    weights: int  # bytes
    gradients: int
    optimizer: int
    activations: int  # one micro batch
    casts: int = 0  # compute-dtype copies of float32 weights kept for backward
    reference: int = 0  # KL reference, 0 without KL

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations + self.casts + self.reference


def model_shapes(config) -> ModelShapes:
    """ModelShapes of a transformers config, from the model built on the meta device."""
    import torch
    from transformers import AutoModelForCausalLM

    from cptkit.peft.adapters import _linear_types, decoder_stack

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    _, stack = decoder_stack(model)
    layer = stack[0]
    linears = []
    for name, m in layer.named_modules():
        if isinstance(m, _linear_types()):
            fan_in, fan_out = (m.in_features, m.out_features) if hasattr(m, "in_features") else m.weight.shape
            linears.append(Linear(name.rsplit(".", 1)[-1], int(fan_in), int(fan_out), m.bias is not None))
    embed, head = model.get_input_embeddings(), model.get_output_embeddings()
    tied = head is not None and head.weight is embed.weight
    total = sum(p.numel() for p in model.parameters())
    layer_total = sum(p.numel() for p in layer.parameters())
    head_bias = head.bias.numel() if head is not None and not tied and head.bias is not None else 0
    shapes = ModelShapes(
        vocab=embed.weight.shape[0], hidden=embed.weight.shape[1], layers=len(stack), linears=tuple(linears),
        layer_other=layer_total - sum(lin.params for lin in linears), other=0, tied=tied, head_bias=head_bias)
    return ModelShapes(**{**shapes.__dict__, "other": total - shapes.total_params})


def _quantized_bytes(params: int, double_quant: bool) -> int:
    blocks = -(-params // 64)
    scales = blocks + 4 * -(-blocks // 256) if double_quant else 4 * blocks
    return -(-params // 2) + scales


def memory_estimate(
    shapes: ModelShapes, method: str = "full", r: int = 16, targets: list[str] | None = None,
    micro_batch: int = 4, seq_len: int = 2048, dtype: str = "bfloat16", *, train_embeddings: bool = True,
    train_lm_head: bool = True, freeze_layers: int = 0, gradient_checkpointing: bool = False,
    loss_chunk_tokens: int = 1024, dropout: float = 0.0, double_quant: bool = True, frozen_bytes: int = 4,
    kl_reference_dtype: str | None = None,
) -> MemoryEstimate:
    """Bytes of weights, gradients, optimizer states, activations (one micro batch), autocast copies
    and KL reference."""
    adapted = [lin for lin in shapes.linears if targets is None or lin.name in targets]
    adapter_layers = shapes.layers - freeze_layers if method != "full" else 0
    adapter_params = adapter_layers * sum(r * (lin.fan_in + lin.fan_out) for lin in adapted)
    if method == "full":
        full_trained = shapes.total_params
    else:
        full_trained = (shapes.embedding_params if train_embeddings else 0) + (
            shapes.head_params if train_lm_head else 0)
        if shapes.tied and (train_embeddings or train_lm_head):
            full_trained = shapes.embedding_params
    trainable = adapter_params + full_trained
    frozen = shapes.total_params - full_trained
    if method == "qlora":
        linear_params = shapes.layers * sum(lin.fan_in * lin.fan_out for lin in shapes.linears)
        weights = 4 * trainable + _quantized_bytes(linear_params, double_quant) + frozen_bytes * (frozen - linear_params)
    else:
        weights = 4 * trainable + frozen_bytes * frozen
    activations = _activations(shapes, method, r, adapted, micro_batch * seq_len, DTYPE_BYTES[dtype],
                               first_trainable=0 if method == "full" or train_embeddings else freeze_layers,
                               checkpointing=gradient_checkpointing, chunk=loss_chunk_tokens, dropout=dropout)
    casts = 0
    if dtype != "float32":
        linear_params = shapes.layers * sum(lin.fan_in * lin.fan_out for lin in shapes.linears)
        # Casts of trainable weights stay in autocast's cache for the whole forward; casts of
        # frozen ones are saved for backward, or (recomputation) live for one layer at a time.
        trainable_linears = linear_params if method == "full" else adapter_params
        frozen_linears = linear_params if method == "lora" and frozen_bytes == 4 else 0
        if gradient_checkpointing:
            frozen_linears //= shapes.layers
        casts = 2 * (trainable_linears + frozen_linears)
    reference = 0
    if kl_reference_dtype is not None:
        ref_bytes = DTYPE_BYTES[kl_reference_dtype]
        reference = ref_bytes * (shapes.total_params if method == "full" else full_trained)
    return MemoryEstimate(method, shapes.total_params, trainable, weights, 4 * trainable, 8 * trainable,
                          activations, casts, reference)


def _activations(shapes: ModelShapes, method: str, r: int, adapted: list[Linear], tokens: int, a: int, *,
                 first_trainable: int, checkpointing: bool, chunk: int, dropout: float) -> int:
    """Bytes autograd keeps for one micro batch of `tokens` tokens (see the module docstring)."""
    h = shapes.hidden
    per_layer = sum(lin.fan_in + lin.fan_out for lin in shapes.linears) + 2 * h
    if method != "full":
        per_layer += len(adapted) * r + (sum(lin.fan_in for lin in adapted) if dropout > 0 else 0)
    kept_layers = shapes.layers - first_trainable
    if checkpointing:
        layers = 4 * h * kept_layers + a * per_layer if kept_layers else 0
    else:
        layers = a * per_layer * kept_layers
    logits = 8 * min(chunk, tokens) * shapes.vocab if chunk else 12 * tokens * shapes.vocab
    return tokens * (layers + 4 * h + 2 * a * h) + logits


def _size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def describe(estimates: list[MemoryEstimate]) -> list[str]:
    """`cptkit plan`'s table: one line per method (e.g. the configured one and full training)."""
    head = (f"{'method':<8} {'trainable':>22} {'weights':>10} {'gradients':>10} {'optimizer':>10} "
            f"{'activations':>12} {'casts':>10} {'KL ref':>10} {'total':>10}")
    lines = [head]
    for e in estimates:
        share = f"{e.trainable_params:,} ({e.trainable_params / e.total_params:.1%})"
        lines.append(f"{e.method:<8} {share:>22} {_size(e.weights):>10} {_size(e.gradients):>10} "
                     f"{_size(e.optimizer):>10} {_size(e.activations):>12} {_size(e.casts):>10} {_size(e.reference):>10} "
                     f"{_size(e.total):>10}")
    return lines


def estimates_for(cfg, hf_config, frozen_bytes: int | None = None) -> list[MemoryEstimate]:
    """The configured method's estimate, then full training's (cfg: cptkit.config.Config with
    `train.peft`), for one micro batch of `train.micro_batch_size` x `data.seq_len`, in `model.dtype`.

    `frozen_bytes` defaults to how `cptkit train` stores frozen weights: in the compute dtype under
    LoRA with bfloat16 / float16 autocast (`peft.training.store_frozen_low`), else float32."""
    from cptkit.peft.config import peft_of

    t, pc = cfg.train, peft_of(cfg)
    if frozen_bytes is None:
        frozen_bytes = DTYPE_BYTES[cfg.model.dtype] if pc.method == "lora" else 4
    kl = cfg.regularizer.reference_dtype if cfg.regularizer.kind == "kl" else None
    common = {"micro_batch": t.micro_batch_size, "seq_len": cfg.data.seq_len, "dtype": cfg.model.dtype,
              "gradient_checkpointing": t.gradient_checkpointing, "loss_chunk_tokens": t.loss_chunk_tokens,
              "kl_reference_dtype": kl}
    shapes = model_shapes(hf_config)
    full = memory_estimate(shapes, "full", **common)
    if not pc.active:
        return [full]
    mine = memory_estimate(shapes, pc.method, pc.r, pc.target_modules, train_embeddings=pc.train_embeddings,
                           train_lm_head=pc.train_lm_head, freeze_layers=t.freeze_layers, dropout=pc.dropout,
                           double_quant=pc.double_quant, frozen_bytes=frozen_bytes, **common)
    return [mine, full]


def plan_section(cfg) -> list[str]:
    """`cptkit plan`'s lines on the training method: trainable parameters and the estimated memory of
    one process (weights, gradients, optimizer states, one micro batch's activations), the configured
    method beside full training. The model's shapes come from its config.json (no weights are read)."""
    from transformers import AutoConfig

    from cptkit.errors import UserError
    from cptkit.peft.config import peft_of
    from cptkit.peft.training import check_against_model

    pc = peft_of(cfg)
    check_against_model(cfg)  # a target or freeze_layers the model does not have: exit 2, as in train
    try:
        hf_config = AutoConfig.from_pretrained(cfg.model.name_or_path, revision=cfg.model.revision,
                                               trust_remote_code=cfg.model.trust_remote_code)
        estimates = estimates_for(cfg, hf_config)
    except (OSError, ValueError, KeyError, UserError) as exc:  # no config.json here (a hub id offline), no layers
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        return [f"memory           not estimated: cannot read the model's shapes ({reason})"]
    what = "full training" if not pc.active else f"{pc.method} r {pc.r} beside full training"
    lines = [f"memory           estimate per process for one micro batch of {cfg.train.micro_batch_size} x "
             f"{cfg.data.seq_len} tokens in {cfg.model.dtype}, {what} (before FSDP sharding):"]
    lines += ["  " + line for line in describe(estimates)]
    return lines
