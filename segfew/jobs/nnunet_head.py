"""The paper's head on a trained nnU-Net (``train-classifier --framework manual --features
FOLDER``): each case's statistics computed once by the frozen nnU-Net
(:class:`segfew.inference.nnunet_stats.NnUNetStats`), then only the head
(:class:`segfew.models.StatsHead`) trained by the training engine with the spec's
``[train]`` settings."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from segfew.errors import DataError
from segfew.inference.nnunet_stats import NnUNetStats
from segfew.modelfile import Architecture
from segfew.models import build_model
from segfew.spec import ClassifierSpec

if TYPE_CHECKING:
    from segfew.data import Case

__all__ = ["open_stats", "stats_head"]

log = logging.getLogger(__name__)


def open_stats(spec: ClassifierSpec, device: Any) -> NnUNetStats:
    """The statistics of the nnU-Net folder ``spec.features`` that ``spec.head.source``
    names."""
    assert spec.features is not None  # checked by ClassifierSpec
    return NnUNetStats(spec.features, device=device, reads=spec.head.source)


def stats_head(spec: ClassifierSpec, stats: NnUNetStats, train_cases: Sequence[Case],
               val_cases: Sequence[Case], num_classes: int
               ) -> tuple[Any, dict[str, Any], list[np.ndarray], list[np.ndarray]]:
    """The head, its architecture record and the training and validation samples: each
    case's statistics ``(2F, 1, 1)`` float32 (one-voxel images, as the training engine takes
    samples). DataError naming the case's image when its statistics differ in length from
    the first case's (another number of channels)."""
    vectors = [stats(c) for c in [*train_cases, *val_cases]]
    width = vectors[0].shape[0]
    for case, v in zip([*train_cases, *val_cases], vectors, strict=True):
        if v.shape[0] != width:
            raise DataError(f"case {case.id!r} gives {v.shape[0]} statistics, the first case "
                            f"{width}: give every case the same channels (--channels)",
                            case.images[0])
    head = spec.head
    arch = Architecture(name="stats_head", args={
        "in_channels": len(train_cases[0].images), "num_features": width // 2,
        "num_classes": num_classes, "n_fc": head.n_fc, "dropout": head.dropout})
    log.info(f"nnU-Net {stats.reads}: {width} statistics per case (each channel's mean and "
             f"std) computed once; only the head trains, without augmentation")
    samples = [v[:, None, None] for v in vectors]
    n = len(train_cases)
    return build_model(arch.name, **arch.args), arch.model_dump(), samples[:n], samples[n:]
