"""The paper's learning-curve protocol (SPEC §6; Wong et al. 2018, Fig. 5 and 8).

For each training size k (labelled patients per class) and repetition r, one stratified,
group-aware split is drawn; every framework is trained on exactly that split and scored on
its test set. The training step is injected (:data:`TrainAndScore`), so the protocol and
its bookkeeping are testable without a network.

A run folder (RUN_DIR) holds::

    spec.json            the validated ExperimentSpec (must match when resuming, but for
                         added frameworks)
    run.json             versions, platform, command (run-shard<i>of<N>.json for a shard)
    data.json            classes, cases per class, test-set sizes per repetition
    results/<key>.json   one per finished task, written as soon as it finishes (with its
                         test cases' ids, patients and classes)
    results/<key>.error.json   one per failed task (retried on the next run)
    work/<key>/          scratch folder handed to the training step

``<key>`` is ``size004_rep02_manual``. A task whose result file exists is never run again,
so an interrupted experiment resumes where it stopped, and shards (``--shard i/N``) can
write into one RUN_DIR or several that :func:`segfew.experiment.results.collect_results`
merges.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segfew.data import group_identical_images
from segfew.data.splits import check_class_names
from segfew.errors import DataError, Interrupted, SegfewError, SpecError, map_all
from segfew.evaluation.leakage import check_leakage, records_voxels
from segfew.experiment.pooling import patient_metrics, test_fields
from segfew.experiment.splits import (
    _check_splittable,
    data_summary,
    label_maps_read,
    load_cases,
    load_test_cases,
    split_for,
    training_pool,
)
from segfew.files import check_output, check_replace, file_digest, outputs_record, write_json
from segfew.frameworks import FRAMEWORKS, framework
from segfew.runinfo import flat_settings, other_data, run_info
from segfew.spec import ExperimentSpec

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from segfew.data import Case

__all__ = [
    "FRAMEWORK_NAMES",
    "PretrainStep",
    "Task",
    "TrainAndScore",
    "check_leakage",
    "load_spec",
    "parse_shard",
    "plan_tasks",
    "repetition_features",
    "run_experiment",
    "shard_tasks",
    "split_for",
]

#: What each framework is, in words (the paper's names in capitals), in registry order.
FRAMEWORK_NAMES = {name: f.title for name, f in FRAMEWORKS.items()}

# Settings that do not change results: a resumed run may differ in them.
_IGNORED_ON_RESUME = {"train": ("progress", "device", "threads", "num_workers", "cache_features",
                                "cache_max_gb")}
#: the settings that are paths of inputs: a moved folder differs in them
_INPUT_PATHS = frozenset({"data.images", "data.table", "data.labels", "masks", "test_table",
                          "test_images", "features", "threshold_features", "vgg_weights",
                          "pretrain"})


@dataclass(frozen=True, order=True)
class Task:
    """One (training size, repetition, framework) of the protocol; repetitions count from 1."""

    size: int
    repetition: int
    framework: str

    @property
    def key(self) -> str:
        return f"size{self.size:03d}_rep{self.repetition:02d}_{self.framework}"


#: ``pretrain_step(repetition, train_side, model_path)`` pre-trains the segmentation network
#: of one repetition on the voxel labels of ``train_side`` (every case of the pool outside
#: that repetition's test set) and writes it to ``model_path``.
PretrainStep = Callable[[int, list["Case"], Path], Any]

#: ``train_and_score(task, train_cases, test_cases, work_dir) -> dict`` trains one framework
#: on ``train_cases`` and scores it on ``test_cases``. The dict holds at least ``metrics``
#: (a :func:`segfew.metrics.classification_metrics` dict, best with ``groups`` the test
#: cases' ``unit``); ``predictions`` (rows: ``id``, ``predicted``, ``status``), ``seconds``
#: and any other JSON-serialisable keys are kept in the result file. Metrics without
#: ``n_groups`` get intervals over patients from the rows
#: (:func:`segfew.experiment.pooling.patient_metrics`).
TrainAndScore = Callable[["Task", list["Case"], list["Case"], Path], dict[str, Any]]


def plan_tasks(spec: ExperimentSpec) -> list[Task]:
    """Every task, repetition by repetition, size by size, framework by framework.

    After each repetition the run holds one complete curve per framework, and the
    frameworks of one split run one after the other.
    """
    return [Task(size, rep, fw) for rep in range(1, spec.repetitions + 1)
            for size in spec.sizes for fw in spec.frameworks]


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"2/4"`` → ``(2, 4)``; None stays None. Raises SpecError on anything else."""
    if text is None:
        return None
    try:
        i, n = (int(p) for p in text.split("/"))
    except ValueError:
        raise SpecError(f"--shard must look like i/N (e.g. 2/4), got {text!r}") from None
    return _check_shard((i, n))


