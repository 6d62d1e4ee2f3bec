"""Score a saved model on labelled cases (SPEC §6): classification metrics or per-label Dice.

Classifier: every case is predicted with :class:`segfew.inference.predictor.Predictor`; the
metrics of
:func:`segfew.metrics.classification_metrics` (accuracy, balanced accuracy, Cohen's kappa,
per-class precision / recall / specificity / F1, macro F1, confusion matrix, one-vs-rest
AUROC, bootstrap 95% intervals) are computed on the cases that could be read. Cases that
failed are reported (``n_failed`` and error rows), never silently dropped.

Segmentation model: per-label Dice on the source grid (the prediction is restored to the
image's own shape first, so the score is the one a user sees in a viewer).

One door for both: exactly the cases of ``--table`` are scored (else every case found;
:mod:`segfew.evaluation.scope` says what they count as: patients, copies, skipped items), and
before any is, every model file's training manifest is compared with them
(:mod:`segfew.evaluation.leakage`): a model scored on its own training cases is refused, or with
``allow_leakage`` scored and marked everywhere it is written.

Every output is written atomically into ``out_dir``: ``metrics.json``, ``predictions.csv``
(or ``per_case.csv``), ``confusion_matrix.png`` and ``run.json``; for a measures classifier
also ``measurements.csv`` (every case's named measurements, as the classifier saw them).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from segfew.data import Case, find_classification_cases, table_ids
from segfew.data.read import LabelRules, read_case
from segfew.data.splits import spelt_alike
from segfew.errors import DataError, DataWarning, SpecError
from segfew.evaluation import truth
from segfew.evaluation.figures import plot_confusion_matrix
from segfew.evaluation.leakage import check_models, leakage_record
from segfew.evaluation.scope import (
    find_scored_segmentation,
    group_cases,
    missing_classes,
    select_table_cases,
    skipped_at_door,
)
from segfew.evaluation.truth import check_truth_values, truth_remap
from segfew.files import (
    RUN_RECORD,
    check_output,
    check_replace,
    output_lock,
    outputs_record,
    write_json,
    write_rows_csv,
)
from segfew.inference.batch import (
    CASE_ERRORS,
    PredictionRow,
    case_path,
    leaked_cell,
    one_line,
    progress_counter,
    write_predictions_csv,
)
from segfew.inference.ensemble import ModelPaths, classify_all, model_paths, open_models
from segfew.inference.explain import check_explain, explain_batch
from segfew.inference.masks import check_masks, mask_files
from segfew.inference.measure_names import check_channels
from segfew.inference.predictor import Predictor, refuse_unread_options
from segfew.metrics import (
    case_mean_dice,
    classification_metrics,
    dice_per_label,
    one_class_words,
)
from segfew.runinfo import write_run_info

if TYPE_CHECKING:
    from pydantic import BaseModel

    from segfew.typing import Progress

__all__ = [
    "evaluate_classifier",
    "evaluate_paths",
    "evaluate_segmentation",
    "score_predictions",
    "select_table_cases",
]



def check_targets(cases: Sequence[Case], classes: Sequence[str],
                  table: str | Path | None = None) -> list[int]:
    """Class index of every case's target; a missing or unknown class is a one-line DataError."""
    index = {name: i for i, name in enumerate(classes)}
    out = []
    for case in cases:
        if case.target is None:
            raise DataError(f"case {case.id!r} has no class label", table or case.images[0])
        target = str(case.target)
        if target not in index:
            alike = spelt_alike(target, classes)
            hint = f" (the model has {alike[0]!r}: differs only in case)" if alike else ""
            raise DataError(f"case {case.id!r} has class {target!r}, which the model does not "
                            f"know (its classes: {', '.join(classes)}){hint}",
                            table or case.images[0])
        out.append(index[target])
    return out


