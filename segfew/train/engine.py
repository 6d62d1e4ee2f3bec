"""One training engine for segmentation and classification (SPEC §4).

:func:`fit` trains any ``nn.Module`` that maps ``(N, C, *spatial)`` images to logits —
``(N, L, *spatial)`` for segmentation, ``(N, L)`` for classification — with Adam and the
weighted cross entropy of :mod:`segfew.train.loss`, augments on the device
(:mod:`segfew.train.augment`), validates every epoch, writes ``best.pt``, ``last.pt`` and
``metrics.csv`` atomically, and resumes exactly. The same call scales out under
``torchrun`` (:mod:`segfew.train.distributed`).

Reproducibility. Everything random in an epoch is derived from ``(cfg.seed, epoch)``, never
from a stream that runs across epochs: the data order (``DistributedSampler`` seeded with
``seed + epoch``), the augmentation generator, the global torch/numpy/python RNGs (dropout),
and the DataLoader's worker seeds. So a run stopped after ``k`` epochs and resumed from
``last.pt`` (model, optimizer, grad scaler, epoch, history, best, patience counter; the RNG
states are saved and restored too) ends with the same weights as an uninterrupted run on
the same device.

Batch size. ``cfg.batch_size`` is the GLOBAL batch: under torchrun with W processes each
rank takes ``batch_size / W`` samples (it must divide). Ranks get interleaved shares of the
same permutation and draw augmentation parameters for the whole global batch, keeping their
own share; with the loss averaged over samples, DDP's gradient average then equals the
single-process gradient of the same batch. A model without BatchNorm (or with SyncBatchNorm
on GPUs) therefore trains to the same weights, up to float rounding, on any number of
ranks — provided the training set size is a multiple of the global batch size (otherwise
``DistributedSampler`` pads the last batch with repeats).

BatchNorm under torchrun: on CUDA the model's BatchNorm layers are converted to
``SyncBatchNorm`` when ``cfg.sync_bn`` (batch statistics over the global batch, which
matters for 3D training with one volume per GPU); gloo/CPU has no SyncBatchNorm, so there
each rank normalises its own share and DDP broadcasts rank 0's running statistics.

Frozen-feature cache. When no augmentation runs, ``cfg.cache_features`` is on, and the model
has ``forward_features``/``forward_head`` with a frozen feature part (no parameter that
``forward_features`` uses requires grad, and none of its BatchNorm/Dropout layers is in
training mode while the model is), the features of every training and validation image
are computed once (:func:`cache_features`) and only the head runs per epoch. This equals the
uncached path up to float rounding, because the feature part is then a fixed function of
the image. The cache is skipped when its estimated size exceeds ``cfg.cache_max_gb``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import random
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset, TensorDataset

from segfew.atomic import atomic_path, write_text
from segfew.config import TrainConfig
from segfew.errors import DataError, SegfewError, SpecError
from segfew.train import distributed as D
from segfew.train.augment import apply_params, draw_params
from segfew.train.loss import weighted_cross_entropy

__all__ = [
    "CHECKPOINT_FORMAT",
    "FitResult",
    "cache_features",
    "cpu_bf16_supported",
    "features_are_frozen",
    "fit",
    "load_checkpoint",
    "predict_batches",
    "resolve_device",
    "seed_everything",
]

Task = Literal["segmentation", "classification"]
BatchTransform = Callable[[Tensor], Tensor]
CHECKPOINT_FORMAT = "segfew-train-checkpoint/1"
METRIC_COLUMNS = ("epoch", "train_loss", "val_loss", "val_metric", "lr", "seconds")


@dataclass
class FitResult:
    """What :func:`fit` did.

    ``best_metric`` is the monitored value at ``best_epoch``: the validation metric
    (accuracy or mean foreground Dice; higher is better) or, without a validation set, the
    training loss (lower is better). ``stopped`` is ``"completed"``, ``"early_stopping"`` or
    ``"time_budget"``. Epochs are counted from 1.
    """

    best_path: Path
    last_path: Path
    history: list[dict[str, float]]
    best_epoch: int
    best_metric: float
    stopped: str
    cached_features: bool = False
    monitor: str = "val_metric"
    extra: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- devices and seeds


def resolve_device(name: str) -> torch.device:
    """``"auto"`` → CUDA if available, else CPU; anything else is checked and returned.

    Under torchrun a bare ``"cuda"`` (or ``"auto"`` on a GPU machine) means this rank's GPU,
    ``cuda:LOCAL_RANK``.
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
        if device.index is None and D.env_world_size() > 1:
            device = torch.device("cuda", D.local_rank())
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise SpecError(f"device {name!r}: only {torch.cuda.device_count()} GPU(s) here")
    return device


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy's global RNG and torch (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _derive(*keys: int) -> int:
    """A 63-bit seed that depends only on ``keys`` (e.g. seed, epoch, purpose)."""
    state = np.random.SeedSequence([k % 2**32 for k in keys]).generate_state(2, np.uint64)
    return int(state[0] >> np.uint64(1))


