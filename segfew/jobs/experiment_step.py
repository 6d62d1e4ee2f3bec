"""The experiment's injected steps: per-repetition pre-training, train-and-score (SPEC §6).

:func:`segfew.experiment.protocol.run_experiment` is generic over these; they turn the
:class:`~segfew.spec.ExperimentSpec` into the specs of the two training jobs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segfew.data import find_segmentation_cases
from segfew.data.read import read_case
from segfew.errors import DataError
from segfew.evaluation.evaluate import check_targets, score_predictions
from segfew.experiment.protocol import repetition_features
from segfew.frameworks import framework
from segfew.inference.masks import mask_label_names
from segfew.inference.nnunet import is_nnunet_folder
from segfew.inference.nnunet_stats import NnUNetStats
from segfew.inference.predictor import Predictor
from segfew.jobs.pretrain import pretrain
from segfew.jobs.train_classifier import train_classifier
from segfew.preprocess.cache import PreprocessCache
from segfew.runtime import resolve_device
from segfew.spec import ClassifierSpec, ExperimentSpec, PretrainSpec, resolve_spec

if TYPE_CHECKING:
    from segfew.data import Case
    from segfew.inference.measure import Measurer
    from segfew.train.engine import TrainProgress


#: train settings that say how to run on this machine, not what to learn
MACHINE_SETTINGS = ("device", "threads", "precision", "num_workers")


def make_pretrain_step(
    spec: ExperimentSpec, cache: PreprocessCache | None = None,
    progress: TrainProgress | None = None,
) -> Callable[[int, list[Case], Path], Any]:
    """The experiment's per-repetition pre-training (``spec.pretrain``, SPEC §6).

    Trains the network of ``spec.pretrain`` (a pretrain spec file) on the voxel labels
    (``spec.data.labels``) of the given training-side cases only, with the experiment's
    device, threads, precision and workers where it sets them.
    """
    assert spec.pretrain is not None and spec.data.labels is not None
    # how to run here (given to the experiment) applies to its pre-training too
    machine = {k: getattr(spec.train, k) for k in MACHINE_SETTINGS
               if k in spec.train.model_fields_set}

    def pretrain_step(repetition: int, side: list[Case], out: Path) -> Any:
        units = {c.unit for c in side} | {c.id for c in side}
        labelled = find_segmentation_cases(spec.data.images, spec.data.labels, spec.data.channels)
        chosen = [c for c in labelled if c.unit in units]
        if not chosen:
            raise DataError("no voxel labels for the training side of repetition "
                            f"{repetition}", spec.data.labels)
        pspec = resolve_spec(PretrainSpec, {
            "data": {"images": spec.data.images, "labels": spec.data.labels,
                     "channels": spec.data.channels},
            "out": out,
            "train": {"progress": False if not spec.train.progress else None, **machine},
        }, spec.pretrain)
        # a repetition stopped part-way is trained again from its start (the experiment's rule)
        return pretrain(pspec, progress=progress, cache=cache, cases=chosen, overwrite=True)

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
    if spec.masks is not None and "measures" in spec.frameworks:
        mask_label_names(spec.masks, spec.label_names)  # unnamed: one line now, not per task
    shared_cache = cache if cache is not None else PreprocessCache()
    # feature network → its measurements (an nnU-Net's head: its statistics) of every case
    measurers: dict[str, Measurer | NnUNetStats] = {}

    def train_and_score(
        task: Any, train_cases: list[Case], test_cases: list[Case], task_dir: Path
    ) -> dict[str, Any]:
        start = time.perf_counter()
        info = framework(task.framework)
        kmeans = "kmeans_segmentation" in info.needs
        features = spec.threshold_features if kmeans else spec.features
        if spec.pretrain is not None and not kmeans:
            features = repetition_features(run_dir or task_dir.parents[1], task.repetition)
        measures = info.network == "measurement_classifier"
        masks = spec.masks if measures else None  # another tool's label maps, no network
        # the head on an nnU-Net's statistics shares them too (they are not label maps)
        head = not measures and info.uses_segmentation and is_nnunet_folder(features)
        shares = measures or head
        key = ("masks" if masks is not None else str(features)) + (" head" if head else "")
        if head and key not in measurers:  # each case's statistics computed once in all
            measurers[key] = NnUNetStats(Path(str(features)), device=resolve_device(
                spec.train.device), reads=spec.head.source)
        measurer = measurers.get(key) if shares else None
        clf_spec = ClassifierSpec(
            data=spec.data,
            out=task_dir / "model.pt",
            framework=task.framework,
            features=features if info.uses_segmentation and masks is None else None,
            masks=masks,
            label_names=spec.label_names if masks is not None else None,
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
            overwrite=True,  # a task stopped part-way is trained again from its start
        )
        shared = {"measurer": measurer} if shares else {}  # a measures classifier's
        predictor = Predictor.open(result.model_path, device=spec.train.device,
                                   cache=shared_cache, **shared)
        predictor.masks = masks
        if shares and predictor.measurer is not None:
            measurers[key] = predictor.measurer
        rows = predictor.classify(test_cases)
        targets = check_targets(test_cases, result.classes)
        metrics = score_predictions(
            targets,
            rows,
            result.classes,
            bootstrap=spec.bootstrap,
            seed=spec.seed,
            source=task_dir,
            groups=[c.unit for c in test_cases],  # the interval resamples test patients
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
        kept = ("measures_model", "top_measurements", "measures_selection",
                "measures_nested")  # what the report shows of measures
        return {
            "metrics": metrics,
            "predictions": predictions,
            "seconds": time.perf_counter() - start,
            "epochs": len(result.history),
            **{k: v for k, v in predictor.meta.metrics.items() if k in kept},
        }

    train_and_score.check_case = read_case  # type: ignore[attr-defined]  # see run_experiment
    return train_and_score
