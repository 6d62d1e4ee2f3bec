"""Check a dataset before training: what is there, and every problem that would break a run.

:func:`inspect_dataset` matches cases with the same rules as training (``segfew.data``) but
collects every problem instead of stopping at the first, then reads each case through the
door every command uses (:func:`segfew.data.read.read_case`), never stopping at a bad one: what
the door refuses is a fatal problem, what it warns about a note. It summarises shapes,
spacings, orientations, intensities, label values and classes.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from segfew.data import Case, group_identical_images, read_dataset_json
from segfew.data.case import _Problems
from segfew.data.classes import _find_class_folders, _read_table, _with_targets, has_classes_below
from segfew.data.discover import _find_images, _find_segmentation, _nnunet_layout
from segfew.data.label_names import read_label_names
from segfew.data.read import (
    LabelRules,
    SparseLabelsError,
    consecutive_label_map,
    read_case,
    source_shape,
)
from segfew.data.scan import list_folder
from segfew.data.splits import check_class_names
from segfew.errors import DataError, DataWarning, RepeatedWarnings
from segfew.identity import voxel_digest
from segfew.io import Image, ReadLimits
from segfew.typing import Progress

__all__ = ["CaseReport", "DatasetReport", "inspect_dataset"]

"""Called after each case with (cases done, cases in all, case id)."""


#: peak bytes per voxel of one image read through the door and checked (its copies, the
#: content checks, its digest), with a margin: a larger image is refused before it is read
INSPECT_BYTES_PER_VOXEL = 32


@dataclass
class CaseReport:
    """What one case holds; shape and spacing are in the file's own axis order."""

    id: str
    target: str | None = None
    channels: int = 0
    labels: int = 0
    shape: tuple[int, ...] | None = None
    spacing: tuple[float, ...] | None = None
    orientation: str | None = None
    intensity: tuple[float, float, float] | None = None
    """(min, max, mean) over every channel."""
    label_counts: dict[int, int] = field(default_factory=dict)
    """Label value → voxel count over the case's label maps."""
    ok: bool = True


@dataclass
class DatasetReport:
    """The result of :func:`inspect_dataset`.

    ``problems`` lists every problem found, one line each; ``fatal_problems`` are those that
    would break training (a subset), and ``fatal`` says whether there are any.
    """

    images: Path
    labels: Path | None = None
    table: Path | None = None
    kind: str = "images"
    """``segmentation`` (with label maps), ``classification`` (with classes), both
    (``segmentation and classification``) or ``images``."""
    channel_names: list[str] = field(default_factory=list)
    cases: list[CaseReport] = field(default_factory=list)
    label_counts: dict[int, int] = field(default_factory=dict)
    """Label value → voxels over all label maps."""
    label_volumes: dict[int, int] = field(default_factory=dict)
    """Label value → number of label maps that contain it."""
    label_names: dict[int, str] | None = None
    class_counts: dict[str, int] = field(default_factory=dict)
    no_spacing: dict[str, str] = field(default_factory=dict)
    """Case id → why its voxel size is a placeholder (sizes in voxels, not mm)."""
    problems: list[str] = field(default_factory=list)
    fatal_problems: list[str] = field(default_factory=list)
    constant_images: list[Path] = field(default_factory=list)
    """Images of one value: notes, since pretrain keeps them, but a classifier refuses them."""
    blank_label_maps: list[Path] = field(default_factory=list)
    """All-background label maps: notes, since pretrain learns them, but framework measures
    refuses them."""

    @property
    def fatal(self) -> bool:
        return bool(self.fatal_problems)

    @property
    def n_cases(self) -> int:
        return len(self.cases)

    @property
    def n_channels(self) -> int:
        counts = {c.channels for c in self.cases}
        return counts.pop() if len(counts) == 1 else max(counts, default=0)

    @property
    def n_images(self) -> int:
        return sum(c.channels for c in self.cases)

    @property
    def n_labelled(self) -> int:
        """Number of label maps (labelled volumes or slices)."""
        return sum(c.labels for c in self.cases)

    @property
    def dims(self) -> list[int]:
        return sorted({len(c.shape) for c in self.cases if c.shape is not None})

    def add(self, problem: str | DataError | DataWarning, fatal: bool = True) -> None:
        text = str(problem)
        self.problems.append(text)
        if fatal:
            self.fatal_problems.append(text)