_PURPOSE_GLOBAL, _PURPOSE_AUGMENT, _PURPOSE_LOADER = 1, 2, 3


def _seed_worker(worker_id: int) -> None:
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


def cpu_bf16_supported() -> bool:
    """True when this CPU runs bf16 kernels natively (oneDNN with AVX-512 BF16 / AMX)."""
    try:
        return bool(torch.backends.mkldnn.is_available()
                    and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _autocast_dtype(device: torch.device, cfg: TrainConfig) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, whether a GradScaler is needed)."""
    if device.type == "cuda" and cfg.amp:
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16, False
        return torch.float16, True
    if device.type == "cpu" and cfg.bf16_cpu:
        if cpu_bf16_supported():
            return torch.bfloat16, False
        warnings.warn("bf16_cpu asked for, but this CPU has no native bf16 support; "
                      "training in float32", stacklevel=3)
    return None, False


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def _memory_format(dim: int) -> torch.memory_format:
    return torch.channels_last if dim == 2 else torch.channels_last_3d


# ---------------------------------------------------------------- frozen features


def features_are_frozen(model: nn.Module, sample: Tensor) -> bool:
    """Whether ``model.forward_features`` is a fixed function of its input.

    True when the model has ``forward_features`` and ``forward_head``, no parameter of a
    module that ``forward_features(sample)`` calls (nor of the model itself) requires grad,
    and none of those modules is a BatchNorm/Dropout left in training mode by
    ``model.train()``. ``sample`` is one batch on the model's device. Leaves the model's
    mode as it was and its state untouched.
    """
    if not (callable(getattr(model, "forward_features", None))
            and callable(getattr(model, "forward_head", None))):
        return False
    if any(p.requires_grad for p in model.parameters(recurse=False)):
        return False
    called: list[nn.Module] = []
    hooks = [m.register_forward_pre_hook(lambda mod, _inp: called.append(mod))
             for m in model.modules()]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model.forward_features(sample)  # type: ignore[operator]
        model.train()
        for m in {id(m): m for m in called}.values():
            if any(p.requires_grad for p in m.parameters(recurse=False)):
                return False
            stochastic = isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0
            stateful = isinstance(m, nn.modules.batchnorm._NormBase) and (
                m.track_running_stats or isinstance(m, nn.modules.batchnorm._BatchNorm))
            if m.training and (stochastic or stateful):
                return False
        return True
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)


def _batches(data: Dataset | Iterable[Tensor], batch_size: int, num_workers: int = 0,
             pin_memory: bool = False) -> Iterator[tuple[Tensor, Tensor | None]]:
    """(images, targets-or-None) batches from a dataset or an iterable of image batches."""
    if isinstance(data, Dataset):
        loader = DataLoader(data, batch_size=batch_size, shuffle=False,
                            num_workers=num_workers, pin_memory=pin_memory)
        for item in loader:
            if isinstance(item, (list, tuple)):
                yield item[0], (item[1] if len(item) > 1 else None)
            else:
                yield item, None
    else:
        for x in data:
            yield x, None


def cache_features(model: nn.Module, dataset: Dataset, device: torch.device | str,
                   batch_size: int, *, batch_transform: BatchTransform | None = None,
                   autocast_dtype: torch.dtype | None = None,
                   channels_last: bool = False) -> TensorDataset:
    """``TensorDataset(features, targets)`` of ``model.forward_features`` for every sample.

    Runs in eval mode without gradients, in the order of ``dataset``; features are kept on
    the CPU in the dtype the model produced (bf16 under bf16 autocast).
    """
    device = torch.device(device)
    feats, targets = [], []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for x, y in _batches(dataset, batch_size):
                x = x.to(device)
                if batch_transform is not None:
                    x = batch_transform(x)
                if channels_last:
                    x = x.contiguous(memory_format=_memory_format(x.dim() - 2))
                with _autocast(device, autocast_dtype):
                    f = model.forward_features(x)  # type: ignore[operator]
                feats.append(f.detach().cpu().contiguous())
                if y is not None:
                    targets.append(torch.as_tensor(y))
    finally:
        model.train(was_training)
    if not feats:
        raise DataError("cannot cache features of an empty dataset")
    tensors = [torch.cat(feats)] + ([torch.cat(targets)] if targets else [])
    return TensorDataset(*tensors)


class _Head(nn.Module):
    """Runs only ``model.forward_head`` (cached-feature training); shares the parameters."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: Tensor) -> Tensor:
        return self.model.forward_head(features)  # type: ignore[operator]


