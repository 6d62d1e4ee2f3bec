"""``segfew split``: stratified, group-aware train and test tables from one table."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated

from segfew.cli.common import SpecOpt, console, handle_errors, resolve, setting
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
    seed: Annotated[int | None, setting(S, "seed", "Seed of the split.")] = None,
    id_column: Annotated[str | None, setting(S, "id_column", "Table column of ids.")] = None,
    label_column: Annotated[str | None, setting(
        S, "label_column", "Table column of classes.")] = None,
    group_column: Annotated[str | None, setting(
        S, "group_column", "Table column of groups, never split (default: a group, patient "
        "or participant_id column).")] = None,
    spec: SpecOpt = None,
) -> None:
    """Split a table into train.tsv and test.tsv, by class, keeping each patient on one side.

    Example: segfew split --table labels.csv --test-per-class 5 --out splits --seed 0
    """
    from rich.table import Table

    from segfew.data import split_table
    from segfew.runinfo import write_run_info

    overrides = {"table": table, "out": out, "test_per_class": test_per_class,
                 "test_fraction": test_fraction, "seed": seed, "id_column": id_column,
                 "label_column": label_column, "group_column": group_column}
    resolved = resolve(SplitSpec, overrides, spec)
    train_path, test_path, train, test = split_table(
        resolved.table, resolved.out, test_per_class=resolved.test_per_class,
        test_fraction=resolved.test_fraction, seed=resolved.seed,
        id_column=resolved.id_column, label_column=resolved.label_column,
        group_column=resolved.group_column)
    write_run_info(resolved.out, resolved, resolved.seed, [resolved.table])
    counts = {"train": Counter(c.target for c in train), "test": Counter(c.target for c in test)}
    groups = {"train": len({c.group for c in train}), "test": len({c.group for c in test})}
    shown = Table(title="Split (cases per class)")
    shown.add_column("class")
    shown.add_column("train", justify="right")
    shown.add_column("test", justify="right")
    for name in sorted(counts["train"] | counts["test"], key=str):
        shown.add_row(str(name), str(counts["train"][name]), str(counts["test"][name]))
    shown.add_row("[bold]groups[/]", str(groups["train"]), str(groups["test"]))
    console.print(shown)
    console.print(f"wrote {train_path} and {test_path}", highlight=False)
