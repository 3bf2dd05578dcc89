"""The only module that touches torch.distributed (through accelerate).

One process: nothing to set up. Under torchrun (or `accelerate launch`), accelerate reads the
RANK / WORLD_SIZE / MASTER_ADDR environment and starts the process group: gloo on CPU, NCCL on GPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch

MIXED_PRECISION = {"float32": "no", "bfloat16": "bf16", "float16": "fp16"}


@dataclass
class Dist:
    accelerator: object
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

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


def setup(dtype: str, cpu: bool | None = None, timeout: timedelta = timedelta(minutes=30)) -> Dist:
    """The process's Accelerator; `timeout` bounds how long processes wait for each other."""
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs

    if cpu is None:
        cpu = not torch.cuda.is_available()
    if dtype == "float16" and cpu:
        from cptkit.errors import UserError

        raise UserError("model.dtype: float16 training needs a GPU; use bfloat16 or float32 on CPU")
    accelerator = Accelerator(
        mixed_precision=MIXED_PRECISION[dtype], cpu=cpu, kwargs_handlers=[InitProcessGroupKwargs(timeout=timeout)]
    )
    return Dist(
        accelerator=accelerator,
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
        device=accelerator.device,
    )


def launched_world_size() -> int:
    """Processes of this launch, known before any process group exists (for `plan`)."""
    return int(os.environ.get("WORLD_SIZE", "1"))
