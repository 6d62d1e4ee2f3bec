"""A DICOM series whose files lie in several folders (a CD export caps the files per folder)
is refused in each folder, never read as separate part-volume cases.

One check for every door that turns folders or tables into cases: image folders
(``predict``, ``--recursive``, several inputs), segmentation pairs, class sub-folders,
tables of ids or paths, and the batch commands' inputs each pass the whole set of cases
they built through :func:`refuse_split_series` once. A folder case whose own sub-folders
(at any depth) hold more files of its series is split too, whether or not they are read.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path

from segfew.data.case import Case, _Problems, hidden_reason
from segfew.data.scan import DICOM_SUFFIXES
from segfew.errors import DataError
from segfew.io import is_image_file
from segfew.io.dicom import dicom_header, dicom_series_files, series_of_path

__all__ = ["refuse_split_series"]

#: SeriesInstanceUID → folder → that series' files in the folder
_Below = dict[str, dict[Path, list[Path]]]


def refuse_split_series(cases: list[Case], problems: _Problems, keep: bool = False,
                         context: Iterable[Path] = ()) -> list[Case]:
    """``cases`` less each whose DICOM series continues in another case's folder, in one of
    its own folder's sub-folders or in a ``context`` image's folder (images the door found
    that are no case, e.g. those a table does not list); with ``keep``, each is kept with
    that as its ``problem`` (the batch's error row). Read alone, each folder would be part of
    one volume. A problem already said (two doors of one ``inspect``) is not said again."""
    split = _split_series(cases, context)
    out = []
    said = {str(e) for e in problems.items}
    for i, case in enumerate(cases):
        if i not in split or case.problem is not None:
            out.append(case)
        elif keep:
            out.append(replace(case, problem=str(split[i])))
        elif str(split[i]) not in said:
            said.add(str(split[i]))
            problems.extend([split[i]])
    return out


def _split_series(cases: Sequence[Case], context: Iterable[Path] = ()) -> dict[int, DataError]:
    """Index of each case whose DICOM series has files in another folder that its own
    folder lacks → why it is refused. The other folders: other cases' (of any class or
    row), the ``context`` images', and the sub-folders of each series folder case's own
    folder (:func:`_series_below`). A whole copy of the series (the same SOPInstanceUIDs) is
    no part: the identical-scans rule joins copies. The headers are the cached ones
    (:func:`segfew.io.dicom.dicom_header`): none is parsed twice, no pixels are read."""
    where: dict[str, dict[Path, set[str]]] = defaultdict(dict)  # uid → folder → instances
    found: dict[int, list[tuple[str, Path, Path]]] = defaultdict(list)
    walked: dict[Path, _Below] = {}
    for i, case in enumerate(cases):
        for path in case.images:
            for uid, files in _case_series(path).items():
                if uid and files:
                    folder = files[0].parent
                    where[uid][folder] = {_instance(f) for f in files}
                    found[i].append((uid, folder, path))
                    if path.is_dir() or not path.exists():  # a series folder's own case
                        for sub, more in _series_below(folder, walked).get(uid, {}).items():
                            where[uid].setdefault(sub, {_instance(f) for f in more})
    for path in context:
        for uid, files in _case_series(path).items():
            if uid in where and files:
                where[uid].setdefault(files[0].parent, {_instance(f) for f in files})
    out: dict[int, DataError] = {}
    for i, series in found.items():
        for uid, folder, path in series:
            mine = where[uid][folder]
            others = sorted(((f, keys) for f, keys in where[uid].items()
                             if f != folder and not keys <= mine), key=lambda o: str(o[0]))
            if others:
                total = len(set().union(*where[uid].values()))
                parts = ", ".join(f"{f} ({len(keys)} of its {total} files)"
                                  for f, keys in others)
                out[i] = DataError(f"DICOM series {uid} continues in {parts}: put the "
                                   "series' files in one folder", path)
                break
    return out


def _series_below(folder: Path, walked: dict[Path, _Below]) -> _Below:
    """The DICOM series of every sub-folder of ``folder``, at any depth (hidden folders
    and links back up the tree left out), once per folder per check (``walked``). Its cost
    is one cached header per file below (:func:`segfew.io.dicom.dicom_series_files` opens
    no file with an image or text suffix), the listing's own with ``--recursive``."""
    if folder in walked:
        return walked[folder]
    below: _Below = defaultdict(dict)
    seen = {folder.resolve()}
    stack = [folder]
    while stack:
        here = stack.pop()
        try:
            children = sorted(c for c in here.iterdir()
                              if hidden_reason(c) is None and c.is_dir())
        except OSError:
            continue
        for child in children:
            real = child.resolve()
            if real in seen:
                continue
            seen.add(real)
            for uid, files in dicom_series_files(child).items():
                below[uid][child] = files
            stack.append(child)
    walked[folder] = below
    return below


def _case_series(path: Path) -> dict[str, list[Path]]:
    """SeriesInstanceUID → files of the DICOM series an image path reads (a series folder,
    one series of a folder holding several, a DICOM file); empty for other images."""
    if not path.exists():
        uid = series_of_path(path)
        return {} if uid is None else {uid: dicom_series_files(path.parent).get(uid, [])}
    if path.is_dir():
        grouped = dicom_series_files(path)
        return {uid: files for uid, files in grouped.items() if len(files) > 1} or grouped
    if is_image_file(path) and not path.name.lower().endswith(DICOM_SUFFIXES):
        return {}
    header = dicom_header(path)
    return {header.series_uid: [path]} if header is not None and header.has_pixels else {}


def _instance(path: Path) -> str:
    """What a file is an instance of: its SOPInstanceUID, else the file itself."""
    header = dicom_header(path)
    return header.sop_instance_uid if header is not None and header.sop_instance_uid \
        else str(path.resolve())
