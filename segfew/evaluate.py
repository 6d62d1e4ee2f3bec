"""Score a saved model on labelled cases (SPEC §6): classification metrics or per-label Dice.

Classifier: every case is predicted with :class:`segfew.predict.Predictor`; the metrics of
:func:`segfew.metrics.classification_metrics` (accuracy, balanced accuracy, Cohen's kappa,
per-class precision / recall / specificity / F1, macro F1, confusion matrix, one-vs-rest
AUROC, bootstrap 95% intervals) are computed on the cases that could be read. Cases that
failed are reported (``n_failed`` and error rows), never silently dropped.

Segmentation model: per-label Dice on the source grid (the prediction is restored to the
image's own shape first, so the score is the one a user sees in a viewer).

Every output is written atomically into ``out_dir``: ``metrics.json``, ``predictions.csv``
(or ``per_case.csv``), ``confusion_matrix.png`` and ``run.json``; for a measures classifier
also ``measurements.csv`` (every case's named measurements, as the classifier saw them).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from segfew.atomic import check_output, write_json, write_rows_csv
from segfew.batch import (
    CASE_ERRORS,
    PredictionRow,
    case_path,
    one_line,
    progress_counter,
    write_predictions_csv,
)
from segfew.ensemble import flag_confidence
from segfew.errors import DataError, SpecError
from segfew.predict import Predictor

if TYPE_CHECKING:
    from pydantic import BaseModel

    from segfew.cases import LabelRules
    from segfew.data import Case

__all__ = [
    "evaluate_classifier",
    "evaluate_paths",
    "evaluate_segmentation",
    "score_predictions",
]

ProgressFn = Callable[[int, int], None]
"""``progress(done, total)``: called with 0 first, then as cases finish."""


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
            raise DataError(f"case {case.id!r} has class {target!r}, which the model does not "
                            f"know (its classes: {', '.join(classes)})", table or case.images[0])
        out.append(index[target])
    return out


def score_predictions(targets: Sequence[int], rows: Sequence[PredictionRow],
                      classes: Sequence[str], *, bootstrap: int = 1000, seed: int = 0,
                      source: str | Path | None = None) -> dict[str, Any]:
    """Metrics (:func:`segfew.metrics.classification_metrics`) of the rows that were predicted.

    ``targets`` are the cases' class indices (:func:`check_targets`), in the rows' order;
    rows with an error are left out, and if every row failed it is a DataError.
    """
    from segfew.metrics import classification_metrics

    ok = [i for i, row in enumerate(rows) if row.status == "ok"]
    if not ok:
        raise DataError(f"none of the {len(rows)} cases could be predicted; first error: "
                        f"{rows[0].error if rows else 'no cases'}", source)
    names = list(classes)
    y_true = np.array([targets[i] for i in ok])
    y_pred = np.array([names.index(rows[i].predicted) for i in ok])
    proba = np.array([[rows[i].probabilities[c] for c in names] for i in ok])
    return dict(classification_metrics(y_true, y_pred, proba, names,
                                       bootstrap=bootstrap, seed=seed))


def evaluate_classifier(model_path: str | Path, cases: Sequence[Case], out_dir: str | Path, *,
                        device: str = "auto", batch_size: int = 8, bootstrap: int = 1000,
                        seed: int = 0, progress: ProgressFn | None = None,
                        table: str | Path | None = None,
                        predictor: Predictor | None = None,
                        run_spec: BaseModel | dict[str, Any] | None = None,
                        explain: Path | None = None) -> dict[str, Any]:
    """Predict ``cases`` with the classifier at ``model_path`` and score them; returns metrics.

    ``metrics.json`` holds ``accuracy``, ``balanced_accuracy``, ``kappa``, ``macro_f1``,
    ``per_class``, ``confusion_matrix``, ``ci`` (bootstrap 95% intervals), plus ``classes``,
    ``n_cases``, ``n_failed`` and ``model``. ``table`` only names the source in error
    messages; ``predictor`` reuses an already loaded model. ``run_spec`` (e.g. the resolved
    :class:`segfew.spec.EvaluateSpec`) is the spec saved in ``run.json``; by default the
    arguments are. ``explain``: a folder for one evidence sheet per case, with its true
    class, and ``index.html`` (:mod:`segfew.explain`).
    """
    from segfew.metrics import plot_confusion_matrix
    from segfew.runinfo import write_run_info

    predictor = predictor or Predictor(model_path, device=device, batch_size=batch_size)
    meta = predictor.meta
    if meta.kind != "classifier":
        raise SpecError("this is a segmentation model; evaluate it with --labels", model_path)
    if not cases:
        raise DataError("no labelled cases to evaluate", table)
    classes = list(meta.classes)
    y_all = check_targets(cases, classes, table)
    inputs = [Path(model_path), *([Path(table)] if table else [])]
    out_dir = check_out_dir(out_dir, cases, inputs)
    out_dir.mkdir(parents=True, exist_ok=True)
    if explain is not None:
        from segfew.explain import check_explain, explain_batch
        check_explain(explain, [predictor], [*inputs, *(p for c in cases for p in c.images)])

    rows = predictor.classify(cases, progress=progress_counter(progress, len(cases)))
    flag_confidence(rows)
    if explain is not None:
        explain_batch(predictor, list(cases), rows, explain,
                      targets=[None if c.target is None else str(c.target) for c in cases])
    write_predictions_csv(out_dir / "predictions.csv", rows, classes,
                          targets=[str(c.target) for c in cases])
    predictor.write_measurements(out_dir / "measurements.csv", cases, rows)
    metrics = score_predictions(y_all, rows, classes, bootstrap=bootstrap, seed=seed,
                                source=table)
    n_ok = sum(r.status == "ok" for r in rows)
    metrics.update({
        "classes": classes,
        "n_cases": len(cases),
        "n_failed": len(cases) - n_ok,
        "failed": [{"id": rows[i].id, "error": rows[i].error}
                   for i in range(len(rows)) if rows[i].status != "ok"],
        "model": str(model_path),
    })
    metrics = _jsonable(metrics)
    write_json(out_dir / "metrics.json", metrics)
    plot_confusion_matrix(np.asarray(metrics["confusion_matrix"]), classes,
                          out_dir / "confusion_matrix.png",
                          title=f"{Path(model_path).name} — {n_ok} cases")
    spec = run_spec if run_spec is not None else {
        "task": "evaluate", "model": str(model_path), "table": str(table) if table else None,
        "bootstrap": bootstrap, "seed": seed, "device": str(predictor.device),
        "batch_size": batch_size, "cases": [c.id for c in cases]}
    write_run_info(out_dir, spec, seed, [*inputs, *(p for c in cases for p in c.images)])
    return metrics


def evaluate_segmentation(model_path: str | Path, cases: Sequence[Case], out_dir: str | Path,
                          *, device: str = "auto", batch_size: int = 8,
                          progress: ProgressFn | None = None,
                          predictor: Predictor | None = None,
                          run_spec: BaseModel | dict[str, Any] | None = None,
                          rules: LabelRules | None = None) -> dict[str, Any]:
    """Per-label Dice of the segmentation model at ``model_path`` on ``cases`` (with labels).

    Dice is computed on each image's source grid, after the prediction is restored to it.
    ``metrics.json``: ``{"dice": {label: mean over cases}, "mean_dice": mean over foreground
    labels, "per_case": [{"id", "dice": {label: value}, "status", "error"}], "n_cases",
    "n_failed", "model"}``. A label absent from both prediction and truth in a case has no
    Dice there (None) and is left out of its mean. Also writes ``per_case.csv``, and
    ``run.json`` with ``run_spec`` (default: the arguments) as its spec.
    """
    from segfew.cases import read_case
    from segfew.metrics import case_mean_dice, dice_per_label
    from segfew.runinfo import write_run_info

    predictor = predictor or Predictor(model_path, device=device, batch_size=batch_size)
    meta = predictor.meta
    if meta.kind != "segmentation":
        raise SpecError("this is a classifier; evaluate it with --table", model_path)
    if not cases:
        raise DataError("no labelled cases to evaluate")
    names = list(meta.classes)
    foreground = list(range(1, len(names)))
    out_dir = check_out_dir(out_dir, cases, [Path(model_path)])
    out_dir.mkdir(parents=True, exist_ok=True)
    advance = progress_counter(progress, len(cases))

    per_case: list[dict[str, Any]] = []
    for case in cases:
        entry: dict[str, Any] = {"id": case.id, "path": case_path(case), "dice": {},
                                 "status": "ok", "error": ""}
        try:
            if not case.labels:
                raise DataError(f"case {case.id!r} has no label map", case.images[0])
            images, truths = read_case(case, rules)  # the door: every check of the case
            pred, _, _ = predictor.segment_images(case, images)
            truth = truths[0].array
            dice = dice_per_label(pred, truth, foreground)
            entry["dice"] = {names[i]: (None if v is None else float(v)) for i, v in dice.items()}
        except CASE_ERRORS as e:
            entry.update(status="error", error=one_line(e))
        per_case.append(entry)
        advance(1)

    ok = [c for c in per_case if c["status"] == "ok"]
    if not ok:
        raise DataError(f"none of the {len(cases)} cases could be segmented; first error: "
                        f"{per_case[0]['error']}")
    mean, mean_dice = case_mean_dice([c["dice"] for c in ok], [names[i] for i in foreground])
    metrics: dict[str, Any] = {
        "dice": mean,
        "mean_dice": mean_dice,
        "per_case": per_case,
        "labels": names,
        "n_cases": len(cases),
        "n_failed": len(cases) - len(ok),
        "model": str(model_path),
    }
    write_json(out_dir / "metrics.json", metrics)
    header = ["id", "path", *(f"dice_{names[i]}" for i in foreground), "mean_dice", "status",
              "error"]
    lines = []
    for entry in per_case:
        values = [entry["dice"].get(names[i]) for i in foreground]
        known = [v for v in values if v is not None]
        cells = ["" if v is None else f"{v:.6f}" for v in values]
        lines.append([entry["id"], entry["path"], *cells,
                      f"{np.mean(known):.6f}" if known else "", entry["status"], entry["error"]])
    write_rows_csv(out_dir / "per_case.csv", header, lines)
    spec = run_spec if run_spec is not None else {
        "task": "evaluate", "model": str(model_path), "device": str(predictor.device),
        "batch_size": batch_size, "cases": [c.id for c in cases]}
    write_run_info(out_dir, spec, None,
                   [Path(model_path), *(p for c in cases for p in (*c.images, *c.labels))])
    return metrics


def evaluate_paths(model_path: str | Path, images: Path, out_dir: Path, *,
                   table: Path | None = None, labels: Path | None = None,
                   channels: Sequence[str] | None = None, id_column: str | None = None,
                   label_column: str | None = None, group_column: str | None = None,
                   label_map: Mapping[int, int] | None = None, device: str = "auto",
                   batch_size: int = 8, bootstrap: int = 1000,
                   seed: int = 0, progress: ProgressFn | None = None,
                   run_spec: BaseModel | dict[str, Any] | None = None,
                   explain: Path | None = None) -> tuple[str, dict[str, Any]]:
    """Find the cases (a table for a classifier, label maps for a segmentation model) and
    evaluate; returns ``(model kind, metrics)``. Channels default to the model's.
    ``run_spec`` (the command's resolved spec) is saved in ``run.json``; ``explain``: a
    classifier's evidence sheets (:func:`evaluate_classifier`)."""
    from segfew.data import find_classification_cases, find_segmentation_cases

    predictor = Predictor(model_path, device=device, batch_size=batch_size)
    meta = predictor.meta
    if channels is None and meta.channels:
        channels = list(meta.channels)
    if meta.kind == "classifier":  # a table, or class sub-folders; a missing image: its row
        cases = find_classification_cases(images, table, channels=channels,
                                          id_column=id_column, label_column=label_column,
                                          group_column=group_column, keep_missing=True)
        return meta.kind, evaluate_classifier(
            model_path, cases, out_dir, device=device, batch_size=batch_size,
            bootstrap=bootstrap, seed=seed, progress=progress, table=table, predictor=predictor,
            run_spec=run_spec, explain=explain)
    if labels is None:
        raise SpecError("a segmentation model is evaluated against label maps: give --labels DIR")
    cases = predictor.split_channels(find_segmentation_cases(images, labels, channels=channels))
    from segfew.cases import LabelRules

    return meta.kind, evaluate_segmentation(model_path, cases, out_dir, device=device,
                                            batch_size=batch_size, progress=progress,
                                            predictor=predictor, run_spec=run_spec,
                                            rules=LabelRules(remap=label_map))


def check_out_dir(out_dir: str | Path, cases: Sequence[Case], extra: Sequence[Path] = ()
                  ) -> Path:
    """``out_dir`` may not clobber, or sit inside the folders of, the files evaluated."""
    files = [p for c in cases for p in (*c.images, *c.labels)]
    return check_output(out_dir, [*files, *{p.parent for p in files}, *extra], "folder")


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
