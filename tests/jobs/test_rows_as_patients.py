"""Framework measures fitted from a table that names no patients: its inner cross-validation
takes each row as a patient, so slices of one patient can sit on both sides of a fold and
its nested estimate reads high. It says so, at training and in what predict says of it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from segfew.inference.fit_measures import estimate_caveat
from segfew.modelfile import read_model_file
from tests.conftest import invoke


def _train(phantoms: Path, tmp_path: Path, table: Path) -> tuple[str, Path]:
    masks = shutil.copytree(phantoms / "labels", tmp_path / "masks")
    (masks / "label_names.json").write_text(json.dumps(
        {"label_names": ["background", "wall", "cavity", "blob"]}))
    out = tmp_path / "clf.pt"
    said = invoke("train-classifier", "--table", str(table), "--images",
                  str(phantoms / "images"), "--framework", "measures", "--masks", str(masks),
                  "--out", str(out), "--threads", "1", "--no-progress", "--no-cache")
    return " ".join(said.split()), out


def test_a_table_without_patients_is_said_and_marks_the_nested_estimate(
        phantoms: Path, tmp_path: Path) -> None:
    table = tmp_path / "rows.csv"  # the phantoms' table less its group column
    lines = (phantoms / "labels.csv").read_text().splitlines()
    table.write_text("\n".join(",".join(line.split(",")[:2]) for line in lines) + "\n")
    said, model = _train(phantoms, tmp_path, table)
    assert "each row is taken as its own patient, so a fold of the cross-validation" in said
    assert "WARNING: the table names no patients, so each row was taken as one" in said
    metrics = read_model_file(model)[0].metrics or {}
    assert metrics["measures_nested"]["rows_as_patients"] is True
    caveat = estimate_caveat(metrics) or ""  # predict says it before any answer
    assert "took each training row as its own patient" in caveat or "chance" in caveat


def test_a_table_with_patients_says_nothing_of_it(phantoms: Path, tmp_path: Path) -> None:
    said, model = _train(phantoms, tmp_path, phantoms / "labels.csv")
    assert "taken as its own patient" not in said and "names no patients" not in said
    metrics = read_model_file(model)[0].metrics or {}
    assert "rows_as_patients" not in metrics["measures_nested"]