def _check_shard(shard: tuple[int, int]) -> tuple[int, int]:
    i, n = shard
    if n < 1 or not 1 <= i <= n:
        raise SpecError(f"shard {i}/{n}: need 1 ≤ i ≤ N")
    return i, n


def shard_tasks(tasks: Sequence[Task], shard: tuple[int, int] | None) -> list[Task]:
    """Shard ``i`` of ``N`` (1-based): tasks ``i-1, i-1+N, …`` — round-robin, so every shard
    gets a mix of small and large sizes. The N shards together are exactly ``tasks``."""
    if shard is None:
        return list(tasks)
    i, n = _check_shard(shard)
    return list(tasks[i - 1::n])


# ---------------------------------------------------------------- leakage


def repetition_features(out_dir: Path, repetition: int) -> Path:
    """Where the segmentation network pre-trained for ``repetition`` lives in a RUN_DIR."""
    return Path(out_dir) / "pretrain" / f"rep{repetition:02d}" / "seg.pt"


def _shared_features(spec: ExperimentSpec) -> list[Path]:
    """The segmentation sources every repetition uses (not pre-trained per repetition):
    model files, an nnU-Net results folder, another tool's label maps (``masks``) — the
    last two record no training data, so their check is reported as not made."""
    needs = {n for fw in spec.frameworks for n in framework(fw).needs}
    paths = []
    if spec.pretrain is None and spec.features is not None and "segmentation" in needs:
        paths.append(spec.features)
    if spec.threshold_features is not None and "kmeans_segmentation" in needs:
        paths.append(spec.threshold_features)
    if spec.masks is not None and "measures" in spec.frameworks:
        paths.append(spec.masks)
    return [Path(p) for p in paths if Path(p).exists()]


# ---------------------------------------------------------------- running


def _comparable(spec_data: dict[str, Any]) -> dict[str, Any]:
    """The settings that determine a task's result. Splits do not depend on the frameworks
    (seeds come from the spec's seed and the repetition), so frameworks may be added to a
    RUN_DIR later: only the new ones are trained."""
    data = json.loads(json.dumps(spec_data))
    data.pop("frameworks", None)
    data.pop("allow_leakage", None)  # decides whether to run, not what a task computes
    for section, keys in _IGNORED_ON_RESUME.items():
        for k in keys:
            (data.get(section) or {}).pop(k, None)
    return data


