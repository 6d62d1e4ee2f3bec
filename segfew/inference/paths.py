"""``predict_paths``: every case under some files and folders through one model (or an
ensemble of classifiers), one row per case, written as the batch goes; a bad case is an error
row and never stops the batch.

Example::

    from segfew.inference.paths import predict_paths
    out, n_failed, n_cases = predict_paths("clf.pt", [Path("scans/")], Path("predictions.csv"))
"""

from __future__ import annotations

import contextlib
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segfew.data import collect_cases
from segfew.data.label_names import CENTRES_FILE, LABEL_NAMES_FILE
from segfew.data.read import warn_placeholder_spacing
from segfew.errors import DataError, DataWarning
from segfew.files import (
    RUN_RECORD,
    check_output,
    check_replace,
    claim_outputs,
    is_recorded,
    output_lock,
    outputs_record,
    write_json,
    write_rows_csv,
)
from segfew.inference.batch import (
    CASE_ERRORS,
    case_path,
    one_line,
    progress_counter,
    write_predictions_csv,
)
from segfew.inference.ensemble import classify_all, default_min_confidence, open_models
from segfew.inference.explain import check_explain, explain_batch
from segfew.inference.fit_measures import estimate_caveat
from segfew.inference.masks import check_masks, mask_files
from segfew.inference.measure_names import check_channels
from segfew.inference.predictor import refuse_unread_options
from segfew.inference.run import read_ahead
from segfew.inference.training_record import match_training
from segfew.labelling.kmeans import PREVIEW_FILE
from segfew.metrics import one_class_share
from segfew.runinfo import run_info

if TYPE_CHECKING:
    from pydantic import BaseModel

    from segfew.data import Case
    from segfew.inference.predictor import Predictor
    from segfew.typing import Progress

__all__ = ["SEGMENTATION_TABLE", "one_class_batch", "predict_paths", "trained_on"]

#: a segmentation model's table of the label maps it wrote, in its output folder
SEGMENTATION_TABLE = "predictions.csv"
#: fewer predictions than this say nothing about a classifier answering one class
ONE_CLASS_MIN_CASES = 5


