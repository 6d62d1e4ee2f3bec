"""predict's warning that scans trained the model: counted as evaluate counts them
(tester14 F12) and naming, per model of an ensemble, the one that saw them (tester15 A)."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from segfew.errors import DataWarning
from segfew.identity import scan_digest, voxel_digests
from segfew.inference.paths import predict_paths
from tests.conftest import make_classifier, make_segmenter, save_nifti, scan

MM = np.diag([1.5, 1.5, 3.0, 1.0])


def _recording(model: Path, scans: list[Path]) -> Path:
    """Record in a model file that ``scans`` trained it, as this segfew's pretrain and
    train-classifier do (their digests and their voxels')."""
    payload = torch.load(model, map_location="cpu", weights_only=True)
    meta = json.loads(payload["metadata"])
    meta["metrics"] = {**(meta.get("metrics") or {}),
                       "training_data": sorted(scan_digest(p) for p in scans),
                       "training_voxels": voxel_digests(scans)}
    payload["metadata"] = json.dumps(meta)
    torch.save(payload, model)
    return model


def test_predict_counts_re_stored_copies_as_evaluate_does(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    volume = rng.integers(0, 99, (16, 16, 3)).astype(np.int16)
    train = save_nifti(tmp_path / "train" / "p3.nii.gz", volume, MM)
    model = _recording(make_segmenter(tmp_path / "seg.pt"), [train])
    scans = tmp_path / "scans"
    scans.mkdir()
    shutil.copy(train, scans / "same_bytes.nii.gz")
    nib.save(nib.load(train), scans / "decompressed.nii")
    save_nifti(scans / "fresh.nii.gz", volume[::-1, :, ::-1] + 1, MM)
    said = (r"seg\.pt: 2 of these 3 scans trained the model \(decompressed, same_bytes; "
            r"decompressed: the same voxels, re-stored in other files\)")
    with pytest.warns(DataWarning, match=said):
        out, failed, _ = predict_paths(model, [scans], tmp_path / "pred", device="cpu")
    trained = json.loads((out / "run.json").read_text())
    assert trained["trained_on"]["cases"] == ["decompressed", "same_bytes"] and failed == 0


def test_an_ensembles_warning_names_the_model_that_saw_the_scans(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    pictures = tmp_path / "pictures"
    for name in ("a", "b", "c"):
        save_nifti(pictures / f"{name}.nii.gz", scan(rng), MM)
    other = save_nifti(tmp_path / "other.nii.gz", scan(rng), MM)
    unseen = _recording(make_classifier(tmp_path / "m6.pt"), [other])
    leaky = _recording(make_classifier(tmp_path / "mleak.pt"), sorted(pictures.iterdir()))
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        predict_paths([unseen, leaky], [pictures], tmp_path / "p.csv", device="cpu")
    lines = [str(w.message) for w in said if "trained the model" in str(w.message)]
    assert len(lines) == 1 and "mleak.pt: 3 of these 3 scans trained the model" in lines[0]
    assert "m6.pt" not in lines[0]
    record = json.loads((tmp_path / "p.run.json").read_text())
    by_model = {Path(m["model"]).name: m["cases"] for m in record["trained_on_by_model"]}
    assert by_model == {"m6.pt": [], "mleak.pt": ["a", "b", "c"]}
    assert record["trained_on"]["cases"] == ["a", "b", "c"]


def test_evaluates_ensemble_verdict_names_the_model_that_saw_the_cases() -> None:
    """"8 evaluated case(s) trained the model" of a two-model ensemble named neither."""
    from segfew.evaluation.leakage import LeakageCheck, leakage_record

    clean = LeakageCheck(model="m6.pt", checked=True, by_voxels=True)
    seen = LeakageCheck(model="mleak.pt", checked=True, by_voxels=True, leaked=["a", "b"])
    verdict = leakage_record([clean, seen], allowed=True)["verdict"]
    assert verdict.startswith("LEAKAGE: 2 evaluated case(s) trained the model (mleak.pt)")
    alone = leakage_record([seen], allowed=True)["verdict"]
    assert alone.startswith("LEAKAGE: 2 evaluated case(s) trained the model;")
