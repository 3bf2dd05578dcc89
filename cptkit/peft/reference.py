"""The starting model for KL-to-base under an adapter method, without a second copy of the weights.

Under LoRA the base weights never change, so the starting model is the training model with its
adapters disabled (peft's `disable_adapter()`), except for what trains in full: the input
embeddings and the output layer. `FrozenBase` keeps a frozen copy of just those matrices (as
they were when it was built, i.e. before the first update) and runs the training model's own
modules with them swapped in for one call (`torch.func.functional_call`, which leaves the
training parameters untouched), adapters off, in eval mode (no dropout), under no_grad.

Cost: one vocabulary x hidden matrix in `dtype` when the embeddings train (tied or not), a
second one when an untied output layer trains too, nothing when neither does; against a whole
second model for the full-training reference. For Llama-3-8B (128,256 x 4,096) that is 2.1 GB
per matrix in float32 instead of 32 GB.

`FrozenBase` looks like a model to `cptkit.regularizers.kl.KLToReference`, which needs only
`model(**inputs).logits` (full-logits loss) or `decoder_and_head(model)` (chunked loss): its
`decoder` returns the last hidden states and `get_output_embeddings()` a linear layer holding the
original output weights. It holds the training model outside its own submodules, so the
`eval()` and `requires_grad_(False)` that KLToReference applies to a reference do not reach it.
Build it before the first optimizer step and before a resumed run loads its checkpoint.
"""

from __future__ import annotations

import contextlib

import torch
from torch.func import functional_call

from cptkit.peft.adapters import base_lm


def _name_of(root: torch.nn.Module, target: torch.nn.Module) -> str | None:
    return next((n for n, m in root.named_modules() if m is target), None)


class FrozenBase(torch.nn.Module):
    base_model_prefix = "decoder"

    def __init__(self, peft_model, dtype: torch.dtype = torch.float32, own_head: bool = False):
        """`own_head`: keep a copy of the output layer even when it is frozen (under FSDP the live
        one is a shard outside the model's forward, and the loss reads the reference's head there)."""
        super().__init__()
        self._held = [peft_model]  # a list, so the training model is not registered as a submodule
        # How a forward of the training model's modules is run: directly, or (FSDP, set by
        # `training.bind_reference`) inside the wrapped model with its weights gathered.
        self.runner = lambda fn: fn()
        lm = base_lm(peft_model)
        embed, head = lm.get_input_embeddings(), lm.get_output_embeddings()
        self.tied = head is not None and head.weight is embed.weight
        self._embed_name = _name_of(lm, embed) + ".weight"
        trained_embed = embed.weight.requires_grad
        trained_head = head is not None and any(p.requires_grad for p in head.parameters())
        # Originals of the matrices that train in full (None where the live weights are the
        # originals), as non-persistent buffers: `.to(device)` moves them, state_dict leaves them out.
        # A tied output layer's original is the embeddings' copy: one matrix, kept once.
        self.register_buffer("embed_weight", self._copy(embed.weight, dtype) if trained_embed else None, False)
        keep_head = head is not None and (trained_head or own_head)
        own = keep_head and not (self.tied and trained_embed)
        self.register_buffer("head_own_weight", self._copy(head.weight, dtype) if own else None, False)
        bias = head.bias if keep_head and head.bias is not None else None
        self.register_buffer("head_bias", self._copy(bias, dtype) if bias is not None else None, False)
        self._head_name = _name_of(lm, head) if head is not None else None

    @staticmethod
    def _copy(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return t.detach().to(dtype=dtype, copy=True)

    @property
    def lm(self) -> torch.nn.Module:
        return base_lm(self._held[0])

    @property
    def head_weight(self) -> torch.Tensor | None:
        """The output layer's original weight, or None when the live one is the original."""
        if self.head_own_weight is not None:
            return self.head_own_weight
        return self.embed_weight if self.tied else None

    def extra_bytes(self) -> int:
        """Memory the original matrices take (what this reference costs)."""
        return sum(b.numel() * b.element_size() for b in self.buffers())

    def originals(self) -> dict[str, torch.Tensor]:
        """{parameter name in the HF model: original tensor} for what trains in full."""
        out = {}
        if self.embed_weight is not None:
            out[self._embed_name] = self.embed_weight
        if self.head_own_weight is not None and not self.tied:
            out[f"{self._head_name}.weight"] = self.head_own_weight
        if self.head_bias is not None:
            out[f"{self._head_name}.bias"] = self.head_bias
        return out

    @contextlib.contextmanager
    def base_mode(self):
        """Adapters off, eval mode (no dropout), no gradients; restored afterwards."""
        peft_model, lm = self._held[0], self.lm
        was_training = lm.training
        with torch.no_grad(), peft_model.disable_adapter():
            lm.eval()
            try:
                yield
            finally:
                lm.train(was_training)

    def forward(self, input_ids, position_ids=None, use_cache=False, **kwargs):
        """The starting model's own forward (its full logits: `.logits`)."""
        def run():
            with self.base_mode():
                return functional_call(self.lm, self.originals(), args=(),
                                       kwargs={"input_ids": input_ids, "position_ids": position_ids,
                                               "use_cache": use_cache, **kwargs}, tie_weights=True)

        return self.runner(run)

    def hidden(self, input_ids, position_ids=None, use_cache=False, **kwargs):
        """The starting decoder's output (`.last_hidden_state`), for the chunked loss."""
        lm = self.lm
        decoder = getattr(lm, lm.base_model_prefix)
        swap = {}
        if self.embed_weight is not None:
            swap[self._embed_name.removeprefix(lm.base_model_prefix + ".")] = self.embed_weight
        def run():
            with self.base_mode():
                return functional_call(decoder, swap, args=(), kwargs={
                    "input_ids": input_ids, "position_ids": position_ids, "use_cache": use_cache, **kwargs})

        return self.runner(run)

    @property
    def decoder(self) -> torch.nn.Module:
        return _Decoder(self)

    def get_output_embeddings(self) -> torch.nn.Module:
        head = self.lm.get_output_embeddings()
        if self.head_weight is None:
            return head
        out_features, in_features = self.head_weight.shape
        # Built on the meta device (no allocation), then given the original tensors.
        linear = torch.nn.Linear(in_features, out_features, bias=False, device="meta")
        linear.weight = torch.nn.Parameter(self.head_weight, requires_grad=False)
        if self.head_bias is not None:
            linear.bias = torch.nn.Parameter(self.head_bias, requires_grad=False)
        return linear


class _Decoder(torch.nn.Module):
    """`FrozenBase.decoder`: the starting decoder stack, as `decoder_and_head` expects a module."""

    def __init__(self, base: FrozenBase):
        super().__init__()
        self._base = [base]

    def forward(self, **inputs):
        return self._base[0].hidden(**inputs)
