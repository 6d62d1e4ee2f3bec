"""What evaluate scores and what its cases count as: copies of one scan and one patient's
cases are one unit of the bootstrap, said with their number; a segmentation image without its
label map is an error row; a class no case holds is named; skipped sub-folders are counted."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import (
    CLASSES,
    invoke,
    make_classifier,
    make_segmenter,
    read_csv,
    save_nifti,
    scan,
)

ARGS = ("--device", "cpu", "--no-progress")


def _width(ci: list[float]) -> float:
    return ci[1] - ci[0]


def test_copies_of_one_scan_are_one_patient_of_a_wider_interval(
        tmp_path: Path, labelled: tuple[Path, Path]) -> None:
    from segfew.metrics import classification_metrics

    images, table = labelled
    lines = table.read_text().splitlines()
    for i in range(5):  # five more ids of s0's file: six cases of one scan
        shutil.copy(images / "s0.nii.gz", images / f"copy{i}.nii.gz")
        lines.append(f"copy{i},{CLASSES[0]}")
    table.write_text("\n".join(lines) + "\n")
    out = tmp_path / "eval"
    said = invoke("evaluate", "--model", str(make_classifier(tmp_path / "clf.pt")), "--table",
                  str(table), "--images", str(images), "--out", str(out), "--bootstrap", "300",
                  *ARGS)
    assert "6 of the evaluated cases are copies of one scan (copy0, copy1, copy2, copy3, …)" \
        in " ".join(said.split())
    assert "scored 11 of 11 cases" in said and "6 patients (groups)" in said
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_groups"] == 6 and metrics["n"] == 11
    assert metrics["copies"] == [{"ids": ["copy0", "copy1", "copy2", "copy3", "copy4", "s0"],
                                  "of": "cases"}]
    rows = read_csv(out / "predictions.csv")  # the same predictions, each case independent
    y_true = [CLASSES.index(r["target"]) for r in rows]
    y_pred = [CLASSES.index(r["predicted"]) for r in rows]
    cases = classification_metrics(y_true, y_pred, None, CLASSES, bootstrap=300)
    assert _width(metrics["ci"]["accuracy"]) > _width(cases["ci"]["accuracy"]) + 0.05


def test_a_group_column_makes_the_patients_the_unit(
        tmp_path: Path, labelled: tuple[Path, Path]) -> None:
    images, table = labelled
    rows = table.read_text().splitlines()
    table.write_text("\n".join([f"{rows[0]},patient",  # two slices per patient, one class
                                *(f"{r},p{i % 3}" for i, r in enumerate(rows[1:]))]) + "\n")
    out = tmp_path / "eval"
    said = invoke("evaluate", "--model", str(make_classifier(tmp_path / "clf.pt")), "--table",
                  str(table), "--images", str(images), "--out", str(out), "--bootstrap", "200",
                  *ARGS)
    assert "scored 6 of 6 cases" in said
    assert "3 patients (groups): the intervals resample patients, not cases" in said
    assert json.loads((out / "metrics.json").read_text())["n_groups"] == 3


def test_groups_of_one_case_each_leave_the_intervals_as_they_were() -> None:
    from segfew.metrics import classification_metrics

    rng = np.random.default_rng(3)
    y_true, y_pred = rng.integers(0, 3, 30), rng.integers(0, 3, 30)
    proba = rng.dirichlet(np.ones(3), 30)
    plain = classification_metrics(y_true, y_pred, proba, CLASSES, bootstrap=200, seed=1)
    own = classification_metrics(y_true, y_pred, proba, CLASSES, bootstrap=200, seed=1,
                                 groups=[f"g{i}" for i in range(30)])
    assert own["ci"] == plain["ci"] and own["n_groups"] == 30
    with pytest.raises(ValueError, match="groups has 2 values for 30 cases"):
        classification_metrics(y_true, y_pred, None, CLASSES, groups=["a", "b"])


@pytest.mark.parametrize("with_table", [False, True])
def test_a_segmentation_image_without_its_label_map_is_an_error_row(
        tmp_path: Path, rng: np.random.Generator, with_table: bool) -> None:
    images, labels = tmp_path / "images", tmp_path / "labels"
    for name in ("a", "b", "c"):
        save_nifti(images / f"{name}.nii.gz", scan(rng, (20, 24, 5)))
        if name != "b":
            save_nifti(labels / f"{name}_seg.nii.gz",
                       rng.integers(0, 3, (20, 24, 5)).astype(np.uint8))
    table = tmp_path / "ids.csv"
    table.write_text("id\na\nb\nc\n")
    out = tmp_path / "eval"
    said = invoke("evaluate", "--model", str(make_segmenter(tmp_path / "seg.pt")), "--images",
                  str(images), "--labels", str(labels), "--out", str(out),
                  *(("--table", str(table)) if with_table else ()), *ARGS, expect=1)
    assert "1 of 3 cases failed" in said
    source = f"the cases of {table}" if with_table else "every case found"  # the scope only
    assert (f"scored 2 of 3 cases ({source}; the other one failed, its own error row)"
            in " ".join(said.split())), said
    rows = {r["id"]: r for r in read_csv(out / "per_case.csv")}
    assert [rows[k]["status"] for k in "abc"] == ["ok", "error", "ok"]
    assert "image without label (looked for b.*, b_gt.*, b_seg.*" in rows["b"]["error"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_scored"] == 2 and metrics["n_failed"] == 1


def test_a_table_of_one_class_names_the_classes_it_lacks(
        tmp_path: Path, labelled: tuple[Path, Path]) -> None:
    images, table = labelled
    rows = table.read_text().splitlines()
    table.write_text("\n".join([rows[0], *(r for r in rows[1:] if r.endswith(CLASSES[0]))])
                     + "\n")
    out = tmp_path / "eval"
    said = invoke("evaluate", "--model", str(make_classifier(tmp_path / "clf.pt")), "--table",
                  str(table), "--images", str(images), "--out", str(out), "--bootstrap", "0",
                  *ARGS)
    words = ("the evaluated cases hold 1 of the model's 3 classes (missing: dog, fox): "
             "balanced accuracy, macro F1 and AUROC say nothing of the missing classes")
    assert f"warning: {table}: {words}" in " ".join(said.split())
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["missing_classes"] == ["dog", "fox"]


@pytest.mark.parametrize("patients", [2, 9])  # 9 in one folder are said in one line
def test_the_scored_line_counts_the_sub_folders_skipped(
        tmp_path: Path, rng: np.random.Generator, patients: int) -> None:
    folders = tmp_path / "by-class"
    for i in range(4):
        save_nifti(folders / CLASSES[i % 3] / f"c{i}.nii.gz", scan(rng))
    for i in range(4, 4 + patients):
        save_nifti(folders / CLASSES[0] / f"patient{i}" / f"c{i}.nii.gz", scan(rng))
    out = tmp_path / "eval"
    said = invoke("evaluate", "--model", str(make_classifier(tmp_path / "clf.pt")), "--images",
                  str(folders), "--out", str(out), "--bootstrap", "0", *ARGS)
    assert (f"scored 4 of 4 cases (the cases found); {patients} sub-folders skipped (listed "
            "above)") in " ".join(said.split())
    assert "every case found" not in said
    skipped = json.loads((out / "metrics.json").read_text())["skipped"]
    assert sum(s["count"] for s in skipped) == patients
    if patients == 2:
        assert sorted(Path(s["path"]).name for s in skipped) == ["patient4", "patient5"]


@pytest.mark.parametrize("resamples", ["2", "199"])
def test_too_few_bootstrap_resamples_are_refused(
        tmp_path: Path, labelled: tuple[Path, Path], resamples: str) -> None:
    """A "95% interval" of a few resamples can miss its own estimate: refused, not printed."""
    images, table = labelled
    out = tmp_path / "eval"
    said = " ".join(invoke(
        "evaluate", "--model", str(make_classifier(tmp_path / "clf.pt")), "--table",
        str(table), "--images", str(images), "--out", str(out), "--bootstrap", resamples,
        *ARGS, expect=2).split())
    assert f"{resamples} resamples are too few for a 95% interval: give at least 200" in said
    assert not out.exists()


def test_no_intervals_says_the_chance_check_is_not_made(
        tmp_path: Path, labelled: tuple[Path, Path]) -> None:
    images, table = labelled
    said = " ".join(invoke(
        "evaluate", "--model", str(make_classifier(tmp_path / "clf.pt")), "--table",
        str(table), "--images", str(images), "--out", str(tmp_path / "eval"), "--bootstrap",
        "0", *ARGS).split())
    assert "no 95% intervals (--bootstrap 0): whether the accuracy is above chance is not" in said
