"""A case (file paths, class, group) and the problem collector of case discovery.
"""

from __future__ import annotations

import math
import re
import warnings
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from segfew.errors import DataError, DataWarning, all_at_once
from segfew.io import case_id

LABEL_SUFFIXES = ("_gt", "_seg", "_label", "_labels", "_mask")
#: names of a case folder's one label map, whatever its image is called (KiTS:
#: ``case_00000/imaging.nii.gz`` + ``segmentation.nii.gz``); compared in lower case
FOLDER_LABEL_NAMES = frozenset({"seg", "segmentation", "mask", "label", "labels", "gt",
                                "ground_truth", "groundtruth", "labelmap", "label_map"})
#: folders an archive tool leaves beside the data, holding no one's scans
ARCHIVE_LEFTOVERS = {"__MACOSX": "a macOS archive's leftovers (resource forks, no scans)"}


def hidden_reason(path: Path) -> str | None:
    """Why a listing passes ``path`` by as no one's scans: a hidden file or folder
    (``.DS_Store``, a macOS ``._a.nii.gz``) or an archive's leftovers (``__MACOSX``);
    None for any other name."""
    if path.name.startswith("."):
        return "a hidden file or folder (its name starts with '.')"
    return ARCHIVE_LEFTOVERS.get(path.name)


#: the column names segfew finds by itself, matched with case, spaces, ``_`` and ``-`` set
#: aside (``PatientID``, ``Patient ID``: segfew.data.table_rows.column_key); ids first
ID_COLUMNS = ("id", "case", "case_id", "image", "image_path", "filename", "file",
              "path", "patient", "patient_id", "subject", "subject_id", "participant_id",
              "mrn", "medical_record_number")
LABEL_COLUMNS = ("label", "class", "diagnosis", "target", "y", "category")
GROUP_COLUMNS = ("group", "patient", "patient_id", "subject", "subject_id", "participant_id",
                 "mrn", "medical_record_number")
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
    :func:`segfew.data.read.read_case` raises it, so a batch makes it that case's error row."""

    @property
    def unit(self) -> str:
        """What a split keeps on one side: the case's group (the patient), else its id."""
        return self.group or self.id

    @property
    def channel_names(self) -> list[str]:
        """Channel suffixes from the file names (``X_frame01`` → ``frame01``), else indices."""
        names = []
        for i, path in enumerate(self.images):
            name = _channel_of(self.id, case_id(path)) if len(self.images) > 1 else None
            names.append(name or str(i))
        return names

    def per_channel(self) -> list[Case]:
        """Split a multi-channel case into single-channel cases ``<id>_<channel>``.

        Used to pre-train a 1-channel segmentation network on every labelled volume (e.g.
        ACDC's ED and ES frames). A case-level label map is shared by every channel. The
        new cases keep this case's group (or id), so a split never separates them.
        """
        if len(self.images) <= 1 or self.problem is not None:
            return [self]
        group = self.unit
        out = []
        for i, (path, name) in enumerate(zip(self.images, self.channel_names, strict=True)):
            labels = self.labels if len(self.labels) <= 1 else (self.labels[i],)
            out.append(Case(f"{self.id}_{name}", (path,), labels, self.target, group))
        return out


def _channel_of(cid: str, file_id: str) -> str | None:
    """The channel of file ``file_id`` in case ``cid``: ``X_t1`` in ``X`` → ``t1``; in a
    case named by its path under ``--recursive`` (``patient1_X``) too."""
    if file_id.startswith(f"{cid}_"):
        return file_id[len(cid) + 1:]
    for k in range(len(file_id) - 1, 0, -1):
        if file_id[k] == "_" and cid.endswith(f"_{file_id[:k]}"):
            return file_id[k + 1:]
    return None


