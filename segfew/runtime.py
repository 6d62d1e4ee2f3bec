"""Where and how the networks run: device, precision, memory format, threads and seeds.

One home for the execution rules that training (:mod:`segfew.train`) and prediction
(:mod:`segfew.inference.predictor`) share, so the two run a network the same way.

Precision policy (``--precision auto``, the default; :func:`choose_plan`): the fastest mode
that is safe on this machine — bf16 autocast on CUDA GPUs with bf16 and on CPUs with native
bf16 kernels (AVX-512 BF16 or AMX), fp16 autocast with a ``GradScaler`` on CUDA GPUs
without bf16, fp32 elsewhere (on an AVX2-only CPU emulated bf16 is many times slower than
fp32). Channels-last memory format is used where it was measured to pay (CPU and CUDA 2D
convolutions; see the README's benchmark). ``fp32``, ``bf16`` and ``fp16`` override the
choice; run.json records the plan that ran (:meth:`Plan.record`).
"""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass
from typing import Any, get_args

import numpy as np
import torch
from torch import Tensor

from segfew.choices import Precision
from segfew.errors import SpecError

__all__ = [
    "Capabilities",
    "Plan",
    "Precision",
    "adam",
    "capabilities",
    "choose_plan",
    "cpu_bf16_supported",
    "derive_seed",
    "describe",
    "resolve_device",
    "resolve_plan",
    "seed_everything",
    "seed_worker",
    "set_threads",
    "threads",
]

PRECISIONS: tuple[str, ...] = get_args(Precision)
_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


# ---------------------------------------------------------------- devices


def resolve_device(name: str) -> torch.device:
    """``"auto"`` → CUDA if available, else CPU; anything else is checked and returned.

    Under torchrun a bare ``"cuda"`` (or ``"auto"`` on a GPU machine) means this rank's GPU,
    ``cuda:LOCAL_RANK``. Raises :class:`SpecError` for an unknown or absent device.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SpecError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SpecError(f"device {name!r} asked for, but CUDA is not available here")
        if device.index is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise SpecError(f"device {name!r}: only {torch.cuda.device_count()} GPU(s) here")
    elif device.type != "cpu":
        raise SpecError(f"device {name!r} is not supported; use auto, cpu, cuda or cuda:N")
    return device


def set_threads(n: int | None) -> None:
    """Use ``n`` CPU threads for torch's intra-op work and the BLAS/OpenMP pools that
    scikit-learn uses (None: leave the defaults, ``OMP_NUM_THREADS`` when set).

    On a shared machine torch's default (a thread per core) can make small convolutions
    many times slower than one thread per job.
    """
    if n is not None:
        if n < 1:
            raise SpecError(f"threads must be at least 1, got {n}")
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(n)
        threadpool_limits(n)


def threads() -> int:
    """CPU threads torch uses now (every ``run.json`` records it)."""
    return int(torch.get_num_threads())


# ---------------------------------------------------------------- precision


def cpu_bf16_supported() -> bool:
    """True when this CPU runs bf16 kernels natively (oneDNN with AVX-512 BF16 / AMX)."""
    try:
        return bool(torch.backends.mkldnn.is_available()
                    and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@dataclass(frozen=True)
class Capabilities:
    """What a device can do natively: ``bf16`` (fast bf16 kernels) and ``fp16``."""

    device_type: str
    bf16: bool
    fp16: bool


def capabilities(device: torch.device) -> Capabilities:
    """The :class:`Capabilities` of ``device`` (CPU: oneDNN's bf16 check; CUDA: the GPU's)."""
    if device.type == "cuda":
        return Capabilities("cuda", bool(torch.cuda.is_bf16_supported()), True)
    return Capabilities("cpu", cpu_bf16_supported(), False)


@dataclass(frozen=True)
class Plan:
    """How a network runs: ``precision`` (fp32, bf16, fp16), ``grad_scaler`` (fp16 training
    needs one) and ``channels_last`` (memory format of 4D/5D tensors)."""

    device_type: str
    precision: str
    grad_scaler: bool
    channels_last: bool

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return _DTYPES[self.precision]

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Autocast to the plan's dtype (a no-op in fp32)."""
        dtype = self.autocast_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=dtype)

    def memory_format(self, x: Tensor) -> Tensor:
        """``x`` (N, C, *spatial) in the plan's memory format (unchanged unless channels-last)."""
        if not self.channels_last or x.dim() not in (4, 5):
            return x
        return x.contiguous(memory_format=_channels_last(x.dim() - 2))

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """Move ``model``'s convolution weights to the plan's memory format, in place.

        Each weight gets the format of its own rank (4 → channels-last, 5 → channels-last-3d),
        so a 2D network inside a classifier of 3D images (slice-wise) works too.
        ``Tensor.to`` restrides even a weight whose layout is ambiguous (one input channel,
        which ``contiguous`` leaves as it is): its convolution then returns channels-last, and
        the convolutions after it do not each copy their input back (a fifth of a bf16
        training step of the M-Net, measured).
        """
        if self.channels_last:
            with torch.no_grad():
                for param in model.parameters():
                    if param.dim() in (4, 5):
                        param.data = param.data.to(
                            memory_format=_channels_last(param.dim() - 2))
        return model

    def record(self) -> dict[str, Any]:
        """What ran, for run.json."""
        return {"device": self.device_type, "precision": self.precision,
                "autocast": str(self.autocast_dtype).replace("torch.", "")
                if self.autocast_dtype else None,
                "grad_scaler": self.grad_scaler, "channels_last": self.channels_last}