def predict_paths(model_path: str | Path | Sequence[str | Path], inputs: Sequence[Path],
                  out: str | Path, *, recursive: bool = False,
                  channels: Sequence[str] | None = None, device: str = "auto",
                  batch_size: int = 8, precision: str = "auto", workers: int | None = None,
                  progress: Progress | None = None,
                  probabilities: bool = False, min_confidence: float | None = None,
                  tta: bool = False,
                  run_spec: BaseModel | dict[str, Any] | None = None,
                  masks: Path | None = None, explain: str | Path | None = None,
                  overwrite: bool = False) -> tuple[Path, int, int]:
    """Predict every case under ``inputs`` and write the results; returns ``(out, n_failed,
    n_cases)``, the cases (rows) written, whatever the number of models.

    Classifier: ``out`` is a CSV with one row per case (``id, path, predicted, p_<class>...,
    confidence, low_confidence, status, error``; below ``min_confidence`` a case is flagged);
    several classifier files (same classes) predict as one ensemble
    (:mod:`segfew.inference.ensemble`).
    A measures classifier also writes ``<out stem>.measurements.csv`` (every case's named
    measurements; none when every case failed). Segmentation model: ``out`` is a folder of
    ``<id>_seg.nii.gz`` label maps in the source geometry (test-time augmented with ``tta``;
    and ``<id>_prob.nii.gz`` with ``probabilities``) plus ``predictions.csv``
    (``id, path, output, status, error``) and ``label_names.json`` (the model's label names,
    which ``pretrain --labels`` reads); an earlier labelling's ``centres.json`` and preview
    there are removed (refused unless ``overwrite`` when segfew did not write them).
    Cases are built with the model's channel suffixes unless ``channels`` overrides them.
    ``progress(done, total, what)`` is called as cases finish. ``explain`` (one classifier file): a
    folder for one evidence sheet per case and ``index.html`` (:mod:`segfew.inference.explain`).

    Beside the outputs goes a run record (:func:`segfew.runinfo.write_run_info`) holding
    ``run_spec`` (e.g. the resolved :class:`segfew.spec.PredictSpec`; default: these
    arguments), versions, a manifest of the inputs, the files written (``outputs``) and
    which cases trained the model (``trained_on``, :func:`trained_on`: a DataWarning names
    them): ``<out stem>.run.json`` next to a classifier's CSV, ``run.json`` in a segmentation
    model's folder.

    Before any work, an output file that exists and that no earlier segfew run recorded
    writing there is a :class:`DataError` naming it, unless ``overwrite``
    (:func:`segfew.files.check_replace`); so is an ``out`` that is one of the inputs.
    """
    out = Path(out)
    with output_lock(out):  # a second run into the same --out is refused, not mixed in
        models, predictors = open_models(model_path, device=device, batch_size=batch_size,
                                         precision=precision, workers=workers, tta=tta)
        predictor = predictors[0]
        refuse_unread_options(predictor.meta.kind, predictor.model_path, tta=tta,
                              probabilities=probabilities, min_confidence=min_confidence)
        if min_confidence is None:
            min_confidence = default_min_confidence(len(predictor.meta.classes))
        caveats: dict[str, str] = {}  # said before any answer, and recorded beside them
        for p in predictors:  # a classifier of another tool's label maps reads them
            p.masks = check_masks(p.meta.feature_source, masks, p.model_path)
            _ = p.measurer  # its label maps' source checked once, before any case
            caveat = estimate_caveat(p.meta.metrics or {})
            if caveat is not None:
                caveats[str(p.model_path)] = caveat
                warnings.warn(DataWarning(caveat, p.model_path), stacklevel=2)
        spec = run_spec if run_spec is not None else {
            "task": "predict", "model": [str(m) for m in models],
            "inputs": [str(p) for p in inputs],
            "recursive": recursive, "channels": list(channels) if channels else None,
            "device": str(predictor.device), "precision": precision, "batch_size": batch_size,
            "workers": workers, "probabilities": probabilities, "min_confidence": min_confidence,
            "tta": tta, "explain": str(explain) if explain else None}
        meta = predictor.meta
        measured = meta.architecture.name == "measurement_classifier"
        if measured:
            check_channels(meta.channels, channels, predictor.model_path)
        if channels is None and meta.channels:
            channels = list(meta.channels)
        cases = collect_cases([Path(p) for p in inputs], recursive=recursive, channels=channels)
        if not cases:
            raise DataError("no images found in " + ", ".join(str(p) for p in inputs))
        warn_placeholder_spacing(cases, measured)  # a line: sizes in voxels, not mm
        read = [*models, *inputs, *([masks] if masks is not None else []),
                *(p for c in cases for p in c.images)]
        if explain is not None:
            check_explain(explain, predictors, read, [c.id for c in cases], overwrite)

        if meta.kind == "classifier":
            if out.suffix.lower() not in (".csv", ".tsv"):
                raise DataError("a classifier writes a table: give --out a name ending in .csv or "
                                ".tsv", out)
            check_output(out, read, "file")
            record = out.with_name(out.stem + "." + RUN_RECORD)
            sheet = out.with_name(out.stem + ".measurements.csv")
            check_replace(record, [out.name, *([sheet.name] if measured else []), record.name],
                          overwrite)
            rows = classify_all(predictors, cases, progress, min_confidence)
            write_predictions_csv(out, rows, meta.classes)
            if explain is not None:
                explain_batch(predictor, cases, rows, Path(explain), min_confidence)
            measurements = predictor.write_measurements(sheet, cases, rows)
            if measured and measurements is None:  # every case failed: an earlier run's sheet
                sheet.unlink(missing_ok=True)  # would pass for this one's (segfew's: checked)
            flag = one_class_batch([r.predicted for r in rows if r.status == "ok"], meta.classes)
            if flag is not None:
                warnings.warn(DataWarning(
                    f"the classifier predicts {flag['class']!r} for {flag['share']:.0%} of the "
                    f"{flag['cases']} cases: unless nearly all of them are {flag['class']!r}, it "
                    "has not learnt the classes (score it on labelled cases: segfew evaluate)",
                    out), stacklevel=2)
            tables = [out.name, *([measurements.name] if measurements is not None else [])]
            _write_record(record, spec, models, predictors, cases, tables,
                          {"one_class": flag, "min_confidence": min_confidence,
                           "caveats": caveats})
            return out, sum(r.status != "ok" for r in rows), len(rows)

        if out.suffix.lower() in (".csv", ".tsv"):
            raise DataError("a segmentation model writes label maps into a folder; give --out DIR",
                            out)
        check_output(out, read, "folder")
        cases = predictor.split_channels(cases)
        record = out / RUN_RECORD
        planned = [f"{c.id}_{kind}.nii.gz" for c in cases
                   for kind in ("seg", *(["prob"] if probabilities else []))]
        # the folder's label names become the model's; k-means centres and the preview of an
        # earlier labelling would no longer describe its maps: removed if segfew's, else refused
        centres = [n for n in (CENTRES_FILE, PREVIEW_FILE.as_posix()) if (out / n).exists()]
        check_replace(record, [*planned, SEGMENTATION_TABLE, LABEL_NAMES_FILE, *centres,
                               RUN_RECORD], overwrite)
        out.mkdir(parents=True, exist_ok=True)
        claim_outputs(record, [*planned, SEGMENTATION_TABLE, LABEL_NAMES_FILE])  # a run stopped
        # part-way may run again
        report = progress_counter(progress, len(cases))
        lines = []
        written: list[str] = []
        failed = 0
        for i, loaded, error in read_ahead(cases, predictor.read_images, predictor.workers,
                                            one_line, CASE_ERRORS):
            case = cases[i]
            try:
                if error:
                    raise DataError(error)
                maps = predictor.segment(case, out, probabilities=probabilities, read=loaded)
                lines.append([case.id, case_path(case), str(maps[0]), "ok", ""])
                written += [Path(m).name for m in maps]
            except CASE_ERRORS as e:
                failed += 1
                lines.append([case.id, case_path(case), "", "error", error or one_line(e)])
            report(1)
        write_rows_csv(out / SEGMENTATION_TABLE, ["id", "path", "output", "status", "error"], lines)
        written.append(SEGMENTATION_TABLE)
        if meta.classes:  # what `pretrain --labels` reads: the names of labels 0, 1, ...
            write_json(out / LABEL_NAMES_FILE, {"method": "predict", "model": str(models[0]),
                                                "label_names": list(meta.classes)})
            written.append(LABEL_NAMES_FILE)
        elif is_recorded(record, LABEL_NAMES_FILE):
            (out / LABEL_NAMES_FILE).unlink(missing_ok=True)
        for name in centres:
            if is_recorded(record, name):
                (out / name).unlink(missing_ok=True)
                if (out / name).parent != out:
                    with contextlib.suppress(OSError):  # preview/, if left empty
                        (out / name).parent.rmdir()
        _write_record(record, spec, models, predictors, cases, written)
        return out, failed, len(cases)


