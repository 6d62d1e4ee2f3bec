"""The ``train-classifier`` job: few image-level labels, one framework (SPEC §3).

From a validated :class:`~segfew.spec.ClassifierSpec` to a classifier model file and
its run folder: a head on the frozen segmentation network's features, its measurements,
or a baseline (scratch, ImageNet VGG), as :mod:`segfew.frameworks` says.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from segfew.data import class_names, find_classification_cases
from segfew.data.classes import warn_rows_as_patients
from segfew.data.read import warn_placeholder_spacing
from segfew.data.splits import check_class_names
from segfew.data.table_rows import class_column_of
from segfew.errors import DataError, DataWarning, SpecError, map_all
from segfew.evaluation.leakage import training_groups
from segfew.frameworks import framework
from segfew.identity import scan_digests, voxel_digests
from segfew.inference.fit_measures import fit_measurement_classifier, open_measurer
from segfew.inference.masks import MaskMeasurer, mask_files
from segfew.inference.measure import Measurer
from segfew.inference.nnunet import is_nnunet_folder
from segfew.inference.nnunet_stats import NnUNetStats
from segfew.jobs.common import (
    FEATURE_FRAMEWORKS,
    Training,
    epoch_choice,
    fit_and_save,
    guarded_run,
    tensor_dataset,
    validation_split,
)
from segfew.jobs.nnunet_head import open_stats, stats_head
from segfew.metrics import accuracy_summary, one_class_share, one_class_words
from segfew.modelfile import (
    Architecture,
    ModelMeta,
    load_imagenet_vgg16,
    load_model,
    read_model_file,
)
from segfew.models import build_model
from segfew.preprocess.cache import load_case
from segfew.runinfo import versions
from segfew.runtime import describe, resolve_device, resolve_plan
from segfew.spec import MIN_CASES_TO_PICK_EPOCH, ClassifierSpec, PreprocessConfig
from segfew.train import label_weights
from segfew.train.distributed import is_main
from segfew.train.memory import network_cost

if TYPE_CHECKING:
    from segfew.data import Case
    from segfew.preprocess.cache import PreprocessCache
    from segfew.train.engine import FitResult, TrainProgress

log = logging.getLogger(__name__)


@dataclass
class ClassifierResult:
    model_path: Path
    run_dir: Path
    classes: list[str]
    history: list[dict[str, float]] = field(default_factory=list)
    stopped: str = "completed"
    seconds: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)  # as the model file records them


def classifier_preprocess(spec: ClassifierSpec, feature_meta: Any | None) -> PreprocessConfig:
    """The classifier's pre-processing: the spec's grid, the feature network's intensities.

    Features are only meaningful on images normalised as the segmentation network saw them,
    so intensity settings come from its model file, and a DataWarning says when the
    in-plane grid differs from the network's (the structures' scale then differs too);
    framework vgg uses SPEC §3(c)'s 224×224 CLAHE input.
    """
    rule = framework(spec.framework).preprocess
    if rule == "imagenet":
        return spec.preprocess.model_copy(update={"size": (224, 224), "intensity": "clahe"})
    if rule == "spec" or feature_meta is None:
        return spec.preprocess
    if rule == "feature_exact":
        return feature_meta.preprocess  # it segments exactly as the network was trained
    seg = feature_meta.preprocess
    ours, theirs = _in_plane(spec.preprocess.size), _in_plane(seg.size)
    if ours != theirs:
        warnings.warn(DataWarning(
            f"{spec.features}: the segmentation network learnt on a {theirs[0]}×{theirs[1]} "
            f"grid, the classifier's is {ours[0]}×{ours[1]} in-plane: its features see every "
            f"structure at another scale; set "
            f"preprocess.size to {list(theirs)} in-plane"), stacklevel=2)
    return spec.preprocess.model_copy(
        update={
            "intensity": seg.intensity,
            "window": seg.window,
            "clahe_clip": seg.clahe_clip,
            "slice_axis": seg.slice_axis,
        }
    )


def _in_plane(size: Sequence[int]) -> tuple[int, int]:
    """The first two axes of a grid size (one value: every axis)."""
    return (size[0], size[0]) if len(size) == 1 else (size[0], size[1])


def _built(kind: str, **kwargs: Any) -> Any:
    try:
        return build_model(kind, **kwargs)
    except ValueError as e:  # the networks' own checks, as a spec error
        raise SpecError(str(e)) from None


def _feature_classifier(spec: ClassifierSpec, in_channels: int, num_classes: int,
                        grid: tuple[int, ...]) -> tuple[Any, Architecture]:
    """The paper's head on the frozen segmentation network of ``spec.features``."""
    assert spec.features is not None  # checked by ClassifierSpec
    feature_net, feature_meta = load_model(spec.features)
    if feature_meta.kind != "segmentation":
        raise SpecError("--features must be a segmentation model (from segfew pretrain)",
                        spec.features)
    if feature_net.in_channels not in (1, in_channels):
        raise DataError(f"the segmentation model takes {feature_net.in_channels} channels, "
                        f"the images have {in_channels}", spec.features)
    head = spec.head
    args: dict[str, Any] = {
        "in_channels": in_channels, "num_classes": num_classes, "input_size": grid,
        "n_c": head.n_c, "n_fc": head.n_fc, "r": head.r, "dropout": head.dropout,
        "finetune": spec.finetune, "source": head.source, "pooling": head.pooling,
    }
    arch = Architecture(name="feature_classifier", args=args,
                        feature_net=feature_meta.architecture)
    return _built(arch.name, feature_net=feature_net, **arch.args), arch


