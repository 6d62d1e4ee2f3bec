"""Image-level labels: classification tables (CSV/TSV, column detection, ClinicaDL ids)
and class sub-folders, matched to the cases they name.
"""

from __future__ import annotations

import bisect
import unicodedata
import warnings
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Literal

from segfew.data.case import (
    ARCHIVE_LEFTOVERS,
    GROUP_COLUMNS,
    Case,
    _Problems,
    hidden_reason,
    one_patient_per_key,
)
from segfew.data.discover import _find_images, _list_images, find_image_cases
from segfew.data.label_maps import label_maps_beside
from segfew.data.label_names import is_label_preview
from segfew.data.scan import list_folder
from segfew.data.split_series import refuse_split_series
from segfew.data.table_rows import (
    id_and_group_columns,
    named_like,
    pick_label_column,
    read_table_rows,
)
from segfew.errors import DataError, DataWarning, Skipped
from segfew.io import case_id, is_dicom_series_dir, is_image_file

# ------------------------------------------------------------------------- classification


#: what taking each row as its own patient changes, by command (:func:`warn_rows_as_patients`)
ROWS_AS_PATIENTS = {
    "ci": "so the intervals resample rows (slices of one patient count as independent cases)",
    "val": "so a validation case (they pick the epoch) may be another slice of a training one",
    "cv": "so a fold of the cross-validation inside them (the model it chooses, its nested "
          "estimate) may hold out a slice of a patient whose other slices it fitted on: read "
          "those scores as optimistic",
}


def warn_rows_as_patients(cases: Sequence[Case], table: str | Path | None,
                          effect: Literal["ci", "val", "cv"]) -> bool:
    """Say in one :class:`DataWarning` naming ``table`` that each row is taken as its own
    patient, when ``cases`` are the rows of a ``table`` that names no patient (every
    ``group`` None: :func:`read_table`); ``effect``: what that changes for the command
    (:data:`ROWS_AS_PATIENTS`: ``evaluate``'s intervals, ``train-classifier``'s validation
    cases or the inner cross-validation of framework measures). Nothing for class
    sub-folders (``table`` None) or no cases. Returns whether it warned."""
    if table is None or not cases or any(c.group is not None for c in cases):
        return False
    warnings.warn(DataWarning(
        f"no group (patient) column in the table (looked for {', '.join(GROUP_COLUMNS)}, "
        "in any case, with or without spaces and '_'): each row is taken as its own patient, "
        f"{ROWS_AS_PATIENTS[effect]}; if rows share patients (slices, sessions), name the "
        "column with --group-column", table), stacklevel=2)
    return True


def read_table(table: Path, images: Path | None = None, channels: Sequence[str] | None = None,
               id_column: str | None = None, label_column: str | None = None,
               group_column: str | None = None, keep_missing: bool = False,
               classes: bool = True) -> list[Case]:
    """Classification cases from a CSV/TSV table of ids (or paths) and class labels.

    The id column holds case ids, matched to image files in ``images`` (default: the
    table's folder, searched recursively) by case id or the ``channels`` rule, or paths
    relative to the table's folder or to ``images``. A group column ("group", or "patient"
    when it is not the id column: :func:`pick_group_column`) keeps a patient's cases
    together in splits; a table that names no patient (no group column, and an id column
    not named like one) gives every case ``group`` None: each row is its own patient
    (:func:`warn_rows_as_patients`).
    A row whose image is not found raises :class:`DataError` (every such row named in one
    run); with ``keep_missing`` (a batch: ``evaluate``) it is a case whose ``problem`` says
    so. ``classes`` false (``pretrain``, ``label``): no class column is needed (ids, paths
    and groups are enough); cases take their class where one is named or found."""
    problems = _Problems(collect=False, together=True)
    cases = _read_table(Path(table), None if images is None else Path(images), channels,
                        id_column, label_column, group_column, problems, keep_missing, classes)
    problems.raise_all()
    return cases


