"""Stratified, group-aware train/test splits of cases and of classification tables.
"""

from __future__ import annotations

import csv
import io
import json
import unicodedata
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from segfew.data.case import GROUP_COLUMNS, Case, one_patient_per_key, patient_key
from segfew.data.classes import row_images
from segfew.data.near_copies import NearCopies, thumbnail, warn_near_copies
from segfew.data.table_rows import (
    id_and_group_columns,
    named_like,
    pick_label_column,
    read_table_rows,
)
from segfew.errors import DataError, DataWarning
from segfew.files import RUN_RECORD, check_output, check_replace, write_text

# ------------------------------------------------------------------------- splits


#: what :func:`group_identical_images` compares, as ``run.json`` records it
COMPARED_BY = "SHA-256 of the image files and of the decoded voxels (segfew.runinfo)"


def class_names(cases: Sequence[Case]) -> list[str]:
    """Sorted unique targets (cases without a target are ignored)."""
    return sorted({c.target for c in cases if c.target is not None})


#: a class of one labelled case is said (:func:`check_class_names`) where another class has
#: at least this many: then the one case stands out; a draw of one case of every class does not
ONE_CASE_AMONG = 3


def check_class_names(cases: Sequence[Case], where: str | Path | None) -> None:
    """Refuse a training set's classes whose names differ only in case, surrounding spaces
    or how a number is written (``G2`` and ``g2``, ``1`` and ``1.0``: :func:`class_key`),
    as ``evaluate`` refuses such a truth class: the model would learn them as two classes,
    a slip's class of one case turns off the choice of classifier and its estimate. A
    :class:`DataError` naming ``where`` (the table or folder) and each spelling with its
    count of cases.

    A class with one labelled case while another class has at least
    :data:`ONE_CASE_AMONG` cases is said in a :class:`DataWarning`: a lone case (a typo, a
    mislabelled row) is an outlier, while a few-shot draw of one case per class
    (``experiment`` at size 1) has every class at one and is not said.
    """
    counts = Counter(c.target for c in cases if c.target is not None)
    spellings: dict[str, list[str]] = defaultdict(list)
    for name in sorted(counts):
        spellings[class_key(name)].append(name)
    alike = [names for names in spellings.values() if len(names) > 1]

    def counted(name: str) -> str:
        return f"{name!r} ({counts[name]} case{'s' if counts[name] != 1 else ''})"

    if alike:
        listed = "; ".join(" and ".join(counted(n) for n in names) for names in alike)
        raise DataError(f"class names written two ways (they differ only in case, surrounding "
                        f"spaces or how a number is written): {listed}; write each class one "
                        "way (classes that are truly different need names that differ by "
                        "more)", where)
    lone = [n for n, k in sorted(counts.items()) if k == 1]
    most = max(counts.values(), default=0)
    if lone and most >= ONE_CASE_AMONG:
        largest = min(n for n, k in counts.items() if k == most)
        warnings.warn(DataWarning(
            f"class{'es' if len(lone) > 1 else ''} {', '.join(map(repr, lone))} "
            f"{'have' if len(lone) > 1 else 'has'} one labelled case while {largest!r} has "
            f"{most}: a class of one case is hardly learnt (a typo or a mislabelled row?)",
            where), stacklevel=2)


def class_key(name: str) -> str:
    """A class name as two spellings of one class share it: case, surrounding spaces and
    how a number is written set aside (``Oval`` and ``oval``; ``1``, ``1.0`` and ``01``, as
    a spreadsheet may save them: :func:`segfew.data.case.patient_key`)."""
    return patient_key(name)


def spelt_alike(name: str, names: Iterable[str]) -> list[str]:
    """The other ``names`` that are ``name`` written another way (:func:`class_key`:
    ``oval`` for ``Oval``, ``1.0`` for ``1``), sorted: the slip :func:`check_class_names`
    warns of, named where a class is refused (too few patients for a split, unknown to a
    model)."""
    key = class_key(name)
    return sorted({n for n in names if n != name and class_key(n) == key})


