"""Settings a framework never reads: given to ``train-classifier`` (or to an experiment none
of whose frameworks reads them), they are named in a warning.

``--framework measures --epochs 40`` trained nothing for 40 epochs; ``--framework scratch
--features seg.pt`` used no segmentation. Each was silently ignored, and the run record
then held settings that had no part in the model. The rules follow the frameworks registry
(:mod:`segfew.frameworks`): what each network reads of the head, how its images are
pre-processed, and whether it is fitted by epochs.
"""

from __future__ import annotations

from collections.abc import Iterable

from segfew.frameworks import framework
from segfew.spec.commands import ClassifierSpec, ExperimentSpec

__all__ = ["unused_settings"]

#: the head settings each network reads (None: all of them)
HEAD_READ: dict[str, frozenset[str] | None] = {
    "feature_classifier": None,
    "vgg": frozenset({"n_c", "n_fc", "dropout"}),
    "imagenet_vgg": frozenset({"n_fc", "dropout"}),
    "measurement_classifier": frozenset(),
}
#: the pre-processing settings each rule takes from elsewhere (None: all of them)
PREPROCESS_TAKEN: dict[str, frozenset[str] | None] = {
    "spec": frozenset(),
    "feature_intensity": frozenset({"intensity", "window", "clahe_clip", "slice_axis"}),
    "feature_exact": None,
    "imagenet": frozenset({"size", "intensity"}),
}
#: the sections an experiment gives every framework's classifier alike
SHARED = frozenset({"head", "preprocess", "train", "vgg_weights"})
#: training settings only a fit by epochs reads
EPOCH_SETTINGS = frozenset({"epochs", "lr", "lr_schedule", "weight_decay", "select_epoch",
                            "early_stopping", "time_budget_s", "batch_size", "augment",
                            "checkpoint_interval_s"})


def unused_settings(spec: ClassifierSpec | ExperimentSpec, given: Iterable[str]
                    ) -> dict[str, str]:
    """The settings among ``given`` (dotted spec keys a user set: ``train.epochs``,
    ``features``) that ``spec.framework`` never reads → why, in words. For an experiment,
    those that none of its frameworks reads."""
    if isinstance(spec, ExperimentSpec):
        views = [ClassifierSpec.model_construct(
            framework=f, masks=spec.masks, tta=False, finetune=False) for f in spec.frameworks]
        each = [_unused(view, [k for k in given if k.partition(".")[0] in SHARED
                               or _is_label_map(k)]) for view in views]
        names = ", ".join(spec.frameworks)
        return {k: f"none of the experiment's frameworks ({names}) reads it"
                for k in each[0] if all(k in e for e in each)}
    return _unused(spec, given)


def _is_label_map(key: str) -> bool:
    """``data.label_map``, or one of its pairs (``data.label_map.255`` from a spec file)."""
    return key == "data.label_map" or key.startswith("data.label_map.")


def _unused(spec: ClassifierSpec, given: Iterable[str]) -> dict[str, str]:
    info = framework(spec.framework)
    name = f"framework {spec.framework}"
    why: dict[str, str] = {}
    for key in given:
        section, _, rest = key.partition(".")
        field = rest.split(".")[0]  # train.augment.p: train's augment
        if key == "features" and not info.uses_segmentation:
            why[key] = f"{name} uses no segmentation network"
        elif key == "vgg_weights" and "vgg_weights" not in info.needs:
            why[key] = "only framework vgg reads ImageNet weights"
        elif key == "tta" and spec.tta and info.network != "measurement_classifier":
            why[key] = f"{name} segments no scan (tta is for framework measures)"
        elif key == "tta" and spec.tta and spec.masks is not None:
            why[key] = "with --masks nothing is segmented: the label maps are given"
        elif key == "finetune" and spec.finetune and info.network != "feature_classifier":
            why[key] = f"{name} has no frozen segmentation network to unfreeze"
        elif key == "label_names" and spec.masks is None:
            why[key] = "label names name the values of --masks label maps"
        elif _is_label_map(key) and spec.masks is None:
            why["data.label_map"] = "it remaps the values of --masks label maps"
        elif section == "head" and field:
            read = HEAD_READ.get(info.network)
            if read is not None and field not in read:
                why[key] = f"{name}'s network has no {field}"
        elif section == "preprocess" and field:
            taken = PREPROCESS_TAKEN[info.preprocess]
            if taken is None or field in taken:
                source = {"imagenet": "ImageNet VGG-16's input (224 × 224, CLAHE)",
                          "feature_exact": "the segmentation network's own pre-processing"
                          }.get(info.preprocess, "the segmentation network's model file")
                why[key] = (f"{name} measures the --masks label maps on each scan's own grid"
                            if spec.masks is not None and info.preprocess == "feature_exact"
                            else f"{name} takes it from {source}")
        elif section == "train" and field in EPOCH_SETTINGS and info.fitting == "closed-form":
            why[key] = f"{name} is fitted in closed form, not by epochs"
    return why