class _Problems:
    """Raise each problem at once (library calls), collect them all (``inspect``), or
    collect them to raise together (``together``: :meth:`raise_all` at the end of a
    listing, so that every bad case of a training set is named in one run)."""

    def __init__(self, collect: bool, together: bool = False) -> None:
        self.collect, self.together = collect or together, together
        self.loud = not collect  # skipped paths said as warnings, unless inspect keeps them
        self.items: list[DataError] = []
        self.skipped: list[DataWarning] = []

    def raise_all(self) -> None:
        """Raise the problems collected, all named (:func:`segfew.errors.all_at_once`)."""
        if self.items:
            raise all_at_once(self.items, len(self.items), "problems found")

    def settle(self) -> None:
        """Raise now what ``together`` collected so far: what follows would only echo it
        (every image without a label after a missing labels folder)."""
        if self.together:
            self.raise_all()

    def skip(self, skipped: Iterable[DataWarning]) -> None:
        """Paths that are not part of any case (:class:`~segfew.errors.Skipped`, or a note
        of ``inspect``): kept (``inspect``) or said as warnings."""
        for err in skipped:
            if any(str(err) == str(s) for s in self.skipped):
                continue
            self.skipped.append(err)
            if self.loud:
                warnings.warn(err, stacklevel=4)

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


def patient_key(value: str) -> str:
    """A patient (group) value as compared across tables: case, surrounding spaces, the
    leading zeros of its numbers and a number's trailing decimal zeros set aside (``P007`` is
    ``p7``, as a spreadsheet saves it; ``7.0`` is ``7`` and ``7.50`` is ``7.5``, as a column
    of numbers with a blank reads after a round trip through pandas; ``1e1`` is ``10``)."""
    text = str(value).strip().casefold()
    if re.fullmatch(r"\d+(\.\d*)?e[+-]?\d+", text) and math.isfinite(float(text)):
        text = format(float(text), "f")  # 1e1, as a spreadsheet may show 10: its digits
    text = re.sub(r"(?<![\d.])(\d+)\.0+(?![\d.])", r"\1", text)
    text = re.sub(r"(?<![\d.])(\d+\.\d*?[1-9])0+(?![\d.])", r"\1", text)  # 7.50 is 7.5
    return re.sub(r"(?<![\d.])\d+", lambda m: str(int(m.group())), text)  # not decimals


#: the spellings of one patient a warning names before it counts the rest
NAMED_SPELLINGS = 3


def one_patient_per_key(table_rows: Sequence[Mapping[str, str]], column: str | None,
                        where: str | Path | None, first_line: int = 2) -> list[str | None]:
    """The group (patient) values in ``column`` of a table's rows (all None where
    ``column`` is None: the table names no patient), in order, with values that are one
    patient by :func:`patient_key` (``004``, ``4`` and ``P004`` against ``p4``) written as
    the first of them: every command that reads a table's patients (``split``,
    ``train-classifier``, ``experiment``, ``evaluate``) then sees one patient, as the
    leakage check already does. One :class:`DataWarning` naming ``where`` (the table) names
    the spellings joined and their rows (row ``first_line`` is ``values[0]``); nothing is
    refused. Blank or None values pass unchanged (the caller decides what they mean)."""
    values = [row.get(column) if column else None for row in table_rows]
    first: dict[str, str] = {}
    rows: dict[str, dict[str, int]] = defaultdict(dict)  # key → spelling → its first row
    for line, value in enumerate(values, start=first_line):
        if value is None or not str(value).strip():
            continue
        key = patient_key(value)
        first.setdefault(key, value)
        rows[key].setdefault(value, line)
    joined = [spelt for spelt in rows.values() if len(spelt) > 1]
    if joined:
        shown = "; ".join(" and ".join(f"{v!r} (row {line})" for v, line in spelt.items())
                          for spelt in joined[:NAMED_SPELLINGS])
        more = f"; and {len(joined) - NAMED_SPELLINGS} more" if len(joined) > NAMED_SPELLINGS \
            else ""
        n, ways = len(joined), "two" if max(map(len, joined)) == 2 else "several"
        warnings.warn(DataWarning(
            f"{'patient' if n == 1 else f'{n} patients'} written {ways} ways: {shown}{more}: "
            f"taken as one patient{'' if n == 1 else ' each'} (case, surrounding spaces and "
            "leading zeros set aside); if they are different patients, give them different "
            "names", where), stacklevel=3)
    return [v if v is None or not str(v).strip() else first[patient_key(v)] for v in values]
