"""The two training jobs of segfew, from a validated spec to a model file.

``pretrain`` trains the modified M-Net on voxel labels (SPEC §2, §4); ``train_classifier``
trains a classifier with few image-level labels on the frozen network's features, or one
of the baselines (SPEC §3). Both write a self-describing model file (``segfew.modelfile``)
and, in a run folder beside it (``<model stem>-run/``), the checkpoints, ``metrics.csv``
and ``run.json`` (spec, seed, versions, data manifest).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from segfew.config import (
    MIN_CASES_FOR_VALIDATION,
    ClassifierSpec,
    ExperimentSpec,
    PreprocessConfig,
    PretrainSpec,
    TrainConfig,
)
from segfew.errors import DataError, DataWarning, SpecError
from segfew.frameworks import FRAMEWORKS, framework

if TYPE_CHECKING:
    from segfew.cases import LabelRules
    from segfew.data import Case
    from segfew.measurements import Measurer
    from segfew.preprocess import PreprocessCache
    from segfew.train.engine import TrainProgress

log = logging.getLogger(__name__)


#: frameworks that use a pre-trained segmentation network (``--features``)
FEATURE_FRAMEWORKS = tuple(n for n, f in FRAMEWORKS.items() if f.uses_segmentation)


def run_dir_for(model_path: Path) -> Path:
    """Where a model file's checkpoints, metrics and run info live: ``<stem>-run/`` beside it."""
    return model_path.parent / f"{model_path.name.split('.')[0]}-run"


def tensor_dataset(images: Sequence[np.ndarray], targets: Sequence[Any]) -> Any:
    """A ``TensorDataset`` of float32 images (N, C, *grid) and int64 targets."""
    import torch
    from torch.utils.data import TensorDataset

    x = torch.from_numpy(np.stack(images).astype(np.float32, copy=False))
    y = torch.from_numpy(np.stack([np.asarray(t) for t in targets]).astype(np.int64))
    return TensorDataset(x, y)


# ---------------------------------------------------------------- segmentation


@dataclass
class PretrainResult:
    model_path: Path
    run_dir: Path
    dice: dict[str, float | None]
    mean_dice: float | None
    history: list[dict[str, float]] = field(default_factory=list)
    stopped: str = "completed"


def _labelled_case(
    case: Case, cfg: PreprocessConfig, cache: PreprocessCache | None,
    rules: LabelRules | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """A single-channel-labelled case on the grid: image (C, *grid), label map (*grid)."""
    from segfew.preprocess import load_case

    image, label = load_case(case, cfg, cache, rules)
    if label is None:
        raise DataError("case has no label map", case.images[0])
    if label.ndim == image.ndim:  # one label per channel: only single-channel cases get here
        label = label[0]
    return image, label


def _segmentation_samples(
    cases: Sequence[Case], cfg: PreprocessConfig, dim: int, cache: PreprocessCache | None,
    rules: LabelRules | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray], list[int]]:
    """Pre-processed (C, *grid) images, label maps and the index of each one's case; a 2D
    network on volumes gets slices (which share their volume's case index)."""
    images, labels, groups = [], [], []
    for index, case in enumerate(cases):
        image, label = _labelled_case(case, cfg, cache, rules)
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
    from segfew.data import attach_labels, find_cases, find_segmentation_cases, has_class_folders

    d = spec.data
    if d.table is None and not d.recursive and not has_class_folders(d.images):
        cases = find_segmentation_cases(d.images, d.labels, d.channels)
    elif d.labels is None:
        raise SpecError("--labels (spec key data.labels) is needed with a table, --recursive "
                        "or class sub-folders")
    else:
        found = find_cases(d.images, d.table, d.channels, d.id_column, d.recursive)
        cases = attach_labels(found, d.labels)
    if not cases:
        raise DataError("no labelled images found", spec.data.images)
    # A one-channel network learns from each channel's volume and its own label map
    # (ACDC: ED and ES, each with a mask); the classifier later runs it per channel.
    flat: list[Case] = []
    for case in cases:
        flat.extend(case.per_channel() if len(case.images) > 1 and len(case.labels) > 1 else [case])
    return flat


