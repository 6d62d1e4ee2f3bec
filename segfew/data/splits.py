"""Stratified, group-aware train/test splits of cases and of classification tables.
"""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from segfew.data.case import GROUP_COLUMNS, ID_COLUMNS, LABEL_COLUMNS, Case
from segfew.data.classes import _clinicadl_ids, _pick_column, _sniff_rows
from segfew.errors import DataError

# ------------------------------------------------------------------------- splits


def class_names(cases: Sequence[Case]) -> list[str]:
    """Sorted unique targets (cases without a target are ignored)."""
    return sorted({c.target for c in cases if c.target is not None})


def group_identical_images(cases: Sequence[Case]) -> tuple[list[Case], list[list[str]]]:
    """``cases`` with every set whose image files are byte-identical (one scan under two
    ids) joined into one group, so no split puts a copy on each side (SPEC §6), and the
    joined sets' group names (``case.group``, else the case id). ``inspect`` reports them.

    Why: a copy of a test scan in the training set is leakage the protocol cannot see by
    id. The public ACDC copy holds one such pair (patient074 and patient076). Cases with
    no copy keep their group; where no scan has a copy, the splits are unchanged.
    """
    from dataclasses import replace

    from segfew.runinfo import file_digest

    parent: dict[str, str] = {}

    def root(unit: str) -> str:
        while parent.get(unit, unit) != unit:
            unit = parent[unit]
        return unit

    first: dict[str, str] = {}  # digest → the unit that showed it first
    for case in cases:
        # an absent or empty file is no scan (the reader refuses it)
        for path in (p for p in case.images if Path(p).is_file() and Path(p).stat().st_size):
            try:
                digest = file_digest(Path(path))
            except OSError:
                continue  # an unreadable file: the reader says so, naming it
            unit = case.group or case.id
            a, b = root(first.setdefault(digest, unit)), root(unit)
            if a != b:
                parent[b] = a
    joined: dict[str, set[str]] = {}
    out = []
    for case in cases:
        unit = case.group or case.id
        top = root(unit)
        if top != unit or top in parent.values():
            joined.setdefault(top, {top}).add(unit)
            case = replace(case, group=top)
        out.append(case)
    return out, [sorted(units) for _, units in sorted(joined.items())]


def stratified_split(cases: Sequence[Case], *, per_class: int | None = None,
                     fraction: float | None = None, seed: int = 0
                     ) -> tuple[list[Case], list[Case]]:
    """Split into (training part, held-out part), by class and never splitting a group.

    Groups (``case.group`` or else ``case.id``) are the unit: each group is assigned to the
    most common target among its cases, then per class the groups are shuffled by ``seed``.
    ``per_class=k`` puts ``k`` groups of each class in the training part — the paper's
    learning-curve protocol (k labelled patients per class); the sets are nested, so with one
    seed k=2 ⊂ k=4 ⊂ …. ``fraction=f`` puts ``round(f·n)`` groups of each class in the
    training part, leaving at least one of a class with two or more groups for the second
    part when ``f < 1`` (e.g. ``fraction=1 - val_fraction`` for a validation split). Cases
    without a target form one stratum of their own. Both parts keep the input order.
    """
    if (per_class is None) == (fraction is None):
        raise ValueError("give exactly one of per_class and fraction")
    if per_class is not None and per_class < 1:
        raise DataError(f"per_class must be at least 1, got {per_class}")
    if fraction is not None and not 0 < fraction <= 1:
        raise DataError(f"fraction must be in (0, 1], got {fraction}")

    members: dict[str, list[Case]] = defaultdict(list)
    for case in cases:
        members[case.group or case.id].append(case)
    strata: dict[str, list[str]] = defaultdict(list)
    for group in sorted(members):
        counts = Counter(c.target or "" for c in members[group])
        top = max(counts.values())
        strata[min(t for t, n in counts.items() if n == top)].append(group)

    rng = np.random.default_rng(seed)
    train_groups: set[str] = set()
    for target in sorted(strata):
        groups = strata[target]
        order = [groups[i] for i in rng.permutation(len(groups))]
        if per_class is not None:
            if len(groups) < per_class:
                name = repr(target) if target else "cases without a class"
                raise DataError(f"class {name} has {len(groups)} groups (patients); "
                                f"cannot take {per_class} per class")
            n_train = per_class
        else:
            assert fraction is not None
            n_train = max(round(fraction * len(groups)), 1)
            if fraction < 1 and len(groups) > 1:
                n_train = min(n_train, len(groups) - 1)
        train_groups.update(order[:n_train])
    first = [c for c in cases if (c.group or c.id) in train_groups]
    second = [c for c in cases if (c.group or c.id) not in train_groups]
    return first, second


def split_table(table: Path, out: Path, *, test_per_class: int | None = None,
                test_fraction: float | None = None, seed: int = 0,
                id_column: str | None = None, label_column: str | None = None,
                group_column: str | None = None) -> tuple[Path, Path, list[Case], list[Case]]:
    """Write ``out/train.tsv`` and ``out/test.tsv``: the rows of ``table`` split by class,
    never splitting a group (patient), as ClinicaDL's split tables are.

    The test part takes ``test_per_class`` groups of each class, or ``test_fraction`` of
    them (at least one of a class with two or more groups stays in training); see
    :func:`stratified_split`. Rows keep their columns and order. Images are not looked up.
    Returns the two paths and the (train, test) cases, which hold no image paths.
    """
    import io

    from segfew.files import check_output, write_text

    table = Path(table)
    check_output(out, [table], "folder")
    rows = _sniff_rows(table)
    if not rows:
        raise DataError("table has a header but no rows", table)
    header = list(rows[0].keys())
    keyed, columns, id_col, group_col = (rows, header, id_column, group_column)
    if id_column is None:
        keyed, columns, id_col, group_col = _clinicadl_ids(rows, header, group_column)
    id_col = _pick_column(columns, id_col, ID_COLUMNS, "id or path", "--id-column", table)
    label_col = _pick_column(columns, label_column, LABEL_COLUMNS, "label", "--label-column",
                             table)
    if group_col is None:
        group_col = next((c for c in columns if c.lower() in GROUP_COLUMNS and c != id_col), None)
    elif group_col not in columns:
        raise DataError(f"no column {group_col!r} (columns: {', '.join(columns)})", table)
    cases = []
    for line, row in enumerate(keyed, start=2):
        cid, target = row.get(id_col, ""), row.get(label_col, "")
        if not cid or not target:
            raise DataError(f"row {line} has no {id_col if not cid else label_col!r}", table)
        cases.append(Case(cid, (), target=target, group=(row.get(group_col) if group_col
                                                         else None) or cid))
    test, train = stratified_split(cases, per_class=test_per_class, fraction=test_fraction,
                                   seed=seed)
    left = {c.target for c in train}
    empty = sorted({c.target or "" for c in test} - left)
    if empty:
        raise DataError(f"the test part takes every group of class {empty[0]!r}: no training "
                        "case is left; ask for fewer test cases", table)
    test_ids = {c.id for c in test}
    out = Path(out)
    paths = []
    for name, keep in (("train.tsv", False), ("test.tsv", True)):
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=header, delimiter="\t", lineterminator="\n",
                                extrasaction="ignore")
        writer.writeheader()
        writer.writerows(r for r, c in zip(rows, cases, strict=True) if (c.id in test_ids) == keep)
        write_text(out / name, buf.getvalue())
        paths.append(out / name)
    return paths[0], paths[1], train, test