# ---------------------------------------------------------------- inference


def predict_batches(model: nn.Module, data: Dataset | Iterable[Tensor],
                    device: torch.device | str = "cpu", batch_size: int = 8,
                    amp: bool = False, *, batch_transform: BatchTransform | None = None
                    ) -> Tensor:
    """Softmax probabilities of ``model`` in eval mode, concatenated on the CPU (float32).

    ``data`` is a Dataset yielding images or ``(image, target)`` pairs, or an iterable of
    image batches ``(N, C, *spatial)``. Returns ``(N, L)`` or ``(N, L, *spatial)``. With
    ``amp`` on CUDA it runs under bf16 (or fp16) autocast; on the CPU it always runs in
    float32 so predictions are reproducible. The model's mode is restored afterwards.
    """
    device = torch.device(device)
    dtype = None
    if amp and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.inference_mode():
            for x, _ in _batches(data, batch_size, pin_memory=device.type == "cuda"):
                x = x.to(device, non_blocking=True)
                if batch_transform is not None:
                    x = batch_transform(x)
                with _autocast(device, dtype):
                    logits = model(x)
                out.append(torch.softmax(logits.float(), dim=1).cpu())
    finally:
        model.train(was_training)
    if not out:
        raise DataError("nothing to predict: the dataset is empty")
    return torch.cat(out)


# ---------------------------------------------------------------- checkpoints


