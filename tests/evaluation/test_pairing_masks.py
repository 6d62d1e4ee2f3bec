"""Two label maps for one image in a ``--masks`` folder (``<id>_seg`` beside ``<id>``: an
expert's map and a draft): predict, evaluate and train-classifier refuse to choose by name
order, as ``inspect --labels`` does; a batch keeps its other cases."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import invoke

RUN = ("--threads", "1", "--no-progress")


@pytest.fixture
def masks(phantoms: Path, tmp_path: Path) -> Path:
    out = shutil.copytree(phantoms / "labels", tmp_path / "masks")
    (out / "label_names.json").write_text(json.dumps(
        {"label_names": ["background", "wall", "cavity", "blob"]}))
    return out


def _draft(masks: Path) -> None:
    """A second map of case000, named ``case000.nii.gz`` beside its ``case000_seg``."""
    shutil.copy(masks / "case000_seg.nii.gz", masks / "case000.nii.gz")


def test_predict_and_evaluate_make_the_ambiguous_case_an_error_row(
        phantoms: Path, masks: Path, tmp_path: Path) -> None:
    clf = tmp_path / "clf.pt"
    invoke("train-classifier", "--table", str(phantoms / "labels.csv"), "--images",
           str(phantoms / "images"), "--framework", "measures", "--masks", str(masks),
           "--out", str(clf), "--no-cache", *RUN)
    _draft(masks)
    invoke("predict", "--model", str(clf), "--input", str(phantoms / "images"), "--masks",
           str(masks), "--out", str(tmp_path / "p.csv"), *RUN, expect=1)
    rows = {r["id"]: r for r in csv.DictReader((tmp_path / "p.csv").open())}
    assert rows["case000"]["status"] == "error"
    assert ("several label files for 'case000': case000.nii.gz, case000_seg.nii.gz"
            in rows["case000"]["error"])
    assert all(r["status"] == "ok" for i, r in rows.items() if i != "case000")

    out = tmp_path / "ev"
    invoke("evaluate", "--model", str(clf), "--table", str(phantoms / "labels.csv"),
           "--images", str(phantoms / "images"), "--masks", str(masks), "--out", str(out),
           "--bootstrap", "0", "--allow-leakage", *RUN, expect=1)
    table = {r["id"]: r for r in csv.DictReader((out / "predictions.csv").open())}
    assert table["case000"]["status"] == "error"
    assert "several label files for 'case000'" in table["case000"]["error"]
    assert json.loads((out / "metrics.json").read_text())["n_scored"] == len(table) - 1


def test_train_classifier_refuses_two_maps_for_one_image(
        phantoms: Path, masks: Path, tmp_path: Path) -> None:
    _draft(masks)
    said = " ".join(invoke(
        "train-classifier", "--table", str(phantoms / "labels.csv"), "--images",
        str(phantoms / "images"), "--framework", "measures", "--masks", str(masks),
        "--out", str(tmp_path / "clf.pt"), "--no-cache", *RUN, expect=2).split())
    assert "several label files for 'case000': case000.nii.gz, case000_seg.nii.gz" in said
    assert not (tmp_path / "clf.pt").exists()
