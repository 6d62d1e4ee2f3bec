"""What a model file records of its training data, and which cases it holds: the comparison
behind ``evaluate``'s and ``experiment``'s leakage check (:mod:`segfew.evaluation.leakage`,
which words its verdict) and ``predict``'s warning that scans trained the model — one
comparison, so both count the same cases (byte copies, re-stored copies by their voxels,
other cases of training patients).

Every model file records the digest of each scan it was trained on (``metrics.training_data``;
a classifier also carries its segmentation network's record in ``feature_source``), and its
run folder's ``run.json`` holds the manifest. A model file of a recent segfew also records
each training image's :func:`segfew.identity.voxel_digest` (``metrics.training_voxels``:
``"v3:<hex>"``; an older one's are ``"v2:<hex>"`` or plain hex, version 1, each compared in
its form), and a
classifier trained from a table that names patients records them (``training_groups``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segfew.data.case import Case, patient_key
from segfew.errors import ModelFileError
from segfew.files import file_digest
from segfew.identity import VOXEL_HEADS, digest_version, scan_digest, scan_files, voxel_digest
from segfew.inference.masks import EXTERNAL
from segfew.inference.nnunet import NNUNET
from segfew.modelfile import read_model_file
from segfew.runinfo import legacy_run_dir, run_dir_for

__all__ = ["TrainingMatch", "match_training", "on_voxels", "records_voxels", "trained_digests",
           "trained_on"]


@dataclass(frozen=True)
class TrainingMatch:
    """Which of the compared cases trained one model file (:func:`match_training`); its
    fields are :class:`segfew.evaluation.leakage.LeakageCheck`'s, less the model's name."""

    checked: bool
    leaked: list[str] = field(default_factory=list)
    unrecorded: str | None = None
    restored: list[str] = field(default_factory=list)
    by_voxels: bool = False
    network_only: list[str] = field(default_factory=list)
    patients: list[str] = field(default_factory=list)
    of_patients: int = 0
    by_patient: list[str] = field(default_factory=list)
    patients_unknown: bool = False
    patients_unnamed: bool = False
    training_patients: int = 0


def _recorded(meta_metrics: dict[str, Any]) -> set[str] | None:
    recorded = meta_metrics.get("training_data")
    return {str(d) for d in recorded} if isinstance(recorded, list) else None


def _run_json_digests(model_path: Path) -> tuple[set[str] | None, bool]:
    """The digests of the ``run.json`` manifest in the model's run folder (None: none of this
    model's) and whether that run is still marked running. The run folder an older segfew
    gave a dotted name (``m-run`` for ``m.v1.pt``) counts only if its spec names this file."""
    model_path = Path(model_path)
    for run_dir in (run_dir_for(model_path), legacy_run_dir(model_path)):
        if run_dir is None:
            continue
        try:
            info = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
            out = (info.get("spec") or {}).get("out")
            rows = info.get("data") or []
            digests = {str(r["sha256"]) for r in rows if "sha256" in r}
        except (OSError, json.JSONDecodeError, TypeError, AttributeError):
            continue
        if isinstance(out, str) and Path(out).name != model_path.name:
            continue  # another model's run
        if out is None and run_dir != run_dir_for(model_path):
            continue
        return digests, info.get("status") == "running"
    return None, False


def _unrecorded_source(source: dict[str, Any]) -> str | None:
    """What a classifier measures whose training data segfew cannot know, or None."""
    if source.get("masks") == EXTERNAL:
        return "the tool that made its label maps (--masks)"
    if NNUNET in source:
        return "the nnU-Net it reads"
    return None


@dataclass(frozen=True)
class _Record:
    """What a model file records of its training scans: ``digests`` (None: nothing, or
    not its segmentation network's), the voxel digests of its training images, whether
    every part records those (``by_voxels``) and what it measures with no record."""

    digests: set[str] | None
    voxels: set[str] = field(default_factory=set)
    by_voxels: bool = False
    unrecorded: str | None = None
    own: tuple[set[str], set[str]] | None = None
    """A classifier's own digests and voxel digests, beside its network's in the sets above."""
    groups: frozenset[str] = frozenset()
    """The patients whose cases trained the model or its network (``training_groups``)."""
    own_groups: frozenset[str] | None = None
    """A classifier's own patients, beside its network's in ``groups``."""


def _voxels(meta_metrics: dict[str, Any]) -> set[str] | None:
    recorded = meta_metrics.get("training_voxels")
    return {str(d) for d in recorded} if isinstance(recorded, list) else None


def _manifest(model_path: Path) -> _Record:
    """:func:`trained_digests`, the voxel digests, and what the classifier measures with no
    record of its own."""
    try:
        meta, _ = read_model_file(model_path)
    except (ModelFileError, OSError):  # the step that loads it names the problem
        return _Record(None)
    own, voxels = _recorded(meta.metrics), _voxels(meta.metrics)
    groups = frozenset(str(g) for g in meta.metrics.get("training_groups") or [])
    folder, running = _run_json_digests(Path(model_path))
    if own is None:
        own = folder
    elif folder is not None and not running:
        own |= folder  # an older classifier's own record skipped series folders
    mine = _Record(own, voxels or set(), voxels is not None, groups=groups)
    if own is None or meta.feature_source is None:
        return mine
    untracked = _unrecorded_source(dict(meta.feature_source))
    if untracked is not None:
        return _Record(own, mine.voxels, mine.by_voxels, untracked, groups=groups)
    source_metrics = dict(meta.feature_source.get("metrics") or {})
    source, theirs = _recorded(source_metrics), _voxels(source_metrics)
    if source is None:
        return _Record(None)
    network = frozenset(str(g) for g in source_metrics.get("training_groups") or [])
    return _Record(own | source, mine.voxels | (theirs or set()),
                   mine.by_voxels and theirs is not None, own=(own, mine.voxels),
                   groups=groups | network, own_groups=groups)


def records_voxels(model_path: Path) -> bool:
    """Whether the model file (and the segmentation network inside a classifier) records
    its training images' voxel digests, so that re-stored copies can be found."""
    return _manifest(Path(model_path)).by_voxels


def trained_digests(model_path: Path) -> set[str] | None:
    """The digests of every scan a model was trained on (None: not recorded):
    :func:`~segfew.identity.scan_digest`, or each file's for an older segfew's manifest.

    Read from the model file (``metrics.training_data``) and the ``run.json`` manifest in
    its run folder (:func:`~segfew.runinfo.run_dir_for`), which holds the DICOM series an
    older classifier's own record lacks — unless that folder holds a later run still marked
    running. A classifier's set also holds its segmentation network's (``feature_source``); if that
    network's record is missing, so is the classifier's. A classifier of another tool's
    or an nnU-Net's label maps has only its own. None also for a file that is not a
    readable model file.
    """
    return _manifest(Path(model_path)).digests


def trained_on(image: Path, digests: set[str], hashed: Mapping[str, str] | None = None
               ) -> bool:
    """Whether the scan at ``image`` (a file, a detached header with its data, a DICOM
    series folder) is among ``digests``: its :func:`~segfew.identity.scan_digest` (taken
    from ``hashed``, path → digest, where a run's manifest holds it), or — the manifest of an
    older segfew, which hashed each file — the file's own digest, or every one of a series'
    files'. False for a scan that cannot be read (reading it says why)."""
    image = Path(image)
    digest = (hashed or {}).get(str(image))
    if digest in digests:
        return True
    try:
        files = scan_files(image)
        if not files:
            return False
        if digest is None and scan_digest(image, files) in digests:
            return True
        if image.is_file() and len(files) == 2 and files[1].suffix.lower() == ".mat" \
                and file_digest(files[0]) in digests:
            return True  # an Analyze pair's, as an older segfew recorded it: without its .mat
        each = [image] if image.is_file() else files
        if each == files and len(files) == 1:
            return False  # its own digest was the scan's
        return all(file_digest(f) in digests for f in each)
    except OSError:
        return False


def on_voxels(images: Iterable[Path], recorded: set[str]) -> bool:
    """Whether one of ``images`` has a :func:`~segfew.identity.voxel_digest` among
    ``recorded``, in each form the record holds (an older model file's: version 1 or 2)."""
    versions = sorted({digest_version(d) for d in recorded} & set(VOXEL_HEADS), reverse=True)
    return any((voxel_digest(Path(p), version=v) or "") in recorded
               for p in images for v in versions)


def match_training(model_path: Path, cases: Iterable[Case],
                   hashed: Mapping[str, str] | None = None) -> TrainingMatch:
    """Compare the model's training manifest with the images of ``cases`` (never raises).

    A case leaked when one of its images is a training scan by :func:`trained_on` (its
    file digests; ``hashed``: path → scan digest already computed, a run's manifest), or —
    for a model that records its training images' voxel digests — by :func:`on_voxels`
    (then it is also in ``restored``). Label maps are not compared: only images are test
    data. A case whose patient (``case.group``) is one of the classifier's
    ``metrics.training_groups`` leaked too (``by_patient`` where no image matched: another
    slice or visit of a training patient); where no case names a patient, those of a model
    that records them could not be compared (``patients_unnamed``)."""
    record = _manifest(Path(model_path))
    digests = record.digests
    if digests is None:
        return TrainingMatch(checked=False)
    leaked, restored, network_only, by_patient = set(), set(), set(), set()
    cases = list(cases)
    known = {patient_key(g) for g in record.groups}  # "P007" is "p7" as a spreadsheet saves it
    patients = {c.group for c in cases if c.group is not None and patient_key(c.group) in known}
    own_patients = None if record.own_groups is None else {
        patient_key(g) for g in record.own_groups}
    for case in cases:
        images = [Path(p) for p in case.images]
        if any(trained_on(p, digests, hashed) for p in images):
            leaked.add(case.id)
        elif record.voxels and on_voxels(images, record.voxels):
            leaked.add(case.id)
            restored.add(case.id)
        else:
            if case.group in patients:  # another slice or visit of a training patient
                leaked.add(case.id)
                by_patient.add(case.id)
                if own_patients is not None and patient_key(case.group) not in own_patients:
                    network_only.add(case.id)  # a patient of the network's alone
            continue
        if record.own is not None and not (
                any(trained_on(p, record.own[0], hashed) for p in images)
                or on_voxels(images, record.own[1])):
            network_only.add(case.id)
    return TrainingMatch(checked=True, leaked=sorted(leaked), unrecorded=record.unrecorded,
                         restored=sorted(restored), by_voxels=record.by_voxels,
                         network_only=sorted(network_only), patients=sorted(patients),
                         of_patients=len({c.group for c in cases if c.group is not None}),
                         by_patient=sorted(by_patient), patients_unknown=not record.groups
                         and any(c.group is not None and c.group != c.id for c in cases),
                         patients_unnamed=bool(record.groups and cases) and all(
                             c.group is None for c in cases),
                         training_patients=len(record.groups))
