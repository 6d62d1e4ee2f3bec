"""A group (patient) holding cases of several classes is said once, in ``split`` and in
``experiment`` alike (the wrong group column, or a labelling error), and never refused;
identical images labelled differently are said to be so."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from segfew.data import split_table
from segfew.data.inspect import inspect_dataset
from segfew.errors import DataWarning
from tests.conftest import save_nifti
from tests.experiment.test_protocol import fake_trainer, make_cases, make_spec

CLASSES = ("normal", "oval")


def _table(root: Path, groups: list[str], classes: list[str]) -> Path:
    """Ten cases ``case000``… with their groups and classes, and a scan of each."""
    for i in range(len(groups)):
        scan = np.random.default_rng(i).integers(0, 100, (4, 4, 3)).astype(np.int16)
        save_nifti(root / "images" / f"case{i:03d}.nii.gz", scan)
    lines = ["id,group,label"] + [f"case{i:03d},{g},{c}"
                                  for i, (g, c) in enumerate(zip(groups, classes, strict=True))]
    table = root / "t.csv"
    table.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return table


def _mixed(caught: list[warnings.WarningMessage]) -> list[DataWarning]:
    return [w.message for w in caught if isinstance(w.message, DataWarning)
            and "several classes" in str(w.message)]


def _split(table: Path, out: Path) -> tuple[list[DataWarning], dict[str, str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        done = split_table(table, out, test_per_class=1, seed=0, images=table.parent / "images",
                           group_column="group")
    sides = {c.id: side for side, part in (("train", done.first), ("test", done.second))
             for c in part}
    return _mixed(caught), sides


def test_a_group_of_two_classes_is_said_once_naming_the_table_group_and_classes(
        tmp_path: Path) -> None:
    groups = ["P1", "P2", "P3", "P4", "P1", "P5", "P6", "P7", "P8", "P9"]
    classes = [CLASSES[i % 2] for i in range(10)]  # P1: case000 normal, case004 normal
    classes[4] = "oval"
    said, sides = _split(_table(tmp_path, groups, classes), tmp_path / "out")
    assert len(said) == 1
    assert said[0].path == tmp_path / "t.csv"
    text = str(said[0])
    assert "P1 (normal: case000; oval: case004)" in text and "--group-column" in text
    assert "identical" not in text
    assert sides["case000"] == sides["case004"]  # not refused: kept on one side


def test_many_mixed_groups_are_named_a_few_then_counted(tmp_path: Path) -> None:
    groups = [f"P{i // 2}" for i in range(10)]  # five patients of two cases, each mixed
    classes = [CLASSES[i % 2] for i in range(10)]
    said, _ = _split(_table(tmp_path, groups, classes), tmp_path / "out")
    assert len(said) == 1
    assert "5 groups" in str(said[0]) and "and 2 more" in str(said[0])


def test_consistent_groups_say_nothing(tmp_path: Path) -> None:
    groups = [f"P{i // 2}" for i in range(10)]
    classes = [CLASSES[(i // 2) % 2] for i in range(10)]
    said, _ = _split(_table(tmp_path, groups, classes), tmp_path / "out")
    assert said == []


def test_identical_images_labelled_differently_are_said_to_be(tmp_path: Path) -> None:
    groups = [f"P{i}" for i in range(10)]
    classes = [CLASSES[i % 2] for i in range(10)]  # case003 is oval, case002 normal
    table = _table(tmp_path, groups, classes)
    images = tmp_path / "images"
    shutil.copyfile(images / "case002.nii.gz", images / "case003.nii.gz")
    said, sides = _split(table, tmp_path / "out")
    assert len(said) == 1
    text = str(said[0])
    assert "identical images labelled differently" in text
    assert "case002 (normal)" in text and "case003 (oval)" in text
    assert sides["case002"] == sides["case003"]


def test_the_experiment_says_it_too(tmp_path: Path) -> None:
    from segfew.experiment.protocol import run_experiment

    cases = make_cases()
    cases[1] = cases[1].__class__(**{**cases[1].__dict__, "target": "hcm"})  # dcm00_es
    spec = make_spec(sizes=[1])
    spec = spec.model_copy(update={"data": spec.data.model_copy(
        update={"table": tmp_path / "labels.csv"})})  # named, not read: the cases are given
    with pytest.warns(DataWarning, match=r"dcm00 \(dcm: dcm00_ed; hcm: dcm00_es\)") as seen:
        run_experiment(spec, tmp_path, fake_trainer, cases=cases)
    said = [str(w.message) for w in seen if "dcm00 (dcm" in str(w.message)]
    assert said[0].startswith(str(tmp_path / "labels.csv"))


def test_inspect_notes_it(tmp_path: Path) -> None:
    groups = ["P1", "P2", "P3", "P4", "P1", "P5", "P6", "P7", "P8", "P9"]
    classes = [CLASSES[i % 2] for i in range(10)]
    classes[4] = "oval"
    table = _table(tmp_path, groups, classes)
    report = inspect_dataset(tmp_path / "images", table=table, group_column="group")
    notes = [p for p in report.problems if "several classes" in p]
    assert len(notes) == 1 and "P1" in notes[0] and notes[0] not in report.fatal_problems


def test_blank_slices_of_different_patients_are_no_copies(tmp_path: Path) -> None:
    """A slice-per-file export (LGG's kaggle_3m) holds all-zero edge slices, byte for byte
    the same in every patient: they join no groups, so patients of two grades stay apart
    and nobody is told of a labelling error."""
    groups = ["P1", "P1", "P2", "P2", "P3", "P3", "P4", "P4"]
    classes = ["G2", "G2", "G3", "G3", "G2", "G2", "G3", "G3"]
    table = _table(tmp_path, groups, classes)
    for i in (0, 2, 4, 6):  # each patient's first slice is blank
        save_nifti(tmp_path / "images" / f"case{i:03d}.nii.gz", np.zeros((4, 4, 3), np.int16))
    mixed, sides = _split(table, tmp_path / "split")
    assert mixed == [] and len(set(sides.values())) == 2
    report = inspect_dataset(tmp_path / "images", table=table, group_column="group")
    assert not any("identical images" in p for p in report.problems)


def test_the_experiment_names_both_tables_when_a_fixed_test_set_is_given(
        tmp_path: Path) -> None:
    """A patient listed in the training table under one class and in the fixed test table
    under another: the warning names both tables, not the training table alone."""
    from segfew.experiment.protocol import run_experiment

    cases = make_cases()
    test = [c.__class__(**{**c.__dict__, "id": c.id + "_t", "target": "nor"})
            for c in cases if c.group == "dcm00"]
    spec = make_spec(sizes=[1], test_table=tmp_path / "test.csv")
    spec = spec.model_copy(update={"data": spec.data.model_copy(
        update={"table": tmp_path / "labels.csv"})})  # named, not read: the cases are given
    with pytest.warns(DataWarning, match=r"dcm00 \(dcm: .*; nor: ") as seen:
        run_experiment(spec, tmp_path / "run", fake_trainer, cases=cases, test_cases=test)
    said = [str(w.message) for w in seen if "dcm00 (dcm" in str(w.message)]
    assert said[0].startswith(f"{tmp_path / 'labels.csv'} and {tmp_path / 'test.csv'}: ")
