"""Where and how the networks run: device, precision, memory format, threads and seeds.

One home for the execution rules that training (:mod:`segfew.train`) and prediction
(:mod:`segfew.inference.predictor`) share, so the two run a network the same way.

Precision policy (``--precision auto``, the default; :func:`choose_plan`): the fastest mode
that is safe on this machine — bf16 autocast on CUDA GPUs with bf16 and on CPUs with native
bf16 kernels (AVX-512 BF16 or AMX), fp16 autocast with a ``GradScaler`` on CUDA GPUs
without bf16, fp32 elsewhere (on a CPU without those instructions — AVX2 only, or AVX-512
without BF16 — emulated bf16 is many times slower than fp32; refused if asked for).
Channels-last memory format is used where it pays (CPU and CUDA 2D convolutions;
docs/benchmarks.md). ``fp32``, ``bf16`` and ``fp16`` override the
choice; run.json records the plan that ran (:meth:`Plan.record`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
from dataclasses import dataclass
from typing import Any, get_args

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch import Tensor

from segfew.choices import Precision
from segfew.errors import DataError, SpecError, format_bytes
from segfew.files import free_memory

__all__ = [
    "Capabilities",
    "Plan",
    "Precision",
    "adam",
    "available_bytes",
    "capabilities",
    "check_free_memory",
    "choose_plan",
    "cpu_bf16_supported",
    "default_threads",
    "derive_seed",
    "describe",
    "idle_cores",
    "resolve_device",
    "resolve_plan",
    "seed_everything",
    "seed_worker",
    "set_threads",
    "threads",
    "threads_chosen_by",
]

PRECISIONS: tuple[str, ...] = get_args(Precision)
_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
log = logging.getLogger(__name__)


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


def idle_cores(cores: int, load: float) -> int:
    """Cores left idle by a 1-minute load average of ``load`` on ``cores`` cores, rounded,
    at least 1 and at most ``cores``."""
    return max(1, min(cores, round(cores - load)))


def default_threads() -> tuple[int, str]:
    """The thread count to use when none is given, and why: ``OMP_NUM_THREADS`` when set,
    else the idle cores of those this process may run on (``os.sched_getaffinity``) by the
    1-minute load average (:func:`idle_cores`), shared among the processes torchrun started
    on this machine (``LOCAL_WORLD_SIZE``).

    On a shared machine a thread per core makes every operation wait for the busiest core;
    one thread per idle core does not fight the other jobs. The choice is made once per
    process, so a long run does not shrink itself as its own load enters the average.
    """
    global _AUTO
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) >= 1:
        return int(omp), "OMP_NUM_THREADS"
    if _AUTO is None:
        cores = _usable_cores()
        try:
            load = os.getloadavg()[0]
        except OSError:  # no load average on this platform: every core
            load = 0.0
        ranks = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        share = f", shared by {ranks} processes" if ranks > 1 else ""
        _AUTO = (max(1, idle_cores(cores, load) // ranks),
                 f"idle cores: {cores} cores, load average {load:.1f}{share}")
    return _AUTO


_AUTO: tuple[int, str] | None = None


def _usable_cores() -> int:
    return (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else os.cpu_count() or 1)

_CHOSEN_BY = "torch's default"


def set_threads(n: int | None) -> int:
    """Use ``n`` CPU threads for torch's intra-op work and the BLAS/OpenMP pools that
    scikit-learn uses; None: :func:`default_threads` (``OMP_NUM_THREADS`` when set, else the
    idle cores). Returns the count; the log and :func:`describe` (run.json) say how it was
    chosen. Raises :class:`SpecError` for ``n`` < 1.

    On a shared machine torch's default (a thread per core) can make small convolutions
    many times slower than one thread per job.
    """
    global _CHOSEN_BY
    if n is not None and n < 1:
        raise SpecError(f"threads must be at least 1, got {n}")

    said = (torch.get_num_threads(), _CHOSEN_BY)
    n, _CHOSEN_BY = (n, "--threads") if n is not None else default_threads()
    torch.set_num_threads(n)
    threadpool_limits(n)
    if (n, _CHOSEN_BY) != said:  # once, not again for every task of an experiment
        log.info("CPU threads: %d (%s)", n, _CHOSEN_BY)
    return n


def threads() -> int:
    """CPU threads torch uses now (every ``run.json`` records it)."""
    return int(torch.get_num_threads())


def threads_chosen_by() -> str:
    """How the thread count was chosen (``--threads``, ``OMP_NUM_THREADS``, the idle cores
    with the core count and load average, or torch's default where nothing set it)."""
    return _CHOSEN_BY


# ---------------------------------------------------------------- precision


#: oneDNN's instruction sets below AVX512_CORE_BF16 (``ONEDNN_MAX_CPU_ISA`` values): a limit
#: to one of them leaves bf16 to emulation
_ISAS_WITHOUT_BF16 = frozenset({"sse41", "avx", "avx2", "avx2_vnni", "avx2_vnni_2",
                                "avx512_core", "avx512_core_vnni"})
#: ``torch.cpu.get_capabilities()["architecture"]`` of an x86 CPU, lower case
_X86 = frozenset({"x86_64", "amd64", "x86", "i386", "i686"})


def cpu_bf16_supported() -> bool:
    """True when this CPU runs bf16 kernels natively (oneDNN with AVX-512 BF16 / AMX).

    A limit set by the user with ``ONEDNN_MAX_CPU_ISA`` (or the older ``DNNL_MAX_CPU_ISA``)
    below AVX512_CORE_BF16 counts: oneDNN then emulates bf16, as on a CPU without it.
    """
    limit = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or ""
    if limit.strip().lower() in _ISAS_WITHOUT_BF16:
        return False
    try:
        if not torch.backends.mkldnn.is_available():
            return False
        caps = torch.cpu.get_capabilities()
        if str(caps.get("architecture", "")).lower() in _X86:
            # oneDNN's own check accepts any AVX-512 CPU, where it converts bf16 to fp32
            # and back: many times slower than fp32 (docs/benchmarks.md)
            return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
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
        the convolutions after it do not each copy their input back (docs/benchmarks.md).
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
    ``GradScaler`` and needs CUDA. ``"bf16"`` on a CPU without native bf16 is refused: there
    oneDNN emulates it, many times slower than fp32, and its kernels keep fp32 buffers, so
    the memory estimate (:mod:`segfew.train.memory`) would not hold. ``channels_last`` None
    means: on wherever the plan is bf16/fp16 or the device is a CPU (the M-Net's 3×3
    convolutions run faster in it there; docs/benchmarks.md).

    Raises :class:`SpecError` for an unknown precision, fp16 on a CPU or bf16 on a CPU
    without native bf16.
    """
    if requested not in PRECISIONS:
        raise SpecError(f"unknown precision {requested!r}; use one of {', '.join(PRECISIONS)}")
    cuda = caps.device_type == "cuda"
    precision = requested
    if requested == "auto":
        precision = "bf16" if caps.bf16 else ("fp16" if cuda and caps.fp16 else "fp32")
    if precision == "fp16" and not cuda:
        raise SpecError("precision fp16 runs on CUDA only; use bf16 or fp32 on a CPU")
    if precision == "bf16" and not cuda and not caps.bf16:
        raise SpecError(
            "precision bf16 needs a CPU with native bf16 (AVX-512 BF16 or AMX), and this one "
            "has none (or ONEDNN_MAX_CPU_ISA limits it): emulated bf16 is many times slower "
            "than fp32 and the memory estimate does not hold for it; use --precision auto "
            "or fp32")
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
    on a CPU; its effect: docs/benchmarks.md). The update is Adam's, up to float rounding.
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
            "threads": torch.get_num_threads(), "threads_chosen_by": _CHOSEN_BY}


def available_bytes(device: torch.device) -> int:
    """Memory free for a run: CUDA's free device memory, else the system's MemAvailable."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    return free_memory()


def check_free_memory(need: int, work: str, path: Any = None) -> None:
    """Refuse, before it starts, work on one scan that needs ``need`` bytes of CPU memory
    when less is free: a DataError naming ``path`` (a batch's error row) instead of the
    system killing the process and the batch with it. ``work`` says what, and the grid."""
    free = available_bytes(torch.device("cpu"))
    if need > free:
        raise DataError(f"{work} needs about {format_bytes(need)} and {format_bytes(free)} is "
                        "free: crop or resample it first", path)