def _read_table(table: Path, images: Path | None, channels: Sequence[str] | None,
                id_column: str | None, label_column: str | None, group_column: str | None,
                problems: _Problems, keep_missing: bool = False,
                classes: bool | None = True) -> list[Case]:
    """:func:`read_table`; ``classes`` None (``inspect``): a class column where there is
    one, and then every row needs its class."""
    rows = read_table_rows(table)
    if not rows:
        problems.add("table has a header but no rows", table)
        return []
    rows, columns, id_col, group_col = id_and_group_columns(rows, id_column, group_column, table)
    label_col = pick_label_column(columns, label_column, table, required=classes is True)
    need_class = label_col is not None and classes is not False
    own = group_col is None and not named_like(id_col, GROUP_COLUMNS)  # rows name no patient
    patients = one_patient_per_key(rows, group_col, table)  # one patient however its rows spell it

    root = images if images is not None else table.parent
    index: dict[str, list[Path]] | None = None
    seen: dict[str, int] = {}
    cases = []
    blank: list[int] = []  # rows naming no patient in the group column
    for line, row in enumerate(rows, start=2):
        value, target = row.get(id_col, ""), row.get(label_col, "") if label_col else ""
        target = unicodedata.normalize("NFC", target)  # é typed or composed: one class
        if not value:
            problems.add(f"row {line} has no {id_col!r}", table)
            continue
        if not target and need_class:
            problems.add(f"row {line} ({value}) has no {label_col!r}", table)
            continue
        found = _Problems(collect=True) if keep_missing else problems
        if index is None and not _is_path(value):
            index = _recursive_index(root)
        paths, cid = _row_paths(value, table, images, channels, index, line, found)
        group = None if own else (patients[line - 2] or cid)
        if group_col and not (row.get(group_col) or "").strip():
            blank.append(line)
        if paths is None:
            if found is not problems and found.items:  # the case's error row, in a batch
                cases.append(Case(cid, (), target=target or None, group=group,
                                  problem=str(found.items[0])))
            continue
        if cid in seen:
            problems.add(f"duplicate case id {cid!r} (rows {seen[cid]} and {line})", table)
            continue
        seen[cid] = line
        cases.append(Case(cid, paths, target=target or None, group=group))
    if blank:  # each its own patient: its slices would be counted as independent patients
        shown = ", ".join(map(str, blank[:5])) + (", …" if len(blank) > 5 else "")
        warnings.warn(DataWarning(
            f"{len(blank)} row(s) give no {group_col!r} (rows {shown}): each is taken as its "
            "own patient, so a patient's cases among them are split and counted as "
            "independent; fill in the column", table), stacklevel=3)
    # a series split between rows' folders, or continuing in one no row names, is refused
    context = [p for found_paths in (index or {}).values() for p in found_paths]
    return refuse_split_series(cases, problems, keep_missing, context)


def _is_path(value: str) -> bool:
    return "/" in value or "\\" in value or is_image_file(Path(value))


def _row_paths(value: str, table: Path, images: Path | None, channels: Sequence[str] | None,
               index: dict[str, list[Path]] | None, line: int, problems: _Problems
               ) -> tuple[tuple[Path, ...] | None, str]:
    """(image paths or None, case id) of a table row's id or path ``value``: a path is
    relative to the table's folder or ``images``; an id is looked up in ``index`` (the
    recursive index of ``images``, else of the table's folder)."""
    if _is_path(value):
        paths = _resolve_paths(value, table, images, channels, problems)
        cid = case_id(Path(value))
        return paths, _strip_channel(cid, channels) if channels and paths else cid
    root = images if images is not None else table.parent
    assert index is not None
    return _lookup(value, index, channels, root, table, line, problems), value


def row_images(values: Sequence[str], table: Path, images: Path | None = None
               ) -> list[tuple[Path, ...]]:
    """The image files of each table row's id or path, found as training finds them
    (:func:`read_table`), or else every file ``<id>_*`` (its channels); ``()`` where none
    is found. Nothing is raised for a missing file:
    ``split`` compares the scans it finds and groups the other rows by the table alone."""
    table = Path(table)
    root = images if images is not None else table.parent
    index = _recursive_index(root) if not all(_is_path(v) for v in values) else None
    keys = sorted(index or {})
    quiet = _Problems(collect=True)
    out = []
    for line, value in enumerate(values, start=2):
        paths = _row_paths(value, table, images, None, index, line, quiet)[0]
        if paths is None and index is not None and value:  # its channels: <id>_<channel>
            at = bisect.bisect_left(keys, f"{value}_")
            near = []
            while at < len(keys) and keys[at].startswith(f"{value}_"):
                near += index[keys[at]]
                at += 1
            paths = tuple(near)
        out.append(paths or ())
    return out


def _strip_channel(cid: str, channels: Sequence[str]) -> str:
    for c in channels:
        if cid.endswith(f"_{c}"):
            return cid[: -len(c) - 1]
    return cid


def _recursive_index(root: Path) -> dict[str, list[Path]]:
    """The images under ``root`` by case id; a sub-folder holding one image is also its
    case's id (KiTS: ``case_00000/imaging.nii.gz``, a table's ``case_00000``)."""
    index: dict[str, list[Path]] = defaultdict(list)
    if root.is_dir():
        quiet = _Problems(collect=True)
        found = _list_images(root, quiet, recursive=True)
        scans = label_maps_beside(found, None, nnunet=False)[0]  # a folder's map is no scan
        by_folder = Counter(p.parent for p in scans)
        for path in found:
            index[case_id(path)].append(path)
        for path in scans:
            folder = path.parent
            if folder != root and by_folder[folder] == 1 and folder.name != case_id(path):
                index[folder.name].append(path)
    return index


