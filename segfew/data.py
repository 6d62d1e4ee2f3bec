"""Find cases on disk: segmentation pairs, unlabelled images, classification tables and folders.

A :class:`Case` lists file paths only; :func:`segfew.cases.read_case` (the one door, with
every check) loads them. Matching is strict: every
inconsistency (image without label, duplicate id, table id without image, …) is a one-line
:class:`~segfew.errors.DataError` naming the file, raised before any training starts
(issue 2, item 3). ``segfew inspect`` runs the same matching in a collecting mode so it can
list every problem at once instead of stopping at the first.
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from segfew.errors import DataError
from segfew.io import case_id, is_dicom_series_dir, is_image_file

__all__ = [
    "LABEL_SUFFIXES",
    "Case",
    "attach_labels",
    "class_names",
    "find_cases",
    "find_class_folders",
    "find_classification_cases",
    "find_image_cases",
    "find_segmentation_cases",
    "has_class_folders",
    "read_dataset_json",
    "read_table",
    "split_table",
    "stratified_split",
    "with_targets",
]

LABEL_SUFFIXES = ("_gt", "_seg", "_label", "_labels")
ID_COLUMNS = ("id", "case", "case_id", "caseid", "image", "image_path", "filename", "file",
              "path", "patient", "patient_id", "subject", "subject_id", "participant_id")
LABEL_COLUMNS = ("label", "class", "diagnosis", "target", "y", "category")
GROUP_COLUMNS = ("group", "patient", "patient_id", "subject", "subject_id", "participant_id")
#: ClinicaDL tables: a case is ``<participant_id>_<session_id>``, grouped by participant
CLINICADL_COLUMNS = ("participant_id", "session_id")
_NNUNET_CHANNEL = re.compile(r"^(?P<id>.+)_(?P<channel>\d{4})$")


@dataclass(frozen=True)
class Case:
    """One sample: its channel files, optional label maps, class and group.

    ``labels`` is empty (no voxel labels), one map for the case, or one map per channel.
    ``group`` (e.g. the patient) keeps related cases on one side of every split.
    """

    id: str
    images: tuple[Path, ...]
    labels: tuple[Path, ...] = ()
    target: str | None = None
    group: str | None = None
    problem: str | None = None
    """Why the case cannot be used, found while matching (e.g. a missing channel file):
    :func:`segfew.cases.read_case` raises it, so a batch makes it that case's error row."""

    @property
    def channel_names(self) -> list[str]:
        """Channel suffixes from the file names (``X_frame01`` → ``frame01``), else indices."""
        names = []
        for i, path in enumerate(self.images):
            cid = case_id(path)
            prefix = f"{self.id}_"
            names.append(cid[len(prefix):] if cid.startswith(prefix) and len(self.images) > 1
                         else str(i))
        return names

    def per_channel(self) -> list[Case]:
        """Split a multi-channel case into single-channel cases ``<id>_<channel>``.

        Used to pre-train a 1-channel segmentation network on every labelled volume (e.g.
        ACDC's ED and ES frames). A case-level label map is shared by every channel. The
        new cases keep this case's group (or id), so a split never separates them.
        """
        if len(self.images) <= 1 or self.problem is not None:
            return [self]
        group = self.group or self.id
        out = []
        for i, (path, name) in enumerate(zip(self.images, self.channel_names, strict=True)):
            labels = self.labels if len(self.labels) <= 1 else (self.labels[i],)
            out.append(Case(f"{self.id}_{name}", (path,), labels, self.target, group))
        return out


class _Problems:
    """Raise each problem at once (library calls) or collect them all (``inspect``)."""

    def __init__(self, collect: bool) -> None:
        self.collect = collect
        self.items: list[DataError] = []

    def add(self, message: str, path: Path | None = None) -> None:
        err = DataError(message, path)
        if not self.collect:
            raise err
        self.items.append(err)

    def extend(self, errors: Iterable[DataError]) -> None:
        for err in errors:
            if not self.collect:
                raise err
            self.items.append(err)


# ------------------------------------------------------------------------- files