def _write_record(record: Path, spec: BaseModel | dict[str, Any], models: Sequence[Path],
                  predictors: Sequence[Predictor], cases: Sequence[Case], written: list[str],
                  extra: dict[str, Any] | None = None) -> None:
    """Write the run record: the run, the files written, and which cases trained each model
    (:func:`trained_on`, with the digests its manifest holds: no scan is hashed twice); a
    DataWarning per model that saw some names it and them."""
    maps = mask_files([p.measurer for p in predictors if p.masks is not None], cases)
    info = run_info(spec, None, [*models, *(p for c in cases for p in c.images), *maps],
                    runtime=predictors[0].runtime(),
                    extra={**(extra or {}), **outputs_record(record, written)})
    trained = trained_on(models, cases, info["data"])
    info["trained_on"] = {k: trained[k] for k in ("checked", "cases", "network_only")}
    info["trained_on_by_model"] = trained["models"]
    for model, each in zip(models, trained["models"], strict=True):
        if each["cases"]:
            ids = each["cases"]
            shown = ", ".join(ids[:8]) + (f" and {len(ids) - 8} more" if len(ids) > 8 else "")
            who = ("the segmentation network inside the classifier" if each["network_only"]
                   else "the model")
            again = each["restored"]
            note = "" if not again else ("" if again == ids else f"; {', '.join(again[:8])}"
                                         ) + ": the same voxels, re-stored in other files"
            warnings.warn(DataWarning(
                f"{len(ids)} of these {len(cases)} scans trained {who} ({shown}{note}): their "
                "predictions are no test of it", model), stacklevel=3)
    write_json(record, info)


def trained_on(models: Sequence[Path], cases: Sequence[Case], data: Sequence[dict[str, Any]]
               ) -> dict[str, Any]:
    """Which ``cases`` trained the models: ``{"checked", "cases", "network_only", "models"}``,
    counted as ``evaluate`` counts them (:func:`segfew.inference.training_record.match_training`:
    the same file bytes, or the same voxels re-stored in another file).

    ``data`` is the run's manifest (:func:`segfew.runinfo.manifest`: each image's
    ``sha256``, not hashed again). ``checked`` is False when a model records nothing;
    ``cases`` every case that trained one of them; ``network_only``: each of those trained
    only the segmentation network inside a classifier. ``models``: per model file, in
    order, ``{"model", "checked", "cases", "restored", "network_only"}`` (``restored``: the
    cases found by their voxels only). A case is counted by its scan, not its patient."""
    hashed = {str(row["path"]): str(row["sha256"]) for row in data if "sha256" in row}
    each: list[dict[str, Any]] = []
    for model in models:
        m = match_training(Path(model), cases, hashed)
        scans = [i for i in m.leaked if i not in m.by_patient]
        each.append({"model": str(model), "checked": m.checked, "cases": scans,
                     "restored": m.restored,
                     "network_only": bool(scans) and set(scans) <= set(m.network_only)})
    ids = sorted({i for e in each for i in e["cases"]})
    return {"checked": all(e["checked"] for e in each), "cases": ids,
            "network_only": bool(ids) and all(e["network_only"] for e in each if e["cases"]),
            "models": each}


def one_class_batch(predicted: Sequence[str], classes: Sequence[str]
                    ) -> dict[str, Any] | None:
    """``{"class", "share", "cases"}`` when one class is predicted for at least
    :data:`segfew.metrics.ONE_CLASS_SHARE` of :data:`ONE_CLASS_MIN_CASES` or more cases
    (:func:`segfew.metrics.one_class_share`), else None. With no truth to compare, a batch
    of one class is as likely as a classifier that learnt one class; the warning says both
    (``evaluate`` tells them apart)."""
    if len(predicted) < ONE_CLASS_MIN_CASES or len(classes) < 2:
        return None
    top, count = Counter(predicted).most_common(1)[0]
    return one_class_share(list(classes).index(top), count / len(predicted), len(predicted),
                           classes)
