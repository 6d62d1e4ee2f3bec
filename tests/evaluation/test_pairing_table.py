"""Which truth an evaluation's table gives: a classifier's class column is the one its model
was trained on, said and recorded; two rows of a segmentation table never select one scan."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from segfew.errors import DataError, DataWarning
from segfew.evaluation.evaluate import evaluate_paths
from tests.conftest import (
    CLASSES,
    invoke,
    make_classifier,
    make_segmenter,
    read_csv,
    save_nifti,
    scan,
)

RUN = ("--bootstrap", "0", "--device", "cpu", "--no-progress")


def _trained_on(model: Path, column: str) -> Path:
    """``model`` as if train-classifier had read its classes from ``column``."""
    payload = torch.load(model, map_location="cpu", weights_only=True)
    meta = json.loads(payload["metadata"])
    meta["spec"] = {"data": {"label_column": column}}
    payload["metadata"] = json.dumps(meta)
    torch.save(payload, model)
    return model


def _two_readings(tmp_path: Path, rng: np.random.Generator, grade: str = "grade") -> Path:
    """Six scans; a table with the model's column ``grade``, a second reading ``class`` that
    disagrees on every row, and a patient column."""
    lines = [f"id,{grade},class,patient"]
    for i in range(6):
        save_nifti(tmp_path / "scans" / f"s{i}.nii.gz", scan(rng))
        lines.append(f"s{i},{CLASSES[i % 3]},{CLASSES[(i + 1) % 3]},p{i}")
    table = tmp_path / "t.csv"
    table.write_text("\n".join(lines) + "\n")
    return table


def test_the_truth_is_the_column_the_model_was_trained_on_said_and_recorded(
        tmp_path: Path, rng: np.random.Generator) -> None:
    table = _two_readings(tmp_path, rng)
    model = _trained_on(make_classifier(tmp_path / "clf.pt"), "grade")
    out = tmp_path / "ev"
    said = " ".join(invoke("evaluate", "--model", str(model), "--table", str(table),
                           "--images", str(tmp_path / "scans"), "--out", str(out), *RUN).split())
    assert "truth: column 'grade' of t.csv (the column the model was trained on)" in said
    assert "patients: column 'patient'" in said
    rows = read_csv(out / "predictions.csv")
    assert [r["target"] for r in rows] == [CLASSES[i % 3] for i in range(6)]
    columns = {"label": "grade", "group": "patient",
               "label_source": "the column the model was trained on"}
    assert json.loads((out / "metrics.json").read_text())["columns"] == columns
    assert json.loads((out / "run.json").read_text())["columns"] == columns


def test_a_given_label_column_wins_and_a_missing_trained_column_is_warned(
        tmp_path: Path, rng: np.random.Generator) -> None:
    table = _two_readings(tmp_path, rng, grade="who_grade")
    model = _trained_on(make_classifier(tmp_path / "clf.pt"), "grade")
    with pytest.warns(DataWarning, match="trained on class column 'grade', which this table "
                                         "lacks: scoring against column 'class'"):
        _, metrics = evaluate_paths(model, tmp_path / "scans", tmp_path / "ev", table=table,
                                    bootstrap=0, device="cpu")
    assert metrics["columns"] == {"label": "class", "group": "patient",
                                  "label_source": "named like a class column"}
    _, metrics = evaluate_paths(model, tmp_path / "scans", tmp_path / "ev2", table=table,
                                label_column="who_grade", bootstrap=0, device="cpu")
    assert metrics["columns"]["label"] == "who_grade"


def test_a_scan_selected_by_two_rows_of_a_segmentation_table_is_refused(
        tmp_path: Path, rng: np.random.Generator) -> None:
    model = make_segmenter(tmp_path / "seg.pt")
    images, labels = tmp_path / "images", tmp_path / "labels"
    truth = np.zeros((20, 24, 5), np.uint8)
    truth[2:9, 3:12, :3] = 1
    for name in ("p1_20000917", "p2_20010817"):
        save_nifti(images / f"{name}.nii.gz", scan(rng, (20, 24, 5)))
        save_nifti(labels / f"{name}.nii.gz", truth)
    table = tmp_path / "t.csv"
    table.write_text("id\np1\np1_20000917\np2\n")
    with pytest.raises(DataError, match="the rows 'p1' and 'p1_20000917' both select the "
                                        "scan 'p1_20000917'"):
        evaluate_paths(model, images, tmp_path / "ev", table=table, labels=labels,
                       device="cpu")
    assert not (tmp_path / "ev" / "metrics.json").exists()
    for twice in ("id\np1_20000917\np2\np1_20000917\n",  # one id twice; with its suffix
                  "id\np1_20000917\np2\np1_20000917.nii.gz\n"):
        table.write_text(twice)
        with pytest.raises(DataError, match=r"duplicate case id 'p1_20000917' \(rows 2 and 4\)"):
            evaluate_paths(model, images, tmp_path / "ev", table=table, labels=labels,
                           device="cpu")
    table.write_text("id\np1\np2\n")  # one row each: both scored once
    _, metrics = evaluate_paths(model, images, tmp_path / "ev", table=table, labels=labels,
                                device="cpu")
    assert [c["id"] for c in metrics["per_case"]] == ["p1_20000917", "p2_20010817"]
