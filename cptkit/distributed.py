"""The only module that touches torch.distributed (directly, or through accelerate).

One process: nothing to set up. Under torchrun (or `accelerate launch`), accelerate reads the
RANK / WORLD_SIZE / MASTER_ADDR environment and starts the process group: gloo on CPU, NCCL on GPU.

How the loss module (`CausalLMLoss`: the model with its fused loss) is spread over processes,
chosen by `train.distributed.strategy`:
- ddp (default): accelerate wraps it in DistributedDataParallel; every process keeps the whole
  model and optimizer, and gradients are all-reduced once per optimizer step.
- fsdp: torch's `fully_shard` (FSDP2) makes each decoder layer one unit and the loss module the
  root unit. The root holds what is left: embeddings, final norm and output layer. The fused
  chunked loss runs inside the root's forward, so it reads the gathered (whole) output-layer
  weight, and its gradient is reduce-scattered like any other. Sharded on CPU with gloo too, so
  the same code path is tested without a GPU.

Checkpoints are written in one format whatever the strategy or process count: full (unsharded)
model and optimizer state dicts keyed by parameter name, gathered to the main process on save
and sharded again on load. So a state saved by 8 FSDP processes resumes in 1 process and back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import types
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

import torch

from cptkit.errors import UserError
from cptkit.train.precision import Precision

if TYPE_CHECKING:
    from cptkit.train.config import DistributedConfig

log = logging.getLogger("cptkit")

LM = "lm."  # CausalLMLoss keeps the Hugging Face model as `.lm`; saved weights use the model's own names


@dataclass
class Dist:
    accelerator: object
    rank: int
    world_size: int
    device: torch.device
    precision: Precision
    strategy: str = "single"  # single | ddp | fsdp: how `wrap` spread the model (set there)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def autocast(self):
        return self.precision.autocast()

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.world_size == 1:
            return tensor
        import torch.distributed as dist

        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def broadcast_object(self, obj: object) -> object:
        if self.world_size == 1:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.world_size > 1:
            self.accelerator.wait_for_everyone()

    # -- spreading the model -------------------------------------------------------------------

    def wrap(
        self,
        module: torch.nn.Module,
        make_optimizer: Callable[[torch.nn.Module], torch.optim.Optimizer],
        cfg: DistributedConfig,
        dtype: str,
    ) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        """(module ready to train, its optimizer) for `train.distributed` (a DistributedConfig)."""
        if self.world_size == 1 or cfg.strategy == "ddp":
            if self.world_size == 1 and cfg.strategy == "fsdp":
                log.info("train.distributed.strategy fsdp: one process, nothing to shard; training unsharded")
            self.strategy = "single" if self.world_size == 1 else "ddp"
            return self.accelerator.prepare(module, make_optimizer(module))
        self.strategy = "fsdp"
        shard(module, self.mesh(cfg), cfg, dtype)
        # The optimizer is built after sharding: it must hold the sharded parameters.
        return module, make_optimizer(module)

    def mesh(self, cfg: DistributedConfig):
        from torch.distributed.device_mesh import init_device_mesh

        kind = self.device.type
        if cfg.sharding == "full":
            log.info("fsdp: full sharding over %d processes", self.world_size)
            return init_device_mesh(kind, (self.world_size,))
        # Default group: the processes of one node (torchrun's LOCAL_WORLD_SIZE).
        group = cfg.shard_group_size or int(os.environ.get("LOCAL_WORLD_SIZE", self.world_size))
        shape = hybrid_shape(self.world_size, group)
        log.info("fsdp: hybrid sharding, %d replica(s) of %d-process shard groups", *shape)
        return init_device_mesh(kind, shape, mesh_dim_names=("replicate", "shard"))

    def gradient_sync(self, model: torch.nn.Module, sync: bool):
        """Context for one micro batch's forward and backward.

        ddp: gradients are all-reduced only on the last micro batch of a step (`sync`).
        fsdp: they are reduce-scattered after every micro batch, so what accumulates is this
        process's shard; holding back the reduction would keep whole unsharded gradients.
        """
        if sync or self.strategy == "fsdp":
            return contextlib.nullcontext()
        return self.accelerator.no_sync(model)

    def clip_grad_norm(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, max_norm: float) -> float:
        """Clip the gradient norm over all parameters of all processes; return the norm before.

        Under float16 loss scaling the gradients are unscaled first, so the norm is the true one.
        """
        self.precision.unscale(_plain(optimizer))
        if self.strategy != "fsdp":
            return float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm))
        from torch.distributed.tensor import DTensor

        # Over sharded gradients the norm comes back as a DTensor of partial sums.
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm, foreach=True)
        return float(norm.full_tensor() if isinstance(norm, DTensor) else norm)

    def optimizer_step(self, optimizer: torch.optim.Optimizer, apply: bool) -> None:
        """The update (unless `apply` is False) and the loss scaler's bookkeeping, on the same
        plain optimizer that `clip_grad_norm` unscaled."""
        self.precision.step(_plain(optimizer), apply)

    def call_gathered(self, module: torch.nn.Module, fn: Callable, *args):
        """`fn(lm, *args)` on the Hugging Face model with every weight whole (gathered under fsdp).

        Start-up checks call the model outside the loss module's forward; under FSDP the root's
        own weights (embeddings, output layer) are gathered only around a registered forward.
        """
        root = self.accelerator.unwrap_model(module)
        if self.strategy != "fsdp":
            return fn(root.lm, *args)
        if not hasattr(root, "call_lm"):
            from torch.distributed.fsdp import register_fsdp_forward_method

            root.call_lm = types.MethodType(lambda self, f, *a: f(self.lm, *a), root)
            register_fsdp_forward_method(root, "call_lm")
        return root.call_lm(fn, *args)

    # -- full state dicts, the one checkpoint format ---------------------------------------------

    def full_state(
        self, module: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None, trainable_only: bool = False
    ) -> tuple[dict[str, torch.Tensor], dict | None]:
        """(model weights by HF name, optimizer state by parameter name), whole, on CPU, on the
        main process ({} elsewhere). Every process must call it: under fsdp it gathers shards.

        `trainable_only`: leave out the frozen weights (an adapter run's checkpoints hold the
        adapters and what trains in full; the frozen base is reloaded from model.name_or_path)."""
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
        )

        root = self.accelerator.unwrap_model(module)
        options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=trainable_only)
        aliases = tied_aliases(root)
        # trainable_only: the trainable parameters and nothing else (a 4-bit layer's quantisation
        # constants are state-dict entries but no parameters, so torch's option keeps them).
        keep = {n for n, p in root.named_parameters() if p.requires_grad} if trainable_only else None
        weights = {
            k[len(LM):]: v for k, v in get_model_state_dict(root, options=options).items()
            if k.startswith(LM) and k not in aliases  # a tied weight is saved once, under its first name
            and (keep is None or k in keep)
        }
        optim = None
        if optimizer is not None:
            optim = get_optimizer_state_dict(root, _plain(optimizer), options=options)
        return weights, optim

    def load_full_state(
        self,
        module: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        weights: dict[str, torch.Tensor],
        optim: dict,
        where: str,
        trainable_only: bool = False,
    ) -> None:
        """Load full state dicts (as `full_state` returns them) into this process's shards;
        `trainable_only`: they hold the trainable weights only, the frozen ones stay as they are."""
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        root = self.accelerator.unwrap_model(module)
        aliases = tied_aliases(root)
        if trainable_only:
            wanted = {n for n, p in root.named_parameters() if p.requires_grad and n.startswith(LM)}
        else:
            wanted = {k for k in root.state_dict() if k.startswith(LM) and k not in aliases}
        given = {LM + k for k in weights}
        if wanted != given:
            missing, unexpected = sorted(wanted - given)[:3], sorted(given - wanted)[:3]
            raise UserError(f"{where}: weights do not fit this model (missing {missing}, unexpected {unexpected})")
        if any(not isinstance(k, str) for k in optim.get("state", {})):
            raise UserError(f"{where}: optimizer state by parameter index (an older format); it cannot be resumed")
        full = {LM + k: v for k, v in weights.items()}
        for alias, source in aliases.items():
            if source in full:  # trainable_only: a frozen tied matrix is in neither
                full[alias] = full[source]
        options = StateDictOptions(full_state_dict=True, strict=not trainable_only)
        set_model_state_dict(root, full, options=options)
        set_optimizer_state_dict(root, _plain(optimizer), optim, options=options)


def hybrid_shape(world_size: int, group: int) -> tuple[int, int]:
    """(replicas, processes per shard group) of hybrid sharding."""
    if world_size % group:
        raise UserError(
            f"train.distributed.shard_group_size: {group} does not divide the {world_size} processes "
            "of this launch into equal shard groups"
        )
    return world_size // group, group


def _plain(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The torch optimizer inside accelerate's wrapper (state-dict helpers want the real one)."""
    return getattr(optimizer, "optimizer", optimizer)