def score_predictions(targets: Sequence[int], rows: Sequence[PredictionRow],
                      classes: Sequence[str], *, bootstrap: int = 1000, seed: int = 0,
                      source: str | Path | None = None, groups: Sequence[str] | None = None
                      ) -> dict[str, Any]:
    """Metrics (:func:`segfew.metrics.classification_metrics`) of the rows that were predicted.

    ``targets`` are the cases' class indices (:func:`check_targets`), in the rows' order;
    rows with an error are left out, and if every row failed it is a DataError. ``groups``:
    each row's patient (``case.unit``), resampled by the bootstrap instead of the cases.
    """
    ok = [i for i, row in enumerate(rows) if row.status == "ok"]
    if not ok:
        raise DataError(f"none of the {len(rows)} cases could be predicted; first error: "
                        f"{rows[0].error if rows else 'no cases'}", source)
    names = list(classes)
    y_true = np.array([targets[i] for i in ok])
    y_pred = np.array([names.index(rows[i].predicted) for i in ok])
    proba = np.array([[rows[i].probabilities[c] for c in names] for i in ok])
    metrics = dict(classification_metrics(
        y_true, y_pred, proba, names, bootstrap=bootstrap, seed=seed,
        groups=None if groups is None else [groups[i] for i in ok]))
    if metrics["one_class"]:  # said, and kept in metrics.json (one_class)
        warnings.warn(DataWarning(one_class_words(metrics["one_class"]), source), stacklevel=2)
    return metrics


def _predictors(paths: Sequence[Path], given: Predictor | Sequence[Predictor] | None,
                device: str, batch_size: int) -> list[Predictor]:
    if given is None:
        return open_models(paths, device=device, batch_size=batch_size)[1]
    return [given] if isinstance(given, Predictor) else list(given)


def evaluate_classifier(model_path: ModelPaths, cases: Sequence[Case], out_dir: str | Path,
                        *, device: str = "auto", batch_size: int = 8, bootstrap: int = 1000,
                        seed: int = 0, progress: Progress | None = None,
                        table: str | Path | None = None,
                        predictor: Predictor | Sequence[Predictor] | None = None,
                        run_spec: BaseModel | dict[str, Any] | None = None,
                        allow_leakage: bool = False, explain: Path | None = None,
                        skipped: Sequence[dict[str, str]] = (), overwrite: bool = False,
                        columns: Mapping[str, str | None] | None = None) -> dict[str, Any]:
    """Predict ``cases`` with the classifier(s) at ``model_path`` and score them.

    Several model files predict as one ensemble (:mod:`segfew.inference.ensemble`). First the
    training manifest of every model file is compared with the cases' images
    (:func:`segfew.evaluation.leakage.check_models`): an overlap is a one-line DataError naming the
    cases, unless ``allow_leakage`` (then it is recorded). ``metrics.json`` holds
    ``accuracy``, ``balanced_accuracy``, ``kappa``, ``macro_f1``, ``per_class``,
    ``confusion_matrix``, ``ci`` (bootstrap 95% intervals), ``chance_rate`` and
    ``distinguishable_from_chance``, plus ``classes``, ``n_cases``, ``n_scored``,
    ``n_failed``, ``model`` and ``leakage`` (:func:`segfew.evaluation.leakage.leakage_record`),
    ``n_groups`` (the patients the bootstrap resamples: a table's group column, copies of one
    scan joined, ``copies``: :func:`segfew.evaluation.scope.group_cases`), ``missing_classes``
    (the model's classes no case holds) and ``skipped`` (what the listing skipped, as given),
    and for a ``measures`` classifier ``measurements``: the file of every case's measurements
    (``measurements.csv``); ``predictions.csv`` has a ``leaked`` column. ``table`` only names
    the source in error messages; ``predictor`` reuses already loaded models. ``run_spec``
    (e.g. the resolved :class:`segfew.spec.EvaluateSpec`) is the spec saved in ``run.json``;
    by default the arguments are. ``explain``: a folder for one evidence sheet per case, with
    its true class, and ``index.html`` (:mod:`segfew.inference.explain`). ``columns``: the
    table's columns read (:func:`truth.table_columns`), kept in metrics.json and run.json.
    """
    paths = model_paths(model_path)
    predictors = _predictors(paths, predictor, device, batch_size)
    meta = predictors[0].meta
    if meta.kind != "classifier":
        raise SpecError("this is a segmentation model; evaluate it with --labels", paths[0])
    if not cases:
        raise DataError("no labelled cases to evaluate", table)
    classes = list(meta.classes)
    y_all = check_targets(cases, classes, table)
    cases, copies = group_cases(cases, table)
    inputs = [*paths, *([Path(table)] if table else [])]
    out_dir = check_out_dir(out_dir, cases, inputs, overwrite)
    checks = check_models(paths, cases, allow_leakage)
    if explain is not None:
        check_explain(explain, predictors, [*inputs, *(p for c in cases for p in c.images)],
                      ids=[c.id for c in cases], overwrite=overwrite)

    rows = classify_all(predictors, cases, progress)
    leakage = leakage_record(checks, allow_leakage)
    metrics = score_predictions(y_all, rows, classes, bootstrap=bootstrap, seed=seed,
                                source=table, groups=[c.unit for c in cases])  # none: DataError
    missing = missing_classes([y for y, r in zip(y_all, rows, strict=True) if r.status == "ok"],
                              classes, table)
    _clear_outputs(out_dir)
    if explain is not None:
        explain_batch(predictors[0], list(cases), rows, explain,
                      targets=[None if c.target is None else str(c.target) for c in cases])
    write_predictions_csv(out_dir / "predictions.csv", rows, classes,
                          targets=[str(c.target) for c in cases], leaked=set(leakage["leaked"]),
                          checked=leakage["checked"])
    measured = predictors[0].write_measurements(out_dir / "measurements.csv", cases, rows)
    n_ok = sum(r.status == "ok" for r in rows)
    metrics.update({
        "classes": classes,
        "n_cases": len(cases),
        "n_scored": n_ok,
        "n_failed": len(cases) - n_ok,
        "failed": [{"id": rows[i].id, "error": rows[i].error}
                   for i in range(len(rows)) if rows[i].status != "ok"],
        "model": str(paths[0]) if len(paths) == 1 else [str(m) for m in paths],
        "leakage": leakage,
        "copies": copies,
        "missing_classes": missing,
        "skipped": list(skipped),
        "columns": truth.say_columns(columns, table),  # the table's columns scored, said
        **({"measurements": measured.name} if measured is not None else {}),
    })
    metrics = _jsonable(metrics)
    write_json(out_dir / "metrics.json", metrics)
    names = ", ".join(m.name for m in paths)
    plot_confusion_matrix(np.asarray(metrics["confusion_matrix"]), classes,
                          out_dir / "confusion_matrix.png", title=f"{names} — {n_ok} cases")
    spec = run_spec if run_spec is not None else {
        "task": "evaluate", "model": [str(m) for m in paths],
        "table": str(table) if table else None, "bootstrap": bootstrap, "seed": seed,
        "device": str(predictors[0].device), "batch_size": batch_size,
        "allow_leakage": allow_leakage, "cases": [c.id for c in cases]}
    maps = mask_files([p.measurer for p in predictors if p.masks is not None], cases)
    write_run_info(out_dir, spec, seed, [*inputs, *(p for c in cases for p in c.images), *maps],
                   extra={**_written(out_dir), "columns": metrics["columns"]})
    return metrics