def _list_images(folder: Path, problems: _Problems, recursive: bool = False) -> list[Path]:
    """Image files (and DICOM series folders) in ``folder``, sorted; empty → problem."""
    if not folder.exists():
        problems.add("no such folder", folder)
        return []
    if not folder.is_dir():
        problems.add("is not a folder", folder)
        return []
    found: list[Path] = []
    series: dict[Path, bool] = {}
    children = sorted(folder.rglob("*") if recursive else folder.iterdir())
    for child in children:
        if any(part.startswith(".") for part in child.relative_to(folder).parts):
            continue
        if child.is_file() and is_image_file(child):
            parent = child.parent
            if parent != folder and child.suffix.lower() == ".dcm":
                if parent not in series:
                    series[parent] = is_dicom_series_dir(parent)
                if series[parent]:
                    continue  # a slice of a series folder, which is listed itself
            found.append(child)
        elif child.is_dir():
            if child not in series:
                series[child] = is_dicom_series_dir(child)
            if series[child]:
                found.append(child)
    if not found:
        problems.add("no image files found (supported: .nii.gz, .nii, .nrrd, .mha, .mhd, "
                     ".png, .jpg, .tif, .dcm, DICOM series folders)", folder)
    return found


def _index(paths: Iterable[Path], problems: _Problems) -> dict[str, Path]:
    """Map case id → path; two files with one id is a problem."""
    index: dict[str, Path] = {}
    for path in paths:
        cid = case_id(path)
        if cid in index:
            problems.add(f"duplicate case id {cid!r} (also {index[cid]})", path)
            continue
        index[cid] = path
    return index


def read_dataset_json(path: Path) -> tuple[list[str] | None, dict[int, str] | None]:
    """Channel names and label names from an nnU-Net ``dataset.json`` (v1 or v2 keys)."""
    try:
        info = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read dataset.json ({e})", path) from None
    channels_raw = info.get("channel_names") or info.get("modality")
    channels = None
    if isinstance(channels_raw, dict):
        channels = [str(channels_raw[k]) for k in sorted(channels_raw, key=lambda k: int(k))]
    labels_raw = info.get("labels")
    labels = None
    if isinstance(labels_raw, dict):
        try:
            if all(str(k).isdigit() for k in labels_raw):  # v1: {"0": "background"}
                labels = {int(k): str(v) for k, v in labels_raw.items()}
            else:  # v2: {"background": 0}
                labels = {int(v): str(k) for k, v in labels_raw.items()
                          if isinstance(v, int | str) and str(v).isdigit()}
        except (TypeError, ValueError):
            labels = None
    return channels, labels


def _nnunet_layout(images: Path) -> tuple[Path, Path | None, Path | None] | None:
    """(images folder, labels folder, dataset.json) when ``images`` is an nnU-Net dataset."""
    if (images / "imagesTr").is_dir():
        labels = images / "labelsTr"
        meta = images / "dataset.json"
        return images / "imagesTr", labels if labels.is_dir() else None, \
            meta if meta.is_file() else None
    if images.name in ("imagesTr", "imagesTs"):
        labels = images.parent / images.name.replace("images", "labels")
        meta = images.parent / "dataset.json"
        return images, labels if labels.is_dir() else None, meta if meta.is_file() else None
    return None


def _group_channels(files: Sequence[Path], channels: Sequence[str] | None, nnunet: bool,
                    folder: Path, problems: _Problems,
                    incomplete: dict[str, Case] | None = None) -> dict[str, tuple[Path, ...]]:
    """Case id → channel files, by ``--channels`` suffixes or nnU-Net's ``_0000``.

    With ``incomplete``, a case missing a channel (or a file matching no channel) is put
    there as a :class:`Case` with its ``problem``, instead of being a problem of the batch.
    """
    def per_case(message: str, path: Path, cid: str, paths: tuple[Path, ...]) -> None:
        if incomplete is None:
            problems.add(message, path)
        else:
            incomplete[cid] = Case(cid, paths, group=cid, problem=str(DataError(message, path)))

    if channels is None and not nnunet:
        return {cid: (path,) for cid, path in _index(files, problems).items()}
    by_case: dict[str, dict[str, Path]] = defaultdict(dict)
    for path in files:
        cid = case_id(path)
        if channels is not None:
            match = next((c for c in channels if cid.endswith(f"_{c}") and len(cid) > len(c) + 1),
                         None)
            if match is None:
                per_case("matches no channel (expected a name ending in "
                         f"{', '.join('_' + c for c in channels)})", path, cid, (path,))
                continue
            case, channel = cid[: -len(match) - 1], match
        else:
            m = _NNUNET_CHANNEL.match(cid)
            if m is None:
                problems.add("nnU-Net image without a channel suffix (_0000)", path)
                continue
            case, channel = m["id"], m["channel"]
        if channel in by_case[case]:
            problems.add(f"duplicate case id {cid!r} (also {by_case[case][channel]})", path)
            continue
        by_case[case][channel] = path
    wanted = list(channels) if channels is not None else \
        sorted({c for chans in by_case.values() for c in chans})
    out: dict[str, tuple[Path, ...]] = {}
    for case, found in by_case.items():
        missing = [c for c in wanted if c not in found]
        if missing:
            per_case(f"case {case!r} has no file for channel(s) "
                     f"{', '.join(missing)} ({', '.join(f'{case}_{c}.*' for c in missing)})",
                     folder, case, tuple(found[c] for c in wanted if c in found))
            continue
        out[case] = tuple(found[c] for c in wanted)
    return out


