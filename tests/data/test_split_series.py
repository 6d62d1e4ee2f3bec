"""A DICOM series whose files lie in several folders (a CD export capping files per folder)
is refused in each folder, never read as separate half-volume cases."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from segfew.data import collect_cases, find_image_cases
from segfew.data.inspect import inspect_dataset
from segfew.errors import DataError
from tests.conftest import invoke, make_segmenter, read_csv, save_dicom_series, save_nifti

UID = "1.2.826.0.1.3680043.2.1125.1"  # conftest's series


def _exam(root: Path, cut: int = 5) -> Path:
    """``root/exam``: one series of 10 slices, slices 1..cut in ``part1`` and the rest in
    ``part2``; beside them a good NIfTI scan and a whole series of another UID."""
    rng = np.random.default_rng(0)
    whole = save_dicom_series(root / "whole", (rng.random((12, 12, 10)) * 100).astype(np.int16))
    exam = root / "exam"
    for part, names in (("part1", range(cut)), ("part2", range(cut, 10))):
        (exam / part).mkdir(parents=True)
        for z in names:
            shutil.move(whole / f"slice{z:03d}.dcm", exam / part / f"slice{z:03d}.dcm")
    other = save_dicom_series(exam / "other", (rng.random((12, 12, 4)) * 100).astype(np.int16))
    for f in other.iterdir():
        ds = pydicom.dcmread(f)
        ds.SeriesInstanceUID = "1.2.826.0.1.3680043.2.1125.77"
        ds.save_as(f)
    save_nifti(exam / "good.nii.gz", (rng.random((12, 12, 4)) * 100).astype(np.float32))
    return exam


def test_a_split_series_stops_the_commands_that_need_every_case(tmp_path: Path) -> None:
    exam = _exam(tmp_path)
    with pytest.raises(DataError, match=rf"DICOM series {UID} continues in \S*part2 "
                                        r"\(5 of its 10 files\): put the series' files in one"):
        find_image_cases(exam, recursive=True)


def test_each_folder_of_a_split_series_is_an_error_row_the_others_are_kept(
        tmp_path: Path) -> None:
    exam = _exam(tmp_path, cut=9)  # part2 holds one file: a case of its own, refused too
    cases = {c.id: c for c in find_image_cases(exam, recursive=True, keep_incomplete=True)}
    assert sorted(cases) == ["good", "other", "part1", "slice009"]
    assert cases["good"].problem is None and cases["other"].problem is None
    assert "continues in" in str(cases["part1"].problem)
    assert f"{exam / 'part2'} (1 of its 10 files)" in str(cases["part1"].problem)
    assert f"{exam / 'part1'} (9 of its 10 files)" in str(cases["slice009"].problem)


def test_two_inputs_holding_one_series_are_refused_both(tmp_path: Path) -> None:
    exam = _exam(tmp_path)
    cases = collect_cases([exam / "part1", exam / "part2", exam / "other"])
    problems = {c.id: c.problem for c in cases}
    assert problems["other"] is None
    assert str(exam / "part2") in str(problems["part1"])
    assert str(exam / "part1") in str(problems["part2"])


def test_a_whole_copy_of_a_series_is_no_split(tmp_path: Path) -> None:
    exam = _exam(tmp_path)
    shutil.rmtree(exam / "part1")
    shutil.rmtree(exam / "part2")
    shutil.copytree(exam / "other", exam / "copy")  # the same files: the identical-scans rule
    assert all(c.problem is None for c in collect_cases([exam]))


def test_predict_writes_error_rows_for_the_split_series_and_predicts_the_rest(
        tmp_path: Path) -> None:
    exam = _exam(tmp_path)
    seg = make_segmenter(tmp_path / "seg.pt")
    out = tmp_path / "pdcm"
    invoke("predict", "--model", str(seg), "-i", str(exam), "--recursive", "--out", str(out),
           expect=1)
    rows = {r["id"]: r for r in read_csv(out / "predictions.csv")}
    assert sorted(rows) == ["good", "other", "part1", "part2"]
    assert rows["good"]["status"] == rows["other"]["status"] == "ok"
    assert rows["part1"]["status"] == rows["part2"]["status"] == "error"
    assert "continues in" in rows["part1"]["error"]
    assert str(exam / "part2") in rows["part1"]["error"]
    assert (out / "good_seg.nii.gz").is_file() and not (out / "part1_seg.nii.gz").exists()


def test_inspect_names_the_folders_of_a_split_series(tmp_path: Path) -> None:
    exam = _exam(tmp_path)
    report = inspect_dataset(exam)
    split = [p for p in report.fatal_problems if "continues in" in p]
    assert len(split) == 2, report.problems
    assert any(str(exam / "part1") in p and str(exam / "part2") in p for p in split)
    assert sorted(c.id for c in report.cases) == ["good", "other"]
