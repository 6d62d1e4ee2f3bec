"""What the jobs share: run folders, their guard, the validation split, tensors, and
the skeleton of a training job (:func:`fit_and_save`).

A job's model file has its checkpoints, ``metrics.csv`` and ``run.json`` (spec, seed,
versions, data manifest) in a run folder beside it (:func:`segfew.runinfo.run_dir_for`:
``m.v1.pt`` → ``m.v1-run/``).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import TensorDataset

from segfew import train
from segfew.data import stratified_split
from segfew.errors import DataError, DataWarning, SpecError
from segfew.evaluation.figures import plot_training_curve
from segfew.files import RUN_RECORD, check_output, run_lock, write_json
from segfew.frameworks import FRAMEWORKS
from segfew.modelfile import save_model
from segfew.preprocess.cache import PreprocessCache
from segfew.runinfo import (
    check_resumable,
    check_resumed_data,
    legacy_run_dir,
    run_dir_for,
    run_info,
    unfinished_run,
    update_run_info,
)
from segfew.runtime import seed_everything, set_threads
from segfew.spec import (
    MIN_CASES_FOR_VALIDATION,
    MIN_CASES_TO_PICK_EPOCH,
    ClassifierSpec,
    PretrainSpec,
    TrainConfig,
)
from segfew.train.checkpoint import interrupted
from segfew.train.distributed import is_main

if TYPE_CHECKING:
    from segfew.data import Case
    from segfew.modelfile import ModelMeta
    from segfew.train.engine import FitResult, Task, TrainProgress

log = logging.getLogger(__name__)

#: frameworks that use a pre-trained segmentation network (``--features``)
FEATURE_FRAMEWORKS = tuple(n for n, f in FRAMEWORKS.items() if f.uses_segmentation)


def tensor_dataset(images: Sequence[np.ndarray], targets: Sequence[Any]) -> Any:
    """A ``TensorDataset`` of float32 images (N, C, *grid) and int64 targets."""
    x = torch.from_numpy(np.stack(images).astype(np.float32, copy=False))
    y = torch.from_numpy(np.stack([np.asarray(t) for t in targets]).astype(np.int64))
    return TensorDataset(x, y)


@contextlib.contextmanager
def guarded_run(out: Path, inputs: Sequence[Path | None], spec: PretrainSpec | ClassifierSpec,
                resume: bool, overwrite: bool = False) -> Iterator[None]:
    """Check a job's model file and run folder against all its inputs (None: not given),
    and a resumed run folder against ``spec``; lock the run folder while the job runs.

    A model file at ``out`` that no segfew run wrote (no run folder with its ``run.json``
    beside it: another tool's checkpoint) is not replaced without ``overwrite``
    (:class:`DataError`). A run folder holding an unfinished run
    (:func:`segfew.runinfo.unfinished_run`) is never restarted silently: without ``resume``
    or ``overwrite`` it is a :class:`SpecError` naming both. A run not resumed removes the
    folder's checkpoints first: a completed run trained again and stopped before its own first
    checkpoint would otherwise be resumed from the earlier run's.

    A second run on the same run folder is refused while the first holds the lock
    (:func:`segfew.files.run_lock`); under torchrun only rank 0 writes, so only it locks.
    Ctrl-C becomes :class:`segfew.errors.Interrupted`, saying the epoch to resume from. A
    run folder this job made is removed again when it fails before its first checkpoint.
    """
    if resume and overwrite:
        raise SpecError("--resume continues a run, --overwrite starts it afresh: give one")
    given = [p for p in inputs if p is not None]
    run_dir = run_dir_for(out)
    check_output(out, given, "file")
    if (out.exists() or out.is_symlink()) and not (resume or overwrite) and not any(
            d is not None and (d / RUN_RECORD).is_file()
            for d in (run_dir, legacy_run_dir(out))):  # no run of segfew's wrote it
        raise DataError(f"exists and segfew did not write it (no run folder {run_dir.name} "
                        "beside it): choose another --out, or pass --overwrite", out)
    check_output(run_dir, given, "folder", flag=f"the run folder of {out}", run_folder=True)
    if resume:
        check_resumable(run_dir, spec)
    fresh = not run_dir.exists()
    with run_lock(run_dir) if is_main() else contextlib.nullcontext() as lock:
        # judged under the lock, so a run still going is named as such (the lock's message)
        why = unfinished_run(run_dir, out) if lock is not None else None
        if why is not None and not (resume or overwrite):
            raise SpecError(f"the run folder holds an unfinished run ({why}): continue it with "
                            "--resume, or start afresh with --overwrite", run_dir)
        if not resume and lock is not None:  # a run started afresh: an earlier run's
            for name in ("last.pt", "best.pt", "metrics.csv"):  # checkpoints would be resumed
                (run_dir / name).unlink(missing_ok=True)
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


def epoch_choice(n_val: int, cfg: TrainConfig) -> tuple[str, str]:
    """(``"best"`` or ``"last"``, what to say about it: "" when nothing) — the epoch a
    classifier keeps after training with ``n_val`` validation cases (``train.select_epoch``).

    Why: on a few cases the validation accuracy moves in steps of 1/n and the best of 50
    such values is mostly the luckiest epoch; ``auto`` keeps the last epoch below
    :data:`~segfew.spec.MIN_CASES_TO_PICK_EPOCH` validation cases
    (docs/splits-and-units.md gives the measurement behind this).
    """
    small = 0 < n_val < MIN_CASES_TO_PICK_EPOCH
    step = f"one case moves the accuracy by {1 / n_val:.2f}" if n_val else ""
    if cfg.select_epoch == "last" or (cfg.select_epoch == "auto" and small):
        return "last", (f"{n_val} validation cases are too few to pick an epoch on ({step}): "
                        "the last epoch is kept (train.select_epoch = \"best\" picks on them "
                        "anyway)" if small else "the last epoch is kept (train.select_epoch)")
    if small:  # best, on the user's word
        return "best", (f"the best epoch is picked on {n_val} validation cases ({step}): "
                        "expect it to be the luckiest rather than the best")
    return "best", ""


def plot_training(history: Sequence[dict[str, float]], run_dir: Path, metric: str) -> None:
    """``training_curve.png`` in the run folder: loss and validation metric per epoch."""
    if history:
        plot_training_curve(history, run_dir / "training_curve.png", metric)


def validation_split(
    cases: Sequence[Case], cfg: TrainConfig, *, per_class: bool
) -> tuple[list[Case], list[Case]]:
    """(training, validation) cases by ``cfg.validation_fraction``, announced with their sizes.

    ``per_class``: the default split needs enough cases in the smallest class (else in all).
    """
    counts = Counter(c.target for c in cases) if per_class else Counter({None: len(cases)})
    smallest = min(counts.values()) if counts else 0
    fraction = cfg.validation_fraction(smallest)
    if fraction > 0 and smallest >= 2:
        # segmentation: one stratum (a class would put one patient of each in validation)
        pool = cases if per_class else [replace(c, target=None) for c in cases]
        kept, held = stratified_split(pool, fraction=1 - fraction, seed=cfg.seed)
        by_id = {c.id: c for c in cases}
        train, val = [by_id[c.id] for c in kept], [by_id[c.id] for c in held]
        why = epoch_choice(len(val), cfg)[1] if per_class else ""
        log.info(f"validation split: {len(val)} of {len(cases)} cases held out "
                 f"(val_fraction {fraction}); " + (why or "the best epoch is picked on them"))
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
            f"all {len(cases)} without validation, keeping the epoch of lowest training "
            "loss"), stacklevel=3)
    return list(cases), []


@dataclass
class Training:
    """What a training job hands :func:`fit_and_save`: its network and tensors, what
    ``run.json`` records, and how its model file is described once trained.

    ``train`` is None for a model fitted already (a closed-form fit: nothing to train).
    ``describe(result, info)`` makes the model file's :class:`~segfew.modelfile.ModelMeta`
    from the fit (None: closed form) and ``run.json`` as written (``{"data": []}`` when
    not written). ``completed`` names fields of its ``metrics`` that ``run.json`` also
    records when the run completes.
    """

    model: Any
    train: Any | None
    val: Any | None
    task: Task
    classes: list[str]  # the names of the network's outputs
    class_weights: list[float]
    manifest: list[Path]  # the files run.json's data manifest hashes
    runtime: dict[str, Any]  # how it runs (segfew.runtime.describe), for run.json
    metric: str  # the training curve's validation metric, e.g. "validation accuracy"
    describe: Callable[[FitResult | None, dict[str, Any]], ModelMeta]
    keep: str = "best"  # the checkpoint the model file keeps: "best" or "last"
    augment: bool = True  # False: the samples are not images (per-case statistics)
    val_groups: list[int] | None = None  # the case of each validation sample (slices)
    run_info: dict[str, Any] = field(default_factory=dict)  # more fields of run.json
    completed: tuple[str, ...] = ()


@dataclass
class Saved:
    """What :func:`fit_and_save` did; ``meta`` is None on a torchrun rank other than 0."""

    run_dir: Path
    classes: list[str]
    history: list[dict[str, float]]
    stopped: str
    meta: ModelMeta | None


def fit_and_save(
    spec: PretrainSpec | ClassifierSpec,
    prepare: Callable[[PreprocessCache], Training],
    *,
    resume: bool,
    progress: TrainProgress | None,
    cache: PreprocessCache | None,
    write_info: bool = True,
) -> Saved:
    """The skeleton of ``pretrain`` and ``train-classifier``, inside :func:`guarded_run`.

    Sets the threads and seed, runs ``prepare`` (cases to tensors and a network; given
    the pre-processing cache), writes ``run.json`` with status ``running``, fits
    (:func:`segfew.train.fit`: ``best.pt``/``last.pt``, ``metrics.csv``), loads the kept
    checkpoint, plots ``training_curve.png``, saves the model file and sets ``run.json``'s
    status to ``completed``. ``write_info=False`` (an experiment's tasks) writes neither
    ``run.json`` nor the plot. Under torchrun only rank 0 writes.
    """
    set_threads(spec.train.threads)
    seed_everything(spec.train.seed)
    job = prepare(cache if cache is not None else PreprocessCache())
    run_dir = run_dir_for(spec.out)
    info: dict[str, Any] = {"data": []}
    if write_info and is_main():
        info = run_info(spec, spec.train.seed, job.manifest, runtime=job.runtime,
                        extra={"status": "running", **job.run_info})
        if resume:
            check_resumed_data(run_dir, info["data"])
        write_json(run_dir / "run.json", info)
    result = None
    if job.train is not None:
        result = train.fit(job.model, job.train, job.val, task=job.task,
                           num_classes=len(job.classes), cfg=spec.train.plain(), out_dir=run_dir,
                           class_weights=job.class_weights, resume=resume,
                           augment=job.augment, val_cases=job.val_groups, progress=progress)
        kept = result.last_path if job.keep == "last" else result.best_path
        job.model.load_state_dict(
            torch.load(kept, map_location="cpu", weights_only=True)["model"])
        job.model.eval()
    history, stopped = (result.history, result.stopped) if result else ([], "completed")
    if not is_main():  # under torchrun only rank 0 writes
        return Saved(run_dir, job.classes, history, stopped, None)
    if write_info:
        plot_training(history, run_dir, job.metric)
    meta = job.describe(result, info)
    save_model(spec.out, job.model, meta)
    update_run_info(run_dir, status="completed",
                    **{name: meta.metrics.get(name) for name in job.completed})
    return Saved(run_dir, job.classes, history, stopped, meta)
