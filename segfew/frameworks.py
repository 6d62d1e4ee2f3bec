"""The frameworks registry: one entry per way of building a classifier, in one place.

A framework (Wong et al. 2018, section 3; the paper's names in capitals) is what
``train-classifier --framework`` and an experiment's ``frameworks`` name. Its entry says
what it needs, how its images are pre-processed, which network it builds and whether it is
fitted by epochs or in closed form, and the words reports and help use. Specs, the
training job, the experiment, the report and the CLI help read it. Adding a framework
touches this registry, its network in ``segfew.models``, its test, and the table in
docs/frameworks.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["FRAMEWORKS", "NEEDS", "FrameworkInfo", "framework", "framework_rank",
           "frameworks_needing", "help_list"]

Need = Literal["segmentation", "kmeans_segmentation", "vgg_weights"]

#: what each need is, in words: (spec field of train-classifier, of experiment, description)
NEEDS: dict[str, tuple[str, str, str]] = {
    "segmentation": ("features", "features", "a segmentation model file from segfew pretrain, "
                     "or a trained nnU-Net v2 results folder"),
    "kmeans_segmentation": ("features", "threshold_features",
                            "a segmentation model pretrained on k-means labels from segfew label"),
    "vgg_weights": ("vgg_weights", "vgg_weights", "a local torchvision VGG-16 state dict"),
}


@dataclass(frozen=True)
class FrameworkInfo:
    """One framework.

    ``preprocess`` is the rule for its input: ``spec`` (the spec's grid and intensities),
    ``feature_intensity`` (the spec's grid, the feature network's intensities: features
    are only meaningful on images normalised as the network saw them), ``feature_exact``
    (the feature network's own pre-processing, on the source grid afterwards), or
    ``imagenet`` (224×224 CLAHE, SPEC §3(c)). ``network`` is the registry name of its
    network in ``segfew.models``; ``fitting`` is ``epochs`` (gradient training) or
    ``closed-form`` (a convex or tree fit to convergence: no epochs, no checkpoints).
    """

    name: str
    title: str  # for reports: what the curve is
    paper_name: str | None  # the paper's name, when the paper has it
    summary: str  # for CLI help: a few words
    needs: tuple[Need, ...]
    preprocess: Literal["spec", "feature_intensity", "feature_exact", "imagenet"]
    network: str
    fitting: Literal["epochs", "closed-form"]

    @property
    def uses_segmentation(self) -> bool:
        """True when a pre-trained segmentation network is its feature source."""
        return any(n in ("segmentation", "kmeans_segmentation") for n in self.needs)


#: every framework, in the order reports and help list them
FRAMEWORKS: dict[str, FrameworkInfo] = {f.name: f for f in (
    FrameworkInfo("measures", "Measurements of the segmentation, small classifier (MEASURES)",
                  None, "measurements of the segmented structures (beyond the paper)",
                  ("segmentation",), "feature_exact", "measurement_classifier", "closed-form"),
    FrameworkInfo("manual", "Segmentation features, network trained on manual labels (MANUAL)",
                  "MANUAL", "frozen features (or softmax maps) of a network trained on "
                  "expert labels",
                  ("segmentation",), "feature_intensity", "feature_classifier", "epochs"),
    FrameworkInfo("threshold",
                  "Segmentation features, network trained on k-means labels (THRESHOLD)",
                  "THRESHOLD", "frozen features of a network trained on k-means labels",
                  ("kmeans_segmentation",), "feature_intensity", "feature_classifier", "epochs"),
    FrameworkInfo("scratch", "Network trained from scratch, modified VGG (SCRATCH)", "SCRATCH",
                  "modified VGG-16 trained from scratch", (), "spec", "vgg", "epochs"),
    FrameworkInfo("vgg", "ImageNet VGG-16 features (VGG)", "VGG",
                  "frozen ImageNet VGG-16 features (2D)", ("vgg_weights",), "imagenet",
                  "imagenet_vgg", "epochs"),
)}


def framework(name: str) -> FrameworkInfo:
    """The registry entry of ``name``; ValueError naming the known ones otherwise."""
    try:
        return FRAMEWORKS[name]
    except KeyError:
        raise ValueError(f"unknown framework {name!r}; known: {', '.join(FRAMEWORKS)}") from None


def framework_rank(name: str) -> tuple[int, str]:
    """Sort key: registry order, unknown names last (alphabetically)."""
    order = list(FRAMEWORKS)
    return (order.index(name) if name in order else len(order), name)


def frameworks_needing(need: Need) -> tuple[str, ...]:
    """Names of the frameworks that need ``need``."""
    return tuple(n for n, f in FRAMEWORKS.items() if need in f.needs)


def help_list(last: str = "or") -> str:
    """``measures, manual, threshold, scratch or vgg`` — for help texts and errors."""
    names = list(FRAMEWORKS)
    return ", ".join(names[:-1]) + f" {last} {names[-1]}" if len(names) > 1 else names[0]