def _lookup(value: str, index: dict[str, list[Path]], channels: Sequence[str] | None,
            root: Path, table: Path, line: int, problems: _Problems) -> tuple[Path, ...] | None:
    names = [value] if not channels else [f"{value}_{c}" for c in channels]
    paths = []
    for name in names:
        hits = index.get(name, [])
        if len(hits) > 1:
            problems.add(f"duplicate case id {name!r}: {hits[0]} and {hits[1]}", table)
            return None
        if not hits:
            near = sorted(k for k in index if k.startswith(f"{value}_"))[:3]
            series = near and all(k.startswith(f"{value}_series") for k in near)
            hint = "" if not near or channels else (
                f" (its folder holds several DICOM series, each a case: {', '.join(near)})"
                if series else f" (found {', '.join(near)}; use --channels?)")
            problems.add(f"row {line}: id {value!r} has no image {name}.* in {root}{hint}", table)
            return None
        paths.append(hits[0])
    return tuple(paths)


def _resolve_paths(value: str, table: Path, images: Path | None,
                   channels: Sequence[str] | None, problems: _Problems
                   ) -> tuple[Path, ...] | None:
    rel = Path(value)
    bases = [rel] if rel.is_absolute() else [table.parent / rel] + (
        [images / rel] if images is not None else [])
    for candidate in bases:
        if candidate.exists():
            if not channels:
                return (candidate,)
            cid = case_id(candidate)
            stem = _strip_channel(cid, channels)
            suffix = candidate.name[len(cid):]
            paths = tuple(candidate.parent / f"{stem}_{c}{suffix}" for c in channels)
            missing = [p for p in paths if not p.exists()]
            if missing:
                problems.add(f"no image {missing[0]} for row {value!r}", table)
                return None
            return paths
    problems.add(f"no image {value!r} (relative to {table.parent}"
                 f"{' or ' + str(images) if images else ''})", table)
    return None


def find_class_folders(root: Path, channels: Sequence[str] | None = None) -> list[Case]:
    """Classification cases from ``root/<class>/<images>``; the folder name is the class."""
    return _find_class_folders(Path(root), channels, _Problems(collect=False))


def _find_class_folders(root: Path, channels: Sequence[str] | None,
                        problems: _Problems, keep_clashing: bool = False) -> list[Case]:
    if not root.is_dir():
        problems.add("no such folder", root)
        return []
    children = sorted(root.iterdir())
    classes = [d for d in children if _may_be_class(d)]
    if not classes:
        problems.add("no class sub-folders (expected DIR/<class>/<images>)", root)
        return []
    problems.skip([Skipped(ARCHIVE_LEFTOVERS[d.name], d) for d in children
                   if d.is_dir() and d.name in ARCHIVE_LEFTOVERS])  # __MACOSX: said, passed
    stray = [c for c in children if c.is_file() and is_image_file(c) and not hidden_reason(c)]
    if stray:  # beside class folders an image has no class: not read, and said
        problems.skip([Skipped(f"{len(stray)} image(s) at the top of a folder of class "
                               f"sub-folders ({', '.join(c.name for c in stray[:3])}"
                               f"{', …' if len(stray) > 3 else ''}): not read, as a case's "
                               "class is the name of its sub-folder", root, count=len(stray))])
    cases: list[Case] = []
    seen: dict[str, Path] = {}
    for folder in classes:
        for case in _find_images(folder, channels, False, problems, keep_clashing,
                                 refuse_split=False):
            if case.id in seen and case.problem is None:
                message = f"duplicate case id {case.id!r} (also in {seen[case.id]})"
                if not keep_clashing:
                    problems.add(message, case.images[0])
                    continue
                case = replace(case, problem=str(DataError(message, case.images[0])))
                for i, c in enumerate(cases):  # the other file: its error row names this one
                    if c.id == case.id and c.problem is None:
                        cases[i] = replace(c, problem=str(DataError(
                            f"duplicate case id {c.id!r} (also in {folder})", c.images[0])))
            seen.setdefault(case.id, folder)
            cases.append(replace(case, target=unicodedata.normalize("NFC", folder.name)))
    return refuse_split_series(cases, problems, keep_clashing)  # of every class at once


