"""Validation during training: loss, accuracy or Dice on the validation set (SPEC §4, §6).

Segmentation is scored with segfew's one Dice (:func:`segfew.metrics.case_mean_dice`): each
label's Dice per case, averaged over cases, then over foreground labels — the value
``evaluate`` reports and the model file stores. A "case" is a group of validation samples
(the slices of one volume for a 2D network); by default each sample is its own case.
Under torchrun each rank scores every W-th sample and the counts are summed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from segfew.metrics import case_mean_dice, dice
from segfew.runtime import Plan
from segfew.train import distributed as D

__all__ = ["confusion_per_sample", "scores_from_confusion", "validate"]

Task = Literal["segmentation", "classification"]


def confusion_per_sample(logits: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """(N, L, L) int64 counts per sample: rows = true label, columns = predicted."""
    n = logits.shape[0]
    pred = logits.argmax(1).reshape(n, -1)
    idx = (torch.arange(n, device=pred.device).unsqueeze(1) * num_classes**2
           + target.reshape(n, -1).long() * num_classes + pred)
    return torch.bincount(idx.reshape(-1), minlength=n * num_classes**2).reshape(
        n, num_classes, num_classes)


def scores_from_confusion(conf: Tensor, task: Task) -> dict[str, float]:
    """``val_metric`` (accuracy, or the mean Dice) and ``val_dice_<label>`` from per-case
    confusion matrices ``(G, L, L)``; for classification also ``val_top_class`` and
    ``val_top_share``: the class predicted most and its share of the cases (a classifier
    that predicts one class for nearly every case is flagged by the job)."""
    c = conf.double().cpu()
    if task == "classification":
        total = c.sum().item()
        predicted = c.sum(dim=(0, 1))
        return {"val_metric": c.diagonal(dim1=1, dim2=2).sum().item() / total
                if total else math.nan,
                "val_top_class": float(predicted.argmax().item()),
                "val_top_share": predicted.max().item() / total if total else math.nan}
    labels = range(1, c.shape[1])
    per_case = [{label: dice(m[label, label].item(), m[:, label].sum().item(),
                             m[label, :].sum().item()) for label in labels}
                for m in c if m.sum() > 0]
    per_label, mean = case_mean_dice(per_case, list(labels))
    out = {f"val_dice_{label}": math.nan if v is None else v for label, v in per_label.items()}
    out["val_metric"] = math.nan if mean is None else mean
    return out


def validate(net: nn.Module, data: Dataset, *, task: Task, num_classes: int,
             criterion: nn.Module, device: torch.device, plan: Plan, batch_size: int,
             prepare: Callable[[Tensor], Tensor] | None,
             cases: Sequence[int] | None = None) -> dict[str, float]:
    """``val_loss`` and the scores of :func:`scores_from_confusion` of ``net`` on ``data``.

    ``cases`` gives the case index of each sample (None: one case per sample). Runs in
    eval mode without gradients and leaves ``net`` in training mode.
    """
    world, rank = D.world_size(), D.rank()
    n = len(data)  # type: ignore[arg-type]
    groups = torch.as_tensor(list(cases) if cases is not None else range(n), dtype=torch.long)
    if groups.numel() != n:
        raise ValueError(f"{groups.numel()} case indices for {n} validation samples")
    n_cases = int(groups.max()) + 1 if n else 0
    mine = list(range(rank, n, world))
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    count = torch.zeros((), dtype=torch.float64, device=device)
    conf = torch.zeros(max(n_cases, 1), num_classes, num_classes, dtype=torch.float64,
                       device=device)
    net.eval()
    with torch.inference_mode():
        done = 0
        for x, y in DataLoader(Subset(data, mine), batch_size=batch_size, shuffle=False):
            x, y = x.to(device), y.to(device)
            if prepare is not None:
                x = prepare(x)
            with plan.autocast():
                logits = net(x)
            loss_sum += criterion(logits, y).double() * len(x)
            count += len(x)
            g = groups[mine[done:done + len(x)]].to(device)
            done += len(x)
            conf.index_add_(0, g, confusion_per_sample(logits, y, num_classes).double())
    net.train()
    totals = D.all_reduce_sum(torch.cat([torch.stack([loss_sum, count]), conf.flatten()]))
    out = {"val_loss": (totals[0] / totals[1]).item() if totals[1] > 0 else math.nan}
    out.update(scores_from_confusion(totals[2:].reshape(conf.shape), task))
    return out
