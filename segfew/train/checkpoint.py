"""Checkpoints and the metrics table of a training run (SPEC §4).

``last.pt`` and ``best.pt`` hold everything an exact resume needs — model, optimizer, grad
scaler, epoch, history, best value, patience counter and every RNG state — as plain tensors
and containers, so they load with ``torch.load(..., weights_only=True)``. ``metrics.csv``
has one row per epoch. Every file is written atomically; :class:`EpochWriter` says when.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import io
import math
import random
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segfew.errors import Interrupted, SegfewError
from segfew.files import atomic_path, write_text

__all__ = ["CHECKPOINT_FORMAT", "METRIC_COLUMNS", "EpochWriter", "RunState", "checkpoint_payload",
           "interrupted", "load_checkpoint", "restore", "rng_state", "save_checkpoint",
           "set_rng_state", "write_metrics"]

CHECKPOINT_FORMAT = "segfew-train-checkpoint/1"
#: the columns of metrics.csv always present; segmentation adds ``val_dice_<label>`` after them
METRIC_COLUMNS = ("epoch", "train_loss", "val_loss", "val_metric", "lr", "seconds")


@dataclass
class RunState:
    """Where a run stands after its last epoch: what a checkpoint restores."""

    epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_metric: float = math.nan
    bad_epochs: int = 0

    def update(self, row: dict[str, float], monitor: str, higher_is_better: bool) -> bool:
        """Append ``row``; return whether its ``monitor`` value is the best so far."""
        value = row[monitor]
        if math.isnan(value):  # e.g. no foreground in the validation set
            improved = self.best_epoch == 0
        else:
            improved = (math.isnan(self.best_metric) or
                        (value > self.best_metric if higher_is_better
                         else value < self.best_metric))
        self.epoch = int(row["epoch"])
        self.history.append(row)
        if improved:
            self.best_metric, self.best_epoch, self.bad_epochs = value, self.epoch, 0
        else:
            self.bad_epochs += 1
        return improved


def rng_state() -> dict[str, Any]:
    """torch (CPU and CUDA), numpy and python RNG states as tensors and plain values."""
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


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") and torch.cuda.is_available():
        with contextlib.suppress(RuntimeError):
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))


#: a run folder's checkpoints: the latest epoch's, and the best epoch's (the model it gives)
LAST_FILE, BEST_FILE = "last.pt", "best.pt"


def checkpoint_payload(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                       scaler: torch.amp.GradScaler | None, state: RunState,
                       **extra: Any) -> dict[str, Any]:
    """What a checkpoint holds (``extra``: monitor, task, config…); it refers to the live
    tensors of ``model`` and ``optimizer``."""
    return {
        "format": CHECKPOINT_FORMAT,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else {},
        "epoch": state.epoch,
        "rng": rng_state(),
        "history": list(state.history),
        "best_metric": state.best_metric,
        "best_epoch": state.best_epoch,
        "bad_epochs": state.bad_epochs,
        **extra,
    }


def save_checkpoint(path: Path | Sequence[Path], payload: dict[str, Any]) -> None:
    """Write ``payload`` atomically to ``path`` (or to each of several paths: serialised once,
    written as independent files)."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    for each in [path] if isinstance(path, Path) else path:
        with atomic_path(each) as tmp:
            tmp.write_bytes(buffer.getbuffer())


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block has run, then act as they would have (in the
    main thread; elsewhere signals never arrive). A checkpoint being written is finished
    rather than torn, even by a second Ctrl-C."""
    held = [s for s in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(s) is not None]
    if threading.current_thread() is not threading.main_thread() or not held:
        yield
        return
    caught: list[int] = []
    previous = {s: signal.signal(s, lambda number, frame: caught.append(number)) for s in held}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if caught:
        signal.raise_signal(caught[0])


class EpochWriter:
    """The files of a run, written after each epoch (rank 0): ``metrics.csv`` every epoch;
    ``last.pt``, and ``best.pt`` when the monitored value improved since the last write,
    once ``interval_s`` seconds have passed since that write (0: every epoch), and at
    :meth:`flush`.

    Why: two checkpoints of a network with its Adam state are large beside a short epoch,
    and short epochs are what a few dozen scans give (docs/benchmarks.md; nnU-Net, likewise,
    writes its latest checkpoint every 50 epochs).
    Each epoch not written is kept as an in-memory copy (a few ms), so :meth:`flush`, which
    ``fit`` calls at the end and on any exception (Ctrl-C included), writes the last
    finished epoch; only a hard kill loses up to ``interval_s`` of training.
    """

    def __init__(self, out_dir: Path, interval_s: float, **extra: Any) -> None:
        self.out_dir, self.interval_s, self.extra = out_dir, interval_s, extra
        self.written_at = time.monotonic()
        self.last: dict[str, Any] | None = None  # the latest epoch's copy, not yet on disk
        self.best: dict[str, Any] | None = None  # the best epoch's copy, not yet on disk

    def epoch(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
              scaler: torch.amp.GradScaler | None, state: RunState, improved: bool) -> None:
        """Record the epoch that just ended (``state`` holds its row); a Ctrl-C waits until
        it is recorded, so ``metrics.csv`` never names an epoch :meth:`flush` cannot write."""
        with signals_held():
            write_metrics(self.out_dir / "metrics.csv", state.history)
            payload = checkpoint_payload(model, optimizer, scaler, state, **self.extra)
            if time.monotonic() - self.written_at >= self.interval_s:
                self.last = payload
                self._write(best_is_last=improved)
                return
            self.last = copy.deepcopy(payload)
            if improved:
                self.best = self.last

    def flush(self) -> None:
        """Write the epoch copies not yet on disk; a Ctrl-C or SIGTERM meanwhile waits."""
        if self.last is not None:
            with signals_held():
                self._write(best_is_last=self.best is self.last)

    def _write(self, best_is_last: bool) -> None:
        last, best = self.out_dir / LAST_FILE, self.out_dir / BEST_FILE
        assert self.last is not None
        if best_is_last:
            save_checkpoint([best, last], self.last)
        else:
            if self.best is not None:  # before last.pt, which names the best epoch
                save_checkpoint(best, self.best)
            save_checkpoint(last, self.last)
        self.last = self.best = None
        self.written_at = time.monotonic()


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a ``best.pt``/``last.pt`` written by :func:`segfew.train.fit` (weights only).

    Raises :class:`SegfewError` naming the file when it is missing, unreadable or not a
    segfew checkpoint.
    """
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