def _vgg(spec: ClassifierSpec, in_channels: int, num_classes: int, grid: tuple[int, ...]
         ) -> tuple[Any, Architecture]:
    """The modified VGG trained from scratch (SPEC §3(b)), 2D or 3D."""
    head = spec.head
    arch = Architecture(name="vgg", args={
        "dim": len(grid), "in_channels": in_channels, "num_classes": num_classes,
        "input_size": grid, "n_c": head.n_c, "n_fc": head.n_fc, "dropout": head.dropout})
    return _built(arch.name, **arch.args), arch


def _imagenet_vgg(spec: ClassifierSpec, in_channels: int, num_classes: int,
                  grid: tuple[int, ...]) -> tuple[Any, Architecture]:
    """Frozen ImageNet VGG-16 convolutions from a local weights file, 2D only (SPEC §3(c))."""
    if len(grid) != 2:
        raise SpecError("framework vgg takes 2D images only (ImageNet VGG-16 is 2D)")
    assert spec.vgg_weights is not None  # checked by ClassifierSpec
    arch = Architecture(name="imagenet_vgg", args={
        "num_classes": num_classes, "n_fc": spec.head.n_fc, "dropout": spec.head.dropout,
        "in_channels": in_channels})
    model = _built(arch.name, **arch.args)
    load_imagenet_vgg16(model, spec.vgg_weights)
    return model, arch


#: how each trained network of the frameworks registry (its ``network``) is built
BUILDERS: dict[str, Callable[[ClassifierSpec, int, int, tuple[int, ...]],
                             tuple[Any, Architecture]]] = {
    "feature_classifier": _feature_classifier,
    "vgg": _vgg,
    "imagenet_vgg": _imagenet_vgg,
}


def build_classifier(
    spec: ClassifierSpec, in_channels: int, num_classes: int, grid: tuple[int, ...]
) -> tuple[Any, dict[str, Any]]:
    """The network of ``spec.framework`` (by its registry entry's ``network``,
    :data:`BUILDERS`) and its architecture record (for the model file)."""
    network = framework(spec.framework).network
    if network not in BUILDERS:
        raise SpecError(f"framework {spec.framework} has no network that is trained here "
                        f"({network})")
    model, arch = BUILDERS[network](spec, in_channels, num_classes, grid)
    return model, arch.model_dump()


def _classification_arrays(
    cases: Sequence[Case], cfg: PreprocessConfig, cache: PreprocessCache | None
) -> list[np.ndarray]:
    grid_cfg = cfg.plain()
    arrays = map_all(lambda case: load_case(case, grid_cfg, cache)[0], cases,
                     "training cases cannot be read")
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise SpecError(
            f"images reach the classifier with different shapes {sorted(shapes)[:3]}; give a size "
            "for every axis (e.g. size = [64, 64, 16]) so every volume is resampled alike"
        )
    return arrays