def _one_class_hint(target: str, cases: Sequence[Case]) -> str:
    """`` ('Oval' and 'oval' are written alike: one class?)`` where another class of
    ``cases`` is spelt like ``target`` (:func:`spelt_alike`), else ``""``."""
    alike = spelt_alike(target, {str(c.target) for c in cases if c.target is not None})
    return f" ({target!r} and {alike[0]!r} are written alike: one class?)" if alike else ""


def group_identical_images(cases: Sequence[Case], where: str | Path | None = None
                           ) -> tuple[list[Case], list[list[str]]]:
    """``cases`` with every set that holds one scan under two ids joined into one group, so
    no split puts a copy on each side (SPEC §6), and the joined sets' group names
    (``case.group``, else the case id). ``inspect`` reports them. A group then holding
    cases of several classes is said in one :class:`DataWarning` naming ``where`` (the
    table or tables; :func:`warn_mixed_classes`): ``split``, ``experiment`` and ``inspect``
    group here.

    One scan: the same file bytes (:func:`segfew.identity.scan_digest`: a file, a DICOM
    series folder's files, a detached header's data file) or the same voxels
    (:func:`segfew.identity.voxel_digest`: the same shape and values however stored — a
    copy decompressed, recompressed or converted to another format). Every image is read
    once for its voxels (cached within the process). A blank image (one value everywhere:
    the empty edge slices of a slice-per-file export) is every patient's, so it joins none.

    Scans of different groups that look like one scan re-exported (another intensity
    scale, a pixel's shift, a mirror: :mod:`segfew.data.near_copies`, by thumbnails taken
    while the scans are read) are said in one more :class:`DataWarning`, not joined
    (:func:`group_images` returns them too); so is a set too large to look in.

    Why: a copy of a test scan in the training set is leakage the protocol cannot see by
    id. The public ACDC copy holds one such pair (patient074 and patient076). Cases with
    no copy keep their group; where no scan has a copy, the splits are unchanged.
    """
    grouped, joined, _ = group_images(cases, where)
    return grouped, joined


def group_images(cases: Sequence[Case], where: str | Path | None = None
                 ) -> tuple[list[Case], list[list[str]], NearCopies]:
    """:func:`group_identical_images`, and the near copies it said (every pair)."""
    from segfew.identity import read_quietly, scan_digest, scan_files, voxel_digest

    parent: dict[str, str] = {}

    def root(unit: str) -> str:
        while parent.get(unit, unit) != unit:
            unit = parent[unit]
        return unit

    first: dict[tuple[str, str], str] = {}  # (kind, digest) → the unit that showed it first
    labelled: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)  # → case id → class
    thumbs: list[tuple[Path, str, np.ndarray]] = []  # for the near copies (read once)
    for case in cases:
        for path in map(Path, case.images):
            try:
                files = scan_files(path)
                if not sum(f.stat().st_size for f in files):
                    continue  # empty files are no scan (the reader refuses them)
                array = read_quietly(path)
                voxels = voxel_digest(path, array) if array is not None else None
                if voxels is None and _blank(path):  # every patient's empty edge slice
                    continue
                thumb = thumbnail(array) if array is not None else None
                del array
                if thumb is not None:
                    thumbs.append((path, case.unit, thumb))
                keys = [("bytes", scan_digest(path, files))]
                keys += [("voxels", voxels)] if voxels is not None else []
            except OSError:
                continue  # absent, unreadable, a folder of no series: the reader says so
            unit = case.unit
            for key in keys:
                if case.target is not None:
                    labelled[key][case.id] = case.target
                a, b = root(first.setdefault(key, unit)), root(unit)
                if a != b:
                    parent[b] = a
    joined: dict[str, set[str]] = {}
    out = []
    for case in cases:
        unit = case.unit
        top = root(unit)
        if top != unit or top in parent.values():
            joined.setdefault(top, {top}).add(unit)
            case = replace(case, group=top)
        out.append(case)
    relabelled = {tuple(sorted(ids.items())) for ids in labelled.values()
                  if len(set(ids.values())) > 1}
    warn_mixed_classes(cases, out, joined, sorted(relabelled), where)
    near = warn_near_copies([(p, root(unit), t) for p, unit, t in thumbs], where)
    return out, [sorted(units) for _, units in sorted(joined.items())], near