def inspect_dataset(images: Path, labels: Path | None = None, table: Path | None = None,
                    channels: Sequence[str] | None = None, id_column: str | None = None,
                    label_column: str | None = None, group_column: str | None = None,
                    label_values: set[int] | None = None,
                    progress: Progress | None = None,
                    label_map: Mapping[int, int] | str | None = None) -> DatasetReport:
    """Match and read every case of a dataset, and report what it holds and what is wrong.

    ``images``/``labels``/``table``/``channels`` and the column names mean what they mean
    for training (see :mod:`segfew.data`). Without ``labels`` or ``table``, an nnU-Net
    dataset is read with its ``labelsTr``, a folder of class sub-folders as classes, and
    any other folder as unlabelled images. ``label_values`` is the declared label set
    (default: the labels of an nnU-Net ``dataset.json``, else any non-negative integer);
    ``label_map`` remaps label values first (e.g. ``{255: 1}``; ``"consecutive"``: the
    values found become 0, 1, 2, …). Each case is read through
    the same door as training (:func:`segfew.data.read.read_case`): what it refuses is a fatal
    problem, what it warns about (rounded labels, NaN voxels, colour converted) a note.
    """
    images = Path(images)
    labels = None if labels is None else Path(labels)
    table = None if table is None else Path(table)
    report = DatasetReport(images=images, labels=labels, table=table)
    found = _Problems(collect=True)
    try:
        cases = _match(report, found, channels, id_column, label_column, group_column)
    except DataError as e:  # a table that cannot be used at all
        cases = []
        found.items.append(e)
    for err in found.items:
        report.add(err)
    for note in found.skipped:
        report.add(note, fatal=False)
    if label_values is None and report.label_names:
        label_values = set(report.label_names)
    if channels:
        report.channel_names = list(channels)
    elif cases and not report.channel_names:
        report.channel_names = cases[0].channel_names

    remap: Mapping[int, int] | None = None
    if isinstance(label_map, str):  # "consecutive", as pretrain resolves it: every label map
        try:
            remap = consecutive_label_map(p for c in cases for p in c.labels)
            report.add("label values remapped (--label-map consecutive): " + (", ".join(
                f"{a} → {b}" for a, b in remap.items()) or "none needed"), fatal=False)
        except DataError:
            remap = None  # the unreadable map is reported by its case
    else:
        remap = label_map
    notes = RepeatedWarnings()  # RGB converted, of 7 800 slices: a few notes and a count
    # an image too large to read and check in the memory free is one problem, not the end
    limits = ReadLimits.from_env().within_memory(INSPECT_BYTES_PER_VOXEL,
                                                 "reading and checking this image")
    for i, case in enumerate(cases):
        rules = LabelRules(None if label_values is None else frozenset(label_values), remap)
        report.cases.append(_inspect_case(case, rules, report, notes, limits))
        if progress is not None:
            progress(i + 1, len(cases), case.id)
    for text in notes.counts():
        report.add(text, fatal=False)
    _check_dataset(report, cases)
    return report


def _match(report: DatasetReport, found: _Problems, channels: Sequence[str] | None,
           id_column: str | None, label_column: str | None,
           group_column: str | None) -> list[Case]:
    images, labels, table = report.images, report.labels, report.table
    layout = _nnunet_layout(images) if images.is_dir() else None
    if layout is not None and layout[2] is not None:
        names, label_names = read_dataset_json(layout[2])
        report.label_names = label_names
        if names and not channels:
            report.channel_names = names
    if labels is not None and labels.is_dir() and report.label_names is None:
        written = read_label_names(labels)  # a folder that segfew label wrote
        report.label_names = dict(enumerate(written)) if written else None
    # the same listing every command uses: images, DICOM series folders, a CD's DICOMDIR
    listed = bool(list_folder(images).images) if images.is_dir() else False
    segmentation = labels is not None or (layout is not None and layout[1] is not None) or (
        table is None and listed)
    if segmentation:
        cases = _find_segmentation(images, labels, channels, found)
        report.kind = "segmentation" if any(c.labels for c in cases) else "images"
        if report.kind == "images" and table is None and has_classes_below(images):
            found.skip([DataWarning(  # what train-classifier reads here is not what this is
                "its sub-folders hold images too: train-classifier reads them as class "
                "folders and not the images at the top (inspect, pretrain, label and predict "
                "read the images at the top)", images)])
        if table is not None:
            classified = _read_table(table, images if layout is None else layout[0], channels,
                                     id_column, label_column, group_column, found, classes=None)
            listed_ids = {c.id for c in classified}
            unused = [c for c in cases if c.id not in listed_ids]
            if unused:  # training uses the table's cases only: a note, not a problem each
                n = len(unused)
                found.skip([DataWarning(f"{n} image{'s are' if n > 1 else ' is'} not in the "
                                        f"table and {'are' if n > 1 else 'is'} not used", table)])
            cases = _with_targets([c for c in cases if c.id in listed_ids], classified, found)
            if report.kind == "segmentation":  # label maps and classes: what measures reads
                report.kind = "segmentation and classification"
        return cases
    if table is not None:
        report.kind = "classification"
        return _read_table(table, images, channels, id_column, label_column, group_column, found,
                           classes=None)  # a table of ids only (pretraining) is inspected too
    if images.is_dir() and any(p.is_dir() for p in images.iterdir()):
        report.kind = "classification"
        return _find_class_folders(images, channels, found)
    return _find_images(images, channels, False, found)