def _say_network(model: Any, name: str, sample_shape: tuple[int, ...], samples: int,
                 spec: ClassifierSpec) -> dict[str, Any]:
    """Log the 3D network's size and its estimated cost per epoch
    (:func:`segfew.train.memory.network_cost`: one batch timed on the device)."""
    device = resolve_device(spec.train.device)
    plan = resolve_plan(device, spec.train.precision, spec.train.channels_last)
    batch = max(1, min(spec.train.batch_size, samples))
    cost = network_cost(model, tuple(sample_shape), batch, samples, device, plan)
    grid = "×".join(str(s) for s in sample_shape[1:])
    memory = f", one training step about {cost['memory_gib']:.2f} GiB" if cost[
        "memory_gib"] is not None else ""
    timing = (f"; one batch of {batch} took {cost['step_s']:.1f} s on {device.type}: about "
              f"{cost['epoch_s']:.0f} s per epoch of {samples} cases" if cost["epoch_s"]
              is not None else "")
    log.info(f"network: a 3D {name} on a {grid} grid ({sample_shape[0]} channel(s)), "
             f"{(cost['parameters'] or 0) / 1e6:.2f} M parameters{memory}{timing}; a smaller "
             "--size makes it cheaper")
    return cost


def train_classifier(
    spec: ClassifierSpec,
    *,
    cases: Sequence[Case] | None = None,
    val_cases: Sequence[Case] | None = None,
    resume: bool = False,
    progress: TrainProgress | None = None,
    cache: PreprocessCache | None = None,
    write_info: bool = True,
    measurer: Measurer | NnUNetStats | None = None,
    overwrite: bool = False,
) -> ClassifierResult:
    """Train a classifier of ``spec.framework`` with image-level labels; write its model file.

    ``cases`` (with targets) replace discovery from ``spec.data`` — the learning-curve
    experiment passes each split this way. ``val_cases`` replace the validation split;
    framework measures (a closed-form fit) always fits on every case. ``measurer``
    (framework measures; manual on an nnU-Net folder: its statistics) reuses the
    measurements of an earlier call.
    The run folder is locked while the run writes to it (:func:`guarded_run`); one holding
    an unfinished run needs ``resume`` or ``overwrite``.
    """
    d = spec.data
    if cases is None and d.table is not None and d.label_column is None:  # model records it
        d = d.model_copy(update={"label_column": class_column_of(d.table)})
        spec = spec.model_copy(update={"data": d})
    with guarded_run(spec.out, [d.images, d.labels, d.table, spec.features, spec.vgg_weights,
                                spec.masks], spec, resume, overwrite):
        return _train_classifier(spec, cases=cases, val_cases=val_cases, resume=resume,
                                 progress=progress, cache=cache, write_info=write_info,
                                 measurer=measurer)


def _train_classifier(
    spec: ClassifierSpec,
    *,
    cases: Sequence[Case] | None,
    val_cases: Sequence[Case] | None,
    resume: bool,
    progress: TrainProgress | None,
    cache: PreprocessCache | None,
    write_info: bool,
    measurer: Measurer | NnUNetStats | None,
) -> ClassifierResult:
    start = time.perf_counter()
    saved = fit_and_save(
        spec, lambda cache: _prepare(spec, cache, cases, val_cases, write_info, measurer),
        resume=resume, progress=progress, cache=cache, write_info=write_info)
    if saved.meta is None:
        return ClassifierResult(spec.out, saved.run_dir, saved.classes, saved.history,
                                saved.stopped)
    return ClassifierResult(spec.out, saved.run_dir, saved.classes, saved.history,
                            saved.stopped, time.perf_counter() - start, saved.meta.metrics)