def restore(ckpt: dict[str, Any], model: torch.nn.Module, optimizer: torch.optim.Optimizer,
            scaler: torch.amp.GradScaler | None, lr: float, weight_decay: float) -> RunState:
    """Load a checkpoint's states into the objects of a new run; the RNGs too.

    Raises :class:`SegfewError` when they do not fit (a run of another configuration)."""
    try:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
    except (RuntimeError, ValueError, KeyError):
        raise SegfewError("the run folder holds another configuration (its checkpoint does "
                          "not fit this network); resume with its settings, or drop --resume "
                          "and choose another --out") from None
    for group in optimizer.param_groups:  # the settings of this call win
        group["lr"], group["weight_decay"] = lr, weight_decay
    if ckpt.get("scaler") and scaler is not None:
        scaler.load_state_dict(ckpt["scaler"])
    set_rng_state(ckpt["rng"])
    return RunState(epoch=int(ckpt["epoch"]), history=list(ckpt["history"]),
                    best_epoch=int(ckpt["best_epoch"]), best_metric=float(ckpt["best_metric"]),
                    bad_epochs=int(ckpt["bad_epochs"]))


def write_metrics(path: Path, history: Sequence[dict[str, float]]) -> None:
    """``metrics.csv``: :data:`METRIC_COLUMNS`, then any ``val_dice_<label>`` columns, or a
    classifier's ``val_top_class`` and ``val_top_share``."""
    extra = sorted({k for row in history for k in row if k.startswith("val_dice_")},
                   key=lambda k: int(k.rsplit("_", 1)[1]))
    top = [k for k in ("val_top_class", "val_top_share") if any(k in row for row in history)]
    columns = (*METRIC_COLUMNS, *extra, *top)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for row in history:
        w.writerow([int(row["epoch"]) if c == "epoch" else f"{row.get(c, math.nan):.6g}"
                    for c in columns])
    write_text(path, buf.getvalue())


def interrupted(run_dir: Path, epochs: int) -> Interrupted:
    """The Ctrl-C message of a training run: the epoch ``--resume`` continues from, one after
    the epoch of ``last.pt`` (``metrics.csv`` may hold later rows that no checkpoint backs,
    after a hard kill)."""
    last = Path(run_dir) / "last.pt"
    try:
        done = int(torch.load(last, map_location="cpu", weights_only=True, mmap=True)["epoch"])
    except Exception:  # absent, torn or not a checkpoint: nothing --resume can use
        done = 0
    if done == 0:
        return Interrupted("interrupted before the first epoch ended; nothing to resume")
    if done >= epochs:
        return Interrupted(f"interrupted after the last epoch, before the model file was "
                           f"written; rerun with --resume to write it ({last})")
    return Interrupted(f"interrupted; rerun with --resume to continue from epoch "
                       f"{done + 1} of {epochs} ({last})")