def spec_digest(spec: ExperimentSpec | dict[str, Any]) -> str:
    """Short hash of the settings that determine results (shards must agree on it)."""
    data = spec.model_dump(mode="json") if isinstance(spec, ExperimentSpec) else spec
    text = json.dumps(_comparable(data), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _check_same_spec(out_dir: Path, spec: ExperimentSpec) -> None:
    saved_path = out_dir / "spec.json"
    if not saved_path.is_file():
        return
    try:
        saved = json.loads(saved_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise SpecError(f"cannot read the saved spec ({e}); use a new RUN_DIR",
                        saved_path) from None
    old = flat_settings(_comparable(saved))
    new = flat_settings(_comparable(spec.model_dump(mode="json")))
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if keys:
        shown = ", ".join(f"{k} {old.get(k)!r} → {new.get(k)!r}" for k in keys[:4])
        paths = any(k in _INPUT_PATHS for k in keys)
        raise SpecError(f"this RUN_DIR holds an experiment with other settings (differs in: "
                        f"{shown}{', …' if len(keys) > 4 else ''}); use a new RUN_DIR, or "
                        "the same settings to resume"
                        + ("; its inputs' paths are among its settings: a data folder moved "
                           "needs the old path or a new RUN_DIR" if paths else ""), out_dir)
    _check_same_models(out_dir, spec)


def _model_files(spec: ExperimentSpec) -> list[Path]:
    return [p for p in (spec.features, spec.threshold_features, spec.vgg_weights)
            if p is not None]


def _saved_manifest(out_dir: Path) -> list[dict[str, Any]]:
    """The input rows (path, SHA-256) of the run records in ``out_dir`` (``run*.json``,
    one per shard), one per path: the last record's where two list it."""
    saved: dict[str, dict[str, Any]] = {}
    for info in sorted(out_dir.glob("run*.json")):
        try:
            rows = json.loads(info.read_text(encoding="utf-8")).get("data") or []
        except (OSError, json.JSONDecodeError, AttributeError):
            continue
        saved.update({r["path"]: r for r in rows
                      if isinstance(r, dict) and "path" in r and "sha256" in r})
    return list(saved.values())


def _check_same_models(out_dir: Path, spec: ExperimentSpec) -> None:
    """A model file given again must hold what it held (its SHA-256 in the saved run.json):
    a segmentation network retrained under the same name would mix two feature sources."""
    saved = {r["path"]: r["sha256"] for r in _saved_manifest(out_dir)}
    for path in _model_files(spec):
        old = saved.get(str(path))
        if old is not None and path.is_file() and file_digest(path) != old:
            raise SpecError(f"the model file {path} has changed since this RUN_DIR was "
                            "started (its SHA-256 differs); use a new RUN_DIR, or the "
                            "original file to resume", out_dir)


def _check_same_data(out_dir: Path, saved: list[dict[str, Any]], info: dict[str, Any]) -> None:
    """A resumed run (or another shard) whose inputs changed since its finished tasks ran —
    a table or scan changed, added or gone — is refused: their results, from the old
    classes, scans or splits, would be pooled with the new tasks' in one report. ``saved``:
    :func:`_saved_manifest` before this run's record; ``info``: this run's record (its
    manifest, ``data``), compared as a resumed training's (:func:`segfew.runinfo.other_data`)."""
    finished = [p for p in (out_dir / "results").glob("*.json")
                if not p.name.endswith(".error.json")]
    words = other_data(saved, info.get("data") or []) if finished else None
    if words:
        raise DataError(f"this RUN_DIR's {len(finished)} finished task(s) ran on other data "
                        f"({words}): their results would be pooled with new ones; use a new "
                        "RUN_DIR, or the original files to resume", out_dir)


def load_spec(run_dir: Path) -> ExperimentSpec:
    """The spec saved in a RUN_DIR."""
    path = Path(run_dir) / "spec.json"
    try:
        return ExperimentSpec.model_validate_json(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise SpecError(f"not an experiment folder ({e.strerror})", path) from None
    except ValueError as e:
        raise SpecError(f"invalid saved spec: {str(e).splitlines()[0]}", path) from None


def run_experiment(spec: ExperimentSpec, out_dir: Path, train_and_score: TrainAndScore, *,
                   shard: tuple[int, int] | None = None,
                   cases: Sequence[Case] | None = None,
                   test_cases: Sequence[Case] | None = None,
                   pretrain_step: PretrainStep | None = None,
                   overwrite: bool = False) -> Path:
    """Run (or resume) the protocol's tasks (those of ``shard`` if given) into ``out_dir``.

    Each finished task's result is written to ``out_dir/results/<key>.json`` at once;
    tasks with a result file are skipped. A task that raises an ``Exception`` gets
    ``<key>.error.json`` (message and traceback) and the run goes on; check
    :func:`task_status` afterwards. ``KeyboardInterrupt`` stops the run; everything
    finished so far is kept. ``cases`` / ``test_cases`` replace reading ``spec.data`` /
    ``spec.test_table`` (tests, or callers that already hold them). A step with a
    ``check_case`` attribute (the real one: :func:`segfew.data.read.read_case`, the door) has
    it called on every case first, so bad files stop the run before any training, all of
    them named (:func:`segfew.errors.map_all`). Each task is announced, and each
    failure reported, on the ``segfew`` logger. Returns ``out_dir``.

    No leakage (SPEC §6): every shared feature network is checked against every test set
    first (:func:`check_leakage`). With ``spec.pretrain``, ``pretrain_step`` trains one
    network per repetition on its training side, before the repetition's first task, into
    :func:`repetition_features` (kept, so a resumed run does not train it again).

    A ``run.json``, ``spec.json`` or ``data.json`` in ``out_dir`` that no segfew run
    recorded writing there is refused first (:class:`DataError`), unless ``overwrite``.
    """
    out_dir = Path(out_dir)
    d = spec.data
    check_output(out_dir, [p for p in (d.images, d.table, spec.test_table, spec.test_images,
                                       spec.features, spec.threshold_features,
                                       spec.vgg_weights) if p is not None], "folder")
    run_name = "run.json" if shard is None else f"run-shard{shard[0]}of{shard[1]}.json"
    _check_replace(out_dir, run_name, overwrite)
    _check_same_spec(out_dir, spec)
    pool = [c for c in (cases if cases is not None else load_cases(spec)) if c.target is not None]
    if spec.test == "fixed":
        fixed = list(test_cases) if test_cases is not None else load_test_cases(spec)
        if not fixed:
            raise DataError("the fixed test set has no labelled cases", spec.test_table)
    else:
        fixed = []
    tables = [t for t in (d.table, spec.test_table) if t is not None]
    where = " and ".join(map(str, tables)) if len(tables) > 1 else d.table or d.images
    check_class_names([*pool, *fixed], where)  # once here: the tasks' trainers do not
    grouped, copies = group_identical_images([*pool, *fixed], where)
    pool, fixed = grouped[:len(pool)], grouped[len(pool):]
    for units in copies:
        log.warning(f"identical images: {', '.join(units)} hold the same scan (the same file "
                    "bytes or the same voxels); they are kept on one side of every split")
    if not pool:
        raise DataError("no labelled cases to draw training sets from", spec.data.table)
    _check_splittable(training_pool(pool, fixed, spec), spec,
                      {str(c.target) for c in [*pool, *fixed]})

    check_case: Callable[[Case], object] | None = getattr(train_and_score, "check_case", None)
    if check_case is not None:  # every bad case named in one run, not one per run
        map_all(check_case, [*pool, *fixed], "cases cannot be used")
    tasks = shard_tasks(plan_tasks(spec), shard)
    # All splits first (cheap), so a data problem stops the run before any training.
    splits = {(size, rep): split_for(pool, spec, size, rep, fixed)
              for rep in range(1, spec.repetitions + 1) for size in spec.sizes}

    all_test = {c.id: c for _, test in splits.values() for c in test}.values()
    checks = [check_leakage(p, all_test, spec.allow_leakage) for p in _shared_features(spec)]
    if spec.pretrain is not None and pretrain_step is None:
        raise SpecError("this experiment pre-trains per repetition (pretrain) but no "
                        "pre-training step was given")

    results_dir = out_dir / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    spec_data = spec.model_dump(mode="json")
    inputs = [*_model_files(spec), *(p for p in (spec.data.table, spec.test_table) if p),
              *(p for c in [*pool, *fixed] for p in c.images),
              *label_maps_read(spec, pool, fixed)]
    info = run_info(spec, spec.seed, inputs)
    _check_same_data(out_dir, _saved_manifest(out_dir), info)
    write_json(out_dir / "spec.json", spec_data)
    write_json(out_dir / run_name, info)
    summary = data_summary(pool, fixed, spec, splits)
    if any(c.leaked for c in checks):
        summary["leakage"] = {c.model: c.leaked for c in checks if c.leaked}
    summary["leakage_check"] = {"per_repetition": spec.pretrain is not None,
                                "networks": [c.as_dict() for c in checks]}
    write_json(out_dir / "data.json", summary)
    record = out_dir / run_name
    write_json(record, {**info, **outputs_record(record, OUTPUTS)})
    digest = spec_digest(spec_data)

    for n, task in enumerate(tasks, 1):
        done = results_dir / f"{task.key}.json"
        if done.is_file():
            continue
        train, test = splits[(task.size, task.repetition)]
        if pretrain_step is not None and spec.pretrain is not None:
            _pretrain_repetition(out_dir, task.repetition, pool, test, pretrain_step, spec)
        work = out_dir / "work" / task.key
        work.mkdir(parents=True, exist_ok=True)
        log.info(f"[{n}/{len(tasks)}] {task.framework}: {task.size} per class "
                 f"({len(train)} training, {len(test)} test cases), repetition "
                 f"{task.repetition}")
        start = time.perf_counter()
        error_path = results_dir / f"{task.key}.error.json"
        try:
            output = dict(train_and_score(task, list(train), list(test), work))
        except KeyboardInterrupt:  # the task's own "--resume" advice does not apply here
            raise Interrupted(f"interrupted in task {task.key}; rerun the same command to "
                              "continue (finished tasks are kept)") from None
        except Exception as e:  # one failed task must not stop the others
            said = str(e) if isinstance(e, SegfewError) else f"{type(e).__name__}: {e}"
            write_json(error_path, {**_task_fields(task, train, test, digest),
                                    "error": said, "traceback": traceback.format_exc(),
                                    "seconds": time.perf_counter() - start})
            log.error(f"failed: {task.key}: {said}")  # a problem of the data in its words
            continue
        if "metrics" not in output:
            raise TypeError("train_and_score must return a dict with a 'metrics' key")
        output.setdefault("seconds", time.perf_counter() - start)
        output["metrics"] = patient_metrics(output["metrics"], output.get("predictions"), test,
                                            bootstrap=spec.bootstrap, seed=spec.seed)
        write_json(done, {**output, **_task_fields(task, train, test, digest)})
        error_path.unlink(missing_ok=True)
    made = [p for p in (repetition_features(out_dir, r) for r in range(1, spec.repetitions + 1))
            if p.is_file()]
    if spec.pretrain is not None and made:  # could re-stored copies be looked for?
        summary["leakage_check"]["by_voxels"] = all(records_voxels(p) for p in made)
        write_json(out_dir / "data.json", summary)
        write_json(record, {**info, **outputs_record(record, OUTPUTS)})
    return out_dir


#: the files of a RUN_DIR that its run record lists (results/ and work/ are the tasks')
OUTPUTS = ("spec.json", "data.json")


def _check_replace(out_dir: Path, run_name: str, overwrite: bool) -> None:
    """Refuse a RUN_DIR file this run would replace that no segfew run there (any shard's
    record; an older one that lists no outputs wrote them all) recorded writing."""
    records = sorted(out_dir.glob("run*.json")) or [out_dir / run_name]
    for name in (run_name, *OUTPUTS):
        errors = []
        for record in records:
            try:
                check_replace(record, [name], overwrite, legacy=OUTPUTS)
            except DataError as e:
                errors.append(e)
        if len(errors) == len(records):
            raise errors[0]


def _pretrain_repetition(out_dir: Path, repetition: int, pool: Sequence[Case],
                         test: Sequence[Case], pretrain_step: PretrainStep,
                         spec: ExperimentSpec) -> Path:
    path = repetition_features(out_dir, repetition)
    if not path.is_file():
        held = {c.unit for c in test}
        side = [c for c in pool if c.unit not in held]
        log.info(f"pre-training the segmentation network of repetition {repetition} on its "
                 f"training side ({len(side)} cases)")
        path.parent.mkdir(parents=True, exist_ok=True)
        pretrain_step(repetition, side, path)
    check_leakage(path, test, spec.allow_leakage)  # a guard on the step itself
    return path


def _task_fields(task: Task, train: Sequence[Case], test: Sequence[Case], digest: str
                 ) -> dict[str, Any]:
    return {"key": task.key, "size": task.size, "repetition": task.repetition,
            "framework": task.framework, "n_train": len(train), "n_test": len(test),
            "train_ids": [c.id for c in train], "test_ids": [c.id for c in test],
            **test_fields(test), "spec_digest": digest}
