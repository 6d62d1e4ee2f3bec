"""The learning-curve report: Markdown with PNGs beside it, and one self-contained HTML file.

Built from one or more RUN_DIRs of :func:`segfew.experiment.protocol.run_experiment` (shards are
merged). It opens with one sentence naming the best framework at each training size with
its accuracy, a 95% bootstrap interval over the pooled test predictions that draws test
patients (:func:`segfew.experiment.pooling.pooled_accuracy`) and the numbers of test
patients and cases; the curves (``segfew.evaluation.figures``) follow the paper's Fig. 5
and 8. It speaks of patients when the data have a group column, else of cases. The
document is assembled once as a list of blocks and rendered to both formats, so the two
always say the same.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from segfew.errors import SegfewError
from segfew.evaluation.figures import (
    plot_class_f1,
    plot_confusion_matrix,
    plot_examples,
    plot_learning_curves,
)
from segfew.experiment.gallery import misclassified_sheets
from segfew.experiment.lead import lead_sentence as _summary
from segfew.experiment.lead import unfinished_words
from segfew.experiment.pooling import confusion, pooled_accuracy
from segfew.experiment.protocol import FRAMEWORK_NAMES, load_cases, load_spec
from segfew.experiment.render import Block, html_page, markdown
from segfew.experiment.results import (
    collect_results,
    summarise,
    summarise_selection,
    task_status,
)
from segfew.experiment.verdict import experiment_verdict
from segfew.files import check_replace, is_recorded, outputs_record, write_json, write_text
from segfew.inference.measure_names import cine_channel_words, label
from segfew.inference.predictor import Predictor
from segfew.metrics import below_chance

__all__ = ["check_report", "pooled_accuracy", "write_report"]

#: the files a report writes beside report.md (its misclassified cases' sheets go under
#: ``misclassified/``), and its run record: which of them segfew wrote
REPORT_FILES = ("report.md", "report.html", "accuracy.png", "kappa.png", "f1_per_class.png",
                "confusion_best.png", "examples.png")
MISCLASSIFIED = "misclassified"
REPORT_RECORD = "report.run.json"

_METRIC_WORDS = {"accuracy": "Accuracy", "balanced_accuracy": "Balanced accuracy",
                 "kappa": "Cohen's kappa", "macro_f1": "Macro F1"}


def framework_words(fw: str) -> str:
    return FRAMEWORK_NAMES.get(fw, fw)


def _ms(cell: dict[str, Any] | None) -> str:
    if not cell or cell.get("mean") is None:
        return "—"
    std = cell.get("std")
    return f"{cell['mean']:.3f}" + (f" ± {std:.3f}" if std is not None else "")


# ---------------------------------------------------------------- document


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _run_info(run_dirs: Sequence[Path]) -> dict[str, Any]:
    for d in run_dirs:
        for path in [d / "run.json", *sorted(d.glob("run-shard*.json"))]:
            info = _read_json(path)
            if info:
                return info
    return {}


def _below_chance(point: dict[str, Any]) -> bool:
    return below_chance(point.get("high"), point.get("chance_rate"))


def _ci(point: dict[str, Any]) -> str:
    if point["accuracy"] is None:
        return "—"
    text = f"{point['accuracy']:.3f}"
    text += f" [{point['low']:.3f}, {point['high']:.3f}]" if point["low"] is not None else ""
    return text + (" not distinguishable from chance"
                   if point.get("distinguishable_from_chance") is False
                   else " below chance" if _below_chance(point) else "")


def _units(point: dict[str, Any]) -> str:
    return "—" if point.get("units") is None else str(point["units"])


def _times(n: int) -> str:
    return {1: "once", 2: "twice"}.get(n, f"{n} times")


def _interval_words(points: dict[tuple[str, int], dict[str, Any]], unit: str) -> str:
    """What the bracketed intervals resample, for the caption above the results."""
    one = unit.removesuffix("s")
    if points and all(p.get("units") is not None for p in points.values()):
        return (f"intervals in brackets are 95% bootstrap intervals over the pooled test "
                f"predictions that resample {unit}: a {one} is drawn as one, with all its "
                "predictions from every repetition that tested it.")
    return ("intervals in brackets are 95% bootstrap intervals that resample the pooled test "
            "cases: this run folder records no patients of its test cases (an older segfew "
            "wrote it), so cases of one patient, and one case tested in several repetitions, "
            "count as independent.")


def _blocks(run_dirs: Sequence[Path], out: Path) -> list[Block]:
    spec = load_spec(run_dirs[0])
    results = collect_results(run_dirs)
    rows = summarise(results)
    status = task_status(run_dirs)
    data = _read_json(run_dirs[0] / "data.json") or {}
    classes: list[str] = list(data.get("classes") or [])
    for r in rows:
        classes += [c for c in r["f1"] if c not in classes]
    unit = "patients" if data.get("grouped") else "cases"
    xlabel = f"labelled training {unit} per class"
    points = {(r["framework"], r["size"]): pooled_accuracy(
        [t for t in results if t["framework"] == r["framework"] and int(t["size"]) == r["size"]],
        classes) for r in rows}

    b: list[Block] = [Block("h1", f"Learning curves: classification from few labelled {unit}")]
    alarm, verdict = experiment_verdict(data, unit)  # the first screen states it
    b.append(Block("banner" if alarm else "p", verdict))
    b.append(Block("p", _summary(points, spec.sizes, unit, spec.repetitions,
                                 unfinished_words(status))))
    test_words = ("a fixed test set" if spec.test == "fixed" else
                  f"the {unit} not used for training (a new random split each repetition)")
    b.append(Block("p", (
        f"Each method was trained with {', '.join(map(str, spec.sizes))} labelled {unit} "
        f"per class, {_times(spec.repetitions)} with a different random choice of {unit}, "
        f"and scored on {test_words}. Within a repetition every method saw exactly the same "
        f"{unit}. Points show the mean over repetitions; bars show one standard deviation; "
        + _interval_words(points, unit))))
    b.append(Block("p", (
        f"Tasks: {len(status.finished)} of {status.total} finished, {len(status.failed)} "
        f"failed, {len(status.missing)} not run yet.")))
    b.append(Block("list", items=[f"{fw}: {framework_words(fw)}" for fw in spec.frameworks]))

    if rows:
        chance = 1.0 / len(classes) if classes else None
        b.append(Block("h2", "Learning curves"))
        plots = [
            ("accuracy", "accuracy.png", f"Accuracy against the number of labelled {unit}",
             f"accuracy (share of test {unit} right)", chance),
            ("kappa", "kappa.png", f"Cohen's kappa against the number of labelled {unit}",
             "Cohen's kappa (0 = chance, 1 = perfect)", None),
        ]
        for metric, name, title, ylabel, ch in plots:
            path = plot_learning_curves(rows, metric, out / name, title=title, ylabel=ylabel,
                                        xlabel=xlabel, words=FRAMEWORK_NAMES, chance=ch)
            b.append(Block("image", title, path=path))
        if classes:
            path = plot_class_f1(rows, classes, out / "f1_per_class.png", xlabel=xlabel,
                                 words=FRAMEWORK_NAMES)
            b.append(Block("image", "F1 score of each class", path=path))

        b.append(Block("h2", "Results (mean ± standard deviation over repetitions)"))
        b.append(Block("table", header=["method", f"{unit} per class", "repetitions",
                                         *_METRIC_WORDS.values(), f"distinct test {unit}",
                                         "accuracy, pooled [95% CI]", "test cases, pooled"],
                        items=[[r["framework"], str(r["size"]), str(r["repetitions"]),
                                *(_ms(r[m]) for m in _METRIC_WORDS),
                                _units(points[(r["framework"], r["size"])]),
                                _ci(points[(r["framework"], r["size"])]),
                                str(points[(r["framework"], r["size"])]["n"])] for r in rows]))
        b.append(Block("h2", "F1 score per class"))
        b.append(Block("table", header=["method", f"{unit} per class", *classes],
                        items=[[r["framework"], str(r["size"]),
                                *(_ms(r["f1"].get(c)) for c in classes)] for r in rows]))
        b += _best_confusion(results, points, classes, out)
        sheets = misclassified_sheets(run_dirs, results, points, spec, out / "misclassified")
        b += [Block("h2", "Misclassified test cases of the best method")] if sheets else []
        b += [Block("image", caption, path=png) for caption, png in sheets]
        b += measurement_blocks(results, unit, spec.data.channels)
    else:
        b.append(Block("p", "No task has finished yet, so there is nothing to plot."))
    b += _example_blocks(spec, classes, out)

    b += _data_blocks(data)
    if status.failed:
        b.append(Block("h2", "Failed tasks"))
        b.append(Block("list", items=[f"{k}: {e}" for k, e in status.failed.items()]))

    b.append(Block("h2", "Settings"))
    b.append(Block("code", json.dumps(spec.model_dump(mode="json"), indent=2),
                    header=["the experiment's settings (JSON)"]))
    info = _run_info(run_dirs)
    versions = info.get("versions") or {}
    b.append(Block("h2", "Software"))
    if versions:
        b.append(Block("table", header=["software", "version"],
                        items=[[k, str(v)] for k, v in versions.items()]))
    extra = [f"{k}: {info[k]}" for k in ("platform", "created", "command") if info.get(k)]
    extra.append("run folders: " + ", ".join(str(d) for d in run_dirs))
    b.append(Block("list", items=extra))
    return b


def _best_confusion(results: Sequence[dict[str, Any]],
                    points: dict[tuple[str, int], dict[str, Any]], classes: Sequence[str],
                    out: Path) -> list[Block]:
    """The confusion matrix of the best framework at the largest size, summed over its
    repetitions."""
    largest = max(size for _, size in points)
    scored = [(fw, p) for (fw, size), p in points.items()
              if size == largest and p["accuracy"] is not None]
    if not scored or not classes:
        return []
    fw = max(scored, key=lambda item: item[1]["accuracy"])[0]
    total = confusion([r for r in results if r["framework"] == fw
                        and int(r["size"]) == largest], classes)
    title = f"{fw}, {largest} per class, all repetitions"
    path = plot_confusion_matrix(total, classes, out / "confusion_best.png", title=title)
    return [Block("h2", f"Confusion matrix of the best method ({fw}, {largest} per class)"),
            Block("image", f"Confusion matrix: {title}", path=path)]


def _example_blocks(spec: Any, classes: Sequence[str], out: Path) -> list[Block]:
    """One image per class with the segmentation network's labels over it; nothing when the
    experiment has no segmentation model or it cannot be read here."""
    model = spec.features or spec.threshold_features
    if model is None or not Path(model).is_file():
        return []
    try:
        predictor = Predictor.open(model, device="cpu")
        examples = []
        cases = load_cases(spec)
        for name in classes:
            case = next((c for c in cases if c.target == name), None)
            if case is None:
                continue
            one = case.per_channel()[0] if len(case.images) > 1 else case
            labels, _, reference = predictor.segment_case(one)
            examples.append((f"{name}: {one.id}", reference.array, labels))
        path = plot_examples(examples, out / "examples.png", len(predictor.meta.classes))
    except (SegfewError, OSError) as e:
        return [Block("p", f"(No example images: {e})")]
    return [Block("h2", "Example images"),
            Block("p", f"The first case of each class, segmented by {Path(model).name}."),
            Block("image", "One example image per class with its segmentation", path=path)]


def measurement_blocks(results: Sequence[dict[str, Any]], unit: str = "cases",
                       channels: Sequence[str] | None = None) -> list[Block]:
    """The measurements the measures classifiers leaned on, over every task that has them:
    mean importance (a task's importances sum to 1) and in how many tasks each was among
    the ten largest; which model the inner cross-validation chose how often; and its inner
    score against the nested estimate and the test (:func:`summarise_selection`).
    ``channels``: the experiment's, in order (two cine phases: ED then ES), which name each
    measurement's phase; without them, the channels in name order."""
    tasks = [r for r in results if r.get("top_measurements")]
    if not tasks:
        return []
    weight: dict[str, float] = {}
    count: dict[str, int] = {}
    for r in tasks:
        for item in r["top_measurements"]:
            name = str(item["measurement"])
            weight[name] = weight.get(name, 0.0) + float(item["importance"]) / len(tasks)
            count[name] = count.get(name, 0) + 1
    top = sorted(weight, key=lambda n: -weight[n])[:12]
    # each name ends in its channel and starts with its structure: ED/ES for cine phases,
    # a single image's channel "0" unsaid
    phases = list(channels or sorted({n.rpartition("_")[2] for n in weight}))  # ED first
    words = cine_channel_words(phases, list({n.partition("_")[0] for n in weight}))
    chosen: dict[str, int] = {}
    for r in tasks:
        chosen[str(r.get("measures_model"))] = chosen.get(str(r.get("measures_model")), 0) + 1
    b = [Block("h2", "Measurements behind the measures classifiers"),
         Block("table", header=["measurement", "mean importance", "tasks in its top ten"],
                items=[[label(n, words), f"{weight[n]:.3f}", f"{count[n]} of {len(tasks)}"]
                       for n in top]),
         Block("list", items=[f"{m}: chosen in {k} of {len(tasks)} tasks"
                               for m, k in sorted(chosen.items(), key=lambda kv: -kv[1])])]
    rows = summarise_selection(tasks)
    if rows:
        b.append(Block("p", "The inner cross-validation keeps the best of several noisy "
                             "scores, which is biased upward; the nested estimate repeats the "
                             "whole selection in outer folds of the training cases."))
        b.append(Block("table", header=[
            f"{unit} per class", "tasks", "chosen model's inner balanced accuracy",
            "nested estimate", "test balanced accuracy",
            "nested estimate not distinguishable from chance"], items=[
            [str(r["size"]), str(r["tasks"]),
             *("—" if r[k] is None else f"{r[k]:.3f}" for k in ("inner", "nested", "test")),
             f"{r['at_chance']} of {r['tasks']}"] for r in rows]))
    return b


def _data_blocks(data: dict[str, Any]) -> list[Block]:
    if not data:
        return []
    classes = list(data.get("classes") or [])
    cases = data.get("cases_per_class") or {}
    patients = data.get("patients_per_class") or {}
    header = ["class", "cases", "patients"]
    fixed = data.get("fixed_test_cases_per_class")
    by_rep = data.get("test_cases_per_class_by_repetition") or {}
    if fixed:
        header.append("test cases (fixed set)")
    elif len({json.dumps(t, sort_keys=True) for t in by_rep.values()}) == 1:
        by_rep = dict(list(by_rep.items())[:1])
        header.append("test cases (each repetition)")
    else:
        header += [f"test cases, repetition {r}" for r in by_rep]
    items = []
    for c in classes:
        row = [c, str(cases.get(c, 0)), str(patients.get(c, 0))]
        if fixed:
            row.append(str(fixed.get(c, 0)))
        else:
            row += [str(t.get(c, 0)) for t in by_rep.values()]
        items.append(row)
    where = ("a fixed test set" if fixed else "random test sets drawn per repetition")
    return [Block("h2", "Data"),
            Block("p", f"{data.get('cases', 0)} labelled cases in {len(classes)} classes "
                        f"available for training; {where}."),
            Block("table", header=header, items=items)]


def check_report(run_dirs: Sequence[Path], out: Path | None = None,
                 overwrite: bool = False) -> Path:
    """Refuse, before any work, a report folder holding a file the report would replace
    (:data:`REPORT_FILES`, anything under ``misclassified/``) that segfew did not write
    there, unless ``overwrite`` (:func:`segfew.files.check_replace`; an older segfew's
    ``<RUN_DIR>/report``, which has no record, is the experiment's). Returns the folder."""
    dirs = [Path(d) for d in run_dirs]
    if not dirs:
        raise ValueError("give at least one RUN_DIR")
    out = Path(out) if out is not None else dirs[0] / "report"
    record = out / REPORT_RECORD
    if not record.exists() and _older_report(dirs[0], out):
        return out
    sheets = sorted(p.relative_to(out).as_posix() for p in (out / MISCLASSIFIED).rglob("*")
                    if p.is_file() or p.is_symlink())
    check_replace(record, [*REPORT_FILES, *sheets, REPORT_RECORD], overwrite)
    return out


def _older_report(run_dir: Path, out: Path) -> bool:
    """Whether ``out`` is ``<run_dir>/report`` of an experiment segfew ran there."""
    return out.resolve() == (run_dir / "report").resolve() and (run_dir / "spec.json").is_file() \
        and any(is_recorded(p, p.name) for p in run_dir.glob("run*.json"))


def write_report(run_dirs: Sequence[Path], out: Path | None = None,
                 overwrite: bool = False) -> tuple[Path, Path]:
    """Write ``report.md`` (PNGs beside it) and a self-contained ``report.html`` into ``out``.

    ``run_dirs``: one RUN_DIR, or the RUN_DIRs of several shards of one experiment (their
    results are merged). ``out`` defaults to ``<first RUN_DIR>/report``. The HTML embeds
    its images and style, so it can be mailed or archived as one file. Returns
    ``(report.md, report.html)``. A file there that segfew did not write is refused first,
    unless ``overwrite`` (:func:`check_report`, a :class:`segfew.errors.DataError`); an
    earlier report's sheets of misclassified cases are removed; ``report.run.json`` lists
    what was written.
    """
    dirs = [Path(d) for d in run_dirs]
    out = check_report(dirs, out, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    record = out / REPORT_RECORD
    for old in sorted((out / MISCLASSIFIED).rglob("*.png")):  # an earlier report's: only
        if is_recorded(record, old.relative_to(out).as_posix()):  # those segfew wrote
            old.unlink(missing_ok=True)
    blocks = _blocks(dirs, out)
    md, page = out / "report.md", out / "report.html"
    write_text(md, markdown(blocks, out))
    write_text(page, html_page(blocks))
    images = [b.path.relative_to(out).as_posix() for b in blocks
              if b.kind == "image" and b.path is not None and b.path.is_relative_to(out)]
    write_json(record, {"task": "report", "run_dirs": [str(d) for d in dirs],
                        **outputs_record(record, [md.name, page.name, *images])})
    return md, page