def find_classification_cases(images: Path, table: Path | None = None,
                              channels: Sequence[str] | None = None,
                              id_column: str | None = None, label_column: str | None = None,
                              group_column: str | None = None, keep_missing: bool = False
                              ) -> list[Case]:
    """Cases with classes from ``table`` if given, else from class sub-folders of ``images``.
    ``keep_missing``: see :func:`read_table`; for class sub-folders, a case lacking a channel
    or sharing its id with another file is kept with its ``problem`` (a batch's error row)."""
    if table is not None:
        return read_table(table, images, channels, id_column, label_column, group_column,
                          keep_missing)
    return _find_class_folders(Path(images), channels, _Problems(collect=False), keep_missing)


def find_cases(images: Path, table: Path | None = None, channels: Sequence[str] | None = None,
               id_column: str | None = None, recursive: bool = False,
               label_column: str | None = None, group_column: str | None = None,
               keep_missing: bool = False) -> list[Case]:
    """Cases (classes where known) the way ``train-classifier`` finds them, for commands that
    need no classes (``label``, ``pretrain``): the rows of ``table`` (which needs no class
    column; ``keep_missing``: see :func:`read_table`); else the images of ``images`` (with
    ``recursive``, of its sub-folders too); else its class sub-folders.
    """
    images = Path(images)
    if table is not None:
        return read_table(table, images, channels, id_column, label_column, group_column,
                          keep_missing, classes=False)
    if not recursive and has_class_folders(images):
        return find_class_folders(images, channels)
    return find_image_cases(images, channels, recursive)


def has_classes_below(images: Path) -> bool:
    """Whether a sub-folder of ``images`` (not hidden, no DICOM series) holds images: what
    ``train-classifier`` without a table reads as class folders (:func:`find_class_folders`)."""
    return any(_may_be_class(d) and list_folder(d).images for d in Path(images).iterdir())


def _may_be_class(folder: Path) -> bool:
    """Whether ``folder`` may be a class sub-folder: a folder, not hidden, no DICOM series,
    not the preview of a ``segfew label`` output."""
    return (folder.is_dir() and hidden_reason(folder) is None and not is_dicom_series_dir(folder)
            and not is_label_preview(folder))


def has_class_folders(images: Path) -> bool:
    """True if ``images`` holds sub-folders and no image (no image file, no DICOM series
    sub-folder, no ``DICOMDIR``: :func:`segfew.data.scan.list_folder` finds none)."""
    images = Path(images)
    if not images.is_dir() or is_dicom_series_dir(images) or (images / "DICOMDIR").is_file():
        return False
    return (any(_may_be_class(c) for c in images.iterdir())
            and not list_folder(images).images)



def with_targets(cases: Sequence[Case], classified: Sequence[Case]) -> list[Case]:
    """Give segmentation ``cases`` the target and group of the table case with the same id.

    A case missing from ``classified`` (or the reverse) is an error: a classifier trained on
    segmentation cases must know every class.
    """
    return _with_targets(cases, classified, _Problems(collect=False))


def _with_targets(cases: Sequence[Case], classified: Sequence[Case],
                  problems: _Problems) -> list[Case]:
    by_id = {c.id: c for c in classified}
    out = []
    for case in cases:
        other = by_id.get(case.id)
        if other is None:
            problems.add(f"case {case.id!r} has no row in the table", case.images[0])
            out.append(case)
            continue
        out.append(replace(case, target=other.target, group=other.group or case.group))
    ids = {c.id for c in cases}
    for other in classified:
        if other.id not in ids:
            problems.add(f"table case {other.id!r} has no labelled image", other.images[0])
    return out


def table_ids(table: Path, id_column: str | None = None, group_column: str | None = None
              ) -> dict[str, str | None]:
    """The case ids a table lists, in order (a path becomes its file's case id), each with
    its patient (the group column, :func:`pick_group_column`; None where none is named), for
    commands that only select cases by it (``evaluate --table`` of a segmentation model,
    whose leakage check compares the patients); no class column is needed."""
    rows = read_table_rows(Path(table))
    if not rows:
        raise DataError("table has a header but no rows", table)
    rows, _, col, group_col = id_and_group_columns(rows, id_column, group_column, Path(table))
    patients = one_patient_per_key(rows, group_col, table)
    out: dict[str, str | None] = {}
    seen: dict[str, int] = {}
    for line, (row, patient) in enumerate(zip(rows, patients, strict=True), start=2):
        v = row.get(col, "")
        if v:
            cid = case_id(Path(v)) if "/" in v or "\\" in v or is_image_file(Path(v)) else v
            if cid in seen:  # scored twice, counted twice in the mean: as the classifier door
                raise DataError(f"duplicate case id {cid!r} (rows {seen[cid]} and {line})",
                                table)
            seen[cid], out[cid] = line, (patient or "").strip() or None
    return out
