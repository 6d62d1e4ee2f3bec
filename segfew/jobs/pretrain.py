"""The ``pretrain`` job: the modified M-Net trained on voxel labels (SPEC §2, §4).

From a validated :class:`~segfew.spec.PretrainSpec` to a segmentation model file
(``segfew.modelfile``) and its run folder (:func:`segfew.jobs.common.run_dir_for`).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from segfew.data import attach_labels, find_cases, find_segmentation_cases, has_class_folders
from segfew.data.label_names import read_label_names
from segfew.data.read import SparseLabelsError, check_lossless, consecutive_label_map
from segfew.errors import DataError, Skipped, SpecError, map_all
from segfew.evaluation.leakage import training_groups
from segfew.identity import voxel_digests
from segfew.jobs.common import (
    Training,
    fit_and_save,
    guarded_run,
    tensor_dataset,
    validation_split,
)
from segfew.modelfile import ARG_BOUNDS, Architecture, ModelMeta
from segfew.models import MNet
from segfew.preprocess.cache import load_case
from segfew.runinfo import versions
from segfew.runtime import describe, resolve_device, resolve_plan
from segfew.spec import PretrainSpec
from segfew.train import label_weights
from segfew.train.distributed import env_world_size
from segfew.train.memory import GiB, check_mnet_training

if TYPE_CHECKING:
    from segfew.data import Case
    from segfew.data.read import LabelRules
    from segfew.preprocess.cache import PreprocessCache
    from segfew.preprocess.grid import Preprocessing
    from segfew.train.engine import FitResult, TrainProgress

log = logging.getLogger(__name__)


@dataclass
class PretrainResult:
    model_path: Path
    run_dir: Path
    dice: dict[str, float | None]
    mean_dice: float | None
    history: list[dict[str, float]] = field(default_factory=list)
    stopped: str = "completed"


def _labelled_case(
    case: Case, cfg: Preprocessing, cache: PreprocessCache | None,
    rules: LabelRules | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """A single-channel-labelled case on the grid: image (C, *grid), label map (*grid)."""
    image, label = load_case(case, cfg, cache, rules)
    if label is None:
        raise DataError("case has no label map", case.images[0])
    if label.ndim == image.ndim:  # one label per channel: only single-channel cases get here
        label = label[0]
    return image, label


def _segmentation_samples(
    cases: Sequence[Case], cfg: Preprocessing, dim: int, cache: PreprocessCache | None,
    rules: LabelRules | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray], list[int]]:
    """Pre-processed (C, *grid) images, label maps and the index of each one's case; a 2D
    network on volumes gets slices (which share their volume's case index)."""
    images, labels, groups = [], [], []
    loaded = map_all(lambda case: _labelled_case(case, cfg, cache, rules), cases,
                     "training cases cannot be read")  # every bad case named in one run
    for index, (case, (image, label)) in enumerate(zip(cases, loaded, strict=True)):
        if image.ndim - 1 == dim:
            images.append(image)
            labels.append(label)
            groups.append(index)
        elif dim == 2 and image.ndim == 4:  # volume -> its slices along the (last) slice axis
            images.extend(image[..., s] for s in range(image.shape[-1]))
            labels.extend(label[..., s] for s in range(label.shape[-1]))
            groups.extend([index] * image.shape[-1])
        else:
            raise DataError(
                f"a {dim}D network cannot train on {image.ndim - 1}D images", case.images[0]
            )
    return images, labels, groups


def _segmentation_cases(spec: PretrainSpec) -> list[Case]:
    """Labelled cases: images and label maps paired by id; with a table, ``recursive`` or
    class sub-folders, the images are found as ``train-classifier`` finds them."""
    d = spec.data
    if d.table is None and not d.recursive and not has_class_folders(d.images):
        cases = find_segmentation_cases(d.images, d.labels, d.channels)
    elif d.labels is None:
        raise SpecError("--labels (spec key data.labels) is needed with a table, --recursive "
                        "or class sub-folders")
    else:
        own = Path(d.labels).resolve() == Path(d.images).resolve()  # the maps skipped as scans
        try:
            with warnings.catch_warnings(record=True) as said:
                warnings.simplefilter("always")
                found = find_cases(d.images, d.table, d.channels, d.id_column, d.recursive,
                                   d.label_column, d.group_column)
        finally:  # said also when the listing fails: its error counts them as warned above
            for w in said:  # are the ones given as --labels: no word of them
                if not (own and isinstance(w.message, Skipped) and w.message.label_maps):
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        cases = attach_labels(found, d.labels, recursive=d.recursive)
    if not cases:
        raise DataError("no labelled images found", spec.data.images)
    return cases


def declared_label_names(spec: PretrainSpec) -> list[str] | None:
    """The names of labels ``0, 1, …`` where they are declared: by the labels folder when
    ``segfew label`` wrote it (``label_names.json``, or an older folder's ``centres.json``:
    such labels need no names), else by ``spec.label_names``; None when neither says (names
    are then made up from the maps)."""
    folder = spec.data.labels
    names = read_label_names(folder) if folder is not None else None
    if names is None:
        return None if spec.label_names is None else list(spec.label_names)
    if spec.label_names is not None and spec.label_names != names:
        log.info(f"{folder} holds labels of segfew label: their names {', '.join(names)} "
                 f"replace label_names")
    return names


def pretrain(
    spec: PretrainSpec,
    *,
    resume: bool = False,
    progress: TrainProgress | None = None,
    cache: PreprocessCache | None = None,
    cases: Sequence[Case] | None = None,
    overwrite: bool = False,
) -> PretrainResult:
    """Train the modified M-Net on images with voxel labels and write its model file.

    Label names come from ``spec.label_names``, or from a labels folder written by
    ``segfew label`` (:func:`declared_label_names`). ``progress`` is
    passed to :func:`segfew.train.fit`; the validation split is announced on the
    ``segfew`` logger. ``cases`` (with label maps) replace discovery from ``spec.data`` —
    the experiment pre-trains each repetition on its training side this way. The model
    file records the SHA-256 of every training file (``metrics.training_data``), of every
    training image's voxels (``metrics.training_voxels``) and, where a table's group column
    names them, the training patients (``metrics.training_groups``), for leakage checks.

    The run folder is locked while the run writes to it (:func:`guarded_run`); one holding
    an unfinished run needs ``resume`` or ``overwrite``. Before any
    image is read, the memory of one training step is estimated (:mod:`segfew.train.memory`),
    logged, and checked against what is free; a configuration that cannot fit raises
    :class:`SpecError` naming the knobs.
    """
    d = spec.data
    with guarded_run(spec.out, [d.images, d.labels, d.table], spec, resume, overwrite):
        return _pretrain(spec, resume=resume, progress=progress, cache=cache, cases=cases)


def _pretrain(
    spec: PretrainSpec,
    *,
    resume: bool,
    progress: TrainProgress | None,
    cache: PreprocessCache | None,
    cases: Sequence[Case] | None,
) -> PretrainResult:
    saved = fit_and_save(spec, lambda cache: _prepare(spec, cache, cases), resume=resume,
                         progress=progress, cache=cache)
    metrics = saved.meta.metrics if saved.meta is not None else {}
    return PretrainResult(spec.out, saved.run_dir, metrics.get("validation_dice", {}),
                          metrics.get("validation_mean_dice"), saved.history, saved.stopped)


def _prepare(spec: PretrainSpec, cache: PreprocessCache, cases: Sequence[Case] | None
             ) -> Training:
    """The M-Net, its tensors and its model file's description (:func:`fit_and_save`)."""
    if cases is None:
        cases = _segmentation_cases(spec)
    patients = training_groups(cases)  # a table's patients: their other cases are leakage
    if patients:
        log.info(f"patients recorded: {len(patients['training_groups'])} (the table's group "
                 "column): evaluate refuses other cases of them")
    elif spec.data.table is not None:
        log.info("patients not recorded: the table names none (--group-column): evaluate can "
                 "find only copies of these scans, not other slices of their patients")
    # A one-channel network learns from each channel's volume and its own label map
    # (ACDC: ED and ES, each with a mask); the classifier later runs it per channel.
    cases = [c for case in cases for c in (
        case.per_channel() if len(case.images) > 1 and len(case.labels) > 1 else [case])]
    for case in cases:  # a refusal from headers alone comes before any other line
        for label in case.labels:
            check_lossless(label)
    if spec.data.label_map == "consecutive":
        spec = _resolve_consecutive(spec, cases)
    dim = spec.network.dim
    size = spec.preprocess.size  # the grid, checked before any image is read
    _check_grid(dim, tuple(size * dim if len(size) == 1 else size[:dim]), spec.train.patch_size)
    train_cases, val_cases = validation_split(cases, spec.train, per_class=False)
    declared = declared_label_names(spec)
    rules = spec.data.label_rules(range(len(declared)) if declared else None)  # the label set
    grid_cfg = spec.preprocess.plain()
    runtime = describe(spec.train.device, spec.train.precision, spec.train.channels_last)
    try:
        # one pass over both sides: every case that cannot be read is named in one run
        xs, ys, groups = _segmentation_samples([*train_cases, *val_cases], grid_cfg, dim,
                                               cache, rules)
        n = len(train_cases)
        train = [g < n for g in groups]
        train_x = [x for x, t in zip(xs, train, strict=True) if t]
        train_y = [y for y, t in zip(ys, train, strict=True) if t]
        val_x = [x for x, t in zip(xs, train, strict=True) if not t]
        val_y = [y for y, t in zip(ys, train, strict=True) if not t]
        val_groups = [g - n for g in groups if g >= n]
    except SparseLabelsError as e:  # the --label-map to follow: from every map, not one
        every_map = (p for c in cases for p in c.labels)
        raise e.over(every_map, rules.remap).taking_consecutive() from None

    num_labels = int(max(int(y.max()) for y in train_y + val_y)) + 1
    names = declared or ["background"] + [f"label{i}" for i in range(1, num_labels)]
    num_labels = len(names)
    if num_labels > ARG_BOUNDS["num_labels"]:  # predict and evaluate would refuse the model
        raise DataError(f"the label maps hold values up to {num_labels - 1}: a network with "
                        f"{num_labels} outputs is over segfew's bound of "
                        f"{ARG_BOUNDS['num_labels']}; remap the labels with --label-map",
                        spec.data.labels or spec.data.images)
    # the memory check, for the labels that will actually be trained
    runtime["memory_estimate_gib"] = _check_memory(spec, cases, num_labels)
    counts = np.zeros(num_labels)
    for y in train_y:
        counts += np.bincount(y.ravel(), minlength=num_labels)[:num_labels]
    in_channels = train_x[0].shape[0]
    _check_grid(dim, tuple(train_x[0].shape[1:]), spec.train.patch_size)
    args: dict[str, Any] = {"dim": dim, "in_channels": in_channels, "num_labels": num_labels,
            "n_s": spec.network.n_s, "dropout": spec.network.dropout}

    voxels = voxel_digests(p for c in cases for p in c.images)  # images only: test data

    def describe_model(result: FitResult | None, info: dict[str, Any]) -> ModelMeta:
        assert result is not None
        # the validation Dice of metrics.csv at the best epoch (segfew.metrics.case_mean_dice)
        best = result.history[result.best_epoch - 1] if val_cases and result.best_epoch else {}
        return ModelMeta(
            kind="segmentation",
            architecture=Architecture(name="mnet", args=args),
            preprocess=spec.preprocess,
            classes=names,
            channels=None,
            spec=spec.model_dump(mode="json"),
            versions=versions(),
            metrics={
                "validation_dice": {names[i]: _finite(best.get(f"val_dice_{i}"))
                                    for i in range(1, num_labels)},
                "validation_mean_dice": _finite(best.get("val_metric")),
                "validation_cases": [c.id for c in val_cases],
                "best_epoch": result.best_epoch,
                "training_data": sorted({row["sha256"] for row in info["data"]}),
                "training_voxels": voxels,
                **patients,
            },
        )

    return Training(
        model=MNet(**args), train=tensor_dataset(train_x, train_y),
        val=tensor_dataset(val_x, val_y) if val_x else None, task="segmentation",
        classes=names, class_weights=label_weights(counts).tolist(),
        manifest=[*([spec.data.table] if spec.data.table else []),
                  *(p for c in cases for p in (*c.images, *c.labels))],
        runtime=runtime, metric="validation Dice (mean over labels)", describe=describe_model,
        val_groups=val_groups)


def _check_grid(dim: int, grid: tuple[int, ...], patch: Sequence[int] | None) -> None:
    """SpecError unless every size of the grid, and of the training patch, is a multiple of
    16 (four poolings) and the patch fits the grid."""
    if any(size % 16 for size in grid):
        raise SpecError(f"the {dim}D network pools four times: every size of its grid "
                        f"{list(grid)} must be a multiple of 16 (preprocess.size)")
    if patch is not None and (len(patch) != dim or any(p % 16 or p > g for p, g in
                                                       zip(patch, grid, strict=True))):
        raise SpecError(f"train.patch_size {list(patch)} must give each of the grid's {dim} "
                        f"axes {list(grid)} a size no larger than it and a multiple of 16 "
                        "(the network pools four times)")


def _resolve_consecutive(spec: PretrainSpec, cases: Sequence[Case]) -> PretrainSpec:
    """``label_map = "consecutive"``: the values of every label map, in order, become 0, 1,
    2, …; the table is logged (the CLI prints it) and kept in the spec that run.json records."""
    mapping = consecutive_label_map(p for c in cases for p in c.labels)
    log.info("label values remapped (--label-map consecutive): %s",
             ", ".join(f"{old} → {new}" for old, new in mapping.items()) or "none needed")
    return spec.model_copy(update={"data": spec.data.model_copy(update={"label_map": mapping})})


def _check_memory(spec: PretrainSpec, cases: Sequence[Case], num_labels: int) -> float | None:
    """GiB one training step is estimated to need (None: unknown); refuses what cannot fit."""
    dim, size = spec.network.dim, spec.preprocess.size
    grid = tuple(size * dim) if len(size) == 1 else tuple(size[:dim])
    if spec.train.patch_size and len(spec.train.patch_size) == dim:
        grid = tuple(spec.train.patch_size)  # a step sees a patch
    device = resolve_device(spec.train.device)
    plan = resolve_plan(device, spec.train.precision, spec.train.channels_last)
    batch = max(1, spec.train.batch_size // env_world_size())
    estimate = check_mnet_training(
        dim, len(cases[0].images), num_labels, spec.network.n_s, grid, batch, device, plan
    )
    if estimate is None:
        return None
    log.info("memory: one training step needs about %s (%s)", estimate.describe(), plan.precision)
    return round(estimate.bytes / GiB, 3)


def _finite(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