@contextlib.contextmanager
def guarded_run(out: Path, inputs: Sequence[Path | None], spec: PretrainSpec | ClassifierSpec,
                resume: bool) -> Iterator[None]:
    """Check a job's model file and run folder against all its inputs (None: not given),
    and a resumed run folder against ``spec``; lock the run folder while the job runs.

    A second run on the same run folder is refused while the first holds the lock
    (:func:`segfew.atomic.run_lock`); under torchrun only rank 0 writes, so only it locks.
    Ctrl-C becomes :class:`segfew.errors.Interrupted`, saying the epoch to resume from. A
    run folder this job made is removed again when it fails before its first checkpoint.
    """
    from segfew.atomic import check_output, run_lock
    from segfew.runinfo import check_resumable, interrupted
    from segfew.train.distributed import is_main

    given = [p for p in inputs if p is not None]
    run_dir = run_dir_for(out)
    check_output(out, given, "file")
    check_output(run_dir, given, "folder", flag=f"the run folder of {out}")
    if resume:
        check_resumable(run_dir, spec)
    fresh = not run_dir.exists()
    with run_lock(run_dir) if is_main() else contextlib.nullcontext() as lock:
        try:
            yield
        except BaseException as e:
            if fresh and lock is not None and not (run_dir / "last.pt").exists():
                for made in run_dir.iterdir():  # a run refused before its first epoch
                    if made != lock:
                        shutil.rmtree(made) if made.is_dir() else made.unlink()
            if isinstance(e, KeyboardInterrupt):
                raise interrupted(run_dir, spec.train.epochs) from None
            raise


def _plot_training(history: Sequence[dict[str, float]], run_dir: Path, metric: str) -> None:
    """``training_curve.png`` in the run folder: loss and validation metric per epoch."""
    if history:
        from segfew.figures import plot_training_curve

        plot_training_curve(history, run_dir / "training_curve.png", metric)


def validation_split(
    cases: Sequence[Case], cfg: TrainConfig, *, per_class: bool
) -> tuple[list[Case], list[Case]]:
    """(training, validation) cases by ``cfg.validation_fraction``, announced with their sizes.

    ``per_class``: the default split needs enough cases in the smallest class (else in all).
    """
    from segfew.data import stratified_split

    counts = Counter(c.target for c in cases) if per_class else Counter({None: len(cases)})
    smallest = min(counts.values()) if counts else 0
    fraction = cfg.validation_fraction(smallest)
    if fraction > 0 and smallest >= 2:
        train, val = stratified_split(cases, fraction=1 - fraction, seed=cfg.seed)
        log.info(
            f"validation split: {len(val)} of {len(cases)} cases held out "
            f"(val_fraction {fraction}); the best epoch is picked on them"
        )
        return train, val
    if fraction > 0 or cfg.val_fraction is None:
        # Said as a warning: the best epoch cannot be picked, the last one is kept.
        needs = ("2 per class" if per_class else "2 cases") if fraction > 0 else (
            f"{MIN_CASES_FOR_VALIDATION} {'in the smallest class' if per_class else 'cases'} "
            "by default; set train.val_fraction to hold some out anyway")
        counted = (f"{smallest} case(s) in the smallest class" if per_class
                   else f"{len(cases)} case(s)")
        warnings.warn(DataWarning(
            f"{counted} are too few for a validation split (it needs {needs}): training on "
            f"all {len(cases)} without validation, keeping the last epoch"), stacklevel=3)
    return list(cases), []


def declared_label_names(spec: PretrainSpec) -> list[str] | None:
    """The names of labels ``0, 1, …`` where they are declared: by the ``centres.json`` of a
    labels folder written by ``segfew label`` (k-means labels need no names), else by
    ``spec.label_names``; None when neither says (names are then made up from the maps)."""
    from segfew.labels import CENTRES_FILE, KMeansLabeller

    centres = spec.data.labels / CENTRES_FILE if spec.data.labels is not None else None
    if centres is not None and centres.is_file():
        names = KMeansLabeller.from_file(centres).label_names()
        if spec.label_names is not None and spec.label_names != names:
            log.info(
                f"{spec.data.labels} holds k-means labels ({CENTRES_FILE}): their names "
                f"{', '.join(names)} replace label_names"
            )
        return names
    return None if spec.label_names is None else list(spec.label_names)


