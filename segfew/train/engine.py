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

Precision, memory format and device follow :mod:`segfew.runtime` (``cfg.precision``, bf16
autocast by default where the hardware has it); checkpoints and ``metrics.csv`` are
:mod:`segfew.train.checkpoint`, validation and its Dice :mod:`segfew.train.validation`,
the frozen-feature cache :mod:`segfew.train.feature_cache`, BatchNorm and DDP under torchrun
:mod:`segfew.train.distributed`, progress :mod:`segfew.train.progress`.
"""

from __future__ import annotations

import logging
import math
import random
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.profiler import record_function
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from segfew.errors import DataError, SegfewError, SpecError
from segfew.runtime import (
    Plan,
    adam,
    derive_seed,
    resolve_device,
    resolve_plan,
    seed_everything,
    seed_worker,
)
from segfew.train import distributed as D
from segfew.train.augment import transform_share
from segfew.train.checkpoint import (
    BEST_FILE,
    LAST_FILE,
    EpochWriter,
    RunState,
    load_checkpoint,
    restore,
)
from segfew.train.feature_cache import Head, maybe_cache
from segfew.train.loss import training_loss
from segfew.train.options import TrainOptions, epoch_lr
from segfew.train.progress import EpochReport, TrainProgress
from segfew.train.validation import validate

__all__ = ["FitResult", "TrainProgress", "fit"]
log = logging.getLogger(__name__)

Task = Literal["segmentation", "classification"]
BatchTransform = Callable[[Tensor], Tensor]
_PURPOSE_GLOBAL, _PURPOSE_AUGMENT, _PURPOSE_LOADER, _PURPOSE_PATCH = 1, 2, 3, 4


@dataclass
class FitResult:
    """What :func:`fit` did.

    ``best_metric`` is the monitored value at ``best_epoch``: the validation metric
    (accuracy or mean Dice; higher is better) or, without a validation set, the training
    loss (lower is better). ``stopped`` is ``"completed"``, ``"early_stopping"`` or
    ``"time_budget"``. Epochs are counted from 1. ``plan`` is how the network ran
    (:meth:`segfew.runtime.Plan.record`).
    """

    best_path: Path
    last_path: Path
    history: list[dict[str, float]]
    best_epoch: int
    best_metric: float
    stopped: str
    cached_features: bool = False
    monitor: str = "val_metric"
    plan: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Step:
    """What one training step needs, built once per run."""

    net: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    criterion: nn.Module
    plan: Plan
    device: torch.device
    task: Task
    num_classes: int
    prepare: Callable[[Tensor], Tensor] | None  # None when the inputs are cached features


def fit(
    model: nn.Module,
    train_set: Dataset,
    val_set: Dataset | None,
    *,
    task: Task,
    num_classes: int,
    cfg: TrainOptions,
    out_dir: Path,
    class_weights: Sequence[float] | None = None,
    resume: bool = False,
    augment: bool = True,
    batch_transform: BatchTransform | None = None,
    val_cases: Sequence[int] | None = None,
    progress: TrainProgress | None = None,
    callback: Callable[[int, dict[str, float]], None] | None = None,
) -> FitResult:
    """Train ``model`` in place (SPEC §4) and return where its checkpoints are.

    Datasets yield ``(image float32 (C, *spatial), target)``: a long label map
    ``(*spatial)`` for segmentation, a long scalar for classification. ``class_weights``
    (e.g. :func:`segfew.train.loss.label_weights` of the training counts) weight the cross
    entropy; None means uniform. ``batch_transform`` maps an image batch on the device to the
    model's input (after augmentation; e.g. resizing or channel replication); it must be
    deterministic. ``val_cases`` gives the case of each validation sample (the slices of one
    volume share one) for the per-case Dice; None means one case per sample.
    ``callback(epoch, row)`` runs on every rank after each epoch.
    ``progress`` (see :data:`TrainProgress`) is called on rank 0 when ``cfg.progress``;
    nothing is ever printed.

    Files in ``out_dir`` (rank 0 only): ``metrics.csv`` (a row per epoch run), ``last.pt`` and
    ``best.pt`` (the best epoch's), when :class:`~segfew.train.checkpoint.EpochWriter` says. With
    ``resume=True`` training continues from ``out_dir/last.pt`` (a fresh start, with a
    warning, when there is none). Raises :class:`SpecError` for settings that cannot work
    and :class:`DataError` for unusable datasets. See the module docstring for
    reproducibility, batch size under torchrun and BatchNorm.
    """
    out_dir = Path(out_dir)
    best_path, last_path = out_dir / BEST_FILE, out_dir / LAST_FILE
    _check_arguments(task, num_classes, class_weights)
    device, rank, local_bs = _setup_device(cfg)
    if val_set is not None and len(val_set) == 0:  # type: ignore[arg-type]
        val_set = None

    seed_everything(cfg.seed)
    start = time.monotonic()
    sample = _check_sample(train_set, task)
    plan = resolve_plan(device, cfg.precision, cfg.channels_last)
    model.to(device)
    plan.prepare_model(model)

    def prepare(x: Tensor) -> Tensor:
        return plan.memory_format(batch_transform(x) if batch_transform is not None else x)

    augmenting = augment and cfg.augment.enabled and cfg.augment.p > 0
    train_data, val_data, cached = train_set, val_set, False
    if not augmenting and cfg.cache_features:
        train_data, val_data, cached = maybe_cache(
            model, train_set, val_set, prepare(sample.unsqueeze(0).to(device)), device=device,
            plan=plan, batch_size=cfg.batch_size, max_gb=cfg.cache_max_gb,
            batch_transform=batch_transform)
    step = _build_step(Head(model) if cached else model, model, cfg, plan, device, task,
                       num_classes, class_weights, None if cached else prepare)
    state = _start_or_resume(last_path, best_path, resume, model, step, cfg)
    if D.is_distributed():
        x = torch.as_tensor(train_data[0][0]).unsqueeze(0).to(device)
        step.net = D.wrap(step.net, step.prepare(x) if step.prepare else x, plan, cfg.sync_bn)
    epochs = _Epochs(step, cfg, train_data, val_data, val_cases, local_bs, augmenting)

    monitor = "val_metric" if val_data is not None else "train_loss"
    stopped = ("early_stopping" if _out_of_patience(state, cfg) and state.epoch < cfg.epochs
               else "")
    show = cfg.progress and rank == 0 and progress is not None
    bars = EpochReport(progress if show else None, cfg.epochs, state.epoch)
    writer = EpochWriter(out_dir, cfg.checkpoint_interval_s, monitor=monitor, task=task,
                         num_classes=num_classes, config=asdict(cfg))
    try:
        for epoch in range(state.epoch, cfg.epochs if not stopped else state.epoch):
            row = epochs.run(epoch, bars.batch)
            improved = state.update(row, monitor, higher_is_better=val_data is not None)
            if rank == 0:
                with record_function("segfew.checkpoint"):
                    writer.epoch(model, step.optimizer, step.scaler, state, improved)
            D.barrier()
            bars.epoch(epoch + 1, row, monitor)
            if callback is not None:
                callback(epoch + 1, row)
            stopped = _stop_reason(state, cfg, time.monotonic() - start, device)
            if stopped:
                break
    finally:  # the last finished epoch reaches the disk on success, Ctrl-C or an error
        if rank == 0:
            writer.flush()
    D.barrier()
    return FitResult(best_path=best_path, last_path=last_path, history=state.history,
                     best_epoch=state.best_epoch, best_metric=state.best_metric,
                     stopped=stopped or "completed", cached_features=cached, monitor=monitor,
                     plan=plan.record())


# ---------------------------------------------------------------- the helpers of fit


def _check_arguments(task: str, num_classes: int, class_weights: Sequence[float] | None) -> None:
    if task not in ("segmentation", "classification"):
        raise ValueError(f"task must be 'segmentation' or 'classification', got {task!r}")
    if num_classes < 2:
        raise SpecError(f"at least two classes/labels are needed, got {num_classes}")
    if class_weights is not None and len(class_weights) != num_classes:
        raise SpecError(f"{len(class_weights)} class weights for {num_classes} classes")


def _setup_device(cfg: TrainOptions) -> tuple[torch.device, int, int]:
    """(device, rank, this rank's batch size); joins the torchrun group if there is one."""
    device = resolve_device(cfg.device)
    D.setup(device.type)
    world = D.world_size()
    if cfg.batch_size % world:
        raise SpecError(f"batch_size {cfg.batch_size} is the global batch and must be a "
                        f"multiple of the {world} processes")
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    return device, D.rank(), cfg.batch_size // world


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


def _build_step(net: nn.Module, model: nn.Module, cfg: TrainOptions, plan: Plan,
                device: torch.device, task: Task, num_classes: int,
                class_weights: Sequence[float] | None,
                prepare: Callable[[Tensor], Tensor] | None) -> _Step:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise SpecError("the model has no trainable parameters")
    weights = (None if class_weights is None
               else torch.tensor(list(class_weights), dtype=torch.float32))
    return _Step(net=net,
                 optimizer=adam(params, cfg.lr, cfg.weight_decay),
                 scaler=torch.amp.GradScaler("cuda", enabled=plan.grad_scaler),
                 criterion=training_loss(cfg.loss, weights, task).to(device), plan=plan,
                 device=device, task=task, num_classes=num_classes, prepare=prepare)


def _start_or_resume(last_path: Path, best_path: Path, resume: bool, model: nn.Module,
                     step: _Step, cfg: TrainOptions) -> RunState:
    if resume and last_path.is_file():
        state = restore(load_checkpoint(last_path), model, step.optimizer, step.scaler,
                        cfg.lr, cfg.weight_decay)
        if state.best_epoch and not best_path.is_file():
            raise SegfewError(f"missing beside {LAST_FILE}: the best epoch's weights are "
                              "gone; put it back, or train afresh without --resume", best_path)
        log.info(f"resuming from epoch {state.epoch + 1} of {cfg.epochs} ({last_path})")
        return state
    if resume:
        warnings.warn(f"{last_path}: no checkpoint to resume from; starting afresh",
                      stacklevel=3)
    return RunState()


def _seed_epoch(seed: int, epoch: int, rank: int) -> None:
    """The global RNGs (dropout) of an epoch depend only on (seed, epoch, rank)."""
    s = derive_seed(seed, epoch, _PURPOSE_GLOBAL, rank)
    torch.manual_seed(s)
    np.random.seed(s % 2**32)
    random.seed(s)


def _epoch_loader(data: Dataset, cfg: TrainOptions, epoch: int, local_bs: int,
                  workers: int, pin: bool) -> DataLoader:
    """This rank's share of the epoch's permutation, seeded by (seed, epoch)."""
    sampler: DistributedSampler = DistributedSampler(
        data, num_replicas=D.world_size(), rank=D.rank(), shuffle=True, seed=cfg.seed,
        drop_last=False)
    sampler.set_epoch(epoch)
    # A lone sample in the last batch breaks BatchNorm in the FC head: drop it
    # (a different one each epoch, as the order is reshuffled) — unless it is all the data
    # there is, which is never dropped.
    lone = local_bs > 1 and len(sampler) > local_bs and len(sampler) % local_bs == 1
    return DataLoader(
        data, batch_size=local_bs, sampler=sampler, drop_last=lone, num_workers=workers,
        pin_memory=pin, worker_init_fn=seed_worker,
        generator=torch.Generator().manual_seed(derive_seed(cfg.seed, epoch, _PURPOSE_LOADER)))


@dataclass
class _Epochs:
    """One epoch of training and validation, with everything it needs from the run."""

    step: _Step
    cfg: TrainOptions
    train_data: Dataset
    val_data: Dataset | None
    val_cases: Sequence[int] | None
    local_bs: int
    augmenting: bool

    def run(self, epoch: int, on_batch: Callable[[Tensor | None, int | None], None]
            ) -> dict[str, float]:
        """Train one epoch, validate, and return the metrics.csv row."""
        t0 = time.monotonic()
        _seed_epoch(self.cfg.seed, epoch, D.rank())
        for group in self.step.optimizer.param_groups:
            group["lr"] = epoch_lr(self.cfg, epoch)
        row: dict[str, float] = {"epoch": float(epoch + 1),
                                 "train_loss": self.train(epoch, on_batch),
                                 "val_loss": math.nan, "val_metric": math.nan}
        if self.val_data is not None:
            net = self.step.net
            inner = net.module if isinstance(net, DistributedDataParallel) else net
            with record_function("segfew.validate"):
                    row.update(validate(inner, self.val_data, task=self.step.task,
                                    num_classes=self.step.num_classes,
                                    criterion=self.step.criterion,
                                    device=self.step.device, plan=self.step.plan,
                                    batch_size=self.local_bs, prepare=self.step.prepare,
                                    cases=self.val_cases))
        row["lr"] = float(self.step.optimizer.param_groups[0]["lr"])
        row["seconds"] = time.monotonic() - t0
        return row

    def train(self, epoch: int, on_batch: Callable[[Tensor | None, int | None], None]
              ) -> float:
        """One pass over this rank's share; returns the mean training loss over all ranks."""
        step, cfg = self.step, self.cfg
        device, pin = step.device, step.device.type == "cuda"
        world, rank = D.world_size(), D.rank()
        workers = 0 if step.prepare is None else cfg.num_workers
        loader = _epoch_loader(self.train_data, cfg, epoch, self.local_bs, workers, pin)
        aug_gen = torch.Generator().manual_seed(derive_seed(cfg.seed, epoch, _PURPOSE_AUGMENT))
        patch_gen = torch.Generator().manual_seed(derive_seed(cfg.seed, epoch, _PURPOSE_PATCH))
        seg = step.task == "segmentation"
        augment = cfg.augment if self.augmenting else None
        patches = cfg.patch_size if seg else None
        on_batch(None, len(loader))
        step.net.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        count = 0
        for x, y in _on_device(loader, device):
            with record_function("segfew.augment"):  # and the patches, where asked for
                x, y_seg = transform_share(x, y if seg else None, augment, patches,
                                           (aug_gen, patch_gen), cfg.batch_size, rank, world)
                y = y_seg if y_seg is not None else y
            if step.prepare is not None:
                x = step.prepare(x)
            with record_function("segfew.step"):
                loss = _step(step, x, y)
            loss_sum += loss.detach().double() * len(x)
            count += len(x)
            on_batch(loss, None)
        totals = D.all_reduce_sum(torch.stack(
            [loss_sum, torch.tensor(float(count), dtype=torch.float64, device=device)]))
        if totals[1].item() == 0:
            raise DataError(f"no training batch ran in epoch {epoch + 1}")
        train_loss = (totals[0] / totals[1]).item()
        if not math.isfinite(train_loss):
            raise SegfewError(f"the training loss became {train_loss} in epoch {epoch + 1}; "
                              "lower the learning rate or check the inputs")
        return train_loss


def _on_device(loader: DataLoader, device: torch.device) -> Iterator[tuple[Tensor, Tensor]]:
    """The loader's batches moved to ``device`` (asynchronously from pinned memory on CUDA)."""
    batches = iter(loader)
    while True:
        with record_function("segfew.load"):
            item = next(batches, None)
            if item is None:
                return
            pin = device.type == "cuda"
            x, y = item[0].to(device, non_blocking=pin), item[1].to(device, non_blocking=pin)
        yield x, y


def _step(step: _Step, x: Tensor, y: Tensor) -> Tensor:
    """Forward, loss, backward and optimizer update of one batch; returns the loss."""
    with step.plan.autocast():
        try:
            logits = step.net(x)
        except ValueError as e:  # BatchNorm's complaint about one sample, said plainly
            if "more than 1 value per channel" not in str(e):
                raise
            raise SpecError(f"a training batch holds {len(x)} sample and the network's "
                            "BatchNorm cannot train on one sample: give more training cases, "
                            "a --batch-size that leaves no batch of one, or a larger --size"
                            ) from None
        if logits.shape[1] != step.num_classes:
            raise SpecError(f"the model gives {logits.shape[1]} outputs per "
                            f"{'voxel' if step.task == 'segmentation' else 'image'}, "
                            f"expected num_classes = {step.num_classes}")
        loss = step.criterion(logits, y)
    step.optimizer.zero_grad(set_to_none=True)
    step.scaler.scale(loss).backward()
    step.scaler.step(step.optimizer)
    step.scaler.update()
    return loss


def _out_of_patience(state: RunState, cfg: TrainOptions) -> bool:
    return cfg.early_stopping is not None and state.bad_epochs >= cfg.early_stopping


def _stop_reason(state: RunState, cfg: TrainOptions, elapsed: float, device: torch.device
                 ) -> str:
    """Why training stops after this epoch ("" = it goes on); the same on every rank."""
    if state.epoch >= cfg.epochs:
        return "completed"
    if _out_of_patience(state, cfg):
        return "early_stopping"
    over_time = cfg.time_budget_s is not None and elapsed >= cfg.time_budget_s
    return "time_budget" if D.broadcast_flag(over_time, device) else ""
