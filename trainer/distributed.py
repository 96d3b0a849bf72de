"""Process-group set-up under torchrun, and the stop flag that preemption signals raise."""

from __future__ import annotations

import gc
import importlib
import os
import signal
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

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
        # Share the job's CPUs between the local ranks instead of oversubscribing them: the
        # CPUs Slurm allocated (cpus_per_task, not the node's count), else this process's
        # affinity. The thread count changes float summation order, so it must depend on the
        # allocation alone for a job to give the same weights however its ranks are placed.
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        torch.set_num_threads(max(1, job_cpus() // local_world))
    if world > 1 and not dist.is_initialized():
        # Imported BEFORE the group exists, on purpose: torch.distributed.nn.functional binds
        # `group=group.WORLD` as default arguments when it is imported. Imported later (here
        # torch.use_deterministic_algorithms pulls it in through torch._inductor and torch._dynamo),
        # ten of its functions keep the default group alive for the life of the process, and
        # shutdown() can no longer free the group and stop its threads before the exit.
        importlib.import_module("torch.distributed.nn")
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank, world, local_rank, device)


def average(info: DistInfo, t: torch.Tensor) -> torch.Tensor:
    """The mean of `t` over the ranks (a collective: every rank calls it); `t` in one process."""
    if not info.distributed:
        return t
    t = t.clone()
    dist.all_reduce(t)
    return t / info.world_size


class GlobalBatchNorm(_BatchNorm):
    """BatchNorm over the global batch on the CPU (gloo), where nn.SyncBatchNorm refuses to run:
    in training, the batch's mean and variance are summed over the ranks (two all-reduces, through
    autograd, so the gradient also flows across ranks as in SyncBatchNorm) in float64, and the
    running statistics are updated with the global ones. Its parameters and buffers are
    BatchNorm's, so its state_dict is any BatchNorm's; in eval mode it is BatchNorm."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training or self.running_mean is None) or not dist.is_initialized():
            return super().forward(input)
        from torch.distributed.nn.functional import all_reduce  # loaded: init_distributed

        self._check_input_dim(input)
        c = input.shape[1]
        dims = [0, *range(2, input.dim())]
        shape = [1, c] + [1] * (input.dim() - 2)
        x = input.double()
        count = torch.tensor([input.numel() // c], dtype=torch.float64, device=input.device)
        sums = all_reduce(torch.cat([x.sum(dims), count]))
        n = sums[c]
        mean = sums[:c] / n
        var = all_reduce((x - mean.view(shape)).pow(2).sum(dims)) / n  # biased, as BatchNorm's
        if self.running_mean is not None and self.running_var is not None and self.num_batches_tracked is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.to(self.running_mean.dtype), alpha=m)
                unbiased = var * n / (n - 1).clamp(min=1)
                self.running_var.mul_(1 - m).add_(unbiased.to(self.running_var.dtype), alpha=m)
        y = (x - mean.view(shape)) * torch.rsqrt(var + self.eps).view(shape)
        y = y.to(input.dtype)
        if self.weight is not None and self.bias is not None:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def sync_batchnorm(model: nn.Module, info: DistInfo) -> nn.Module:
    """Under DDP, every BatchNorm normalises by the global batch, as the 1-rank run does: a
    level's weights do not depend on the number of ranks (its id does not hold it). CUDA:
    nn.SyncBatchNorm; the CPU: GlobalBatchNorm. The cost: a few all-reduces of 2 x channels
    numbers per BatchNorm layer and step. One process: the model as it is."""
    if not info.distributed or not any(isinstance(m, _BatchNorm) for m in model.modules()):
        return model
    if info.device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _to_global(model)


def _to_global(module: nn.Module) -> nn.Module:
    if isinstance(module, _BatchNorm) and not isinstance(module, GlobalBatchNorm):
        new = GlobalBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        return new
    for name, child in module.named_children():
        module.add_module(name, _to_global(child))
    return module


def job_cpus() -> int:
    try:
        return max(1, int(os.environ["SLURM_CPUS_PER_TASK"]))
    except (KeyError, ValueError):
        pass
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


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
    """Destroy the process group AND free it, so its worker threads are gone before the exit.

    destroy_process_group() only unregisters the group (Backend.shutdown() is a no-op for gloo);
    ProcessGroupGloo's worker threads stop when the object is freed. A worker drops its reference
    to a finished collective a moment after the caller's wait() returns, and if that is the last
    reference it frees the collective's tensors, which takes the GIL. When the group was still
    alive at exit, a worker descheduled in that moment (a loaded machine) tried to take the GIL
    while the interpreter was finalizing: CPython ends such a thread with pthread_exit, the unwind
    hits the noexcept ~AsyncWork, and std::terminate aborts a run that had already COMPLETED
    ("terminate called without an active exception", SIGABRT). Freeing the group here runs
    ~ProcessGroupGloo, which joins the workers (with the GIL released) while Python is alive.
    """
    if not (info.distributed and dist.is_initialized()):
        return
    dist.destroy_process_group()  # normally drops the last reference: the workers are joined
    if _gloo_worker_threads():  # a DDP wrapper left in a reference cycle holds it (its Reducer)
        gc.collect()
    left = _gloo_worker_threads()
    if left:  # someone else still holds the group: say so rather than abort at random later
        print(
            f"[trainer] warning: rank {info.rank}: {left} gloo worker thread(s) outlive "
            "destroy_process_group(); something still references the process group, and the "
            "exit may abort (see trainer/distributed.py shutdown)",
            file=sys.stderr,
            flush=True,
        )


def _gloo_worker_threads() -> int:
    """Live ProcessGroupGloo worker threads of this process (Linux; 0 where it cannot tell)."""
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return 0
    n = 0
    for t in tasks:
        try:
            with open(f"/proc/self/task/{t}/comm") as f:
                n += f.read().strip() == "pt_gloo_runloop"
        except OSError:  # the thread ended meanwhile
            pass
    return n


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