def pretrain(
    spec: PretrainSpec,
    *,
    resume: bool = False,
    progress: TrainProgress | None = None,
    cache: PreprocessCache | None = None,
    cases: Sequence[Case] | None = None,
) -> PretrainResult:
    """Train the modified M-Net on images with voxel labels and write its model file.

    Label names come from ``spec.label_names``, or from the ``centres.json`` of a labels
    folder written by ``segfew label`` (k-means labels need no names). ``progress`` is
    passed to :func:`segfew.train.fit`; the validation split is announced on the
    ``segfew`` logger. ``cases`` (with label maps) replace discovery from ``spec.data`` —
    the experiment pre-trains each repetition on its training side this way. The model
    file records the SHA-256 of every training file (``metrics.training_data``), for
    leakage checks.

    The run folder is locked while the run writes to it (:func:`guarded_run`). Before any
    image is read, the memory of one training step is estimated (:mod:`segfew.train.memory`),
    logged, and checked against what is free; a configuration that cannot fit raises
    :class:`SpecError` naming the knobs.
    """
    d = spec.data
    with guarded_run(spec.out, [d.images, d.labels, d.table], spec, resume):
        return _pretrain(spec, resume=resume, progress=progress, cache=cache, cases=cases)


def _pretrain(
    spec: PretrainSpec,
    *,
    resume: bool,
    progress: TrainProgress | None,
    cache: PreprocessCache | None,
    cases: Sequence[Case] | None,
) -> PretrainResult:
    import torch

    from segfew.modelfile import Architecture, ModelMeta, save_model
    from segfew.models import MNet
    from segfew.preprocess import PreprocessCache
    from segfew.runinfo import versions, write_run_info
    from segfew.runtime import describe, seed_everything, set_threads
    from segfew.train import fit, label_weights
    from segfew.train.distributed import is_main

    cache = cache if cache is not None else PreprocessCache()
    set_threads(spec.train.threads)
    seed_everything(spec.train.seed)
    if cases is None:
        cases = _segmentation_cases(spec)
    else:
        cases = [c for case in cases for c in (
            case.per_channel() if len(case.images) > 1 and len(case.labels) > 1 else [case])]
    dim = spec.network.dim
    train_cases, val_cases = validation_split(cases, spec.train, per_class=False)
    declared = declared_label_names(spec)
    rules = spec.data.label_rules(range(len(declared)) if declared else None)  # the label set
    runtime = describe(spec.train.device, spec.train.precision, spec.train.channels_last)
    runtime["memory_estimate_gib"] = _check_memory(spec, cases, len(declared) if declared else 2)
    train_x, train_y, _ = _segmentation_samples(train_cases, spec.preprocess, dim, cache, rules)
    val_x, val_y, val_groups = _segmentation_samples(val_cases, spec.preprocess, dim, cache,
                                                     rules)

    num_labels = int(max(int(y.max()) for y in train_y + val_y)) + 1
    names = declared or ["background"] + [f"label{i}" for i in range(1, num_labels)]
    num_labels = len(names)
    counts = np.zeros(num_labels)
    for y in train_y:
        counts += np.bincount(y.ravel(), minlength=num_labels)[:num_labels]
    in_channels, grid = train_x[0].shape[0], train_x[0].shape[1:]
    if any(size % 16 for size in grid):
        raise SpecError(
            f"the {dim}D network pools four times: every size of its grid {list(grid)} "
            "must be a multiple of 16 (preprocess.size)"
        )

    model = MNet(dim, in_channels, num_labels, n_s=spec.network.n_s, dropout=spec.network.dropout)
    run_dir = run_dir_for(spec.out)
    info: dict[str, Any] = {"data": []}
    if is_main():
        info = write_run_info(
            run_dir,
            spec,
            spec.train.seed,
            [*([spec.data.table] if spec.data.table else []),
             *(p for c in cases for p in (*c.images, *c.labels))],
            runtime=runtime,
        )
    result = fit(
        model,
        tensor_dataset(train_x, train_y),
        tensor_dataset(val_x, val_y) if val_x else None,
        task="segmentation",
        num_classes=num_labels,
        cfg=spec.train,
        out_dir=run_dir,
        class_weights=label_weights(counts).tolist(),
        resume=resume,
        val_cases=val_groups,
        progress=progress,
    )
    state = torch.load(result.best_path, map_location="cpu", weights_only=True)["model"]
    model.load_state_dict(state)
    model.eval()
    if not is_main():  # under torchrun only rank 0 evaluates and writes
        return PretrainResult(spec.out, run_dir, {}, None, result.history, result.stopped)
    _plot_training(result.history, run_dir, "validation Dice (mean over labels)")

    # the validation Dice of metrics.csv at the best epoch (segfew.metrics.case_mean_dice)
    best = result.history[result.best_epoch - 1] if val_cases and result.best_epoch else {}
    dice = {names[i]: _finite(best.get(f"val_dice_{i}")) for i in range(1, num_labels)}
    mean_dice = _finite(best.get("val_metric"))

    meta = ModelMeta(
        kind="segmentation",
        architecture=Architecture(
            name="mnet",
            args={
                "dim": dim,
                "in_channels": in_channels,
                "num_labels": num_labels,
                "n_s": spec.network.n_s,
                "dropout": spec.network.dropout,
            },
        ),
        preprocess=spec.preprocess,
        classes=names,
        channels=None,
        spec=spec.model_dump(mode="json"),
        versions=versions(),
        metrics={
            "validation_dice": dice,
            "validation_mean_dice": mean_dice,
            "validation_cases": [c.id for c in val_cases],
            "best_epoch": result.best_epoch,
            "training_data": sorted({row["sha256"] for row in info["data"]}),
        },
    )
    save_model(spec.out, model, meta)
    return PretrainResult(spec.out, run_dir, dice, mean_dice, result.history, result.stopped)


