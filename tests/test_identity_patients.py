"""A model that records its training patients, evaluated on cases that name none: other
cases of those patients could not be looked for, and the verdict says so (tester15 E)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from segfew.data.case import Case
from segfew.evaluation.leakage import find_leakage, leakage_record
from segfew.identity import scan_digest
from tests.conftest import make_segmenter, save_nifti, scan


def _model(tmp_path: Path, groups: list[str]) -> Path:
    trained = save_nifti(tmp_path / "train" / "p1_s0.nii.gz", scan(np.random.default_rng(0)))
    model = make_segmenter(tmp_path / "seg.pt")
    payload = torch.load(model, map_location="cpu", weights_only=True)
    meta = json.loads(payload["metadata"])
    meta["metrics"] = {"training_data": [scan_digest(trained)], "training_groups": groups}
    payload["metadata"] = json.dumps(meta)
    torch.save(payload, model)
    return model


def test_cases_naming_no_patients_cannot_be_compared_with_the_training_patients(
        tmp_path: Path) -> None:
    model = _model(tmp_path, ["p1", "p2"])
    image = save_nifti(tmp_path / "test" / "p1_s2.nii.gz", scan(np.random.default_rng(9)))
    check = find_leakage(model, [Case("p1_s2", (image,))])  # a table without its patients
    assert check.leaked == [] and check.patients_unnamed and check.training_patients == 2
    assert ("other cases (slices, visits) of its 2 training patient(s) could not be looked "
            "for: the evaluated cases name no patients") in check.describe()
    record = leakage_record([check], allowed=False)
    assert record["patients_unchecked"] is True
    assert "the evaluated cases name no patients" in record["verdict"]
    assert record["models"][0]["patients_unnamed"] is True


def test_cases_that_name_patients_are_compared_as_before(tmp_path: Path) -> None:
    model = _model(tmp_path, ["p1", "p2"])
    image = save_nifti(tmp_path / "test" / "x.nii.gz", scan(np.random.default_rng(9)))
    named = find_leakage(model, [Case("p1_s2", (image,), group="p1")])
    assert named.by_patient == ["p1_s2"] and not named.patients_unnamed
    by_id = find_leakage(model, [Case("p7", (image,), group="p7")])  # ids that name patients
    assert by_id.leaked == [] and not by_id.patients_unnamed
    assert "could not be looked for" not in leakage_record([by_id], allowed=False)["verdict"]
    none = find_leakage(_model(tmp_path / "n", []), [Case("a", (image,))])
    assert not none.patients_unnamed and not leakage_record([none], False)["patients_unchecked"]
