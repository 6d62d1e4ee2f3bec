"""A DICOM series whose files lie in several folders (a CD export capping files per folder)
is refused in each folder, never read as separate half-volume cases."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

import segfew.io.dicom
from segfew.data import (
    collect_cases,
    find_cases,
    find_classification_cases,
    find_image_cases,
    read_table,
)
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


# ------------------------------------------------------------------------- classes and tables


def _classes(root: Path, third: bool = False) -> Path:
    """``root/classes``: the series' halves under two classes (``DCM/p003``, ``NOR/p003b``;
    with ``third``, its last 2 files in ``NOR/p003c``), beside them a whole series
    (``NOR/other``) and a NIfTI scan (``DCM/good``)."""
    exam = _exam(root)
    classes = root / "classes"
    for name, to in (("part1", "DCM/p003"), ("part2", "NOR/p003b"), ("other", "NOR/other"),
                     ("good.nii.gz", "DCM/good.nii.gz")):
        (classes / to).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(exam / name, classes / to)
    if third:
        (classes / "NOR/p003c").mkdir()
        for z in (8, 9):
            shutil.move(classes / f"NOR/p003b/slice{z:03d}.dcm", classes / "NOR/p003c")
    return classes


def test_a_series_split_between_class_folders_stops_training(tmp_path: Path) -> None:
    classes = _classes(tmp_path)
    for find in (find_classification_cases, find_cases):  # train-classifier; pretrain, label
        with pytest.raises(DataError, match=rf"DICOM series {UID} continues in \S*p003b "
                                            r"\(5 of its 10 files\)"):
            find(classes)
    seg = make_segmenter(tmp_path / "seg.pt")
    said = invoke("train-classifier", "--images", str(classes), "--framework", "measures",
                  "--features", str(seg), "--out", str(tmp_path / "c.pt"), "--no-progress",
                  expect=2)
    assert "continues in" in said and not (tmp_path / "c.pt").exists()


def test_each_class_folder_of_a_split_series_is_an_error_row(tmp_path: Path) -> None:
    classes = _classes(tmp_path, third=True)
    cases = {c.id: c for c in find_classification_cases(classes, keep_missing=True)}
    assert sorted(cases) == ["good", "other", "p003", "p003b", "p003c"]
    assert cases["good"].problem is None and cases["other"].problem is None
    problem = str(cases["p003"].problem)  # one pass over every class: each names the others
    assert f"{classes / 'NOR/p003b'} (3 of its 10 files)" in problem
    assert f"{classes / 'NOR/p003c'} (2 of its 10 files)" in problem
    assert str(classes / "DCM/p003") in str(cases["p003c"].problem)
    assert str(classes / "NOR/p003b") in str(cases["p003c"].problem)


def test_inspect_names_a_series_split_between_class_folders(tmp_path: Path) -> None:
    classes = _classes(tmp_path, third=True)
    report = inspect_dataset(classes)
    split = [p for p in report.fatal_problems if "continues in" in p]
    assert len(split) == 3, report.problems
    assert sorted(c.id for c in report.cases) == ["good", "other"]


def _table(root: Path, rows: str) -> Path:
    _exam(root)
    table = root / "table.csv"
    table.write_text("image,label\n" + rows)
    return table


def test_a_table_of_folders_holding_one_series_is_refused(tmp_path: Path) -> None:
    table = _table(tmp_path, "exam/part1,DCM\nexam/part2,NOR\nexam/other,NOR\n"
                             "exam/good.nii.gz,DCM\n")
    with pytest.raises(DataError, match=rf"DICOM series {UID} continues in \S*part2"):
        read_table(table)
    cases = {c.id: c for c in read_table(table, keep_missing=True)}  # a batch: error rows
    assert cases["good"].problem is None and cases["other"].problem is None
    assert str(tmp_path / "exam/part2") in str(cases["part1"].problem)
    assert str(tmp_path / "exam/part1") in str(cases["part2"].problem)
    report = inspect_dataset(tmp_path, table=table)
    assert len([p for p in report.fatal_problems if "continues in" in p]) == 2, report.problems
    assert sorted(c.id for c in report.cases) == ["good", "other"]


def test_a_table_id_whose_series_continues_in_a_folder_it_does_not_list(
        tmp_path: Path) -> None:
    table = _table(tmp_path, "part1,DCM\nother,NOR\ngood,DCM\n")  # part2: no row
    with pytest.raises(DataError, match=r"continues in \S*part2 \(5 of its 10 files\)"):
        read_table(table)


# ------------------------------------------------------------------------- sub-folders


def _nested(root: Path, under: str = "more") -> Path:
    """``_exam`` with ``part2`` moved into ``part1/<under>``: the case ``part1`` holds half
    the series, its own sub-folder the other half."""
    exam = _exam(root)
    (exam / "part1" / under).parent.mkdir(parents=True, exist_ok=True)
    shutil.move(exam / "part2", exam / "part1" / under)
    return exam


def test_a_series_continuing_in_the_case_folders_own_sub_folder_is_refused(
        tmp_path: Path) -> None:
    exam = _nested(tmp_path)
    with pytest.raises(DataError, match=rf"DICOM series {UID} continues in \S*part1/more "
                                        r"\(5 of its 10 files\)"):
        find_image_cases(exam)
    rows = {c.id: c.problem for c in collect_cases([exam])}
    assert rows["good"] is None and rows["other"] is None
    assert str(exam / "part1/more") in str(rows["part1"])
    report = inspect_dataset(exam)
    split = [p for p in report.fatal_problems if "continues in" in p]
    assert len(split) == 1 and str(exam / "part1/more") in split[0], report.problems
    assert sorted(c.id for c in report.cases) == ["good", "other"]


def test_a_sub_folder_at_any_depth_is_found_and_a_whole_copy_is_none(tmp_path: Path) -> None:
    exam = _nested(tmp_path, under="a/b/more")
    with pytest.raises(DataError, match=r"continues in \S*part1/a/b/more"):
        find_image_cases(exam)
    whole = _exam(tmp_path / "w", cut=10)  # part1 holds all 10 files; a backup below it
    shutil.rmtree(whole / "part2")
    shutil.copytree(whole / "part1", tmp_path / "backup")
    shutil.move(tmp_path / "backup", whole / "part1" / "backup")
    assert sorted(c.id for c in find_image_cases(whole)) == ["good", "other", "part1"]


def test_no_dicom_header_is_parsed_twice(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    exam = _nested(tmp_path)
    parsed: list[Path] = []
    real = segfew.io.dicom._read_before_pixels

    def spy(path: Path, *args, **kw):  # type: ignore[no-untyped-def]
        parsed.append(Path(path))
        return real(path, *args, **kw)

    monkeypatch.setattr(segfew.io.dicom, "_read_before_pixels", spy)
    segfew.io.dicom._header.cache_clear()
    collect_cases([exam])
    collect_cases([exam / "part1"])
    assert len(parsed) == len(set(parsed)) == 10 + 4  # the split series and "other"
