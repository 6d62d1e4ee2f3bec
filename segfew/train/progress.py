"""How :func:`segfew.train.fit` reports progress: a callback the CLI draws; the library
never prints."""

from __future__ import annotations

import math

from torch import Tensor

from segfew.typing import TrainProgress

__all__ = ["EpochReport", "TrainProgress"]


class EpochReport:
    """Epoch and batch progress through the ``progress`` callback (None: silent)."""

    def __init__(self, progress: TrainProgress | None, epochs: int, done: int) -> None:
        self.progress, self.epochs, self.done, self.total = progress, epochs, 0, 0
        if progress is not None:
            progress("epochs", done, epochs, "")

    def batch(self, loss: Tensor | None, total: int | None) -> None:
        if self.progress is None:
            return
        if total is not None:
            self.done, self.total = 0, total
            self.progress("batches", 0, total, "")
        elif loss is not None:
            self.done += 1
            self.progress("batches", self.done, self.total, f"loss {loss.item():.4f}")

    def epoch(self, epoch: int, row: dict[str, float], monitor: str) -> None:
        if self.progress is None:
            return
        value = row[monitor]
        metric = f"{monitor} {value:.4f}" if not math.isnan(value) else ""
        self.progress("epochs", epoch, self.epochs,
                      f"loss {row['train_loss']:.4f} {metric}".strip())
