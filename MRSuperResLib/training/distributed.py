"""Training on several processes (`torchrun --nproc-per-node N -m MRSuperResLib train ...`).

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; `setup` joins the process group (nccl on CUDA, gloo
on the CPU). The generator and the discriminator train as DistributedDataParallel modules.

The data rule: every rank draws the whole global batch (--batch) from the same seeded stream
and trains on its own contiguous part of it (batch / world size samples). The ranks together
therefore see exactly the batches of a one-process run, which makes a run the same (to float
rounding) at any world size, and lets `--resume` continue at another world size (the batch
must divide evenly). Drawing the whole batch on every rank costs little next to the network.
Only rank 0 writes: events, checkpoints, the model and its card.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import MRSuperResError


@dataclass
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def part(self, batch: np.ndarray | None) -> np.ndarray | None:
        """This rank's contiguous part of a global batch."""
        if batch is None or self.size == 1:
            return batch
        n = len(batch) // self.size
        return batch[self.rank * n:(self.rank + 1) * n]

    def barrier(self) -> None:
        if self.size > 1:
            torch.distributed.barrier()

    def any(self, flag: bool) -> bool:
        """True on every rank when it is True on any (a stop asked of one rank stops all)."""
        if self.size == 1:
            return flag
        t = torch.tensor([1.0 if flag else 0.0])
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item())

    def from_main(self, value):
        """Rank 0's `value` on every rank (a picklable object)."""
        if self.size == 1:
            return value
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def wrap(self, module: torch.nn.Module | None, device: torch.device):
        """`module` as a DDP module on several ranks; itself on one."""
        if module is None or self.size == 1:
            return module
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)

    def close(self) -> None:
        if self.size > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


class NoLog:
    """The event log of a rank other than 0: only rank 0 writes."""

    def write(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass


def setup(device: str, batch: int) -> World:
    """The world torchrun describes (one process without it); joins its process group."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    world = World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))
    if batch % size:
        raise MRSuperResError(f"--batch {batch} does not divide among {size} processes: give a multiple of {size}")
    cuda = device != "cpu" and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(world.local_rank)
    else:                                   # the processes share the cores
        local = int(os.environ.get("LOCAL_WORLD_SIZE", size))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if cuda else "gloo")
    return world
