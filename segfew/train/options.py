"""The settings of one :func:`segfew.train.fit` run, as plain values (SPEC §4).

Run specs hold them as :class:`segfew.spec.TrainConfig`, which checks every value and
gives this (``.plain()``); the defaults here are the spec's (a test keeps them equal).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from segfew.choices import LrSchedule, Precision, SegLoss
from segfew.train.augment import Augmentation

__all__ = ["TrainOptions", "epoch_lr"]

#: the exponent of the poly schedule (nnU-Net: Isensee et al. 2021, Nature Methods 18:203)
POLY_EXPONENT = 0.9


@dataclass(frozen=True)
class TrainOptions:
    """Optimisation, stopping, device and bookkeeping of a training run.

    ``batch_size`` is the global batch (split evenly over torchrun processes); ``lr`` the
    Adam learning rate, constant or decayed by ``lr_schedule`` (:func:`epoch_lr`); ``loss``
    the segmentation loss (:func:`segfew.train.loss.training_loss`);
    ``early_stopping`` the patience in epochs; ``time_budget_s`` a wall limit in seconds;
    ``checkpoint_interval_s`` the seconds between writes of ``last.pt`` (0: every epoch;
    :class:`segfew.train.checkpoint.EpochWriter`);
    ``patch_size`` trains a segmentation on random patches of that size of the grid
    (:func:`segfew.train.augment.take_patches`; None: the whole grid); ``seed`` seeds every
    random number; ``device``/``precision``/``channels_last`` as
    :mod:`segfew.runtime` resolves them; ``sync_bn`` SyncBatchNorm across GPUs under
    torchrun; ``cache_features`` computes frozen features once per image when not
    augmenting, keeping at most ``cache_max_gb`` in memory.
    """

    epochs: int = 20
    batch_size: int = 4
    lr: float = 1e-3
    lr_schedule: LrSchedule = "constant"
    weight_decay: float = 0.0
    loss: SegLoss = "weighted_ce"
    early_stopping: int | None = None
    time_budget_s: float | None = None
    patch_size: tuple[int, ...] | None = None
    checkpoint_interval_s: float = 60.0
    seed: int = 0
    device: str = "auto"
    precision: Precision = "auto"
    channels_last: bool | None = None
    num_workers: int = 0
    progress: bool = True
    sync_bn: bool = True
    cache_features: bool = True
    cache_max_gb: float = 4.0
    augment: Augmentation = field(default_factory=Augmentation)


def epoch_lr(cfg: TrainOptions, epoch: int) -> float:
    """The learning rate of epoch ``epoch`` (0-based) of ``cfg.epochs``: ``cfg.lr``, or for
    ``poly`` ``lr × (1 − epoch / epochs)^0.9`` — a function of the epoch alone, so a resumed
    run continues the same curve."""
    if cfg.lr_schedule == "constant":
        return cfg.lr
    return cfg.lr * (1 - epoch / cfg.epochs) ** POLY_EXPONENT
