"""What an evaluation scores, and what its cases count as (SPEC §6).

- The cases: exactly a table's (:func:`select_table_cases`), or every case found; a
  segmentation image whose label map is missing is its case's error row
  (:func:`find_scored_segmentation`), not the end of the batch; what the listing skipped
  (sub-folders, non-image files) is counted (:func:`skipped_at_door`), so "every case found"
  is never said of a folder half read.
- The evidence: the cases of one patient (a table's group column) and copies of one scan
  under several ids (:func:`segfew.data.group_identical_images`) are one unit, so the
  bootstrap resamples patients (:func:`group_cases`), and the count of patients is said.
- The classes: a model's classes that no evaluated case holds are named
  (:func:`missing_classes`): balanced accuracy, macro F1 and AUROC average only the classes
  present, so they say nothing of the others.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from segfew.data import Case, find_image_cases, group_identical_images
from segfew.data.case import _Problems
from segfew.data.classes import warn_rows_as_patients
from segfew.data.discover import _find_segmentation
from segfew.errors import DataError, DataWarning, Skipped
from segfew.io import case_id

__all__ = [
    "find_scored_segmentation",
    "group_cases",
    "missing_classes",
    "missing_words",
    "scope_lines",
    "select_table_cases",
    "skipped_at_door",
]

#: problems of the listing that belong to one image's case (its error row), not the batch
CASE_PROBLEMS = ("image without label", "no label for channel")


def select_table_cases(cases: Sequence[Case], ids: Mapping[str, str | None], table: Path
                       ) -> list[Case]:
    """The ``cases`` a table lists (``ids``: each id's patient, :func:`segfew.data.table_ids`):
    a case whose id is a table id, or begins with one and ``_`` (the frames or channels of a
    patient: ``patient003_frame01`` of ``patient003``), with the row's patient as its group.
    A table id that matches no case becomes a case with a ``problem`` (its error row), so
    exactly the table's cases are scored and none is silently lost."""
    out: list[Case] = []
    for tid, patient in ids.items():
        hits = [c if patient is None else replace(c, group=patient)
                for c in cases if c.id == tid or c.id.startswith(f"{tid}_")]
        out += hits or [Case(tid, (), problem=f"table case {tid!r} has no labelled image "
                                                f"(in {table})")]
    return out


@contextmanager
def skipped_at_door(skipped: list[dict[str, str]]) -> Iterator[None]:
    """Append to ``skipped`` ``{"path", "reason", "count"}`` of every
    :class:`~segfew.errors.Skipped` the block raises (a listing's sub-folders, non-image
    files); every warning is still raised, after the block, even when it raises."""
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:
        for w in caught:
            message = w.message
            if isinstance(message, Skipped):
                skipped.append(_skip_record(message))
            warnings.warn_explicit(message, w.category, w.filename, w.lineno, source=w.source)


def _skip_record(skip: Skipped) -> dict[str, Any]:
    """What metrics.json keeps of a skip: its path, reason and count."""
    return {"path": str(skip.path), "reason": skip.reason, "count": skip.count}


def find_scored_segmentation(images: Path, labels: Path, channels: Sequence[str] | None,
                             skipped: list[dict[str, str]]) -> list[Case]:
    """:func:`segfew.data.find_segmentation_cases`, but an image whose label map is missing
    (or one of whose channels' is) stays a case with that ``problem``: its error row, while
    the others are scored. Any other problem of the folders is a DataError, as there; what
    the listing skipped is warned and appended to ``skipped``."""
    found = _Problems(collect=True)
    cases = _find_segmentation(Path(images), Path(labels), channels, found)
    for note in found.skipped:
        if isinstance(note, Skipped):
            skipped.append(_skip_record(note))
        warnings.warn(note, stacklevel=2)
    rows = [e for e in found.items if e.message.startswith(CASE_PROBLEMS) and e.path]
    fatal = [e for e in found.items if e not in rows]
    if fatal:
        raise fatal[0]
    if not rows:
        return cases
    with warnings.catch_warnings():  # its listing's notes were said just now
        warnings.simplefilter("ignore")
        try:
            owner = {p: c for c in find_image_cases(images, channels, keep_incomplete=True)
                     for p in c.images}
        except DataError:
            owner = {}
    for err in rows:
        assert err.path is not None
        case = owner.get(err.path)
        cases.append(Case(case.id if case else case_id(err.path),
                          case.images if case else (err.path,), problem=str(err)))
    return sorted(cases, key=lambda c: c.id)


def group_cases(cases: Sequence[Case], where: str | Path | None
                ) -> tuple[list[Case], list[dict[str, Any]]]:
    """``cases`` with each one's patient for the bootstrap (``case.unit``: the table's group
    column, else the id) joined where two hold one scan (the same bytes or voxels:
    :func:`segfew.data.group_identical_images`, which warns of a group crossing classes),
    and each set of copies: ``{"ids": [case ids or patients], "of": "cases" | "patients"}``.
    A case without images (an error row to be) keeps its own. Rows of a table (``where``)
    that names no patient are said to be taken as a patient each
    (:func:`segfew.data.classes.warn_rows_as_patients`): the intervals then resample rows."""
    warn_rows_as_patients(cases, where, "ci")
    grouped, joined = group_identical_images(cases, where)
    ids = {c.id for c in cases}
    return grouped, [{"ids": units, "of": "cases" if set(units) <= ids else "patients"}
                     for units in joined]


def missing_classes(y_true: Sequence[int], classes: Sequence[str],
                    where: str | Path | None = None) -> list[str]:
    """The model's ``classes`` that no evaluated case holds (``y_true``: class indices of
    the cases scored), warned in one DataWarning naming ``where``; [] when all are held."""
    missing = [name for i, name in enumerate(classes) if i not in set(y_true)]
    if missing:
        warnings.warn(DataWarning(missing_words(missing, len(classes)), where), stacklevel=2)
    return missing


def missing_words(missing: Sequence[str], of: int) -> str:
    """The sentence for :func:`missing_classes`: ``missing`` of ``of`` model classes."""
    return (f"the evaluated cases hold {of - len(missing)} of the model's {of} classes "
            f"(missing: {', '.join(missing)}): balanced accuracy, macro F1 and AUROC say "
            "nothing of the missing classes")


def scope_lines(metrics: dict[str, Any], source: str) -> list[str]:
    """Plain lines of what was scored: ``scored X of Y cases (source)``, with the patients
    they are (when fewer than the cases) and what the listing skipped; then one line per set
    of copies. ``metrics``: an evaluation's metrics.json."""
    n, total = metrics["n_scored"], metrics["n_cases"]
    groups = metrics.get("n_groups")
    failed = ("" if n == total else "; the other one failed, its own error row"
              if total - n == 1 else f"; the other {total - n} failed, each its own error row")
    line = f"scored {n} of {total} cases ({source}{failed})"
    if groups is not None and groups < n:
        line += (f", {groups} patient{'s' if groups != 1 else ''} (groups): the intervals "
                 "resample patients, not cases")
    skipped = metrics.get("skipped") or []
    if skipped:
        count = [int(s.get("count", 1)) for s in skipped]
        folders = sum(c for s, c in zip(skipped, count, strict=True)
                      if s["reason"].startswith("a sub-folder"))
        parts = [f"{folders} sub-folder{'s' if folders != 1 else ''}"] if folders else []
        rest = sum(count) - folders
        parts += [f"{rest} other file{'s' if rest != 1 else ''} or folders"] if rest else []
        line += f"; {' and '.join(parts)} skipped (listed above)"
    lines = [line]
    for copies in metrics.get("copies") or []:
        ids, of = copies["ids"], copies["of"]
        shown = ", ".join(ids[:4]) + (", …" if len(ids) > 4 else "")
        lines.append(f"{len(ids)} of the evaluated {of} {'are' if of == 'cases' else 'hold'} "
                     f"copies of one scan ({shown}): scored as one patient in the interval")
    return lines