def _channels_last(dim: int) -> torch.memory_format:
    return torch.channels_last if dim == 2 else torch.channels_last_3d


def choose_plan(requested: str, caps: Capabilities, channels_last: bool | None = None
                ) -> Plan:
    """The execution plan for ``requested`` precision on a device with ``caps``.

    ``"auto"``: bf16 where ``caps.bf16``; else fp16 on CUDA; else fp32. ``"fp16"`` uses a
    ``GradScaler`` and needs CUDA; ``"bf16"`` on a CPU without native bf16 runs (emulated,
    slowly) because it was asked for. ``channels_last`` None means: on wherever the plan is
    bf16/fp16 or the device is a CPU (measured to pay there for the M-Net's 3×3 convolutions).

    Raises :class:`SpecError` for an unknown precision or fp16 on a CPU.
    """
    if requested not in PRECISIONS:
        raise SpecError(f"unknown precision {requested!r}; use one of {', '.join(PRECISIONS)}")
    cuda = caps.device_type == "cuda"
    precision = requested
    if requested == "auto":
        precision = "bf16" if caps.bf16 else ("fp16" if cuda and caps.fp16 else "fp32")
    if precision == "fp16" and not cuda:
        raise SpecError("precision fp16 runs on CUDA only; use bf16 or fp32 on a CPU")
    if channels_last is None:
        channels_last = precision != "fp32" or not cuda
    return Plan(caps.device_type, precision, precision == "fp16", bool(channels_last))


def resolve_plan(device: torch.device, requested: str = "auto",
                 channels_last: bool | None = None) -> Plan:
    """:func:`choose_plan` with the capabilities of ``device``."""
    return choose_plan(requested, capabilities(device), channels_last)


def adam(params: Any, lr: float, weight_decay: float = 0.0) -> torch.optim.Adam:
    """Adam (Kingma & Ba 2015; SPEC §4) with its fused kernel: one pass over every
    parameter on CPU and CUDA instead of a dozen small operations per tensor (the default
    on a CPU). On the 2D M-Net (n_s = 16) it halves the optimizer's share of a step, to
    about 3 %; the update is Adam's, up to float rounding.
    """
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)


# ---------------------------------------------------------------- seeds


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy's global RNG and torch (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def derive_seed(*keys: int) -> int:
    """A 63-bit seed that depends only on ``keys`` (e.g. seed, epoch, purpose)."""
    state = np.random.SeedSequence([k % 2**32 for k in keys]).generate_state(2, np.uint64)
    return int(state[0] >> np.uint64(1))


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: numpy and python seeded from the worker's torch seed."""
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


def describe(device: str, precision: str = "auto", channels_last: bool | None = None
             ) -> dict[str, Any]:
    """What run.json records of the runtime: the plan that runs, the device and its
    capabilities, and torch's thread count."""
    dev = resolve_device(device)
    caps = capabilities(dev)
    return {**choose_plan(precision, caps, channels_last).record(), "device": str(dev),
            "requested_precision": precision, "native_bf16": caps.bf16,
            "threads": torch.get_num_threads()}
