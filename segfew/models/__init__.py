"""segfew's networks (Wong et al. 2018, section 2; SPEC §2–3), 2D and 3D from one code path.

- :class:`MNet` — the modified M-Net segmentation network, the frozen feature source;
- :class:`FeatureClassifier` — the few-label classifier on its features (frameworks
  manual / threshold);
- :class:`VGGClassifier` — the modified VGG-16 trained from scratch (framework scratch);
- :class:`ImageNetVGGClassifier` — frozen ImageNet VGG-16 features (framework vgg, 2D);
- :class:`StatsHead` — the compact head alone, on per-channel statistics of a network run
  elsewhere (a trained nnU-Net: framework manual with an nnU-Net folder);
- :class:`MeasurementClassifier` — a small classifier on measurements of what the frozen network
  segments (framework measures, an extension beyond the paper).

:func:`build_model` rebuilds any of them by registry name from the constructor arguments a
model file stores.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from segfew.models.blocks import init_glorot
from segfew.models.classifier import FeatureClassifier, StatsHead
from segfew.models.imagenet_vgg import ImageNetVGGClassifier
from segfew.models.measures import MeasurementClassifier
from segfew.models.mnet import MNet
from segfew.models.vgg import VGGClassifier

__all__ = [
    "MODELS",
    "FeatureClassifier",
    "ImageNetVGGClassifier",
    "MNet",
    "MeasurementClassifier",
    "StatsHead",
    "VGGClassifier",
    "build_model",
    "init_glorot",
]

#: registry name → network class (the names model files store)
MODELS: dict[str, type[nn.Module]] = {
    "mnet": MNet,
    "feature_classifier": FeatureClassifier,
    "vgg": VGGClassifier,
    "imagenet_vgg": ImageNetVGGClassifier,
    "measurement_classifier": MeasurementClassifier,
    "stats_head": StatsHead,
}


def build_model(kind: str, **kwargs: Any) -> nn.Module:
    """A new network of registry name ``kind`` built with ``kwargs``.

    For ``"feature_classifier"`` the caller passes the rebuilt :class:`MNet` as
    ``feature_net``. Sizes that arrive as lists (from JSON) are accepted.
    """
    try:
        cls = MODELS[kind]
    except KeyError:
        raise ValueError(f"unknown network {kind!r}; known: {', '.join(MODELS)}") from None
    if isinstance(kwargs.get("input_size"), list):
        kwargs["input_size"] = tuple(kwargs["input_size"])
    return cls(**kwargs)