def _check_memory(spec: PretrainSpec, cases: Sequence[Case], num_labels: int) -> float | None:
    """GiB one training step is estimated to need (None: unknown); refuses what cannot fit."""
    from segfew.runtime import resolve_device, resolve_plan
    from segfew.train.distributed import env_world_size
    from segfew.train.memory import GiB, check_mnet_training

    dim, size = spec.network.dim, spec.preprocess.size
    grid = tuple(size * dim) if len(size) == 1 else tuple(size[:dim])
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


# ---------------------------------------------------------------- classification


@dataclass
class ClassifierResult:
    model_path: Path
    run_dir: Path
    classes: list[str]
    history: list[dict[str, float]] = field(default_factory=list)
    stopped: str = "completed"
    seconds: float = 0.0


def classifier_preprocess(spec: ClassifierSpec, feature_meta: Any | None) -> PreprocessConfig:
    """The classifier's pre-processing: the spec's grid, the feature network's intensities.

    Features are only meaningful on images normalised as the segmentation network saw them,
    so intensity settings come from its model file; framework vgg uses SPEC §3(c)'s
    224×224 CLAHE input.
    """
    rule = framework(spec.framework).preprocess
    if rule == "imagenet":
        return spec.preprocess.model_copy(update={"size": (224, 224), "intensity": "clahe"})
    if rule == "spec" or feature_meta is None:
        return spec.preprocess
    if rule == "feature_exact":
        return feature_meta.preprocess  # it segments exactly as the network was trained
    seg = feature_meta.preprocess
    return spec.preprocess.model_copy(
        update={
            "intensity": seg.intensity,
            "window": seg.window,
            "clahe_clip": seg.clahe_clip,
            "slice_axis": seg.slice_axis,
        }
    )