def _prepare(spec: ClassifierSpec, cache: PreprocessCache, cases: Sequence[Case] | None,
             val_cases: Sequence[Case] | None, write_info: bool,
             measurer: Measurer | NnUNetStats | None) -> Training:
    """The classifier, its tensors and its model file's description (:func:`fit_and_save`);
    a measurement classifier is fitted here (closed form)."""
    if cases is None:
        cases = find_classification_cases(
            spec.data.images, spec.data.table, channels=spec.data.channels,
            id_column=spec.data.id_column, label_column=spec.data.label_column,
            group_column=spec.data.group_column)
    if not cases:
        raise DataError("no labelled images found", spec.data.table or spec.data.images)
    if write_info:  # said once per command (an experiment's tasks share its data)
        warn_placeholder_spacing(cases, framework(spec.framework).network
                                 == "measurement_classifier")
        check_class_names([*cases, *(val_cases or [])], spec.data.table or spec.data.images)
    classes = class_names(list(cases) + list(val_cases or []))
    if len(classes) < 2:  # every framework: nothing to tell apart
        raise DataError(f"one class only ({', '.join(classes)}): a classifier needs cases of "
                        "at least two", spec.data.table or spec.data.images)
    if spec.classes is not None and len(classes) != spec.classes:
        raise DataError(
            f"expected {spec.classes} classes, the table has {len(classes)}: {', '.join(classes)}",
            spec.data.table or spec.data.images,
        )
    val_list: list[Case]
    if framework(spec.framework).fitting == "closed-form":  # no epoch to pick
        train_cases, val_list = [*cases, *(val_cases or [])], []
    elif val_cases is None:
        train_cases, val_list = validation_split(cases, spec.train, per_class=True)
        warn_rows_as_patients(cases if write_info and val_list else [], spec.data.table, "val")
    else:
        train_cases, val_list = list(cases), list(val_cases)

    feature_meta = None
    source: dict[str, Any] | None = None  # feature_source of a model measuring given masks
    nnunet = is_nnunet_folder(spec.features)  # an nnU-Net results folder, not a model file
    if spec.framework in FEATURE_FRAMEWORKS and spec.features is not None and not nnunet:
        feature_meta, _ = read_model_file(spec.features)
    cfg = classifier_preprocess(spec, feature_meta)
    index = {name: i for i, name in enumerate(classes)}
    train_y = [index[str(c.target)] for c in train_cases]
    val_y = [index[str(c.target)] for c in val_list]
    if framework(spec.framework).preprocess == "feature_exact" or nnunet:  # on the source grid
        train_x: list[np.ndarray] = []
        val_x: list[np.ndarray] = []
    else:
        train_x = _classification_arrays(train_cases, cfg, cache)
        val_x = _classification_arrays(val_list, cfg, cache) if val_list else []
    closed_form = framework(spec.framework).fitting == "closed-form"
    choice, why = epoch_choice(len(val_list), spec.train) if val_list else (
        "last" if spec.train.select_epoch == "last" else "best", "")  # best: lowest loss
    validation = {"cases": len(val_list), "epoch_choice": None if closed_form else choice,
                  "small": 0 < len(val_list) < MIN_CASES_TO_PICK_EPOCH, "note": why or None}
    counts = np.bincount(np.asarray(train_y), minlength=len(classes))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # absent classes are reported below
        weights = label_weights(counts)
    fitted: dict[str, Any] = {}
    measured = framework(spec.framework).network == "measurement_classifier"
    used_files: list[Path] = []  # an nnU-Net folder's checkpoints and plans; --masks maps
    if nnunet and not measured:  # the head on an nnU-Net's statistics, computed once
        stats = measurer if isinstance(measurer, NnUNetStats) else open_stats(
            spec, resolve_device(spec.train.device))
        source, used_files = stats.source, stats.files
        model, arch, train_x, val_x = stats_head(spec, stats, train_cases, val_list,
                                                 len(classes))
    elif measured:  # closed form, inner CV; label maps of a network, another tool, an nnU-Net
        shared = None if isinstance(measurer, NnUNetStats) else measurer
        used = shared or open_measurer(spec.features, spec.masks, spec.label_names,
                                       resolve_device(spec.train.device), spec.tta)
        if isinstance(used, MaskMeasurer) and shared is None:  # --label-map 255:1, recorded
            used.remap = dict(spec.data.label_rules().remap or {})  # in its feature_source
        model, fitted = fit_measurement_classifier(
            used, train_cases, train_y, len(classes), seed=spec.train.seed
        )
        if warn_rows_as_patients(train_cases if write_info else [], spec.data.table, "cv"):
            (fitted["metrics"].get("measures_nested") or {})["rows_as_patients"] = True
        source = getattr(used, "source", None)  # after measuring: it holds the mask layout
        used_files = [*getattr(used, "files", []), *mask_files([used], train_cases)]
        model.cpu()
        arch = Architecture(
            name="measurement_classifier",
            args=fitted["args"],
            feature_net=feature_meta.architecture if feature_meta else None,
        ).model_dump()
    else:
        in_channels, grid = train_x[0].shape[0], tuple(train_x[0].shape[1:])
        model, arch = build_classifier(spec, in_channels, len(classes), grid)
        if len(grid) == 3 and is_main():  # a volume network: its size and cost, said first
            _say_network(model, arch["name"], train_x[0].shape, len(train_x), spec)
    scans = [p for c in [*train_cases, *val_list] for p in c.images]

    def describe_model(result: FitResult | None, info: dict[str, Any]) -> ModelMeta:
        best = fitted["metrics"] if result is None else _kept(result, choice, validation,
                                                                 val_y, classes, spec)
        return ModelMeta(
            kind="classifier",
            architecture=Architecture.model_validate(arch),
            preprocess=cfg,
            classes=classes,
            channels=spec.data.channels,
            framework=spec.framework,
            spec=spec.model_dump(mode="json"),
            versions=versions(),
            metrics={
                **best,
                "train_class_counts": dict(zip(classes, counts.tolist(), strict=True)),
                "train_cases": [c.id for c in train_cases],
                "validation_cases": [c.id for c in val_list],
                "training_data": scan_digests(scans),
                "training_voxels": voxel_digests(scans),
                **training_groups([*train_cases, *val_list]),  # other cases of these: leakage
            },
            feature_source=feature_meta.model_dump(mode="json") if feature_meta else source,
        )

    return Training(
        model=model, train=None if measured else tensor_dataset(train_x, train_y),
        val=tensor_dataset(val_x, val_y) if val_x else None, task="classification",
        classes=classes, class_weights=weights.tolist(),
        manifest=[*(p for p in (spec.data.table, spec.features, spec.vgg_weights) if p),
                  *used_files, *scans],
        runtime=describe(spec.train.device, spec.train.precision, spec.train.channels_last),
        metric="validation accuracy", describe=describe_model, keep=choice, augment=not nnunet,
        run_info={"validation": validation}, completed=("one_class_validation",))