def _inspect_case(case: Case, rules: LabelRules, report: DatasetReport,
                  notes: RepeatedWarnings, limits: ReadLimits) -> CaseReport:
    """Read a case through the door: what it refuses is fatal, what it warns is a note."""
    out = CaseReport(id=case.id, target=case.target, channels=len(case.images),
                     labels=len(case.labels))
    images: list[Image] = []
    labels: list[Image] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            images, labels = read_case(case, rules, limits)
        except SparseLabelsError as e:  # inspect takes --label-map consecutive
            report.add(e.taking_consecutive())
            out.ok = False
        except DataError as e:
            report.add(e)
            out.ok = False
        except OSError as e:  # the whole report is printed, whatever one file does
            report.add(DataError(f"cannot be read ({e.strerror or e})",
                                 e.filename or case.images[0]))
            out.ok = False
    for w in caught:
        if notes.admit(w.message):
            report.add(str(w.message), fatal=False)
    for im in images:  # its voxels' digest, for the copies note: no second read
        if im.path is not None:
            voxel_digest(im.path, im.array)
    if images:
        first = images[0]
        out.shape = source_shape(first)
        out.spacing = tuple(float(round(s, 4)) for s in
                            np.linalg.norm(first.source_affine[:3, : first.dim], axis=0))
        out.orientation = first.orientation
        if first.spacing_placeholder is not None:
            report.no_spacing[case.id] = first.spacing_placeholder
        lows, highs = [float(im.array.min()) for im in images], [float(im.array.max())
                                                                 for im in images]
        total = sum(float(im.array.sum(dtype=np.float64)) for im in images)
        out.intensity = (min(lows), max(highs), total / sum(im.array.size for im in images))
        for im, lo, hi in zip(images, lows, highs, strict=True):
            if lo == hi:
                report.constant_images.append(Path(im.path or case.images[0]))
                report.add(DataError(
                    f"image is constant ({lo:g}): pretrain keeps it beside an all-background "
                    "label map; a classifier refuses it (nothing to classify)", im.path),
                    fatal=False)
    counts: Counter[int] = Counter()
    for lab in labels:
        bins = np.bincount(lab.array.ravel().astype(np.int64, copy=False))
        present = {int(v): int(c) for v, c in enumerate(bins) if c}
        counts.update(present)
        for value in present:
            report.label_volumes[value] = report.label_volumes.get(value, 0) + 1
        if set(present) == {0}:
            report.blank_label_maps.append(Path(lab.path or case.labels[0]))
            report.add(DataError(
                "label map is all background: pretrain learns it as background; framework "
                "measures refuses it (no structure to measure)", lab.path), fatal=False)
    out.label_counts = dict(sorted(counts.items()))
    for value, count in counts.items():
        report.label_counts[value] = report.label_counts.get(value, 0) + count
    return out


def _check_dataset(report: DatasetReport, cases: Sequence[Case]) -> None:
    """Problems that only show across cases."""
    if len(report.dims) > 1:
        by_dim = {d: [case for case, c in zip(cases, report.cases, strict=False)
                      if c.shape and len(c.shape) == d] for d in report.dims}
        fewest = min(by_dim, key=lambda d: len(by_dim[d]))
        names = [c.images[0].name for c in by_dim[fewest][:5]]
        more = len(by_dim[fewest]) - len(names)
        report.add(f"images mix 2D and 3D: {', '.join(names)}{f' and {more} more' if more else ''}"
                   f" {'is' if len(by_dim[fewest]) == 1 else 'are'} {fewest}D; "
                   + ", ".join(f"{len(v)} {'is' if len(v) == 1 else 'are'} {d}D"
                               for d, v in by_dim.items() if d != fewest))
    targets = [c.target for c in cases if c.target is not None]
    if targets:
        report.class_counts = dict(sorted(Counter(targets).items()))
        where = report.table or report.images
        if len(report.class_counts) < 2:
            report.add(DataError(f"only one class ({targets[0]!r}); a classifier needs at "
                                 "least two", where))
        for name, count in report.class_counts.items():
            if count < 2:
                (lone,) = [c for c in cases if c.target == name]
                report.add(DataError(f"class {name!r} has only {count} case "
                                     f"({lone.images[0].name if lone.images else lone.id}); "
                                     "a split needs at least two", where), fatal=False)
    if report.no_spacing:
        why = sorted(set(report.no_spacing.values()))
        read = sum(c.shape is not None for c in report.cases)  # a refused case: unknown
        report.add(f"{len(report.no_spacing)} of the {read} cases read have no real voxel "
                   f"size ({', '.join(why)}): sizes are in voxels, not mm — measurements "
                   "say vox/px instead of ml/mm", fatal=False)
    with warnings.catch_warnings(record=True) as caught:  # a lone class, groups crossing
        warnings.simplefilter("always")                  # classes: notes
        try:  # classes spelt two ways: refused by training, so fatal here
            check_class_names(cases, report.table or report.images)
        except DataError as e:
            report.add(e)
        copies = group_identical_images(cases, report.table or report.images)[1]
    for w in caught:
        report.add(str(w.message), fatal=False)
    for units in copies:
        report.add(f"identical images: {', '.join(units)} hold the same scan (split and "
                   "experiment keep them on one side of every split; a copy in training and "
                   "in a test set would be leakage)", fatal=False)
    if report.label_names:
        for value, name in sorted(report.label_names.items()):
            if report.label_counts and value not in report.label_counts:
                report.add(DataError(f"label {value} ({name}) never appears in the label "
                                     "maps", report.labels or report.images), fatal=False)
