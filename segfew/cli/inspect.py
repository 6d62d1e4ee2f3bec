"""``segfew inspect``: check a dataset and show what it holds, before any training."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich import box
from rich.table import Table

from segfew.cli.common import (
    GROUP_COLUMN_HELP,
    ID_COLUMN_HELP,
    LABEL_COLUMN_HELP,
    ChannelsOpt,
    LabelMapOpt,
    ProgressOpt,
    SpecOpt,
    handle_errors,
    make_console,
    parse_label_map,
    resolve,
    split_list,
)
from segfew.cli.render import ProgressView
from segfew.errors import SpecError
from segfew.spec import InspectSpec

if TYPE_CHECKING:
    from rich.console import Console

    from segfew.data.inspect import DatasetReport

MAX_ROWS = 20
MAX_PROBLEMS = 40


@handle_errors
def inspect(
    images: Annotated[Path | None, typer.Option(help="Folder of images (or an nnU-Net dataset, "
                                                     "or class sub-folders).")] = None,
    labels: Annotated[Path | None, typer.Option(help="Folder of label maps.")] = None,
    table: Annotated[Path | None, typer.Option(help="CSV/TSV table of ids and classes.")] = None,
    channels: ChannelsOpt = None,
    label_map: LabelMapOpt = None,
    id_column: Annotated[str | None, typer.Option(help=ID_COLUMN_HELP)] = None,
    label_column: Annotated[str | None, typer.Option(help=LABEL_COLUMN_HELP)] = None,
    group_column: Annotated[str | None, typer.Option(
        help=GROUP_COLUMN_HELP)] = None,
    label_values: Annotated[str | None, typer.Option(
        help="Allowed label values, e.g. 0,1,2,3 (default: any).")] = None,
    all_cases: Annotated[bool, typer.Option(
        "--all-cases", help="List every case and every problem.")] = False,
    spec: SpecOpt = None,
    progress: ProgressOpt = True,
) -> None:
    """Check a dataset: cases, shapes, spacings, orientations, intensities, labels, classes.

    Every problem found is listed; the exit code is 1 when one would break training.

    Example: segfew inspect --images data/images --labels data/labels
    """
    from segfew.data.inspect import inspect_dataset

    try:
        allowed = None if label_values is None else [
            int(v) for v in split_list(label_values) or []]
    except ValueError:
        raise SpecError(f"--label-values must be integers, got {label_values!r}") from None
    overrides = {
        "images": images,
        "labels": labels,
        "table": table,
        "channels": split_list(channels),
        "label_map": parse_label_map(label_map),
        "id_column": id_column,
        "label_column": label_column,
        "group_column": group_column,
        "label_values": allowed,
        "all_cases": True if all_cases else None,
    }
    resolved = resolve(InspectSpec, overrides, spec)
    args = (resolved.images, resolved.labels, resolved.table, resolved.channels,
            resolved.id_column, resolved.label_column, resolved.group_column,
            None if resolved.label_values is None else set(resolved.label_values))
    with ProgressView(progress) as view:
        report = inspect_dataset(*args, progress=view.cases("reading cases"),
                                 label_map=resolved.label_map)
    show_report(report, make_console(stderr=False), all_cases=resolved.all_cases)
    if report.fatal:
        raise typer.Exit(1)


def show_report(report: DatasetReport, console: Console, all_cases: bool = False) -> None:
    """Print the report as rich tables: summary, cases, labels, classes, problems."""
    summary = Table(title="Dataset", show_header=False, title_justify="left")
    summary.add_column(style="bold")
    summary.add_column()
    summary.add_row("images", str(report.images))
    if report.labels:
        summary.add_row("labels", str(report.labels))
    if report.table:
        summary.add_row("table", str(report.table))
    summary.add_row("kind", report.kind)
    summary.add_row("cases", str(report.n_cases))
    named = [n for n in report.channel_names if not n.isdigit()]  # "0": a channel unnamed
    summary.add_row("channels", f"{report.n_channels} ({', '.join(named)})"
                    if named else str(report.n_channels))
    summary.add_row("images read", str(report.n_images))
    summary.add_row("labelled volumes", str(report.n_labelled))
    summary.add_row("dimensions", ", ".join(f"{d}D" for d in report.dims) or "-")
    for name, values in (("shape", [c.shape for c in report.cases]),
                         ("spacing", [c.spacing for c in report.cases])):
        present = [v for v in values if v is not None]
        if present and len({len(v) for v in present}) == 1:
            least = tuple(min(v[i] for v in present) for i in range(len(present[0])))
            most = tuple(max(v[i] for v in present) for i in range(len(present[0])))
            summary.add_row(f"{name} (min … max)", f"{_fmt(least)} … {_fmt(most)}")
    orientations = sorted({c.orientation for c in report.cases if c.orientation})
    summary.add_row("orientations", ", ".join(orientations) or "-")
    errors, notes = len(report.fatal_problems), len(report.problems) - len(report.fatal_problems)
    summary.add_row("problems", (f"[red]{errors} fatal[/]" if errors else "0 fatal")
                    + (f", {notes} note{'s' if notes != 1 else ''}" if notes else ""))
    console.print(summary)

    if report.cases:
        rows = report.cases
        hidden = 0 if all_cases or len(rows) <= MAX_ROWS else len(rows) - MAX_ROWS
        cases = Table(title="Cases", title_justify="left", box=box.SIMPLE_HEAD,
                      caption=f"… {hidden} more cases not shown (--all-cases lists them)"
                      if hidden else None)
        for col in ("id", "class", "ch/lab", "shape", "spacing", "orient", "min–max", "mean",
                    "labels"):
            cases.add_column(col, no_wrap=col in ("id", "shape", "min–max"),
                             justify="right" if col in ("min–max", "mean") else "left")
        shown = rows if not hidden else [*rows[: MAX_ROWS - 5], None, *rows[-5:]]
        for c in shown:
            if c is None:
                cases.add_row("…", style="dim")
                continue
            lo, hi, mean = c.intensity if c.intensity else ("", "", "")
            cases.add_row(
                c.id if c.ok else f"[red]{c.id}[/]", c.target or "", f"{c.channels}/{c.labels}",
                _fmt(c.shape), _fmt(c.spacing), c.orientation or "",
                f"{_num(lo)}–{_num(hi)}" if c.intensity else "", _num(mean),
                ",".join(str(v) for v in c.label_counts))
        console.print(cases)

    if report.label_counts:
        total = sum(report.label_counts.values())
        labels = Table(title="Label values", title_justify="left")
        for col in ("value", "name", "voxels", "%", "maps"):
            labels.add_column(col, justify="left" if col == "name" else "right")
        for value, count in report.label_counts.items():
            name = (report.label_names or {}).get(value, "")
            labels.add_row(str(value), name, f"{count:,}", f"{100 * count / total:.2f}",
                           str(report.label_volumes.get(value, 0)))
        console.print(labels)

    if report.class_counts:
        classes = Table(title="Classes", title_justify="left")
        classes.add_column("class")
        classes.add_column("cases", justify="right")
        for name, count in report.class_counts.items():
            classes.add_row(name, str(count))
        console.print(classes)

    if report.problems:
        listed = report.problems if all_cases else report.problems[:MAX_PROBLEMS]
        more = len(report.problems) - len(listed)
        problems = Table(title=f"Problems ({len(report.problems)})", title_justify="left",
                         caption=f"… {more} more not shown (--all-cases lists them)"
                         if more else None)
        problems.add_column("", width=5)
        problems.add_column("problem", overflow="fold")
        fatal = set(report.fatal_problems)
        for text in listed:
            problems.add_row("[red]error[/]" if text in fatal else "[yellow]note[/]", text)
        console.print(problems)
        console.print(_verdict(report))
    else:
        console.print("[green]no problems found[/]")


def _verdict(report: DatasetReport) -> str:
    """The last line: fatal problems, or none — and then what a classifier would still refuse
    (a constant image; an all-background map for framework measures), counted, since their
    notes may be among those not shown."""
    if report.fatal:
        return "[bold red]fatal problems found: fix them before training[/]"
    refused = [f"{n} constant image{'s' if n > 1 else ''} (a classifier refuses "
               f"{'them' if n > 1 else 'it'})" for n in [len(report.constant_images)] if n]
    refused += [f"{n} all-background label map{'s' if n > 1 else ''} (framework measures "
                f"refuses {'them' if n > 1 else 'it'})" for n in [len(report.blank_label_maps)]
                if n]
    if not refused:
        return "[yellow]no fatal problems[/]"
    return ("[yellow]no fatal problems for pretrain; but " + " and ".join(refused)
            + ": drop or mend them before training a classifier[/]")


def _fmt(values: tuple[float, ...] | tuple[int, ...] | None) -> str:
    if values is None:
        return ""
    return "×".join(f"{v:.3g}" for v in values)


def _num(value: float | str) -> str:
    return value if isinstance(value, str) else f"{value:.4g}"