# ------------------------------------------------------------------------- segmentation


def find_segmentation_cases(images: Path, labels: Path | None = None,
                            channels: Sequence[str] | None = None) -> list[Case]:
    """Pair images with label maps by case id.

    ``images`` is a folder of images, or an nnU-Net dataset (``imagesTr/``, ``labelsTr/``,
    ``dataset.json``; channels ``_0000``, ``_0001``… recognised without ``channels``). For
    image ``<id>`` the label may be named ``<id>``, ``<id>_gt``, ``<id>_seg``, ``<id>_label``
    or ``<id>_labels`` with any image suffix. With ``channels``, case ``X`` is made of
    ``X_<c>.*`` for each channel, and takes one label per channel (``X_<c>_gt.*``) or one for
    the case (``X_gt.*``). Without ``labels`` the images folder may hold the label files
    itself (``<id>_seg.*`` beside ``<id>.*``); if it holds none the cases are unlabelled.
    """
    return _find_segmentation(Path(images), None if labels is None else Path(labels),
                              channels, _Problems(collect=False))


def _find_segmentation(images: Path, labels: Path | None, channels: Sequence[str] | None,
                       problems: _Problems) -> list[Case]:
    layout = _nnunet_layout(images)
    nnunet = layout is not None and channels is None
    if layout is not None:
        images = layout[0]
        labels = labels if labels is not None else layout[1]
    files = _list_images(images, problems)
    same_folder = labels is None or labels.resolve() == images.resolve()
    if same_folder:  # label files (<id>_seg.* …) may sit beside the images
        label_files = [p for p in files if case_id(p).endswith(LABEL_SUFFIXES)]
        files = [p for p in files if p not in set(label_files)]
        if not files and label_files:
            problems.add("holds label files only", images)
    else:
        assert labels is not None
        label_files = _list_images(labels, problems)
    cases_files = _group_channels(files, channels, nnunet, images, problems)
    if same_folder and not label_files:
        return [Case(cid, paths, group=cid) for cid, paths in sorted(cases_files.items())]

    label_index = _index(label_files, problems)
    used: set[str] = set()
    cases = []
    where = labels or images
    for cid, paths in sorted(cases_files.items()):
        own = [case_id(p) for p in paths]
        per_channel = [_find_label(name, label_index, allow_own=not same_folder) for name in own]
        chosen: list[list[Path]] = []
        if own == [cid]:
            chosen = per_channel if per_channel[0] else []
        else:
            case_level = _find_label(cid, label_index, allow_own=not same_folder)
            n_found = sum(1 for m in per_channel if m)
            if case_level and n_found:
                problems.add(f"case {cid!r} has both a case label ({case_level[0].name}) and "
                             f"per-channel labels ({next(m for m in per_channel if m)[0].name})",
                             paths[0])
                continue
            if case_level:
                chosen = [case_level]
            elif n_found == len(paths):
                chosen = per_channel
            elif n_found:
                missing = [n for n, m in zip(own, per_channel, strict=True) if not m]
                problems.add(f"no label for channel(s) {', '.join(missing)} in {where}",
                             paths[0])
                continue
        if not chosen:
            names = ", ".join(f"{cid}{s}.*" for s in ("", *LABEL_SUFFIXES))
            problems.add(f"image without label (looked for {names} in {where})", paths[0])
            continue
        ok = True
        for match in chosen:
            used.update(case_id(m) for m in match)
            if len(match) > 1:
                problems.add(f"several label files for {case_id(paths[0])!r}: "
                             f"{', '.join(p.name for p in match)}", match[0])
                ok = False
        if ok:
            cases.append(Case(cid, paths, tuple(m[0] for m in chosen), group=cid))
    for lid, path in sorted(label_index.items()):
        if lid not in used:
            problems.add(f"label without image (no image for it in {images})", path)
    return cases