def _blank(path: Path) -> bool:
    """Whether the scan at ``path`` holds one value everywhere (False: it cannot be read)."""
    from segfew.identity import read_quietly

    array = read_quietly(path)
    return array is not None and array.size > 0 and bool(np.ptp(array) == 0)


#: the mixed groups (and relabelled scans) a warning names before it counts the rest
NAMED_MIXED = 3


def warn_mixed_classes(cases: Sequence[Case], grouped: Sequence[Case],
                       joined: dict[str, set[str]],
                       relabelled: Sequence[tuple[tuple[str, str], ...]],
                       where: str | Path | None) -> None:
    """One :class:`DataWarning` for the groups of ``grouped`` holding cases of several
    classes. A group column crossing classes usually means the wrong column or a labelling
    error, and one scan under two classes (``relabelled``: its cases' ids and classes) is
    one; a patient may carry several labels in some studies, so nothing is refused.
    ``cases``: before :func:`group_identical_images` joined the groups of ``joined``."""
    by_group: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for case in grouped:
        if case.target is not None:
            by_group[case.unit][case.target].append(case.id)
    mixed = sorted(g for g, classes in by_group.items() if len(classes) > 1)
    if not mixed:
        return
    own: dict[str, set[str]] = defaultdict(set)
    for case in cases:
        if case.target is not None:
            own[case.unit].add(case.target)

    def more(n: int) -> str:
        return f" and {n - NAMED_MIXED} more" if n > NAMED_MIXED else ""

    def named(group: str) -> str:
        classes = by_group[group]
        return "+".join(sorted(joined.get(group, {group}))) + " (" + "; ".join(
            f"{t}: {', '.join(ids[:2])}{', …' if len(ids) > 2 else ''}"
            for t, ids in sorted(classes.items())) + ")"

    why = []
    if relabelled:
        scans = "; ".join(" and ".join(f"{cid} ({t})" for cid, t in ids)
                          for ids in relabelled[:NAMED_MIXED])
        why.append(f"identical images labelled differently ({scans}{more(len(relabelled))}): "
                   "one scan (the same file bytes or the same voxels) under two classes is a "
                   "labelling error")
    if any(len(t) > 1 for t in own.values()) or not why:
        why.append("a group column crossing classes usually means the wrong column "
                   "(--group-column) or a labelling error")
    n = len(mixed)
    warnings.warn(DataWarning(
        f"{n} group{'s (patients) hold' if n > 1 else ' (patient) holds'} cases of several "
        f"classes: {', '.join(named(g) for g in mixed[:NAMED_MIXED])}{more(n)}; "
        f"{'; '.join(why)}; "
        "each group stays on one side of every split, counted in its most common class",
        where), stacklevel=3)


