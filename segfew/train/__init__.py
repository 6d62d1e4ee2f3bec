"""Training: weighted cross entropy, on-device augmentation, the fit engine, torchrun support.

The public API (SPEC §4)::

    from segfew.train import fit, label_weights, augment_batch
"""

from segfew.train.augment import (
    Augmentation,
    AugmentParams,
    apply_params,
    augment_batch,
    draw_params,
)
from segfew.train.checkpoint import load_checkpoint
from segfew.train.engine import FitResult, fit
from segfew.train.feature_cache import cache_features, features_are_frozen
from segfew.train.loss import WeightedCrossEntropy, label_weights, training_loss
from segfew.train.options import TrainOptions

__all__ = [
    "AugmentParams",
    "Augmentation",
    "FitResult",
    "TrainOptions",
    "WeightedCrossEntropy",
    "apply_params",
    "augment_batch",
    "cache_features",
    "draw_params",
    "features_are_frozen",
    "fit",
    "label_weights",
    "load_checkpoint",
    "training_loss",
]
