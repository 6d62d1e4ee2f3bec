"""Training: weighted cross entropy, on-device augmentation, the fit engine, torchrun support.

The public API (SPEC §4)::

    from segfew.train import fit, label_weights, augment_batch, predict_batches
"""

from segfew.train.augment import AugmentParams, apply_params, augment_batch, draw_params
from segfew.train.engine import (
    FitResult,
    cache_features,
    features_are_frozen,
    fit,
    load_checkpoint,
    predict_batches,
    resolve_device,
    seed_everything,
)
from segfew.train.loss import WeightedCrossEntropy, label_weights, weighted_cross_entropy

__all__ = [
    "AugmentParams",
    "FitResult",
    "WeightedCrossEntropy",
    "apply_params",
    "augment_batch",
    "cache_features",
    "draw_params",
    "features_are_frozen",
    "fit",
    "label_weights",
    "load_checkpoint",
    "predict_batches",
    "resolve_device",
    "seed_everything",
    "weighted_cross_entropy",
]