def evaluate_segmentation(model_path: str | Path, cases: Sequence[Case], out_dir: str | Path,
                          *, device: str = "auto", batch_size: int = 8,
                          progress: Progress | None = None,
                          predictor: Predictor | None = None,
                          run_spec: BaseModel | dict[str, Any] | None = None,
                          rules: LabelRules | None = None, allow_leakage: bool = False,
                          skipped: Sequence[dict[str, str]] = (), overwrite: bool = False
                          ) -> dict[str, Any]:
    """Per-label Dice of the segmentation model at ``model_path`` on ``cases`` (with labels).

    The leakage check comes first, as in :func:`evaluate_classifier`. Dice is computed on
    each image's source grid, after the prediction is restored to it. ``metrics.json``:
    ``{"dice": {label: mean over cases}, "mean_dice": mean over foreground labels,
    "per_case": [{"id", "dice": {label: value}, "leaked", "status", "error"}], "n_cases",
    "n_scored", "n_failed", "model", "leakage", "skipped"}`` (``skipped``: what the listing
    skipped, as given). A label absent from both prediction and
    truth in a case has no Dice there (None) and is left out of its mean. A case with a
    ``problem`` (e.g. a table id without a labelled image) is an error row. Also writes
    ``per_case.csv`` (with a ``leaked`` column), and ``run.json`` with ``run_spec``
    (default: the arguments) as its spec.
    """
    predictor = predictor or Predictor.open(model_path, device=device, batch_size=batch_size)
    meta = predictor.meta
    if meta.kind != "segmentation":
        raise SpecError("this is a classifier; evaluate it with --table", model_path)
    if not cases:
        raise DataError("no labelled cases to evaluate")
    names = list(meta.classes)
    foreground = list(range(1, len(names)))
    out_dir = check_out_dir(out_dir, cases, [Path(model_path)], overwrite)
    leakage = leakage_record(check_models([Path(model_path)], cases, allow_leakage),
                             allow_leakage)
    out_dir.mkdir(parents=True, exist_ok=True)
    advance = progress_counter(progress, len(cases))

    per_case: list[dict[str, Any]] = []
    for case in cases:
        entry: dict[str, Any] = {"id": case.id, "path": case_path(case), "dice": {},
                                 "leaked": case.id in leakage["leaked"], "status": "ok",
                                 "error": ""}
        try:
            if case.problem is not None:
                raise DataError(case.problem)
            if not case.labels:
                raise DataError(f"case {case.id!r} has no label map", case.images[0])
            images, truths = read_case(case, rules)  # the door: every check of the case
            pred, _, _ = predictor.segment_images(case, images)
            truth = truths[0].array
            check_truth_values(truth, names, case.labels[0])
            dice = dice_per_label(pred, truth, foreground)
            entry["dice"] = {names[i]: (None if v is None else float(v)) for i, v in dice.items()}
        except CASE_ERRORS as e:
            entry.update(status="error", error=one_line(e))
        per_case.append(entry)
        advance(1)

    ok = [c for c in per_case if c["status"] == "ok"]
    if not ok:
        raise DataError(f"none of the {len(cases)} cases could be scored; first error: "
                        f"{per_case[0]['error']}")
    mean, mean_dice = case_mean_dice([c["dice"] for c in ok], [names[i] for i in foreground])
    _clear_outputs(out_dir)
    metrics: dict[str, Any] = {
        "dice": mean,
        "mean_dice": mean_dice,
        # cases in each label's mean: not those where truth and prediction both lack it
        "dice_cases": {names[i]: sum(c["dice"].get(names[i]) is not None for c in ok)
                       for i in foreground},
        "per_case": per_case,
        "labels": names,
        "n_cases": len(cases),
        "n_scored": len(ok),
        "n_failed": len(cases) - len(ok),
        "model": str(model_path),
        "leakage": leakage,
        "skipped": list(skipped),
    }
    write_json(out_dir / "metrics.json", metrics)
    header = ["id", "path", *(f"dice_{names[i]}" for i in foreground), "mean_dice", "leaked",
              "status", "error"]
    lines = []
    for entry in per_case:
        values = [entry["dice"].get(names[i]) for i in foreground]
        known = [v for v in values if v is not None]
        cells = ["" if v is None else f"{v:.6f}" for v in values]
        lines.append([entry["id"], entry["path"], *cells,
                      f"{np.mean(known):.6f}" if known else "",
                      leaked_cell(entry["leaked"], leakage["checked"]), entry["status"],
                      entry["error"]])
    write_rows_csv(out_dir / "per_case.csv", header, lines)
    spec = run_spec if run_spec is not None else {
        "task": "evaluate", "model": str(model_path), "device": str(predictor.device),
        "batch_size": batch_size, "allow_leakage": allow_leakage,
        "cases": [c.id for c in cases]}
    write_run_info(out_dir, spec, None,
                   [Path(model_path), *(p for c in cases for p in (*c.images, *c.labels))],
                   extra=_written(out_dir))
    return metrics


