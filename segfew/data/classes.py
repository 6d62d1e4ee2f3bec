"""Image-level labels: classification tables (CSV/TSV, column detection, ClinicaDL ids)
and class sub-folders, matched to the cases they name.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from segfew.data.case import (
    CLINICADL_COLUMNS,
    GROUP_COLUMNS,
    ID_COLUMNS,
    LABEL_COLUMNS,
    LABEL_SUFFIXES,
    Case,
    _Problems,
)
from segfew.data.discover import _find_images, _find_label, _index, _list_images, find_image_cases
from segfew.errors import DataError
from segfew.io import case_id, is_dicom_series_dir, is_image_file

# ------------------------------------------------------------------------- classification


def _sniff_rows(table: Path) -> list[dict[str, str]]:
    try:
        text = table.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"table is not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset "
                        f"{e.start}; Latin-1 or Windows-1252?): save it as UTF-8, e.g. Excel's "
                        "'CSV UTF-8' or `iconv -f latin1 -t utf-8`", table) from None
    except OSError as e:
        raise DataError(f"cannot read table ({e.strerror or e})", table) from None
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise DataError("table is empty", table)
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(lines[0], ",\t;")
    except csv.Error:
        dialect = csv.excel_tab if table.suffix.lower() in (".tsv", ".tab") else csv.excel
    reader = csv.DictReader(lines, dialect=dialect)
    rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    if reader.fieldnames is None:
        raise DataError("table has no header row", table)
    return rows


def _pick_column(columns: Sequence[str], given: str | None, candidates: Sequence[str],
                 what: str, flag: str, table: Path) -> str:
    if given is not None:
        if given not in columns:
            raise DataError(f"no column {given!r} (columns: {', '.join(columns)})", table)
        return given
    lower = {c.lower(): c for c in columns}
    for name in candidates:
        if name in lower:
            return lower[name]
    raise DataError(f"no {what} column (columns: {', '.join(columns)}); "
                    f"name one with {flag}", table)


def read_table(table: Path, images: Path | None = None, channels: Sequence[str] | None = None,
               id_column: str | None = None, label_column: str | None = None,
               group_column: str | None = None, keep_missing: bool = False) -> list[Case]:
    """Classification cases from a CSV/TSV table of ids (or paths) and class labels.

    The id column holds case ids, matched to image files in ``images`` (default: the
    table's folder, searched recursively) by case id or the ``channels`` rule, or paths
    relative to the table's folder or to ``images``. A group column ("group", or "patient"
    when it is not the id column) keeps a patient's cases together in splits.
    A row whose image is not found raises :class:`DataError`; with ``keep_missing`` (a
    batch, e.g. ``evaluate``) it becomes a case without images whose ``problem`` says so.
    """
    return _read_table(Path(table), None if images is None else Path(images), channels,
                       id_column, label_column, group_column, _Problems(collect=False),
                       keep_missing)


def _read_table(table: Path, images: Path | None, channels: Sequence[str] | None,
                id_column: str | None, label_column: str | None, group_column: str | None,
                problems: _Problems, keep_missing: bool = False) -> list[Case]:
    rows = _sniff_rows(table)
    columns = list(rows[0].keys()) if rows else []
    if not rows:
        problems.add("table has a header but no rows", table)
        return []
    if id_column is None:
        rows, columns, id_column, group_column = _clinicadl_ids(rows, columns, group_column)
    id_col = _pick_column(columns, id_column, ID_COLUMNS, "id or path", "--id-column", table)
    label_col = _pick_column(columns, label_column, LABEL_COLUMNS, "label", "--label-column",
                             table)
    group_col = group_column
    if group_col is None:
        group_col = next((c for c in columns if c.lower() in GROUP_COLUMNS and c != id_col), None)
    elif group_col not in columns:
        raise DataError(f"no column {group_col!r} (columns: {', '.join(columns)})", table)

    root = images if images is not None else table.parent
    index: dict[str, list[Path]] | None = None
    seen: dict[str, int] = {}
    cases = []
    for line, row in enumerate(rows, start=2):
        value, target = row.get(id_col, ""), row.get(label_col, "")
        if not value:
            problems.add(f"row {line} has no {id_col!r}", table)
            continue
        if not target:
            problems.add(f"row {line} ({value}) has no {label_col!r}", table)
            continue
        found = _Problems(collect=True) if keep_missing else problems
        if "/" in value or "\\" in value or is_image_file(Path(value)):
            paths = _resolve_paths(value, table, images, channels, found)
            cid = case_id(Path(value))
            if channels and paths:
                cid = _strip_channel(cid, channels)
        else:
            if index is None:
                index = _recursive_index(root)
            paths = _lookup(value, index, channels, root, table, line, found)
            cid = value
        group = row.get(group_col) if group_col else None
        if paths is None:
            if found is not problems and found.items:  # the case's error row, in a batch
                cases.append(Case(cid, (), target=target, group=group or cid,
                                  problem=str(found.items[0])))
            continue
        if cid in seen:
            problems.add(f"duplicate case id {cid!r} (rows {seen[cid]} and {line})", table)
            continue
        seen[cid] = line
        cases.append(Case(cid, paths, target=target, group=group or cid))
    return cases


def _clinicadl_ids(rows: list[dict[str, str]], columns: list[str], group_column: str | None
                   ) -> tuple[list[dict[str, str]], list[str], str | None, str | None]:
    """A ClinicaDL table (participant_id and session_id) gets case ids ``<p>_<s>`` in a
    column ``case_id`` and its participants as groups; other tables pass unchanged."""
    lower = {c.lower(): c for c in columns}
    if not all(c in lower for c in CLINICADL_COLUMNS) or "case_id" in lower:
        return rows, columns, None, group_column
    participant, session = (lower[c] for c in CLINICADL_COLUMNS)
    rows = [{**row, "case_id": f"{row[participant]}_{row[session]}"} for row in rows]
    return rows, [*columns, "case_id"], "case_id", group_column or participant


def _strip_channel(cid: str, channels: Sequence[str]) -> str:
    for c in channels:
        if cid.endswith(f"_{c}"):
            return cid[: -len(c) - 1]
    return cid


def _recursive_index(root: Path) -> dict[str, list[Path]]:
    index: dict[str, list[Path]] = defaultdict(list)
    if root.is_dir():
        quiet = _Problems(collect=True)
        for path in _list_images(root, quiet, recursive=True):
            index[case_id(path)].append(path)
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
            hint = f" (found {', '.join(near)}; use --channels?)" if near and not channels else ""
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
                        problems: _Problems) -> list[Case]:
    if not root.is_dir():
        problems.add("no such folder", root)
        return []
    classes = [d for d in sorted(root.iterdir())
               if d.is_dir() and not d.name.startswith(".") and not is_dicom_series_dir(d)]
    if not classes:
        problems.add("no class sub-folders (expected DIR/<class>/<images>)", root)
        return []
    cases: list[Case] = []
    seen: dict[str, Path] = {}
    for folder in classes:
        for case in _find_images(folder, channels, False, problems):
            if case.id in seen:
                problems.add(f"duplicate case id {case.id!r} (also in {seen[case.id]})",
                             case.images[0])
                continue
            seen[case.id] = folder
            cases.append(replace(case, target=folder.name))
    return cases


def find_classification_cases(images: Path, table: Path | None = None,
                              channels: Sequence[str] | None = None,
                              id_column: str | None = None, label_column: str | None = None,
                              group_column: str | None = None, keep_missing: bool = False
                              ) -> list[Case]:
    """Cases with classes from ``table`` if given, else from class sub-folders of ``images``.
    ``keep_missing``: see :func:`read_table`."""
    if table is not None:
        return read_table(table, images, channels, id_column, label_column, group_column,
                          keep_missing)
    return find_class_folders(images, channels)


def find_cases(images: Path, table: Path | None = None, channels: Sequence[str] | None = None,
               id_column: str | None = None, recursive: bool = False) -> list[Case]:
    """Cases (classes where known) the way ``train-classifier`` finds them, for commands that
    need no classes (``label``, ``pretrain``): the rows of ``table``; else the images of
    ``images`` (with ``recursive``, of its sub-folders too); else its class sub-folders.
    """
    images = Path(images)
    if table is not None:
        return read_table(table, images, channels, id_column)
    if not recursive and has_class_folders(images):
        return find_class_folders(images, channels)
    return find_image_cases(images, channels, recursive)


def has_class_folders(images: Path) -> bool:
    """True if ``images`` holds sub-folders (not DICOM series) and no image files."""
    images = Path(images)
    if not images.is_dir() or is_dicom_series_dir(images):
        return False
    children = [c for c in images.iterdir() if not c.name.startswith(".")]
    return not any(c.is_file() and is_image_file(c) for c in children) and any(
        c.is_dir() and not is_dicom_series_dir(c) for c in children)


def attach_labels(cases: Sequence[Case], labels: Path) -> list[Case]:
    """Give each case its label map(s) from the flat folder ``labels``, matched by case id as
    :func:`find_segmentation_cases` does (one per channel, or one for the case)."""
    problems = _Problems(collect=False)
    index = _index(_list_images(Path(labels), problems), problems)
    out = []
    for case in cases:
        own = [case_id(p) for p in case.images]
        per_channel = [_find_label(name, index, allow_own=True) for name in own]
        case_level = _find_label(case.id, index, allow_own=True)
        if len(own) > 1 and all(per_channel) and not case_level:
            chosen = [m[0] for m in per_channel]
        elif case_level:
            chosen = [case_level[0]]
        else:
            names = ", ".join(f"{case.id}{s}.*" for s in ("", *LABEL_SUFFIXES))
            raise DataError(f"image without label (looked for {names} in {labels})",
                            case.images[0])
        out.append(replace(case, labels=tuple(chosen)))
    return out


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




def table_ids(table: Path, id_column: str | None = None) -> list[str]:
    """The case ids a table lists, in order (a path becomes its file's case id), for
    commands that only select cases by it (``evaluate --table`` of a segmentation model);
    no class column is needed."""
    rows = _sniff_rows(Path(table))
    columns = list(rows[0].keys()) if rows else []
    if not rows:
        raise DataError("table has a header but no rows", table)
    if id_column is None:
        rows, columns, id_column, _ = _clinicadl_ids(rows, columns, None)
    col = _pick_column(columns, id_column, ID_COLUMNS, "id or path", "--id-column", table)
    values = [row.get(col, "") for row in rows]
    return [case_id(Path(v)) if "/" in v or "\\" in v or is_image_file(Path(v)) else v
            for v in values if v]
