"""How much memory one training step needs, estimated before anything is allocated.

The network is traced once on PyTorch's ``meta`` device (shapes only, no data): every
tensor that autograd saves for the backward pass is counted, at the plan's precision (2
bytes per value under bf16/fp16 autocast, 4 in fp32), and under autocast the low-precision
copy of every weight that the convolutions save. A step then needs

    saved activations + the largest saved tensor (the gradient alive beside them when the
    backward pass starts) + 16 bytes per parameter (weights, gradients and Adam's two
    moments) + a fixed 160 MiB (kernels' workspaces, the allocator, the runtime)

Without the fixed part this is close to the peak that torch's allocator reaches in a step
(``torch.profiler`` memory timeline; fp32, and bf16 where it is native:
tests/train/test_memory.py); with it, close to the peak resident memory of the 3D M-Net at
the paper's size (docs/benchmarks.md sets estimate and measurement side by side). It holds
for the precision that runs: emulated bf16, which keeps fp32 buffers, is refused
(:func:`segfew.runtime.choose_plan`). :func:`check_fits`
refuses, with a message that names the knobs, a run whose estimate exceeds the memory the
device has free.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segfew.errors import SpecError
from segfew.models import MNet
from segfew.runtime import Plan, available_bytes

__all__ = ["MemoryEstimate", "check_fits", "check_mnet_training",
           "estimate_training_memory"]

GiB = 2**30
FIXED_BYTES = 160 * 2**20
GRADIENT_COPIES = 1
BYTES_PER_PARAMETER = 16  # fp32 weight, gradient, Adam's exp_avg and exp_avg_sq


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes one training step needs: ``activations`` saved for backward, ``largest``
    of them, ``parameters`` (their count) and the total ``bytes``."""

    activations: int
    largest: int
    parameters: int

    @property
    def bytes(self) -> int:
        return (self.activations + GRADIENT_COPIES * self.largest
                + BYTES_PER_PARAMETER * self.parameters + FIXED_BYTES)

    def describe(self) -> str:
        return (f"{self.bytes / GiB:.2f} GiB ({self.activations / GiB:.2f} GiB of saved "
                f"activations, {self.parameters / 1e6:.2f} M parameters)")


def estimate_training_memory(build: Callable[[], nn.Module], input_shape: tuple[int, ...],
                             plan: Plan) -> MemoryEstimate:
    """The :class:`MemoryEstimate` of one training step (cross entropy, backward, Adam) of
    ``build()`` on a batch of ``input_shape`` ``(N, C, *spatial)``.

    ``build`` is called under ``torch.device("meta")``, so nothing of the real size is
    allocated whatever the shape. Raises ``ValueError`` if the network rejects the shape.
    """
    dtype = plan.autocast_dtype or torch.float32
    with torch.device("meta"):
        model = build().to(dtype)
        x = torch.empty(input_shape, dtype=dtype)
    saved: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        if not isinstance(t, nn.Parameter):
            storage = t.untyped_storage()
            saved[storage._cdata] = storage.nbytes()
        return t

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logits = model(x)
        target = torch.zeros((logits.shape[0], *logits.shape[2:]), dtype=torch.long,
                             device="meta")
        F.cross_entropy(logits.float(), target)
    # autocast casts each (fp32) weight for its convolution, which saves the cast copy
    copies = (0 if plan.autocast_dtype is None else
              sum(p.numel() for p in model.parameters() if p.dim() > 1) * dtype.itemsize)
    return MemoryEstimate(activations=sum(saved.values()) + copies,
                          largest=max(saved.values(), default=0),
                          parameters=sum(p.numel() for p in model.parameters()))


def check_fits(estimate: MemoryEstimate, available: int, what: str) -> None:
    """Raise :class:`SpecError` when ``estimate`` exceeds ``available`` bytes.

    ``what`` describes the run (e.g. "the 3D M-Net, n_s = 12, on 128×128×128, batch 2");
    the message names the settings that lower the need.
    """
    if estimate.bytes > available:
        raise SpecError(
            f"training {what} needs about {estimate.describe()}, but only "
            f"{available / GiB:.2f} GiB is free; lower the grid size (preprocess.size, "
            "--size), the width n_s (network.n_s, --n-s) or the batch size (train.batch_size, "
            "--batch-size), or use --precision bf16 where the hardware has it")


def check_mnet_training(dim: int, in_channels: int, num_labels: int, n_s: int,
                        grid: tuple[int, ...], batch: int, device: torch.device, plan: Plan
                        ) -> MemoryEstimate | None:
    """Estimate a training step of the M-Net on ``grid`` and refuse it if it cannot fit
    (:func:`check_fits` against :func:`available_bytes` of ``device``).

    Returns the estimate, or None when the M-Net rejects the grid (the caller's own check
    then says why).
    """
    try:
        estimate = estimate_training_memory(
            lambda: MNet(dim, in_channels, num_labels, n_s=n_s), (batch, in_channels, *grid),
            plan)
    except ValueError:
        return None
    check_fits(estimate, available_bytes(device),
               f"the {dim}D M-Net (n_s = {n_s}) on {'×'.join(map(str, grid))}, batch {batch}")
    return estimate


def network_cost(model: nn.Module, sample_shape: tuple[int, ...], batch: int, samples: int,
                 device: torch.device, plan: Plan) -> dict[str, float | None]:
    """What training ``model`` costs, said before a 3D network trains on volumes:
    ``parameters``, ``memory_gib`` of one step (:func:`estimate_training_memory`; None if
    the trace fails), ``step_s``: one forward and backward pass of a ``batch`` of
    ``sample_shape`` ``(C, *grid)`` timed on ``device``, and ``epoch_s``: that times the
    batches of ``samples`` cases (None where the pass fails).

    The pass runs on a copy of the network with the random number generators restored
    afterwards, so the training that follows is the same with or without it. The first
    pass includes the device's warm-up, so ``epoch_s`` errs high.
    """
    out: dict[str, float | None] = {
        "parameters": float(sum(p.numel() for p in model.parameters())),
        "memory_gib": None, "step_s": None, "epoch_s": None}
    try:
        estimate = estimate_training_memory(lambda: copy.deepcopy(model).to("meta"),
                                            (batch, *sample_shape), plan)
        out["memory_gib"] = round(estimate.bytes / GiB, 3)
    except Exception:  # an estimate is a courtesy: the run goes on without it
        pass
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            net = copy.deepcopy(model).to(device).train()
            x = torch.zeros((batch, *sample_shape), device=device)
            y = torch.zeros(batch, dtype=torch.long, device=device)
            start = time.perf_counter()
            with plan.autocast():
                loss = F.cross_entropy(net(x).float(), y)
            loss.backward()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            step = time.perf_counter() - start
    except Exception:
        return out
    out["step_s"] = round(step, 3)
    out["epoch_s"] = round(step * math.ceil(samples / batch), 1)
    return out