def _find_label(name: str, index: dict[str, Path], allow_own: bool) -> list[Path]:
    """Label files that may belong to image ``name`` (more than one is ambiguous)."""
    keys = [name] if allow_own else []
    keys += [name + s for s in LABEL_SUFFIXES]
    return [index[k] for k in keys if k in index]


# ------------------------------------------------------------------------- unlabelled


def find_image_cases(inputs: Path | Sequence[Path], channels: Sequence[str] | None = None,
                     recursive: bool = False, keep_incomplete: bool = False) -> list[Case]:
    """Unlabelled cases (for ``predict``) from folders, image files or DICOM series folders.

    Every case id must be unique, since outputs are named after it. With
    ``keep_incomplete``, a case that lacks a channel file is returned with its ``problem``
    (a batch gives it an error row) instead of stopping the whole batch.
    """
    return _find_images(inputs, channels, recursive, _Problems(collect=False), keep_incomplete)


def _find_images(inputs: Path | Sequence[Path], channels: Sequence[str] | None,
                 recursive: bool, problems: _Problems, keep_incomplete: bool = False
                 ) -> list[Case]:
    items = [Path(inputs)] if isinstance(inputs, str | Path) else [Path(p) for p in inputs]
    files: list[Path] = []
    nnunet = False
    for item in items:
        if item.is_dir() and not is_dicom_series_dir(item):
            layout = _nnunet_layout(item)
            if layout is not None:
                nnunet = channels is None
                item = layout[0]
            files += _list_images(item, problems, recursive)
        elif item.exists() and (is_image_file(item) or is_dicom_series_dir(item)):
            files.append(item)
        elif item.exists():
            problems.add("not an image file or folder", item)
        else:
            problems.add("no such file or folder", item)
    incomplete: dict[str, Case] | None = {} if keep_incomplete else None
    grouped = _group_channels(files, channels, nnunet, items[0] if items else Path("."),
                              problems, incomplete)
    cases = {cid: Case(cid, paths, group=cid) for cid, paths in grouped.items()}
    cases.update(incomplete or {})
    return [cases[cid] for cid in sorted(cases)]


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
               group_column: str | None = None) -> list[Case]:
    """Classification cases from a CSV/TSV table of ids (or paths) and class labels.

    The id column holds case ids, matched to image files in ``images`` (default: the
    table's folder, searched recursively) by case id or the ``channels`` rule, or paths
    relative to the table's folder or to ``images``. A group column ("group", or "patient"
    when it is not the id column) keeps a patient's cases together in splits.
    """
    return _read_table(Path(table), None if images is None else Path(images), channels,
                       id_column, label_column, group_column, _Problems(collect=False))


def _read_table(table: Path, images: Path | None, channels: Sequence[str] | None,
                id_column: str | None, label_column: str | None, group_column: str | None,
                problems: _Problems) -> list[Case]:
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
        if "/" in value or "\\" in value or is_image_file(Path(value)):
            paths = _resolve_paths(value, table, images, channels, problems)
            cid = case_id(Path(value))
            if channels and paths:
                cid = _strip_channel(cid, channels)
        else:
            if index is None:
                index = _recursive_index(root)
            paths = _lookup(value, index, channels, root, table, line, problems)
            cid = value
        if paths is None:
            continue
        if cid in seen:
            problems.add(f"duplicate case id {cid!r} (rows {seen[cid]} and {line})", table)
            continue
        seen[cid] = line
        group = row.get(group_col) if group_col else None
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
                              group_column: str | None = None) -> list[Case]:
    """Cases with classes from ``table`` if given, else from class sub-folders of ``images``."""
    if table is not None:
        return read_table(table, images, channels, id_column, label_column, group_column)
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


# ------------------------------------------------------------------------- splits


def class_names(cases: Sequence[Case]) -> list[str]:
    """Sorted unique targets (cases without a target are ignored)."""
    return sorted({c.target for c in cases if c.target is not None})


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

    from segfew.atomic import write_text

    table = Path(table)
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
