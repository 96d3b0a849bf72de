"""Process-group set-up under torchrun, and the stop flag that preemption signals raise."""
from __future__ import annotations

import os
import signal
from dataclasses import dataclass

import torch
import torch.distributed as dist

# Exit status of a trainer that stopped on a signal after saving its checkpoint (EX_TEMPFAIL):
# the job wrapper and the store read it as "preempted, resume me", not as a failure.
EXIT_PREEMPTED = 75


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed() -> DistInfo:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
        # Share the cores between the local ranks instead of oversubscribing them.
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank, world, local_rank, device)


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def rank0_says(info: DistInfo, flag: bool) -> bool:
    """Rank 0's answer, on every rank: for decisions that read files, which ranks may see at
    slightly different moments, and which all ranks must take alike."""
    if not info.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=info.device)
    dist.broadcast(t, src=0)
    return bool(t.item())


def shutdown(info: DistInfo) -> None:
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()


class StopFlag:
    """Set by SIGTERM (Slurm requeue/preemption, scancel) or SIGUSR2 (submitit's timeout and
    preemption signal). The loop polls it at step boundaries; under DDP the ranks agree on it with
    one tiny all-reduce every `sync_every` steps so they all stop at the same step."""

    def __init__(self, info: DistInfo, sync_every: int = 8) -> None:
        self.info = info
        self.sync_every = sync_every
        self.requested = False
        self.signal_name: str | None = None
        for sig in (signal.SIGTERM, signal.SIGUSR2, signal.SIGINT):
            signal.signal(sig, self._handler)

    def _handler(self, signum: int, _frame: object) -> None:
        self.requested = True
        self.signal_name = signal.Signals(signum).name

    def should_stop(self, step: int, force_sync: bool = False) -> bool:
        if not self.info.distributed:
            return self.requested
        if not force_sync and step % self.sync_every:
            return False
        flag = torch.tensor([1.0 if self.requested else 0.0], device=self.info.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())
