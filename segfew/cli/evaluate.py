"""``segfew evaluate``: score a model file on labelled cases."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from segfew.cli.common import (
    ChannelsOpt,
    LabelMapOpt,
    ProgressOpt,
    SpecOpt,
    console,
    handle_errors,
    parse_label_map,
    split_list,
)


@handle_errors
def evaluate(
    model: Annotated[Path | None, typer.Option(
        help="Model file (segfew train-classifier or pretrain).")] = None,
    images: Annotated[Path | None, typer.Option(
        help="Folder of images (or of class sub-folders).")] = None,
    out: Annotated[Path | None, typer.Option(
        help="Folder for metrics.json, predictions.csv, plots.")] = None,
    table: Annotated[Path | None, typer.Option(
        help="Classifier: CSV/TSV of id (or path) and true class.")] = None,
    labels: Annotated[Path | None, typer.Option(
        help="Segmentation model: folder of true label maps.")] = None,
    channels: ChannelsOpt = None,
    label_map: LabelMapOpt = None,
    id_column: Annotated[str | None, typer.Option()] = None,
    label_column: Annotated[str | None, typer.Option()] = None,
    group_column: Annotated[str | None, typer.Option()] = None,
    bootstrap: Annotated[int | None, typer.Option(
        min=0, help="Bootstrap resamples for the 95% intervals (0: none).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the bootstrap.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:1 …")] = None,
    batch_size: Annotated[int | None, typer.Option(
        min=1, help="Images per forward pass.")] = None,
    spec: SpecOpt = None,
    progress: ProgressOpt = True,
) -> None:
    """Accuracy, kappa, per-class F1 and more with 95% intervals — or per-label Dice.

    Example: segfew evaluate --model clf.pt --table test.csv --images images --out eval

    Example: segfew evaluate --model seg.pt --images images --labels masks --out eval

    Writes metrics.json, predictions.csv (or per_case.csv), confusion_matrix.png, run.json.
    The exit code is 1 when any case failed, after every row is written.
    """
    from rich.console import Console

    from segfew.cli.predict import CaseProgress
    from segfew.config import EvaluateSpec, resolve_spec
    from segfew.evaluate import evaluate_paths

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
        "batch_size": batch_size,
        "bootstrap": bootstrap,
        "seed": seed,
    }
    resolved = resolve_spec(EvaluateSpec, overrides, spec)
    out = resolved.out
    with CaseProgress("evaluating", progress).show() as bar:
        kind, metrics = evaluate_paths(
            resolved.model, resolved.images, out, table=resolved.table, labels=resolved.labels,
            channels=resolved.channels, id_column=resolved.id_column,
            label_column=resolved.label_column, group_column=resolved.group_column,
            label_map=resolved.label_map, device=resolved.device, batch_size=resolved.batch_size,
            bootstrap=resolved.bootstrap, seed=resolved.seed, progress=bar, run_spec=resolved)
    stdout = Console()
    if kind == "classifier":
        from segfew.metrics import render_metrics_tables

        for t in render_metrics_tables(metrics):
            stdout.print(t)
        written = ["metrics.json", "predictions.csv", "confusion_matrix.png", "run.json"]
    else:
        stdout.print(dice_table(metrics))
        written = ["metrics.json", "per_case.csv", "run.json"]
    if metrics.get("n_failed"):
        console.print(f"[bold red]{metrics['n_failed']} of {metrics['n_cases']} cases failed[/] "
                      f"(see {out / written[1]})", highlight=False)
    console.print("wrote " + ", ".join(str(out / name) for name in written), highlight=False)
    if metrics.get("n_failed"):
        raise typer.Exit(1)


def dice_table(metrics: dict[str, Any]) -> Any:
    """Mean Dice per label and over foreground labels, as a rich table."""
    from rich.table import Table

    table = Table(title=f"Dice ({metrics['n_cases'] - metrics['n_failed']} cases)")
    table.add_column("label")
    table.add_column("mean Dice", justify="right")
    for name, value in metrics["dice"].items():
        table.add_row(name, "—" if value is None else f"{value:.3f}")
    mean = metrics["mean_dice"]
    table.add_row("[bold]mean[/]", "—" if mean is None else f"[bold]{mean:.3f}[/]")
    return table