def stratified_split(cases: Sequence[Case], *, per_class: int | None = None,
                     fraction: float | None = None, seed: int = 0,
                     where: str | Path | None = None) -> tuple[list[Case], list[Case]]:
    """Split into (training part, held-out part), by class and never splitting a group.

    Groups (``case.group`` or else ``case.id``) are the unit: each group is assigned to the
    most common target among its cases, then per class the groups are shuffled by ``seed``.
    ``per_class=k`` puts ``k`` groups of each class in the training part — the paper's
    learning-curve protocol (k labelled patients per class); the sets are nested, so with one
    seed k=2 ⊂ k=4 ⊂ …. ``fraction=f`` puts ``round(f·n)`` groups of each class in the
    training part, leaving at least one of a class with two or more groups for the second
    part when ``f < 1`` (e.g. ``fraction=1 - val_fraction`` for a validation split). Cases
    without a target form one stratum of their own. Both parts keep the input order.
    Raises :class:`DataError` (naming ``where``, the cases' table or folder) for a class
    with fewer than ``per_class`` groups.
    """
    if (per_class is None) == (fraction is None):
        raise ValueError("give exactly one of per_class and fraction")
    if per_class is not None and per_class < 1:
        raise DataError(f"per_class must be at least 1, got {per_class}")
    if fraction is not None and not 0 < fraction <= 1:
        raise DataError(f"fraction must be in (0, 1], got {fraction}")

    members: dict[str, list[Case]] = defaultdict(list)
    for case in cases:
        members[case.unit].append(case)
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
                raise DataError(f"class {name} has {len(groups)} group"
                                f"{'s (patients)' if len(groups) != 1 else ' (patient)'}; "
                                f"cannot take {per_class} per class"
                                f"{_one_class_hint(target, cases)}", where)
            n_train = per_class
        else:
            assert fraction is not None
            n_train = max(round(fraction * len(groups)), 1)
            if fraction < 1 and len(groups) > 1:
                n_train = min(n_train, len(groups) - 1)
        train_groups.update(order[:n_train])
    first = [c for c in cases if c.unit in train_groups]
    second = [c for c in cases if c.unit not in train_groups]
    return first, second


@dataclass
class TableSplit:
    """What :func:`split_table` wrote and how it grouped the rows.

    ``first``/``second``: the cases of ``paths[0]``/``paths[1]`` (train and test, or the
    draw and the rest); ``group_column``: the table's patient column (None: each row was
    its own patient); ``scans``: rows whose image files were found and compared;
    ``copies``: the groups joined because they hold one scan (the same file bytes or the
    same voxels, :func:`group_identical_images`); ``images``: the folder the images were
    looked up in (None: the table's folder); ``near``: the near copies found (and not looked for).
    """

    paths: tuple[Path, Path]
    first: list[Case]
    second: list[Case]
    group_column: str | None
    rows_are_patients: bool
    scans: int
    copies: list[list[str]] = field(default_factory=list)
    images: Path | None = None
    near: NearCopies = field(default_factory=NearCopies)

    def record(self) -> dict[str, Any]:
        """The grouping, as ``run.json`` keeps it."""
        return {"group_column": self.group_column, "rows_are_patients": self.rows_are_patients,
                "scans_compared": self.scans, "compared_by": COMPARED_BY,
                "identical_scans": self.copies,
                "images": None if self.images is None else str(self.images),
                "near_copies": self.near.record()}


def _parent_split_images(table: Path) -> Path | None:
    """The image folder of the split that wrote ``table`` (its ``run.json`` beside it), so a
    split of a split (learning-curve draws from a training part) compares the same scans."""
    try:
        info = json.loads((table.parent / "run.json").read_text(encoding="utf-8"))
        found = (info.get("grouping") or {}).get("images") or (info.get("spec") or {})["images"]
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    return Path(found) if isinstance(found, str) and Path(found).is_dir() else None