def evaluate_paths(model_path: ModelPaths, images: Path, out_dir: Path, *,
                   table: Path | None = None, labels: Path | None = None,
                   channels: Sequence[str] | None = None, id_column: str | None = None,
                   label_column: str | None = None, group_column: str | None = None,
                   label_map: Mapping[int, int] | str | None = None, device: str = "auto",
                   batch_size: int = 8, bootstrap: int | None = None,
                   seed: int = 0, progress: Progress | None = None,
                   run_spec: BaseModel | dict[str, Any] | None = None,
                   allow_leakage: bool = False, masks: Path | None = None,
                   explain: Path | None = None, overwrite: bool = False
                   ) -> tuple[str, dict[str, Any]]:
    """Find the cases and evaluate; returns ``(model kind, metrics)``.

    The cases are those of ``table`` when given (for a segmentation model too: its ids
    select the labelled images, :func:`select_table_cases`), else every case of
    ``images`` (class sub-folders for a classifier, images with label maps in ``labels``
    for a segmentation model). Channels default to the model's. ``run_spec`` (the
    command's resolved spec) is saved in ``run.json``; an option the model's kind never reads
    (:data:`segfew.inference.predictor.ONE_KIND_OPTIONS`: ``labels`` or ``label_map`` with a
    classifier; ``explain``, ``bootstrap`` — None: 1000 for a classifier — or
    ``label_column`` with a segmentation model) raises :class:`SpecError`, not silently
    ignored; a segmentation model's ``group_column`` gives the table's patients to its
    leakage check. ``masks``: the label maps of a classifier trained with ``--masks``;
    ``explain``: a classifier's evidence sheets (:func:`evaluate_classifier`).
    """
    with output_lock(out_dir):  # a second run into out_dir is refused, not mixed in
        paths, predictors = open_models(model_path, device=device, batch_size=batch_size)
        for p in predictors:  # a classifier of another tool's label maps reads them
            p.masks = check_masks(p.meta.feature_source, masks, p.model_path)
            _ = p.measurer  # its label maps' source checked once, before any case
        meta = predictors[0].meta
        skipped: list[dict[str, str]] = []  # what the listing skipped (sub-folders, files)
        if meta.architecture.name == "measurement_classifier":
            check_channels(meta.channels, channels, paths[0])
        if channels is None and meta.channels:
            channels = list(meta.channels)
        refuse_unread_options(meta.kind, paths[0], labels=labels, label_map=label_map,
                              explain=explain, bootstrap=bootstrap, label_column=label_column)
        if meta.kind == "classifier":  # a table or class sub-folders; a missing image: a row
            columns = truth.table_columns(table, [p.meta.spec for p in predictors], id_column,
                                          label_column, group_column) if table else {}
            with skipped_at_door(skipped):
                cases = find_classification_cases(
                    images, table, channels, id_column, columns.get("label"),
                    columns.get("group"), keep_missing=True)
            return meta.kind, evaluate_classifier(
                paths, cases, out_dir, device=device, batch_size=batch_size,
                bootstrap=1000 if bootstrap is None else bootstrap, seed=seed,
                progress=progress, table=table,
                predictor=predictors, run_spec=run_spec, allow_leakage=allow_leakage,
                explain=explain, skipped=skipped, overwrite=overwrite, columns=columns)
        if labels is None:
            raise SpecError("a segmentation model is evaluated against label maps: give "
                            "--labels DIR")
        predictor = predictors[0]
        cases = predictor.split_channels(
            find_scored_segmentation(images, labels, channels, skipped))
        if table is not None:
            ids = table_ids(table, id_column, group_column)  # a scan in two rows: refused
            cases = truth.one_row_per_scan(select_table_cases(cases, ids, table), ids, table)
        label_map = truth_remap(label_map, meta.spec, cases, len(meta.classes), paths[0])
        return meta.kind, evaluate_segmentation(paths[0], cases, out_dir, device=device,
                                                batch_size=batch_size, progress=progress,
                                                predictor=predictor, run_spec=run_spec,
                                                rules=LabelRules(remap=label_map),
                                                allow_leakage=allow_leakage, skipped=skipped,
                                                overwrite=overwrite)


