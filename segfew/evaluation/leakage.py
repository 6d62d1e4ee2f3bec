"""No leakage (SPEC §6): has an evaluated or test case trained the model?

A segmentation network pre-trained on a test patient's masks makes its features on that
patient unrealistically good (how much, on ACDC: docs/benchmarks.md), and a classifier
scored on its own training cases reads as if they were unseen. Every model file records the
digest of each scan it was trained on (``metrics.training_data``; a classifier also carries
its segmentation network's record in ``feature_source``), and its run folder's ``run.json``
holds the manifest, so ``experiment`` and ``evaluate`` compare them with the cases they score.
The comparison is :func:`segfew.inference.training_record.match_training` (``predict``'s
warning counts with it too). A scan's digest (:func:`segfew.identity.scan_digest`) covers a
DICOM series folder's files and a detached header's data file, so a copy under another id or
file name is found. A model file of this segfew also records the digest of each training
image's voxels (``metrics.training_voxels``, :func:`segfew.identity.voxel_digest`), so a
training scan re-stored without changing a voxel (decompressed, recompressed, converted to
another format, saved with another direction of an axis) is found too; for a model file
without them the verdict says that such copies were not looked for. A classifier measuring
another tool's label maps (``--masks``) or an nnU-Net's is checked against its own
manifest; that tool's training data is not recorded, and the verdict says so. A classifier
trained from a table that names patients (a group column) records them
(``metrics.training_groups``, :func:`training_groups`): an evaluated case of such a patient
— another slice or visit of a training patient — is leakage too; evaluated cases that name
no patients (a table without its patient column) cannot be compared so, and the verdict
says so.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segfew.data.case import Case
from segfew.errors import DataError
from segfew.inference.nnunet import holds_nnunet_plans
from segfew.inference.training_record import (
    TrainingMatch,
    match_training,
    on_voxels,
    records_voxels,
    trained_digests,
    trained_on,
)

__all__ = ["LeakageCheck", "check_leakage", "check_models", "compared_words", "find_leakage",
           "lacking_words", "leakage_record", "on_voxels", "records_voxels", "restored_note",
           "trained_digests", "trained_on", "training_groups", "unnamed_words"]


@dataclass(frozen=True)
class LeakageCheck(TrainingMatch):
    """The verdict of one model file (``model``) against the cases it scores: what
    :func:`segfew.inference.training_record.match_training` found, in words.

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
    could not be looked for; ``patients_unnamed``: the other way round, the model records
    ``training_patients`` patients and the evaluated cases name none (a table without its
    patient column), so their other cases could not be looked for either.
    """

    model: str = field(kw_only=True)

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
                    "is not recorded" + unnamed_words(self.training_patients)
                    * self.patients_unnamed)
        if not self.leaked:
            return (f"{self.model}: no evaluated case trained it as its scan "
                    f"({compared_words(self.by_voxels)}){UNKNOWN_PATIENTS * self.patients_unknown}"
                    f"{unnamed_words(self.training_patients) * self.patients_unnamed}")
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
                "patients_unknown": self.patients_unknown, "patients_unnamed":
                self.patients_unnamed, "training_patients": self.training_patients,
                "verdict": self.describe()}


#: said where the evaluated cases name patients and the model file records none
UNKNOWN_PATIENTS = ("; other cases of its training patients (slices, visits) could not be "
                    "looked for: the model file records no patients (pretrain and "
                    "train-classifier record them from a table's --group-column)")


def unnamed_words(patients: int) -> str:
    """Said where the model file records ``patients`` training patients and the evaluated
    cases name none: their other cases (slices, visits) could not be looked for."""
    return (f"; but other cases (slices, visits) of its {patients} training patient(s) could "
            "not be looked for: the evaluated cases name no patients (give the table's "
            "patient column: --group-column)")


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


def find_leakage(model_path: Path, cases: Iterable[Case],
                 hashed: Mapping[str, str] | None = None) -> LeakageCheck:
    """:func:`segfew.inference.training_record.match_training` as the verdict of
    ``model_path`` (never raises): a case leaked when one of its images is a training scan
    by its file digests (``hashed``: path → scan digest already computed) or its voxels
    (``restored``), or its patient trained the classifier (``by_patient``)."""
    return LeakageCheck(model=str(model_path),
                        **vars(match_training(Path(model_path), cases, hashed)))


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
    model), ``patients_unchecked`` (other cases of training patients could not be looked
    for: the model or the evaluated cases name no patients), ``verdict`` (one sentence) and
    each model's check."""
    leaked = sorted({i for c in checks for i in c.leaked})
    restored = sorted({i for c in checks for i in c.restored})
    checked = all(c.checked for c in checks)
    by_voxels = checked and all(c.by_voxels for c in checks)
    others = {i for c in checks for i in c.by_patient} - {i for c in checks for i in c.leaked
                                                          if i not in c.by_patient}
    patients = sorted({p for c in checks for p in c.patients})
    if leaked:
        guilty = [Path(c.model).name for c in checks if c.leaked]  # of an ensemble: which
        which = f" ({', '.join(guilty)})" if len(checks) > 1 else ""
        said = [f"{len(leaked) - len(others)} evaluated case(s) trained the model{which}"] * (
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
        unnamed = [c.training_patients for c in checks if c.patients_unnamed]
        unknown = (UNKNOWN_PATIENTS * any(c.patients_unknown for c in checks)
                   + (unnamed_words(max(unnamed)) if unnamed else ""))
        verdict = f"no evaluated case trained the model as its scan ({how}){unknown}"
    else:
        verdict = ("not checked: " + "; ".join(c.describe() for c in checks if not c.checked))
    return {"checked": checked, "leaked": leaked, "restored": restored, "by_voxels": by_voxels,
            "patients": patients, "patients_unchecked": any(
                c.patients_unknown or c.patients_unnamed for c in checks),
            "allowed": allowed, "verdict": verdict, "models": [c.as_dict() for c in checks]}