def build_classifier(
    spec: ClassifierSpec, in_channels: int, num_classes: int, grid: tuple[int, ...]
) -> tuple[Any, dict[str, Any]]:
    """The network of ``spec.framework`` and its architecture record (for the model file)."""
    from segfew.modelfile import Architecture, load_imagenet_vgg16, load_model
    from segfew.models import build_model as _build_model

    def build_model(kind: str, **kwargs: Any) -> Any:
        try:
            return _build_model(kind, **kwargs)
        except ValueError as e:  # the networks' own checks, as a spec error
            raise SpecError(str(e)) from None

    head = spec.head
    if spec.framework in FEATURE_FRAMEWORKS:
        assert spec.features is not None  # checked by ClassifierSpec
        feature_net, feature_meta = load_model(spec.features)
        if feature_meta.kind != "segmentation":
            raise SpecError(
                "--features must be a segmentation model (from segfew pretrain)", spec.features
            )
        if feature_net.in_channels not in (1, in_channels):
            raise DataError(
                f"the segmentation model takes {feature_net.in_channels} channels, "
                f"the images have {in_channels}",
                spec.features,
            )
        args: dict[str, Any] = {
            "in_channels": in_channels,
            "num_classes": num_classes,
            "input_size": grid,
            "n_c": head.n_c,
            "n_fc": head.n_fc,
            "r": head.r,
            "dropout": head.dropout,
            "finetune": spec.finetune,
        }
        arch = Architecture(
            name="feature_classifier", args=args, feature_net=feature_meta.architecture
        )
        model = build_model(arch.name, feature_net=feature_net, **arch.args)
    elif spec.framework == "scratch":
        arch = Architecture(
            name="vgg",
            args={
                "dim": len(grid),
                "in_channels": in_channels,
                "num_classes": num_classes,
                "input_size": grid,
                "n_c": head.n_c,
                "n_fc": head.n_fc,
                "dropout": head.dropout,
            },
        )
        model = build_model(arch.name, **arch.args)
    else:  # vgg: ImageNet VGG-16 features, 2D only (SPEC §3(c))
        if len(grid) != 2:
            raise SpecError("framework vgg takes 2D images only (ImageNet VGG-16 is 2D)")
        assert spec.vgg_weights is not None  # checked by ClassifierSpec
        arch = Architecture(
            name="imagenet_vgg",
            args={
                "num_classes": num_classes,
                "n_fc": head.n_fc,
                "dropout": head.dropout,
                "in_channels": in_channels,
            },
        )
        model = build_model(arch.name, **arch.args)
        load_imagenet_vgg16(model, spec.vgg_weights)
    return model, arch.model_dump()


def _classification_arrays(
    cases: Sequence[Case], cfg: PreprocessConfig, cache: PreprocessCache | None
) -> list[np.ndarray]:
    from segfew.preprocess import load_case

    arrays = [load_case(case, cfg, cache)[0] for case in cases]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise SpecError(
            f"images reach the classifier with different shapes {sorted(shapes)[:3]}; give a size "
            "for every axis (e.g. size = [64, 64, 16]) so every volume is resampled alike"
        )
    return arrays


