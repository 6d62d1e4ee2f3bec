"""No leakage (SPEC §6): has an evaluated or test case trained the model?

A segmentation network pre-trained on a test patient's masks makes its features on that
patient unrealistically good (how much, on ACDC: docs/benchmarks.md), and a classifier
scored on its own training cases reads as if they were unseen. Every model file records the
digest of each scan it was trained on (``metrics.training_data``; a classifier also carries
its segmentation network's record in ``feature_source``), and its run folder's ``run.json``
holds the manifest, so ``experiment`` and ``evaluate`` compare them with the cases they score.
A scan's digest (:func:`segfew.runinfo.scan_digest`) covers a DICOM series folder's files and
a detached header's data file, so a copy under another id or file name is found. A model file
of this segfew also records the digest of each training image's voxels
(``metrics.training_voxels``, :func:`segfew.runinfo.voxel_digest`), so a training scan
re-stored without changing a voxel (decompressed, recompressed, converted to another format)
is found too; for a model file without them the verdict says that such copies were not
looked for. A classifier measuring another tool's label maps (``--masks``) or an nnU-Net's
is checked against its own manifest; that tool's training data is not recorded, and the
verdict says so. A classifier trained from a table that names patients (a group column)
records them (``metrics.training_groups``, :func:`training_groups`): an evaluated case of
such a patient — another slice or visit of a training patient — is leakage too.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segfew.data.case import Case, patient_key
from segfew.errors import DataError, ModelFileError
from segfew.inference.masks import EXTERNAL
from segfew.inference.nnunet import NNUNET, holds_nnunet_plans
from segfew.modelfile import read_model_file
from segfew.runinfo import (
    file_digest,
    legacy_run_dir,
    run_dir_for,
    scan_digest,
    scan_files,
    voxel_digest,
)

__all__ = ["LeakageCheck", "check_leakage", "check_models", "compared_words", "find_leakage",
           "lacking_words", "leakage_record", "records_voxels", "restored_note",
           "trained_digests", "trained_on", "training_groups"]


@dataclass(frozen=True)
class LeakageCheck:
    """The verdict of one model file against the cases it scores.

    ``checked`` is False when the model file (or the segmentation network inside a
    classifier) records no training data: nothing could be compared. ``leaked`` are the ids
    of the cases whose images trained it; ``restored`` those of them found by their voxels
    only (a training scan re-stored in another file). ``by_voxels``: every record compared
    holds its training images' voxel digests (False: an older model file, whose re-stored
    copies cannot be found). ``unrecorded`` names what the classifier measures whose
    training data is not recorded (another tool's label maps, an nnU-Net): then only the
    classifier's own training cases were compared. ``network_only``: the leaked cases that
    trained only the segmentation network inside a classifier, not the classifier itself.
    ``patients``: the evaluated patients (group values) whose cases trained the classifier,
    of ``of_patients`` evaluated; ``by_patient``: the leaked cases found by their patient
    only (no training scan among their images). ``patients_unknown``: the evaluated cases
    name patients but the model file records none of its own, so their other cases
    could not be looked for.
    """

    model: str
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

    def trained(self) -> str:
        """Who was trained on the leaked scans, in words: the model, or the segmentation
        network inside it where the classifier itself trained on none of them."""
        scans = set(self.leaked) - set(self.by_patient)
        if scans and set(self.network_only) == scans:
            return "the segmentation network inside the classifier was pre-trained"
        return "the model was trained"

    def leak_words(self, role: str = "evaluated") -> str:
        """The leak in one clause or two: the ``role`` (evaluated, test) cases whose scans
        trained the model, then the patients other cases of whom trained it (how many, one
        named)."""
        scans = [i for i in self.leaked if i not in set(self.by_patient)]
        words = [f"{self.trained()} on {len(scans)} {role} case(s) ({_shown(scans)}"
                 f"{restored_note(self.restored, scans)})"] if scans else []
        if self.by_patient:
            who = ("the segmentation network inside the classifier"
                   if set(self.by_patient) <= set(self.network_only) else "the model")
            words.append(_patient_words(self.patients, self.of_patients, len(self.by_patient),
                                        who, role))
        return "; ".join(words)

    def describe(self) -> str:
        """One sentence for a log, a report or ``metrics.json``."""
        if not self.checked:
            return (f"{self.model}: the model file records no training data, so the check "
                    "that no evaluated case trained it could not be made")
        if not self.leaked and self.unrecorded:
            return (f"{self.model}: no evaluated case trained the classifier as its scan "
                    f"({compared_words(self.by_voxels)}); whether any trained {self.unrecorded} "
                    "is not recorded")
        if not self.leaked:
            return (f"{self.model}: no evaluated case trained it as its scan "
                    f"({compared_words(self.by_voxels)}){UNKNOWN_PATIENTS * self.patients_unknown}")
        if self.by_patient:
            return f"{self.model}: {self.leak_words()}"
        return (f"{self.model}: {self.trained()} on {len(self.leaked)} evaluated case(s): "
                f"{self.named()}")

    def named(self) -> str:
        """The leaked ids, and which of them are training scans re-stored in other files."""
        return _shown(self.leaked) + restored_note(self.restored, self.leaked)

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "checked": self.checked, "leaked": list(self.leaked),
                "restored": list(self.restored), "network_only": list(self.network_only),
                "by_voxels": self.by_voxels, "patients": list(self.patients), "by_patient":
                list(self.by_patient), "unrecorded": self.unrecorded,
                "patients_unknown": self.patients_unknown, "verdict": self.describe()}


#: said where the evaluated cases name patients and the model file records none
UNKNOWN_PATIENTS = ("; other cases of its training patients (slices, visits) could not be "
                    "looked for: the model file records no patients (pretrain and "
                    "train-classifier record them from a table's --group-column)")


def _patient_words(patients: Sequence[str], of: int, cases: int, who: str = "the model",
                   role: str = "evaluated") -> str:  # leak_words's
    return (f"other cases of {len(patients)} of the {of} {role} patients trained {who} "
            f"(e.g. {patients[0]}): {cases} {role} case(s) are theirs")


def training_groups(cases: Sequence[Case]) -> dict[str, list[str]]:
    """``{"training_groups": [...]}``: the patients (a table's group column) of the training
    ``cases``, for :func:`find_leakage`; {} where no case names a patient but itself."""
    named = {c.group for c in cases if c.group is not None and c.group != c.id}
    return {"training_groups": sorted({c.group for c in cases if c.group})} if named else {}


def compared_words(by_voxels: bool, lacking: str = "this model file records none") -> str:
    """What the check compared, in words: by voxels too, or by file bytes only and why
    (``lacking``: which model records no voxel digests); either way, that a copy altered
    (rescaled, shifted, cropped, noisy) is not found by it."""
    altered = ("; a copy altered (intensities rescaled, shifted, cropped, noisy) is not "
               "found: `segfew split` and `inspect` warn of such near copies")
    if by_voxels:
        return ("only the same file bytes or the same voxels: every image compared with the "
                f"training scans by its file's SHA-256 and by its voxels{altered}")
    return ("only the same file bytes: SHA-256 of every image file compared; re-stored copies "
            "of training scans (decompressed, recompressed, converted) can only be found for "
            f"models that record their training images' voxel digests, and {lacking}: retrain "
            f"to have them looked for{altered}")


def lacking_words(names: Sequence[str]) -> str:
    """``"a.pt records none"``, ``"a.pt, b.pt record none"``."""
    return f"{', '.join(names)} record{'s' if len(names) == 1 else ''} none"


def restored_note(ids: Sequence[str], leaked: Sequence[str] = ()) -> str:
    """What to add after the leaked ids ``leaked`` of those found by their voxels only: ""
    for none, ``": the same voxels …"`` when they are all of ``leaked``, else
    ``"; X, Y: the same voxels …"``."""
    if not ids:
        return ""
    if set(ids) == set(leaked):
        return ": the same voxels as training scans, re-stored in other files"
    return f"; {_shown(ids)}: the same voxels as a training scan, re-stored in another file"


def _shown(ids: Sequence[str], most: int = 8) -> str:
    return ", ".join(ids[:most]) + (f" and {len(ids) - most} more" if len(ids) > most else "")


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
    :func:`~segfew.runinfo.scan_digest`, or each file's for an older segfew's manifest.

    Read from the model file (``metrics.training_data``) and the ``run.json`` manifest in
    its run folder (:func:`~segfew.runinfo.run_dir_for`), which holds the DICOM series an
    older classifier's own record lacks — unless that folder holds a later run still marked
    running. A classifier's set also holds its segmentation network's (``feature_source``); if that
    network's record is missing, so is the classifier's. A classifier of another tool's
    or an nnU-Net's label maps has only its own. None also for a file that is not a
    readable model file.
    """
    return _manifest(Path(model_path)).digests


def trained_on(image: Path, digests: set[str]) -> bool:
    """Whether the scan at ``image`` (a file, a detached header with its data, a DICOM
    series folder) is among ``digests``: its :func:`~segfew.runinfo.scan_digest`, or — the
    manifest of an older segfew, which hashed each file — the file's own digest, or every
    one of a series' files'. False for a scan that cannot be read (reading it says why)."""
    image = Path(image)
    try:
        files = scan_files(image)
        if not files:
            return False
        if scan_digest(image, files) in digests:
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


def find_leakage(model_path: Path, cases: Iterable[Case]) -> LeakageCheck:
    """Compare the model's training manifest with the images of ``cases`` (never raises).

    A case leaked when one of its images is a training scan by :func:`trained_on` (its
    file digests), or — for a model that records its training images' voxel digests — by
    :func:`~segfew.runinfo.voxel_digest` (then it is also in ``restored``). Label maps are
    not compared: only images are test data. A case whose patient (``case.group``) is one of
    the classifier's ``metrics.training_groups`` leaked too (``by_patient`` where no image
    matched: another slice or visit of a training patient)."""
    record = _manifest(Path(model_path))
    digests = record.digests
    if digests is None:
        return LeakageCheck(str(model_path), checked=False)
    leaked, restored, network_only, by_patient = set(), set(), set(), set()
    cases = list(cases)
    known = {patient_key(g) for g in record.groups}  # "P007" is "p7" as a spreadsheet saves it
    patients = {c.group for c in cases if c.group is not None and patient_key(c.group) in known}
    own_patients = None if record.own_groups is None else {
        patient_key(g) for g in record.own_groups}
    for case in cases:
        images = [Path(p) for p in case.images]
        if any(trained_on(p, digests) for p in images):
            leaked.add(case.id)
        elif record.voxels and any(voxel_digest(p) in record.voxels for p in images):
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
                any(trained_on(p, record.own[0]) for p in images)
                or any(voxel_digest(p) in record.own[1] for p in images)):
            network_only.add(case.id)
    return LeakageCheck(str(model_path), checked=True, leaked=sorted(leaked),
                        unrecorded=record.unrecorded, restored=sorted(restored),
                        by_voxels=record.by_voxels, network_only=sorted(network_only),
                        patients=sorted(patients), by_patient=sorted(by_patient),
                        of_patients=len({c.group for c in cases if c.group is not None}),
                        patients_unknown=not record.groups and any(
                            c.group is not None and c.group != c.id for c in cases))


def check_models(model_paths: Sequence[Path], cases: Sequence[Case], allow: bool = False
                 ) -> list[LeakageCheck]:
    """:func:`find_leakage` of every model file; an overlap is a one-line DataError naming the
    cases unless ``allow`` (then the caller records and shows the verdicts)."""
    checks = [find_leakage(Path(p), cases) for p in model_paths]
    for check in checks:
        if check.leaked and not allow:
            alike = set(check.leaked) <= set(check.by_patient)  # by the group values only
            raise DataError(f"{check.leak_words()}; a score on them is not a test — evaluate "
                            "other cases, or pass --allow-leakage to score them with a warning"
                            + " (also when its patients are another cohort's, numbered alike)"
                            * alike, check.model)
    return checks


def check_leakage(model_path: Path, test_cases: Iterable[Case], allow: bool = False
                  ) -> LeakageCheck:
    """Which test cases' images (by SHA-256) trained the network at ``model_path``.

    SPEC §6: a test case's voxel labels must not reach training. An overlap is a one-line
    DataError naming the cases, or — with ``allow`` — a warning (the check is returned so
    the run can record it). A network whose training data is not recorded is a warning:
    nothing can be checked.
    """
    check = find_leakage(Path(model_path), test_cases)
    if not check.checked:
        maps = Path(model_path).is_dir() and not holds_nnunet_plans(model_path)  # --masks
        warnings.warn(f"{model_path}: " + ("label maps of another tool: whether a test case "
                      "trained the tool that made them is not recorded" if maps else "no "
                      "record of the network's training data; cannot check that no test case "
                      "trained it"), stacklevel=2)
        return check
    if check.leaked:
        what = check.leak_words("test") if check.by_patient else (
            f"the segmentation network was trained on {len(check.leaked)} test case(s) "
            f"({check.named()})")
        message = (f"{what}; pre-train per repetition (pretrain = <spec>) or on a disjoint "
                   "pool, or set allow_leakage = true")
        if not allow:
            raise DataError(message, model_path)
        warnings.warn(f"{model_path}: LEAKAGE: {message}", stacklevel=2)
    return check


def leakage_record(checks: Sequence[LeakageCheck], allowed: bool) -> dict[str, Any]:
    """What ``metrics.json`` keeps of the checks: ``checked`` (every model's manifest was
    compared), ``leaked`` (ids of evaluated cases that trained a model), ``restored`` (those
    of them found by their voxels only), ``by_voxels`` (every model records its training
    images' voxel digests: re-stored copies were looked for), ``allowed``
    (``--allow-leakage``), ``patients`` (evaluated patients whose other cases trained a
    model), ``verdict`` (one sentence) and each model's check."""
    leaked = sorted({i for c in checks for i in c.leaked})
    restored = sorted({i for c in checks for i in c.restored})
    checked = all(c.checked for c in checks)
    by_voxels = checked and all(c.by_voxels for c in checks)
    others = {i for c in checks for i in c.by_patient} - {i for c in checks for i in c.leaked
                                                          if i not in c.by_patient}
    patients = sorted({p for c in checks for p in c.patients})
    if leaked:
        said = [f"{len(leaked) - len(others)} evaluated case(s) trained the model"] * (
            len(others) < len(leaked))
        if others:
            said.append(_patient_words(patients, max(c.of_patients for c in checks), len(others)))
        verdict = ("LEAKAGE: " + "; ".join(said) + "; their scores are not a test"
                   + (f" ({len(restored)} of them the same voxels as a training scan, re-stored "
                      f"in another file: {_shown(restored)})" if restored else ""))
    elif checked and any(c.unrecorded for c in checks):
        verdict = "; ".join(c.describe() for c in checks)
    elif checked:
        lacking = [Path(c.model).name for c in checks if not c.by_voxels]
        how = compared_words(by_voxels, lacking_words(lacking))
        unknown = UNKNOWN_PATIENTS * any(c.patients_unknown for c in checks)
        verdict = f"no evaluated case trained the model as its scan ({how}){unknown}"
    else:
        verdict = ("not checked: " + "; ".join(c.describe() for c in checks if not c.checked))
    return {"checked": checked, "leaked": leaked, "restored": restored, "by_voxels": by_voxels,
            "patients": patients, "allowed": allowed, "verdict": verdict,
            "models": [c.as_dict() for c in checks]}