def tied_aliases(model: torch.nn.Module) -> dict[str, str]:
    """{alias: first name} for parameters registered under two names (tied embeddings)."""
    first: dict[int, str] = {}
    aliases = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in first:
            aliases[name] = first[id(p)]
        first.setdefault(id(p), name)
    return aliases


def shard(module: torch.nn.Module, mesh, cfg: DistributedConfig, dtype: str) -> None:
    """fully_shard every decoder layer, then the root (embeddings, norm, output layer, loss)."""
    from torch.distributed.fsdp import (
        CPUOffloadPolicy,
        MixedPrecisionPolicy,
        OffloadPolicy,
        fully_shard,
    )

    from cptkit.modeling import DTYPES, decoder_layers

    # Weights are gathered and used in the compute dtype; master weights (the shards the
    # optimizer updates) stay float32, and gradients are reduced in train.distributed.reduce_dtype.
    mp = MixedPrecisionPolicy(
        param_dtype=DTYPES[dtype] if dtype != "float32" else None, reduce_dtype=DTYPES[cfg.reduce_dtype]
    )
    kwargs = {
        "mesh": mesh,
        "mp_policy": mp,
        "reshard_after_forward": cfg.reshard_after_forward,
        "offload_policy": CPUOffloadPolicy() if cfg.cpu_offload else OffloadPolicy(),
    }
    layers = decoder_layers(module.lm)
    if not layers:
        log.warning("fsdp: %s names no decoder layer class; the whole model is one unit", type(module.lm).__name__)
    for layer in layers:
        fully_shard(layer, **kwargs)
    fully_shard(module, **kwargs)


def setup(dtype: str, cpu: bool | None = None, timeout: timedelta = timedelta(minutes=30)) -> Dist:
    """The process's Accelerator; `timeout` bounds how long processes wait for each other."""
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs

    if cpu is None:
        cpu = not torch.cuda.is_available()
    # Precision is cptkit's own (train/precision.py): accelerate only starts processes and wraps DDP.
    accelerator = Accelerator(mixed_precision="no", cpu=cpu, kwargs_handlers=[InitProcessGroupKwargs(timeout=timeout)])
    return Dist(
        accelerator=accelerator,
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
        device=accelerator.device,
        precision=Precision(dtype, accelerator.device),
    )


def launched_world_size() -> int:
    """Processes of this launch, known before any process group exists (for `plan`)."""
    return int(os.environ.get("WORLD_SIZE", "1"))
