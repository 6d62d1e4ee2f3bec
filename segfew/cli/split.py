"""``segfew split``: stratified, group-aware train and test tables from one table."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from segfew.cli.common import (
    GROUP_COLUMN_HELP,
    ID_COLUMN_HELP,
    LABEL_COLUMN_HELP,
    SpecOpt,
    console,
    handle_errors,
    resolve,
    setting,
)
from segfew.data import split_table
from segfew.spec import SplitSpec

S = SplitSpec


@handle_errors
def split(
    table: Annotated[Path | None, setting(
        S, "table", "CSV/TSV of id (or path) and class; optional group (patient).")] = None,
    out: Annotated[Path | None, setting(S, "out", "Folder for train.tsv, test.tsv, run.json."
                                        )] = None,
    test_per_class: Annotated[int | None, setting(
        S, "test_per_class", "Test groups (patients) per class.", min=1)] = None,
    test_fraction: Annotated[float | None, setting(
        S, "test_fraction", "Or: the fraction of each class's groups for testing.")] = None,
    train_per_class: Annotated[int | None, setting(
        S, "train_per_class", "Or: draw N groups (patients) per class into train.tsv, the "
        "others into rest.tsv; with one seed, N=2 is part of N=4.", min=1)] = None,
    seed: Annotated[int | None, setting(S, "seed", "Seed of the split.")] = None,
    images: Annotated[Path | None, setting(
        S, "images", "Folder of the table's images (default: the parent split's, else the table's "
        "folder): copies of one scan (the same file bytes or the same voxels) are kept on one "
        "side.")] = None,
    id_column: Annotated[str | None, setting(S, "id_column", ID_COLUMN_HELP)] = None,
    label_column: Annotated[str | None, setting(
        S, "label_column", LABEL_COLUMN_HELP)] = None,
    group_column: Annotated[str | None, setting(
        S, "group_column", GROUP_COLUMN_HELP)] = None,
    overwrite: Annotated[bool, typer.Option(
        help="Replace tables at --out that segfew did not write.", show_default="off")] = False,
    spec: SpecOpt = None,
) -> None:
    """Split a table into train.tsv and test.tsv, by class, keeping each patient on one side.

    A patient is a value of the group column; rows whose images are copies of one scan (the
    same file bytes or the same voxels) are one patient too. --train-per-class N draws N
    patients per class (train.tsv; rest.tsv).

    Examples:

      segfew split --table labels.csv --test-per-class 5 --out splits --seed 0

      segfew split --table splits/train.tsv --train-per-class 4 --out k4 --seed 1
    """
    from segfew.files import RUN_RECORD, outputs_record
    from segfew.runinfo import write_run_info

    overrides = {"table": table, "out": out, "test_per_class": test_per_class,
                 "test_fraction": test_fraction, "train_per_class": train_per_class,
                 "seed": seed, "images": images, "id_column": id_column,
                 "label_column": label_column, "group_column": group_column}
    resolved = resolve(SplitSpec, overrides, spec)
    done = split_table(
        resolved.table, resolved.out, test_per_class=resolved.test_per_class,
        test_fraction=resolved.test_fraction, train_per_class=resolved.train_per_class,
        seed=resolved.seed, images=resolved.images, id_column=resolved.id_column,
        label_column=resolved.label_column, group_column=resolved.group_column,
        overwrite=overwrite)
    written = outputs_record(resolved.out / RUN_RECORD, [p.name for p in done.paths])
    write_run_info(resolved.out, resolved, resolved.seed, [resolved.table],
                   extra={"grouping": done.record(), **written})
    names = [p.stem for p in done.paths]
    parts = dict(zip(names, (done.first, done.second), strict=True))
    counts = {n: Counter(c.target for c in part) for n, part in parts.items()}
    groups = {n: len({c.group for c in part}) for n, part in parts.items()}
    shown = Table(title="Split (cases per class)")
    shown.add_column("class")
    for n in names:
        shown.add_column(n, justify="right")
    for name in sorted(counts[names[0]] | counts[names[1]], key=str):
        shown.add_row(str(name), *(str(counts[n][name]) for n in names))
    shown.add_row("[bold]groups[/]", *(str(groups[n]) for n in names))
    console.print(shown)
    grouped_by = (f"column {done.group_column!r}" if done.group_column else
                  "the id column (one row per patient)" if done.rows_are_patients else
                  "row (no group column)")
    console.print(f"groups: by {grouped_by}; {done.scans} of {len(done.first) + len(done.second)}"
                  " rows' scans compared for copies (the same file bytes or the same voxels)",
                  highlight=False)
    console.print(f"wrote {done.paths[0]} and {done.paths[1]}", highlight=False)