def check_out_dir(out_dir: str | Path, cases: Sequence[Case], extra: Sequence[Path] = (),
                  overwrite: bool = False) -> Path:
    """``out_dir`` may not clobber, or sit inside the folders of, the files evaluated, nor
    be a model's run folder (:func:`segfew.files.check_output`), nor hold a file of an
    evaluation's names that segfew did not write (unless ``overwrite``:
    :func:`segfew.files.check_replace`)."""
    files = [p for c in cases for p in (*c.images, *c.labels)]
    out = check_output(out_dir, [*files, *{p.parent for p in files}, *extra], "folder")
    check_replace(out / RUN_RECORD, [*OUTPUTS, RUN_RECORD], overwrite)
    return out


def _written(out_dir: Path) -> dict[str, list[str]]:
    """The run record's list of the outputs this evaluation wrote."""
    return outputs_record(out_dir / RUN_RECORD, [n for n in OUTPUTS if (out_dir / n).is_file()])


#: what an evaluation writes; an earlier one's files are removed before a new one writes,
#: so a folder never shows a per-case table of one model beside the metrics of another
OUTPUTS = ("metrics.json", "per_case.csv", "predictions.csv", "measurements.csv",
           "confusion_matrix.png")


def _clear_outputs(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in OUTPUTS:
        (out_dir / name).unlink(missing_ok=True)


def _jsonable(value: Any) -> Any:
    """numpy scalars and arrays → plain Python, recursively, so JSON is exact and portable."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
