"""``segfew evaluate``: score a model file on labelled cases."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from segfew.cli.common import (
    GROUP_COLUMN_HELP,
    ID_COLUMN_HELP,
    LABEL_COLUMN_HELP,
    ChannelsOpt,
    LabelMapOpt,
    ProgressOpt,
    SpecOpt,
    ThreadsOpt,
    console,
    handle_errors,
    make_console,
    parse_label_map,
    resolve,
    setting,
    split_list,
)
from segfew.cli.render import ProgressView
from segfew.spec import EvaluateSpec

E = EvaluateSpec


@handle_errors
def evaluate(
    model: Annotated[list[Path] | None, setting(
        E, "model", "Model file (segfew train-classifier or pretrain); repeat for an ensemble "
        "of classifiers with the same classes.", "--model", "-m", metavar="<path>")] = None,
    images: Annotated[Path | None, setting(
        E, "images", "Folder of images (or of class sub-folders).")] = None,
    out: Annotated[Path | None, setting(
        E, "out", "Folder for metrics.json, predictions.csv, plots.")] = None,
    table: Annotated[Path | None, setting(
        E, "table", "The cases to score: CSV/TSV of id (or path) and, for a classifier, true "
        "class (default: every case of --images; a classifier's class sub-folders).")] = None,
    labels: Annotated[Path | None, setting(
        E, "labels", "Segmentation model: folder of true label maps.")] = None,
    masks: Annotated[Path | None, setting(
        E, "masks", "Classifier trained with --masks: the folder of these cases' label maps.")
    ] = None,
    channels: ChannelsOpt = None,
    label_map: LabelMapOpt = None,
    id_column: Annotated[str | None, setting(E, "id_column", ID_COLUMN_HELP)] = None,
    label_column: Annotated[str | None, setting(
        E, "label_column", LABEL_COLUMN_HELP)] = None,
    group_column: Annotated[str | None, setting(
        E, "group_column", GROUP_COLUMN_HELP)] = None,
    bootstrap: Annotated[int | None, setting(
        E, "bootstrap", "Bootstrap resamples for the 95% intervals (0: none).", min=0)] = None,
    seed: Annotated[int | None, setting(E, "seed", "Seed of the bootstrap.")] = None,
    device: Annotated[str | None, setting(E, "device", "auto, cpu, cuda, cuda:1 …")] = None,
    threads: ThreadsOpt = None,
    batch_size: Annotated[int | None, setting(
        E, "batch_size", "Images per forward pass.", min=1)] = None,
    allow_leakage: Annotated[bool, typer.Option(
        "--allow-leakage", help="Cases a model was trained on: score them with a warning "
        "(recorded in every output), not refuse.")] = False,
    explain: Annotated[Path | None, setting(
        E, "explain", "Classifier: a folder for one evidence sheet per case (segmentation, "
        "where the classifier looked or which measurements drove it, probabilities) and "
        "index.html, lowest confidence first.", metavar="<dir>")] = None,
    overwrite: Annotated[bool, typer.Option(
        help="Replace files at --out that segfew did not write.", show_default="off")] = False,
    spec: SpecOpt = None,
    progress: ProgressOpt = True,
) -> None:
    """Accuracy, kappa, per-class F1 and more with 95% intervals — or per-label Dice.

    Example: segfew evaluate --model clf.pt --table test.csv --images images --out eval

    Example: segfew evaluate --model seg.pt --images images --labels masks --out eval

    Exactly the cases of --table are scored (for a segmentation model too). A model file's
    training manifest is compared with them first: a case it was trained on is refused.
    Writes metrics.json, predictions.csv (or per_case.csv), measurements.csv (a measures
    classifier), confusion_matrix.png, run.json.
    The exit code is 1 when any case failed, after every row is written.
    """
    from segfew.evaluation.evaluate import evaluate_paths
    from segfew.runtime import set_threads

    overrides = {
        "model": model,
        "images": images,
        "out": out,
        "table": table,
        "labels": labels,
        "channels": split_list(channels),
        "label_map": parse_label_map(label_map),
        "id_column": id_column,
        "label_column": label_column,
        "group_column": group_column,
        "device": device,
        "threads": threads,
        "batch_size": batch_size,
        "bootstrap": bootstrap,
        "seed": seed,
        "allow_leakage": True if allow_leakage else None,
        "masks": masks,
        "explain": explain,
    }
    resolved = resolve(EvaluateSpec, overrides, spec)
    set_threads(resolved.threads)
    out = resolved.out
    with ProgressView(progress) as view:
        kind, metrics = evaluate_paths(
            resolved.model, resolved.images, out, table=resolved.table, labels=resolved.labels,
            channels=resolved.channels, id_column=resolved.id_column,
            label_column=resolved.label_column, group_column=resolved.group_column,
            label_map=resolved.label_map, device=resolved.device, batch_size=resolved.batch_size,
            bootstrap=resolved.bootstrap if "bootstrap" in resolved.model_fields_set else None,
            seed=resolved.seed, progress=view.cases("cases"),
            run_spec=resolved, allow_leakage=resolved.allow_leakage,
            masks=resolved.masks, explain=resolved.explain, overwrite=overwrite)
    stdout = make_console(stderr=False)
    for line in door_lines(metrics, resolved.table):
        console.print(line, highlight=False)
    if kind == "classifier":
        for t in metrics_tables(metrics):
            stdout.print(t)
        measured = [metrics["measurements"]] if "measurements" in metrics else []
        written = ["metrics.json", "predictions.csv", *measured, "confusion_matrix.png",
                   "run.json"]
    else:
        stdout.print(dice_table(metrics))
        written = ["metrics.json", "per_case.csv", "run.json"]
    if metrics.get("n_failed"):
        console.print(f"[bold red]{metrics['n_failed']} of {metrics['n_cases']} cases failed[/] "
                      f"(see {out / written[1]})", highlight=False)
    console.print("wrote " + ", ".join(str(out / name) for name in written), highlight=False)
    if resolved.explain is not None:
        console.print(f"evidence sheets → {resolved.explain / 'index.html'}", highlight=False)
    if metrics.get("n_failed"):
        raise typer.Exit(1)


def door_lines(metrics: dict[str, Any], table: Path | None) -> list[str]:
    """How many cases (and patients) were scored, from where, and what was skipped
    (:func:`segfew.evaluation.scope.scope_lines`), the leakage verdict, and chance."""
    from segfew.evaluation.scope import scope_lines
    from segfew.metrics import chance_words

    source = (f"the cases of {table}" if table else
              "the cases found" if metrics.get("skipped") else "every case found")
    scope = scope_lines(metrics, source)
    lines = [escape(scope[0]), *(f"[yellow]{escape(line)}[/]" for line in scope[1:])]
    leakage = metrics.get("leakage") or {}
    verdict = escape(f"leakage check: {leakage.get('verdict', 'not made')}")
    if leakage.get("leaked"):
        lines.append(f"[bold red]{verdict}: {escape(', '.join(leakage['leaked']))}[/]")
    elif not leakage.get("checked", False) or leakage.get("by_voxels") is False \
            or leakage.get("patients_unchecked"):  # not made, blind to re-stored copies,
        lines.append(f"[yellow]{verdict}[/]")  # or to other cases of training patients
    else:
        lines.append(verdict)
    words = chance_words(metrics)
    if words:
        lines.append(f"[bold yellow]accuracy {escape(words)}[/]")
    elif metrics.get("bootstrap") == 0 and "accuracy" in metrics:
        lines.append("[yellow]no 95% intervals (--bootstrap 0): whether the accuracy is above "
                     "chance is not checked[/]")
    return lines


def dice_table(metrics: dict[str, Any]) -> Any:
    """Mean Dice per label and over foreground labels, as a rich table."""
    scored = metrics["n_cases"] - metrics["n_failed"]
    table = Table(title=f"Dice ({scored} cases)", caption="cases: those in the label's mean; "
                  "a case where neither truth nor prediction holds the label has no Dice")
    table.add_column("label")
    table.add_column("mean Dice", justify="right")
    table.add_column("cases", justify="right")
    counts = metrics.get("dice_cases") or {}
    for name, value in metrics["dice"].items():
        table.add_row(name, "—" if value is None else f"{value:.3f}",
                      f"{counts[name]} of {scored}" if name in counts else "")
    mean = metrics["mean_dice"]
    table.add_row("[bold]mean[/]", "—" if mean is None else f"[bold]{mean:.3f}[/]", "")
    return table


def _fmt(value: Any, ci: Any = None) -> str:
    if value is None:
        return "—"
    text = f"{value:.3f}"
    if ci:
        text += f" [{ci[0]:.3f}, {ci[1]:.3f}]"
    return text


def metrics_tables(metrics: Mapping[str, Any]) -> list[Any]:
    """Rich tables of a :func:`segfew.metrics.classification_metrics` dict: summary, per
    class, confusion matrix."""
    from segfew.evaluation.scope import missing_words

    ci = metrics.get("ci") or {}
    summary = Table(title="Classification metrics" + (" (95% bootstrap interval)" if any(
        v for v in ci.values()) else ""))
    summary.add_column("metric")
    summary.add_column("value", justify="right")
    labels = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy",
              "kappa": "Cohen's kappa", "macro_f1": "macro F1"}
    for key, label in labels.items():
        if key in metrics:
            summary.add_row(label, _fmt(metrics[key], ci.get(key)))
    if metrics.get("missing_classes"):  # the averages are over the classes held
        summary.caption = escape(missing_words(metrics["missing_classes"],
                                               len(metrics["classes"])))

    per_class = metrics.get("per_class") or {}
    class_ci = ci.get("per_class") or {}
    detail = Table(title="Per class")
    for column in ("class", "cases", "precision", "recall (sensitivity)", "specificity",
                   "F1", "AUROC"):
        detail.add_column(column, justify="left" if column == "class" else "right")
    for name, row in per_class.items():
        c = class_ci.get(name) or {}
        detail.add_row(str(name), str(row.get("support", "")),
                       _fmt(row.get("precision"), c.get("precision")),
                       _fmt(row.get("recall"), c.get("recall")),
                       _fmt(row.get("specificity"), c.get("specificity")),
                       _fmt(row.get("f1"), c.get("f1")), _fmt(row.get("auroc"), c.get("auroc")))
    tables = [summary, detail]

    cm = metrics.get("confusion_matrix")
    if cm:
        names = list(per_class) or [str(i) for i in range(len(cm))]
        confusion = Table(title="Confusion matrix (rows: true class, columns: predicted)")
        confusion.add_column("true \\ predicted")
        for name in names:
            confusion.add_column(str(name), justify="right")
        for name, row in zip(names, cm, strict=False):
            confusion.add_row(str(name), *(str(int(v)) for v in row))
        tables.append(confusion)
    return tables
