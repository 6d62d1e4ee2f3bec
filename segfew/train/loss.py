"""Weighted cross entropy with the paper's label weights (SPEC §4), and the soft Dice term
nnU-Net adds to it for segmentation.

``L = -Σ_x w_{l(x)} ln p_{l(x)}(x)`` with ``w_l = (Σ_k f_k / f_l)^0.5``, where ``f_l`` is the
number of training pixels (segmentation) or images (classification) of label ``l``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["DiceCrossEntropy", "WeightedCrossEntropy", "label_weights", "training_loss"]

#: keeps the soft Dice of a label absent from both prediction and truth finite (nnU-Net's)
DICE_SMOOTH = 1e-5


def label_weights(counts: Sequence[float] | np.ndarray) -> np.ndarray:
    """Label weights ``w_l = (Σ_k f_k / f_l)^0.5`` from per-label counts ``f``.

    A label that never occurs (count 0) gets weight 0 — it cannot be learnt from this
    training set — and a warning naming it. Returns float64 of the same length.

    >>> label_weights([75, 25]).round(3).tolist()
    [1.155, 2.0]
    """
    f = np.asarray(counts, dtype=np.float64).reshape(-1)
    if f.size == 0:
        raise ValueError("label_weights needs at least one label count")
    if np.any(f < 0) or not np.all(np.isfinite(f)):
        raise ValueError(f"label counts must be finite and non-negative, got {f.tolist()}")
    total = f.sum()
    if total <= 0:
        raise ValueError("every label count is 0: the training set holds no labelled data")
    absent = np.flatnonzero(f == 0)
    if absent.size:
        warnings.warn(
            f"label(s) {absent.tolist()} do not occur in the training set; "
            "they get weight 0 and cannot be learnt",
            stacklevel=2,
        )
    w = np.zeros_like(f)
    present = f > 0
    w[present] = np.sqrt(total / f[present])
    return w


class WeightedCrossEntropy(nn.Module):
    """``mean_x [ -w_{l(x)} ln p_{l(x)}(x) ]`` over every voxel (or image) of the batch.

    Input: logits ``(N, L, *spatial)`` or ``(N, L)``; target long ``(N, *spatial)`` or ``(N,)``.

    Normalisation: divided by the number of voxels/images, NOT by ``Σ_x w_{l(x)}`` (which is
    what ``nn.CrossEntropyLoss(weight=w)`` does with ``reduction="mean"``). Reasons: with Σw
    normalisation a batch holding one class only (common with small classification batches)
    has its weight cancel out entirely, so the re-weighting would act only through the mix of
    labels within a batch; dividing by the count keeps the loss a constant multiple (1/N) of
    the paper's sum. It also makes the gradient of a batch split over ranks equal to the mean
    of the ranks' gradients (what DDP computes) when ranks hold equal numbers of samples.
    The loss is computed in float32 even under autocast.
    """

    weight: Tensor | None

    def __init__(self, weights: Tensor | Sequence[float] | np.ndarray | None = None) -> None:
        super().__init__()
        w = None if weights is None else torch.as_tensor(np.asarray(weights, dtype=np.float32))
        self.register_buffer("weight", w)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        per_item = F.cross_entropy(logits.float(), target, weight=self.weight, reduction="none")
        return per_item.mean()


class DiceCrossEntropy(nn.Module):
    """:class:`WeightedCrossEntropy` plus ``1 − mean_l Dice_l``, the soft Dice of each
    foreground label ``l`` (label 0 is the background) over the whole batch (nnU-Net's
    "batch Dice", Isensee et al. 2021, Nature Methods 18:203). Cross entropy alone weighs
    every voxel, so thin structures (the myocardium, the RV at the apex) count little;
    the Dice term weighs each structure as a whole, as the evaluation does.

    Input: logits ``(N, L, *spatial)``, target long ``(N, *spatial)``; computed in float32.
    Under torchrun each process takes the Dice of its own share of the batch.
    """

    def __init__(self, weights: Tensor | Sequence[float] | np.ndarray | None = None) -> None:
        super().__init__()
        self.cross_entropy = WeightedCrossEntropy(weights)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        if logits.ndim < 3:
            raise ValueError(f"the Dice term needs label maps, got logits {tuple(logits.shape)}")
        p = torch.softmax(logits.float(), 1)[:, 1:]
        truth = F.one_hot(target, logits.shape[1]).movedim(-1, 1)[:, 1:].float()
        axes = [0, *range(2, p.ndim)]
        overlap = (p * truth).sum(axes)
        dice = (2 * overlap + DICE_SMOOTH) / (p.sum(axes) + truth.sum(axes) + DICE_SMOOTH)
        return self.cross_entropy(logits, target) + 1 - dice.mean()


def training_loss(name: str, weights: Tensor | None, task: str = "segmentation") -> nn.Module:
    """The loss ``name`` (``weighted_ce`` or ``dice_ce``, :data:`segfew.choices.SegLoss`)
    with the label ``weights``; a classification always has the weighted cross entropy.
    ValueError for another name."""
    if name == "weighted_ce" or task == "classification":
        return WeightedCrossEntropy(weights)
    if name == "dice_ce":
        return DiceCrossEntropy(weights)
    raise ValueError(f"unknown loss {name!r}: weighted_ce or dice_ce")