def train_classifier(
    spec: ClassifierSpec,
    *,
    cases: Sequence[Case] | None = None,
    val_cases: Sequence[Case] | None = None,
    resume: bool = False,
    progress: TrainProgress | None = None,
    cache: PreprocessCache | None = None,
    write_info: bool = True,
    measurer: Measurer | None = None,
) -> ClassifierResult:
    """Train a classifier of ``spec.framework`` with image-level labels; write its model file.

    ``cases`` (with targets) replace discovery from ``spec.data`` — the learning-curve
    experiment passes each split this way. ``val_cases`` replace the validation split;
    framework measures (a closed-form fit) always fits on every case. ``measurer``
    (framework measures) reuses the measurements of an earlier call.
    The run folder is locked while the run writes to it (:func:`guarded_run`).
    """
    d = spec.data
    with guarded_run(spec.out, [d.images, d.labels, d.table, spec.features, spec.vgg_weights],
                     spec, resume):
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
    measurer: Measurer | None,
) -> ClassifierResult:
    import torch

    from segfew.data import class_names, find_classification_cases
    from segfew.modelfile import Architecture, ModelMeta, read_model_file, save_model
    from segfew.preprocess import PreprocessCache
    from segfew.runinfo import versions, write_run_info
    from segfew.runtime import describe, resolve_device, seed_everything, set_threads
    from segfew.train import fit, label_weights
    from segfew.train.distributed import is_main

    start = time.perf_counter()
    cache = cache if cache is not None else PreprocessCache()
    set_threads(spec.train.threads)
    seed_everything(spec.train.seed)
    if cases is None:
        cases = find_classification_cases(
            spec.data.images,
            spec.data.table,
            channels=spec.data.channels,
            id_column=spec.data.id_column,
            label_column=spec.data.label_column,
            group_column=spec.data.group_column,
        )
    if not cases:
        raise DataError("no labelled images found", spec.data.table or spec.data.images)
    classes = class_names(list(cases) + list(val_cases or []))
    if spec.classes is not None and len(classes) != spec.classes:
        raise DataError(
            f"expected {spec.classes} classes, the table has {len(classes)}: {', '.join(classes)}",
            spec.data.table or spec.data.images,
        )
    val_list: list[Case]
    if spec.framework == "measures":  # fitted to convergence: nothing to pick an epoch on
        train_cases, val_list = [*cases, *(val_cases or [])], []
    elif val_cases is None:
        train_cases, val_list = validation_split(cases, spec.train, per_class=True)
    else:
        train_cases, val_list = list(cases), list(val_cases)

    feature_meta = None
    if spec.framework in FEATURE_FRAMEWORKS and spec.features is not None:
        feature_meta, _ = read_model_file(spec.features)
    cfg = classifier_preprocess(spec, feature_meta)
    index = {name: i for i, name in enumerate(classes)}
    train_y = [index[str(c.target)] for c in train_cases]
    val_y = [index[str(c.target)] for c in val_list]
    if framework(spec.framework).preprocess == "feature_exact":  # measured on the source grid
        train_x: list[np.ndarray] = []
        val_x: list[np.ndarray] = []
    else:
        train_x = _classification_arrays(train_cases, cfg, cache)
        val_x = _classification_arrays(val_list, cfg, cache) if val_list else []
    run_dir = run_dir_for(spec.out)
    if write_info and is_main():
        write_run_info(
            run_dir,
            spec,
            spec.train.seed,
            [*(p for p in (spec.data.table, spec.features, spec.vgg_weights) if p),
             *(p for c in [*train_cases, *val_list] for p in c.images)],
            runtime=describe(spec.train.device, spec.train.precision, spec.train.channels_last),
        )
    counts = np.bincount(np.asarray(train_y), minlength=len(classes))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # absent classes are reported below
        weights = label_weights(counts)
    if framework(spec.framework).network == "measurement_classifier":  # closed form, inner CV
        from segfew.measurements import Measurer, fit_measurement_classifier
        from segfew.modelfile import load_model

        assert spec.features is not None and feature_meta is not None
        if measurer is None:
            net, _ = load_model(spec.features, resolve_device(spec.train.device))
            measurer = Measurer(net, feature_meta.preprocess, feature_meta.classes,
                                resolve_device(spec.train.device))
        model, fitted = fit_measurement_classifier(
            measurer, train_cases, train_y, len(classes), seed=spec.train.seed
        )
        model.cpu()
        arch = Architecture(
            name="measurement_classifier",
            args=fitted["args"],
            feature_net=feature_meta.architecture,
        ).model_dump()
        history: list[dict[str, float]] = []
        stopped, best = "completed", fitted["metrics"]
    else:
        in_channels, grid = train_x[0].shape[0], tuple(train_x[0].shape[1:])
        model, arch = build_classifier(spec, in_channels, len(classes), grid)
        result = fit(
            model,
            tensor_dataset(train_x, train_y),
            tensor_dataset(val_x, val_y) if val_x else None,
            task="classification",
            num_classes=len(classes),
            cfg=spec.train,
            out_dir=run_dir,
            class_weights=weights.tolist(),
            resume=resume,
            progress=progress,
        )
        model.load_state_dict(
            torch.load(result.best_path, map_location="cpu", weights_only=True)["model"]
        )
        history, stopped = result.history, result.stopped
        best = {"best_epoch": result.best_epoch, "best_metric": result.best_metric}

    if not is_main():
        return ClassifierResult(spec.out, run_dir, classes, history, stopped)
    if write_info:
        _plot_training(history, run_dir, "validation accuracy")
    meta = ModelMeta(
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
        },
        feature_source=feature_meta.model_dump(mode="json") if feature_meta else None,
    )
    save_model(spec.out, model, meta)
    return ClassifierResult(
        spec.out, run_dir, classes, history, stopped, time.perf_counter() - start
    )


# ---------------------------------------------------------------- learning curve