def _rng_state() -> dict[str, Any]:
    np_state: tuple[Any, ...] = tuple(np.random.get_state(legacy=True))
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                  "cached_gaussian": float(np_state[4])},
        "python": {"version": int(py_state[0]), "state": list(py_state[1]),
                   "gauss_next": py_state[2]},
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") and torch.cuda.is_available():
        with contextlib.suppress(RuntimeError):
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a ``best.pt``/``last.pt`` written by :func:`fit` (``weights_only=True``)."""
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise SegfewError("checkpoint not found", path) from None
    except Exception as e:  # corrupt or not a checkpoint
        raise SegfewError(f"cannot read checkpoint ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''})", path) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise SegfewError(f"not a segfew training checkpoint ({CHECKPOINT_FORMAT})", path)
    return ckpt


def _save(path: Path, payload: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _write_metrics(path: Path, history: list[dict[str, float]]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(METRIC_COLUMNS)
    for row in history:
        w.writerow([int(row["epoch"]) if c == "epoch" else f"{row[c]:.6g}"
                    for c in METRIC_COLUMNS])
    write_text(path, buf.getvalue())


# ---------------------------------------------------------------- metrics


def _confusion(logits: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """(L, L) counts, rows = true label, columns = predicted (int64, on the device)."""
    pred = logits.argmax(1).reshape(-1)
    idx = target.reshape(-1).long() * num_classes + pred
    return torch.bincount(idx, minlength=num_classes**2).reshape(num_classes, num_classes)


def _metrics_from_confusion(conf: Tensor, task: Task) -> dict[str, float]:
    c = conf.double().cpu()
    if task == "classification":
        total = c.sum().item()
        return {"val_metric": c.diag().sum().item() / total if total else math.nan}
    # Dice per label over the whole validation set: 2|P∩T| / (|P|+|T|).
    denom = c.sum(0) + c.sum(1)
    dice = torch.where(denom > 0, 2 * c.diag() / denom.clamp(min=1), torch.nan)
    out = {f"dice_{label}": dice[label].item() for label in range(1, c.shape[0])}
    fg = dice[1:][~torch.isnan(dice[1:])]
    out["val_metric"] = fg.mean().item() if fg.numel() else math.nan
    return out


# ---------------------------------------------------------------- fit


def _progress(console: Console | None, show: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
        console=console, disable=not show or console is None,
    )


def _check_sample(train_set: Dataset, task: Task) -> Tensor:
    try:
        n = len(train_set)  # type: ignore[arg-type]
    except TypeError:
        raise DataError("the training set must be a map-style Dataset with a length") from None
    if n == 0:
        raise DataError("the training set is empty")
    x, y = train_set[0]
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    if x.dim() not in (3, 4):
        raise DataError(f"training images must be (C, H, W) or (C, D, H, W); got {tuple(x.shape)}")
    if task == "segmentation" and tuple(y.shape) != tuple(x.shape[1:]):
        raise DataError(f"label map {tuple(y.shape)} does not match image {tuple(x.shape)}")
    if task == "classification" and y.dim() != 0:
        raise DataError(f"a classification target must be a scalar class; got {tuple(y.shape)}")
    return x


def fit(
    model: nn.Module,
    train_set: Dataset,
    val_set: Dataset | None,
    *,
    task: Task,
    num_classes: int,
    cfg: TrainConfig,
    out_dir: Path,
    class_weights: Sequence[float] | None = None,
    resume: bool = False,
    augment: bool = True,
    batch_transform: BatchTransform | None = None,
    console: Console | None = None,
    callback: Callable[[int, dict[str, float]], None] | None = None,
) -> FitResult:
    """Train ``model`` in place (SPEC §4) and return where its checkpoints are.

    Datasets yield ``(image float32 (C, *spatial), target)``: a long label map
    ``(*spatial)`` for segmentation, a long scalar for classification. ``class_weights``
    (e.g. :func:`segfew.train.loss.label_weights` of the training counts) weight the cross
    entropy; None means uniform. ``batch_transform`` maps an image batch on the device to the
    model's input (after augmentation; e.g. resizing or channel replication); it must be
    deterministic. ``callback(epoch, row)`` runs on every rank after each epoch's
    checkpoint is written. Progress is shown on ``console`` (only when ``cfg.progress``, a
    console is given, and on rank 0); nothing is printed otherwise.

    Files in ``out_dir`` (rank 0 only): ``last.pt`` after every epoch, ``best.pt`` whenever
    the monitored value improves, ``metrics.csv`` with one row per epoch run. With
    ``resume=True`` training continues from ``out_dir/last.pt`` (a fresh start, with a
    warning, when there is none). See the module docstring for reproducibility, batch size
    under torchrun, BatchNorm and the frozen-feature cache.
    """
    out_dir = Path(out_dir)
    best_path, last_path = out_dir / "best.pt", out_dir / "last.pt"
    if task not in ("segmentation", "classification"):
        raise ValueError(f"task must be 'segmentation' or 'classification', got {task!r}")
    if num_classes < 2:
        raise SpecError(f"at least two classes/labels are needed, got {num_classes}")
    if class_weights is not None and len(class_weights) != num_classes:
        raise SpecError(f"{len(class_weights)} class weights for {num_classes} classes")

    device = resolve_device(cfg.device)
    D.setup(device.type)
    world, rank = D.world_size(), D.rank()
    main = rank == 0
    if cfg.batch_size % world:
        raise SpecError(f"batch_size {cfg.batch_size} is the global batch and must be a "
                        f"multiple of the {world} processes")
    local_bs = cfg.batch_size // world
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    if val_set is not None and len(val_set) == 0:  # type: ignore[arg-type]
        val_set = None

    seed_everything(cfg.seed)
    start = time.monotonic()
    sample = _check_sample(train_set, task)
    dim = sample.dim() - 1
    amp_dtype, use_scaler = _autocast_dtype(device, cfg)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=_memory_format(dim))  # type: ignore[call-overload]

    def prepare(x: Tensor) -> Tensor:
        if batch_transform is not None:
            x = batch_transform(x)
        if cfg.channels_last:
            x = x.contiguous(memory_format=_memory_format(x.dim() - 2))
        return x

    augmenting = augment and cfg.augment.enabled and cfg.augment.p > 0
    use_cache = False
    train_data, val_data = train_set, val_set
    if not augmenting and cfg.cache_features:
        probe = prepare(sample.unsqueeze(0).to(device))
        if features_are_frozen(model, probe):
            with torch.no_grad(), _autocast(device, amp_dtype):
                f = model.forward_features(probe)  # type: ignore[operator]
            n_total = len(train_set) + (len(val_set) if val_set is not None else 0)  # type: ignore[arg-type]
            use_cache = f.numel() * f.element_size() * n_total <= cfg.cache_max_gb * 2**30
            if use_cache:
                kw: dict[str, Any] = {"batch_transform": batch_transform,
                                      "autocast_dtype": amp_dtype,
                                      "channels_last": cfg.channels_last}
                train_data = cache_features(model, train_set, device, cfg.batch_size, **kw)
                if val_set is not None:
                    val_data = cache_features(model, val_set, device, cfg.batch_size, **kw)
    net: nn.Module = _Head(model) if use_cache else model

    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise SpecError("the model has no trainable parameters")
    optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
    criterion = weighted_cross_entropy(
        None if class_weights is None else torch.tensor(list(class_weights), dtype=torch.float32)
    ).to(device)

    history: list[dict[str, float]] = []
    start_epoch, best_epoch, bad_epochs = 0, 0, 0
    best_metric = math.nan
    if resume and last_path.is_file():
        ckpt = load_checkpoint(last_path)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        for group in optimizer.param_groups:  # the settings of this call win
            group["lr"], group["weight_decay"] = cfg.lr, cfg.weight_decay
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        start_epoch, history = int(ckpt["epoch"]), list(ckpt["history"])
        best_epoch, best_metric = int(ckpt["best_epoch"]), float(ckpt["best_metric"])
        bad_epochs = int(ckpt["bad_epochs"])
        _set_rng_state(ckpt["rng"])
    elif resume:
        warnings.warn(f"{last_path}: no checkpoint to resume from; starting afresh",
                      stacklevel=2)

    if D.is_distributed():
        if device.type == "cuda" and cfg.sync_bn:
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        unused = _has_unused_parameters(net, train_data, device, amp_dtype, prepare, use_cache)
        net = DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=unused,
        )

    higher_is_better = val_data is not None
    monitor = "val_metric" if higher_is_better else "train_loss"
    stopped = "completed"
    pin = device.type == "cuda"
    patience = cfg.early_stopping
    show = cfg.progress and main and console is not None
    with _progress(console, show) as progress:
        epoch_task = progress.add_task("epochs", total=cfg.epochs, completed=start_epoch,
                                       info="")
        batch_task = progress.add_task("batches", total=None, info="")
        if patience is not None and bad_epochs >= patience and start_epoch < cfg.epochs:
            stopped = "early_stopping"
        for epoch in range(start_epoch, cfg.epochs if stopped == "completed" else 0):
            t_epoch = time.monotonic()
            torch.manual_seed(_derive(cfg.seed, epoch, _PURPOSE_GLOBAL, rank))
            np.random.seed(_derive(cfg.seed, epoch, _PURPOSE_GLOBAL, rank) % 2**32)
            random.seed(_derive(cfg.seed, epoch, _PURPOSE_GLOBAL, rank))
            sampler: DistributedSampler = DistributedSampler(
                train_data, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed,
                drop_last=False)
            sampler.set_epoch(epoch)
            # A lone sample in the last batch breaks BatchNorm in the FC head: drop it
            # (a different one each epoch, as the order is reshuffled).
            lone = local_bs > 1 and len(sampler) % local_bs == 1
            loader = DataLoader(
                train_data, batch_size=local_bs, sampler=sampler, drop_last=lone,
                num_workers=0 if use_cache else cfg.num_workers, pin_memory=pin,
                worker_init_fn=_seed_worker,
                generator=torch.Generator().manual_seed(_derive(cfg.seed, epoch, _PURPOSE_LOADER)),
            )
            aug_gen = torch.Generator().manual_seed(_derive(cfg.seed, epoch, _PURPOSE_AUGMENT))
            progress.reset(batch_task, total=len(loader), info="")
            net.train()
            loss_sum = torch.zeros((), dtype=torch.float64, device=device)
            count = 0
            for x, y in loader:
                x = x.to(device, non_blocking=pin)
                y = y.to(device, non_blocking=pin)
                if augmenting:
                    # Parameters for the whole global batch; this rank keeps its share.
                    drawn = draw_params(cfg.batch_size, dim, cfg.augment, aug_gen)
                    mine = drawn.select(slice(rank, None, world)).select(slice(0, len(x)))
                    x, y_aug = apply_params(x, y if task == "segmentation" else None, mine)
                    y = y_aug if y_aug is not None else y
                if not use_cache:
                    x = prepare(x)
                with _autocast(device, amp_dtype):
                    logits = net(x)
                    if logits.shape[1] != num_classes:
                        raise SpecError(f"the model gives {logits.shape[1]} outputs per "
                                        f"{'voxel' if task == 'segmentation' else 'image'}, "
                                        f"expected num_classes = {num_classes}")
                    loss = criterion(logits, y)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                loss_sum += loss.detach().double() * len(x)
                count += len(x)
                if show:
                    progress.update(batch_task, advance=1, info=f"loss {loss.item():.4f}")
            totals = D.all_reduce_sum(torch.stack(
                [loss_sum, torch.tensor(float(count), dtype=torch.float64, device=device)]))
            train_loss = (totals[0] / totals[1]).item()
            if not math.isfinite(train_loss):
                raise SegfewError(f"the training loss became {train_loss} in epoch {epoch + 1}; "
                                  "lower the learning rate or check the inputs")
            row: dict[str, float] = {"epoch": float(epoch + 1), "train_loss": train_loss,
                                     "val_loss": math.nan, "val_metric": math.nan}
            if val_data is not None:
                inner = net.module if isinstance(net, DistributedDataParallel) else net
                row.update(_validate(inner, val_data, task, num_classes, criterion, device,
                                     amp_dtype, local_bs, None if use_cache else prepare))
            row["lr"] = float(optimizer.param_groups[0]["lr"])
            row["seconds"] = time.monotonic() - t_epoch

            value = row[monitor]
            if math.isnan(value):  # e.g. no foreground in the validation set
                improved = best_epoch == 0
            else:
                improved = (math.isnan(best_metric) or
                            (value > best_metric if higher_is_better else value < best_metric))
            if improved:
                best_metric, best_epoch, bad_epochs = value, epoch + 1, 0
            else:
                bad_epochs += 1
            history.append(row)
            if main:
                payload = {
                    "format": CHECKPOINT_FORMAT,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict() if use_scaler else {},
                    "epoch": epoch + 1,
                    "rng": _rng_state(),
                    "history": history,
                    "best_metric": best_metric,
                    "best_epoch": best_epoch,
                    "bad_epochs": bad_epochs,
                    "monitor": monitor,
                    "task": task,
                    "num_classes": num_classes,
                    "config": cfg.model_dump(mode="json"),
                }
                if improved:
                    _save(best_path, payload)
                _save(last_path, payload)
                _write_metrics(out_dir / "metrics.csv", history)
            D.barrier()
            metric_text = (f"{monitor} {value:.4f}" if not math.isnan(value) else "")
            progress.update(epoch_task, advance=1,
                            info=f"loss {train_loss:.4f} {metric_text}".strip())
            if callback is not None:
                callback(epoch + 1, row)
            if epoch + 1 >= cfg.epochs:
                break
            if patience is not None and bad_epochs >= patience:
                stopped = "early_stopping"
                break
            over_time = (cfg.time_budget_s is not None
                         and time.monotonic() - start >= cfg.time_budget_s)
            if D.broadcast_flag(over_time, device):
                stopped = "time_budget"
                break
    D.barrier()
    return FitResult(best_path=best_path, last_path=last_path, history=history,
                     best_epoch=best_epoch, best_metric=best_metric, stopped=stopped,
                     cached_features=use_cache, monitor=monitor)


def _validate(net: nn.Module, data: Dataset, task: Task, num_classes: int,
              criterion: nn.Module, device: torch.device, amp_dtype: torch.dtype | None,
              batch_size: int, prepare: Callable[[Tensor], Tensor] | None) -> dict[str, float]:
    """Validation loss and metric; each rank takes every W-th sample, sums are reduced."""
    world, rank = D.world_size(), D.rank()
    n = len(data)  # type: ignore[arg-type]
    shard = Subset(data, range(rank, n, world)) if world > 1 else data
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    count = torch.zeros((), dtype=torch.float64, device=device)
    conf = torch.zeros(num_classes, num_classes, dtype=torch.float64, device=device)
    net.eval()
    with torch.no_grad():
        if len(shard) > 0:  # type: ignore[arg-type]
            for x, y in DataLoader(shard, batch_size=batch_size, shuffle=False):
                x, y = x.to(device), y.to(device)
                if prepare is not None:
                    x = prepare(x)
                with _autocast(device, amp_dtype):
                    logits = net(x)
                loss_sum += criterion(logits, y).double() * len(x)
                count += len(x)
                conf += _confusion(logits.float(), y, num_classes).double()
    net.train()
    totals = D.all_reduce_sum(torch.cat([torch.stack([loss_sum, count]), conf.flatten()]))
    conf = totals[2:].reshape(num_classes, num_classes)
    out = {"val_loss": (totals[0] / totals[1]).item() if totals[1] > 0 else math.nan}
    out.update(_metrics_from_confusion(conf, task))
    return out


def _has_unused_parameters(net: nn.Module, data: Dataset, device: torch.device,
                           amp_dtype: torch.dtype | None, prepare: Callable[[Tensor], Tensor],
                           cached: bool) -> bool:
    """Whether some trainable parameter gets no gradient from the loss (DDP needs to know).

    One forward in eval mode (no running statistics change) on one training sample, and
    ``autograd.grad`` with ``allow_unused`` (no ``.grad`` is touched).
    """
    params = [p for p in net.parameters() if p.requires_grad]
    x = torch.as_tensor(data[0][0]).unsqueeze(0).to(device)
    if not cached:
        x = prepare(x)
    was_training = net.training
    net.eval()
    try:
        with _autocast(device, amp_dtype):
            out = net(x)
        grads = torch.autograd.grad(out.float().sum(), params, allow_unused=True)
    finally:
        net.train(was_training)
    return any(g is None for g in grads)