def _kept(result: FitResult, choice: str, validation: dict[str, Any], val_y: Sequence[int],
          classes: Sequence[str], spec: ClassifierSpec) -> dict[str, Any]:
    """The model file's record of the kept epoch: which, why, its validation accuracy, and
    whether it predicts one class for nearly every validation case (a DataWarning too)."""
    history = result.history
    epoch = len(history) if choice == "last" else result.best_epoch
    best: dict[str, Any] = {"best_epoch": result.best_epoch, "best_metric": result.best_metric,
                            "kept_epoch": epoch, "epoch_choice": choice,
                            "validation": validation}
    row = history[epoch - 1] if val_y and 0 < epoch <= len(history) else {}
    flag = one_class_share(row.get("val_top_class", 0.0),
                           row.get("val_top_share", float("nan")), len(val_y), classes)
    best["one_class_validation"] = flag
    if flag is not None:
        warnings.warn(DataWarning(f"at the kept epoch {epoch} " + one_class_words(
            flag, "validation cases"), spec.out), stacklevel=2)
    kept_metric = row.get("val_metric", result.best_metric) if row else result.best_metric
    best["validation_accuracy"] = _validation_summary(kept_metric, val_y, spec.train.seed)
    return best


def _validation_summary(best: float | None, val_y: Sequence[int], seed: int
                        ) -> dict[str, Any] | None:
    """The kept epoch's validation accuracy with its 95% interval and the chance rate
    (:func:`segfew.metrics.accuracy_summary`): a handful of validation cases is noise."""
    if best is None or not val_y or not np.isfinite(best):
        return None
    n = len(val_y)
    hits = np.arange(n) < round(float(best) * n)  # which cases were right does not matter
    return accuracy_summary(hits, val_y, seed=seed)