def make_pretrain_step(
    spec: ExperimentSpec, cache: PreprocessCache | None = None,
    progress: TrainProgress | None = None,
) -> Callable[[int, list[Case], Path], Any]:
    """The experiment's per-repetition pre-training (``spec.pretrain``, SPEC §6).

    Trains the network of ``spec.pretrain`` (a pretrain spec file) on the voxel labels
    (``spec.data.labels``) of the given training-side cases only.
    """
    from segfew.config import resolve_spec
    from segfew.data import find_segmentation_cases

    assert spec.pretrain is not None and spec.data.labels is not None

    def pretrain_step(repetition: int, side: list[Case], out: Path) -> Any:
        units = {c.group or c.id for c in side} | {c.id for c in side}
        labelled = find_segmentation_cases(spec.data.images, spec.data.labels, spec.data.channels)
        chosen = [c for c in labelled if (c.group or c.id) in units]
        if not chosen:
            raise DataError("no voxel labels for the training side of repetition "
                            f"{repetition}", spec.data.labels)
        pspec = resolve_spec(PretrainSpec, {
            "data": {"images": spec.data.images, "labels": spec.data.labels,
                     "channels": spec.data.channels},
            "out": out,
            "train": {"progress": False if not spec.train.progress else None},
        }, spec.pretrain)
        return pretrain(pspec, progress=progress, cache=cache, cases=chosen)

    return pretrain_step


def make_train_and_score(
    spec: ExperimentSpec,
    cache: PreprocessCache | None = None,
    progress: TrainProgress | None = None,
    run_dir: Path | None = None,
) -> Callable[..., dict[str, Any]]:
    """The experiment's training step: train one framework on a split, score it on the test set.

    Every task of an experiment shares one pre-processing cache, so each scan is read and
    normalised once however many sizes, repetitions and frameworks use it; a measures task
    reuses the measurements of its feature network. With ``spec.pretrain`` the feature
    network of a task is its repetition's, in ``run_dir``.
    """
    from segfew.evaluate import check_targets, score_predictions
    from segfew.predict import Predictor
    from segfew.preprocess import PreprocessCache

    shared_cache = cache if cache is not None else PreprocessCache()
    measurers: dict[str, Measurer] = {}  # feature network → its measurements of every case

    def train_and_score(
        task: Any, train_cases: list[Case], test_cases: list[Case], task_dir: Path
    ) -> dict[str, Any]:
        from segfew.experiment import repetition_features

        start = time.perf_counter()
        features = spec.threshold_features if task.framework == "threshold" else spec.features
        if spec.pretrain is not None and task.framework != "threshold":
            features = repetition_features(run_dir or task_dir.parents[1], task.repetition)
        measurer = measurers.get(str(features)) if task.framework == "measures" else None
        clf_spec = ClassifierSpec(
            data=spec.data,
            out=task_dir / "model.pt",
            framework=task.framework,
            features=features if task.framework in FEATURE_FRAMEWORKS else None,
            vgg_weights=spec.vgg_weights,
            head=spec.head,
            preprocess=spec.preprocess,
            train=spec.train.model_copy(update={"seed": spec.seed + task.repetition}),
        )
        result = train_classifier(
            clf_spec,
            cases=train_cases,
            val_cases=[],
            cache=shared_cache,
            write_info=False,
            progress=progress,
            measurer=measurer,
        )
        predictor = Predictor(result.model_path, device=spec.train.device, cache=shared_cache,
                              measurer=measurer)
        if task.framework == "measures" and predictor.measurer is not None:
            measurers[str(features)] = predictor.measurer
        rows = predictor.classify(test_cases)
        targets = check_targets(test_cases, result.classes)
        metrics = score_predictions(
            targets,
            rows,
            result.classes,
            bootstrap=spec.bootstrap,
            seed=spec.seed,
            source=task_dir,
        )
        predictions = [
            {
                "id": case.id,
                "target": case.target,
                "predicted": row.predicted,
                "status": row.status,
                "error": row.error,
            }
            for case, row in zip(test_cases, rows, strict=True)
        ]
        kept = ("measures_model", "top_measurements")  # what the report shows of measures
        return {
            "metrics": metrics,
            "predictions": predictions,
            "seconds": time.perf_counter() - start,
            "epochs": len(result.history),
            **{k: v for k, v in predictor.meta.metrics.items() if k in kept},
        }

    from segfew.cases import read_case

    train_and_score.check_case = read_case  # type: ignore[attr-defined]  # see run_experiment
    return train_and_score
