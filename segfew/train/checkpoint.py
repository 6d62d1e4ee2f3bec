"""Checkpoints and the metrics table of a training run (SPEC §4).

``last.pt`` and ``best.pt`` hold everything an exact resume needs — model, optimizer, grad
scaler, epoch, history, best value, patience counter and every RNG state — as plain tensors
and containers, so they load with ``torch.load(..., weights_only=True)``. ``metrics.csv``
has one row per epoch. Every file is written atomically.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segfew.atomic import atomic_path, write_text
from segfew.errors import SegfewError

__all__ = ["CHECKPOINT_FORMAT", "METRIC_COLUMNS", "RunState", "load_checkpoint", "restore",
           "rng_state", "save_checkpoint", "set_rng_state", "write_metrics"]

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


def save_checkpoint(path: Path | Sequence[Path], model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None,
                    state: RunState, **extra: Any) -> None:
    """Write a checkpoint of the run's state atomically to ``path`` (or to each of several
    paths: serialised once, written as independent files) (``extra``: monitor, task,
    config…)."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else {},
        "epoch": state.epoch,
        "rng": rng_state(),
        "history": state.history,
        "best_metric": state.best_metric,
        "best_epoch": state.best_epoch,
        "bad_epochs": state.bad_epochs,
        **extra,
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    for each in [path] if isinstance(path, Path) else path:
        with atomic_path(each) as tmp:
            tmp.write_bytes(buffer.getbuffer())


def write_epoch(out_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                scaler: torch.amp.GradScaler | None, state: RunState, improved: bool,
                **extra: Any) -> None:
    """The files of an epoch: ``last.pt``, ``best.pt`` when it ``improved`` (the same bytes,
    serialised once), and ``metrics.csv``."""
    paths = [out_dir / LAST_FILE, *([out_dir / BEST_FILE] if improved else [])]
    save_checkpoint(paths, model, optimizer, scaler, state, **extra)
    write_metrics(out_dir / "metrics.csv", state.history)


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
    """``metrics.csv``: :data:`METRIC_COLUMNS`, then any ``val_dice_<label>`` columns."""
    extra = sorted({k for row in history for k in row if k.startswith("val_dice_")},
                   key=lambda k: int(k.rsplit("_", 1)[1]))
    columns = (*METRIC_COLUMNS, *extra)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for row in history:
        w.writerow([int(row["epoch"]) if c == "epoch" else f"{row.get(c, math.nan):.6g}"
                    for c in columns])
    write_text(path, buf.getvalue())