def split_table(table: Path, out: Path, *, test_per_class: int | None = None,
                test_fraction: float | None = None, train_per_class: int | None = None,
                seed: int = 0, images: Path | None = None, id_column: str | None = None,
                label_column: str | None = None, group_column: str | None = None,
                overwrite: bool = False) -> TableSplit:
    """Write two tables of the rows of ``table``, split by class and never splitting a group
    (patient), as ClinicaDL's split tables are, with the grouping of ``experiment``.

    ``test_per_class``/``test_fraction``: ``out/train.tsv`` and ``out/test.tsv``, the test
    part taking that many (that fraction of) groups of each class (at least one of a class
    with two or more groups stays in training). ``train_per_class=N``: ``out/train.tsv``
    holds N groups of each class drawn by ``seed`` — the learning-curve unit (with one
    seed, N=2 ⊂ N=4 ⊂ …) — and ``out/rest.tsv`` the others. See :func:`stratified_split`.

    Groups are the group column's values (else each row is its own patient, and a
    :class:`DataWarning` names ``--group-column``), joined where rows' images hold one scan
    (the same file bytes or the same voxels, :func:`group_identical_images`): the images
    are looked up as training does (in ``images``; default: the folder of the split that
    wrote ``table``, named in its ``run.json``, else the table's folder); rows without a
    file found are grouped by the table alone. Rows keep their columns and order. Raises
    :class:`DataError` for a bad table, a split that leaves a class without training rows,
    or a table at ``out`` that segfew did not write (unless ``overwrite``:
    :func:`segfew.files.check_replace`).
    """
    sizes = [test_per_class, test_fraction, train_per_class]
    if sum(v is not None for v in sizes) != 1:
        raise ValueError("give exactly one of test_per_class, test_fraction, train_per_class")
    table = Path(table)
    check_output(out, [table], "folder")
    names = ("train.tsv", "test.tsv" if train_per_class is None else "rest.tsv")
    check_replace(Path(out) / RUN_RECORD, [*names, RUN_RECORD], overwrite)
    if images is None:
        images = _parent_split_images(table)
    rows = read_table_rows(table)
    if not rows:
        raise DataError("table has a header but no rows", table)
    header = list(rows[0].keys())
    keyed, columns, id_col, group_col = id_and_group_columns(rows, id_column, group_column,
                                                             table)
    label_col = pick_label_column(columns, label_column, table)
    found = row_images([row.get(id_col, "") for row in keyed], table,
                       None if images is None else Path(images))
    patients = one_patient_per_key(keyed, group_col, table)
    cases = []
    for line, row in enumerate(keyed, start=2):
        cid = row.get(id_col, "")
        target = unicodedata.normalize("NFC", row.get(label_col or "", ""))  # as training
        if not cid or not target:
            raise DataError(f"row {line} has no {id_col if not cid else label_col!r}", table)
        cases.append(Case(cid, found[line - 2], target=target, group=patients[line - 2] or cid))
    check_class_names(cases, table)  # refused by training: a split per spelling is no help
    rows_are_patients = group_col is None and named_like(id_col, GROUP_COLUMNS)
    if group_col is None and not rows_are_patients:
        warnings.warn(DataWarning(
            f"no group (patient) column among {', '.join(columns)} (looked for "
            f"{', '.join(GROUP_COLUMNS)}): each row is taken as its own patient; if rows "
            "share patients (slices, sessions), name the column with --group-column",
            table), stacklevel=2)
    cases, copies, near = group_images(cases, table)
    scans = sum(bool(c.images) for c in cases)
    if not scans:
        warnings.warn(DataWarning(
            f"no image file found for the table's rows (in {images or table.parent}): "
            "copies of one scan under two ids (the same file bytes or the same voxels) could "
            "not be looked for; give --images",
            table), stacklevel=2)
    for units in copies:
        warnings.warn(DataWarning(
            f"identical images: {', '.join(units)} hold the same scan (the same file bytes or "
            "the same voxels); they are kept on one side of the split", table), stacklevel=2)
    if train_per_class is not None:
        first, second = stratified_split(cases, per_class=train_per_class, seed=seed,
                                         where=table)
    else:
        second, first = stratified_split(cases, per_class=test_per_class,
                                         fraction=test_fraction, seed=seed, where=table)
        empty = sorted({c.target or "" for c in second} - {c.target for c in first})
        if empty:
            raise DataError(f"the test part takes every group of class {empty[0]!r}: no "
                            "training case is left; ask for fewer test cases"
                            f"{_one_class_hint(empty[0], cases)}", table)
    first_ids = {c.id for c in first}
    out = Path(out)
    paths = []
    for name, keep in ((names[0], True), (names[1], False)):
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=header, delimiter="\t", lineterminator="\n",
                                extrasaction="ignore")
        writer.writeheader()
        writer.writerows(r for r, c in zip(rows, cases, strict=True)
                         if (c.id in first_ids) == keep)
        write_text(out / name, buf.getvalue())
        paths.append(out / name)
    return TableSplit((paths[0], paths[1]), first, second, group_col, rows_are_patients, scans,
                      copies, None if images is None else Path(images), near)
