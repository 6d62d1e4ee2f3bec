"""Scale-out on PyTorch's own distributed engine (``torchrun --nproc_per_node=N``).

The commands need no flag: when ``torchrun`` has set ``WORLD_SIZE`` > 1 (with ``RANK``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``), :func:`setup` joins the process group —
NCCL when training on CUDA, gloo on CPU — and :func:`segfew.train.engine.fit` wraps the
model in ``DistributedDataParallel``, shards the data per rank, reduces metrics across
ranks and lets only rank 0 write files and show progress.

Outside ``torchrun`` every helper answers as for a single process (rank 0 of 1).

BatchNorm under torchrun: on CUDA the model's BatchNorm layers are converted to
``SyncBatchNorm`` when ``sync_bn`` (batch statistics over the global batch, which matters
for 3D training with one volume per GPU); gloo/CPU has no SyncBatchNorm, so there each rank
normalises its own share and DDP broadcasts rank 0's running statistics.
"""

from __future__ import annotations

import atexit
import os
from datetime import timedelta
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

if TYPE_CHECKING:
    from segfew.runtime import Plan

__all__ = [
    "all_reduce_sum",
    "barrier",
    "broadcast_flag",
    "env_world_size",
    "is_distributed",
    "is_main",
    "local_rank",
    "rank",
    "setup",
    "teardown",
    "world_size",
    "wrap",
]


def env_world_size() -> int:
    """``WORLD_SIZE`` as torchrun set it (1 when not launched by torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_distributed() -> bool:
    """True when a process group of more than one process is active."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's global rank (from the process group, else ``RANK``, else 0)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    """This process's rank on its machine (``LOCAL_RANK``; selects its GPU)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def is_main() -> bool:
    """True on the rank that writes files and shows progress."""
    return rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op for a single process)."""
    if is_distributed():
        dist.barrier()


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum ``tensor`` over ranks, in place, and return it (unchanged for one process)."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_flag(flag: bool, device: torch.device) -> bool:
    """True on every rank if ``flag`` is True on any rank (a stop decision all ranks share)."""
    if not is_distributed():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    return bool(all_reduce_sum(t).item() > 0)


def setup(device_type: str = "cpu", timeout_s: float = 1800.0) -> bool:
    """Join the process group that torchrun describes; return True if this call created it.

    Does nothing when ``WORLD_SIZE`` is 1 or a group already exists. The backend is NCCL
    for ``device_type == "cuda"`` and gloo otherwise. A group created here is destroyed at
    interpreter exit (or earlier by :func:`teardown`).
    """
    if env_world_size() <= 1 or not dist.is_available() or dist.is_initialized():
        return False
    backend = "nccl" if device_type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    atexit.register(teardown)
    return True


def teardown() -> None:
    """Leave the process group, if one is active.

    Every rank waits for the others first: a gloo rank whose peer has already destroyed the
    group aborts the process ("terminate called without an active exception"), which a
    loaded machine made happen when one rank finished writing well before the other.
    """
    if dist.is_available() and dist.is_initialized():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()


def wrap(net: nn.Module, sample: Tensor, plan: Plan, sync_bn: bool) -> nn.Module:
    """``net`` in ``DistributedDataParallel`` (SyncBatchNorm on CUDA when ``sync_bn``).

    ``sample`` is one prepared input batch on the training device; one forward of it tells
    whether some trainable parameter gets no gradient (DDP must then look for unused ones).
    """
    device = sample.device
    if device.type == "cuda" and sync_bn:
        net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
    return DistributedDataParallel(
        net, device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=_has_unused_parameters(net, sample, plan))


def _has_unused_parameters(net: nn.Module, sample: Tensor, plan: Plan) -> bool:
    """One forward in eval mode (no running statistics change) and ``autograd.grad`` with
    ``allow_unused`` (no ``.grad`` is touched)."""
    params = [p for p in net.parameters() if p.requires_grad]
    was_training = net.training
    net.eval()
    try:
        with plan.autocast():
            out = net(sample)
        grads = torch.autograd.grad(out.float().sum(), params, allow_unused=True)
    finally:
        net.train(was_training)
    return any(g is None for g in grads)
