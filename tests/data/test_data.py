"""Case matching, tables, class folders, reading checks and splits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from segfew.data import (
    Case,
    class_names,
    find_class_folders,
    find_classification_cases,
    find_image_cases,
    find_segmentation_cases,
    read_table,
    stratified_split,
    with_targets,
)
from segfew.errors import DataError
from tests.conftest import nii


def make(root: Path, names: list[str]) -> Path:
    for name in names:
        nii(root / name)
    return root


# ------------------------------------------------------------------------- segmentation


@pytest.mark.parametrize("label_name", ["a.nii.gz", "a_gt.nii.gz", "a_seg.nrrd",
                                        "a_label.nii", "a_labels.nii.gz"])
def test_every_label_name_rule(tmp_path: Path, label_name: str) -> None:
    images = make(tmp_path / "img", ["a.nii.gz"])
    labels = tmp_path / "lab"
    labels.mkdir()
    if label_name.endswith(".nrrd"):
        import SimpleITK as sitk
        sitk.WriteImage(sitk.GetImageFromArray(np.zeros((3, 4, 4), np.uint8)),
                        str(labels / label_name))
    else:
        nii(labels / label_name)
    (case,) = find_segmentation_cases(images, labels)
    assert case.id == "a" and case.labels == (labels / label_name,)
    assert case.group == "a"


def test_labels_beside_images_and_unlabelled_folder(tmp_path: Path) -> None:
    both = make(tmp_path / "both", ["a.nii.gz", "a_seg.nii.gz", "b.nii.gz", "b_gt.nii.gz"])
    cases = find_segmentation_cases(both)
    assert [(c.id, c.labels[0].name) for c in cases] == [("a", "a_seg.nii.gz"),
                                                          ("b", "b_gt.nii.gz")]
    plain = make(tmp_path / "plain", ["a.nii.gz", "b.nii.gz"])
    assert [c.labels for c in find_segmentation_cases(plain)] == [(), ()]


def test_image_without_label(tmp_path: Path) -> None:
    images = make(tmp_path / "img", ["a.nii.gz", "b.nii.gz"])
    labels = make(tmp_path / "lab", ["a_gt.nii.gz"])
    with pytest.raises(DataError, match=r"b\.nii\.gz: image without label \(looked for b\.\*"):
        find_segmentation_cases(images, labels)


def test_label_without_image(tmp_path: Path) -> None:
    images = make(tmp_path / "img", ["a.nii.gz"])
    labels = make(tmp_path / "lab", ["a_gt.nii.gz", "z_gt.nii.gz"])
    with pytest.raises(DataError, match=r"z_gt\.nii\.gz: label without image"):
        find_segmentation_cases(images, labels)


def test_duplicate_ids(tmp_path: Path) -> None:
    images = make(tmp_path / "img", ["a.nii.gz", "a.nii"])
    labels = make(tmp_path / "lab", ["a_gt.nii.gz"])
    with pytest.raises(DataError, match="duplicate case id 'a'"):
        find_segmentation_cases(images, labels)
    images2 = make(tmp_path / "img2", ["b.nii.gz"])
    labels2 = make(tmp_path / "lab2", ["b_gt.nii.gz", "b_seg.nii.gz"])
    with pytest.raises(DataError, match="several label files for 'b'"):
        find_segmentation_cases(images2, labels2)


def test_empty_and_missing_folders(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=r"empty: no image files found"):
        find_segmentation_cases(tmp_path / "empty")
    with pytest.raises(DataError, match="nope: no such folder"):
        find_segmentation_cases(tmp_path / "nope")


def test_channels_with_per_channel_labels(tmp_path: Path) -> None:
    images = make(tmp_path / "img", ["p1_frame01.nii.gz", "p1_frame02.nii.gz",
                                     "p2_frame01.nii.gz", "p2_frame02.nii.gz"])
    labels = make(tmp_path / "lab", ["p1_frame01_gt.nii.gz", "p1_frame02_gt.nii.gz",
                                     "p2_frame01_gt.nii.gz", "p2_frame02_gt.nii.gz"])
    cases = find_segmentation_cases(images, labels, ["frame01", "frame02"])
    assert [c.id for c in cases] == ["p1", "p2"]
    assert [p.name for p in cases[0].images] == ["p1_frame01.nii.gz", "p1_frame02.nii.gz"]
    assert [p.name for p in cases[0].labels] == ["p1_frame01_gt.nii.gz", "p1_frame02_gt.nii.gz"]
    assert cases[0].channel_names == ["frame01", "frame02"]
    split = cases[0].per_channel()
    assert [(c.id, c.images[0].name, c.labels[0].name, c.group) for c in split] == [
        ("p1_frame01", "p1_frame01.nii.gz", "p1_frame01_gt.nii.gz", "p1"),
        ("p1_frame02", "p1_frame02.nii.gz", "p1_frame02_gt.nii.gz", "p1")]


def test_channels_with_one_label_per_case(tmp_path: Path) -> None:
    images = make(tmp_path / "img", ["p1_t1.nii.gz", "p1_t2.nii.gz"])
    labels = make(tmp_path / "lab", ["p1_seg.nii.gz"])
    (case,) = find_segmentation_cases(images, labels, ["t1", "t2"])
    assert case.labels == (labels / "p1_seg.nii.gz",)
    assert [c.labels for c in case.per_channel()] == [case.labels, case.labels]


def test_channel_errors(tmp_path: Path) -> None:
    images = make(tmp_path / "img", ["p1_frame01.nii.gz"])
    with pytest.raises(DataError, match=r"case 'p1' has no file for channel\(s\) frame02"):
        find_segmentation_cases(images, None, ["frame01", "frame02"])
    other = make(tmp_path / "img2", ["p1_frame01.nii.gz", "p1_frame02.nii.gz", "x.nii.gz"])
    with pytest.raises(DataError, match=r"x\.nii\.gz: matches no channel"):
        find_image_cases(other, ["frame01", "frame02"])
    images3 = make(tmp_path / "img3", ["p1_frame01.nii.gz", "p1_frame02.nii.gz"])
    labels3 = make(tmp_path / "lab3", ["p1_frame01_gt.nii.gz"])
    with pytest.raises(DataError, match=r"no label for channel\(s\) p1_frame02"):
        find_segmentation_cases(images3, labels3, ["frame01", "frame02"])
    from segfew.errors import SpecError

    with pytest.raises(SpecError, match="channel frame01 given twice in --channels"):
        find_image_cases(images3, ["frame01", "frame01"])


def test_nnunet_layout(tmp_path: Path) -> None:
    root = tmp_path / "Dataset001_Prostate"
    make(root / "imagesTr", ["pro_00_0000.nii.gz", "pro_00_0001.nii.gz",
                             "pro_01_0000.nii.gz", "pro_01_0001.nii.gz"])
    make(root / "labelsTr", ["pro_00.nii.gz", "pro_01.nii.gz"])
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "T2", "1": "ADC"},
        "labels": {"background": 0, "PZ": 1, "TZ": 2}, "file_ending": ".nii.gz"}))
    cases = find_segmentation_cases(root)
    assert [c.id for c in cases] == ["pro_00", "pro_01"]
    assert [p.name for p in cases[0].images] == ["pro_00_0000.nii.gz", "pro_00_0001.nii.gz"]
    assert cases[0].labels == (root / "labelsTr" / "pro_00.nii.gz",)
    # the imagesTr folder itself works too, and so does prediction on it
    assert [c.id for c in find_segmentation_cases(root / "imagesTr")] == ["pro_00", "pro_01"]
    assert len(find_image_cases(root)[0].images) == 2


# ------------------------------------------------------------------------- unlabelled


def test_find_image_cases_files_folders_recursive(tmp_path: Path) -> None:
    make(tmp_path / "in", ["a.nii.gz", "sub/b.nii.gz"])
    assert [c.id for c in find_image_cases(tmp_path / "in")] == ["a"]
    assert [c.id for c in find_image_cases(tmp_path / "in", recursive=True)] == ["a", "b"]
    assert [c.id for c in find_image_cases([tmp_path / "in" / "sub" / "b.nii.gz"])] == ["b"]
    make(tmp_path / "in2", ["a.nii.gz"])
    with pytest.raises(DataError, match="duplicate case id 'a'"):
        find_image_cases([tmp_path / "in", tmp_path / "in2"])


def test_dicom_series_folder_is_one_case(tmp_path: Path) -> None:
    from tests.conftest import save_dicom_series
    save_dicom_series(tmp_path / "in" / "scan1", np.zeros((4, 4, 3), np.int16))
    cases = find_image_cases(tmp_path / "in")
    assert [(c.id, c.images) for c in cases] == [("scan1", (tmp_path / "in" / "scan1",))]


# ------------------------------------------------------------------------- tables


def test_read_table_ids_with_channels_and_auto_columns(tmp_path: Path) -> None:
    make(tmp_path / "img", ["p1_ed.nii.gz", "p1_es.nii.gz", "p2_ed.nii.gz", "p2_es.nii.gz"])
    (tmp_path / "t.csv").write_text("Patient,Diagnosis\np1,DCM\np2,NOR\n")
    cases = read_table(tmp_path / "t.csv", tmp_path / "img", ["ed", "es"])
    assert [(c.id, c.target, c.group, len(c.images)) for c in cases] == [
        ("p1", "DCM", "p1", 2), ("p2", "NOR", "p2", 2)]
    assert class_names(cases) == ["DCM", "NOR"]


def test_read_table_tsv_paths_and_group_column(tmp_path: Path) -> None:
    make(tmp_path / "data", ["s1.nii.gz", "s2.nii.gz", "s3.nii.gz"])
    (tmp_path / "t.tsv").write_text(
        "path\tclass\tpatient\ndata/s1.nii.gz\tA\tP1\ndata/s2.nii.gz\tB\tP1\n"
        "data/s3.nii.gz\tA\tP2\n")
    cases = read_table(tmp_path / "t.tsv")
    assert [(c.id, c.target, c.group) for c in cases] == [("s1", "A", "P1"), ("s2", "B", "P1"),
                                                          ("s3", "A", "P2")]
    assert cases[0].images == (tmp_path / "data" / "s1.nii.gz",)


def test_read_table_paths_relative_to_images(tmp_path: Path) -> None:
    make(tmp_path / "img", ["x/s1.nii.gz"])
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "t.csv").write_text("file;y\nx/s1.nii.gz;1\n")
    (case,) = read_table(tmp_path / "meta" / "t.csv", tmp_path / "img")
    assert case.images == (tmp_path / "img" / "x" / "s1.nii.gz",) and case.target == "1"


def test_read_table_column_overrides(tmp_path: Path) -> None:
    make(tmp_path, ["a.nii.gz"])
    (tmp_path / "t.csv").write_text("scan,grade,site\na,high,s1\n")
    (case,) = read_table(tmp_path / "t.csv", id_column="scan", label_column="grade",
                         group_column="site")
    assert (case.id, case.target, case.group) == ("a", "high", "s1")


def test_table_errors(tmp_path: Path) -> None:
    make(tmp_path / "img", ["a.nii.gz", "b_ed.nii.gz"])
    table = tmp_path / "t.csv"
    table.write_text("scan,grade\na,1\n")
    with pytest.raises(DataError, match=r"t\.csv: no id or path column \(columns: scan, grade\)"):
        read_table(table, tmp_path / "img")
    table.write_text("id,grade\na,1\n")
    with pytest.raises(DataError, match=r"no label column \(columns: id, grade\)"):
        read_table(table, tmp_path / "img")
    table.write_text("id,label\na,1\nzz,2\n")
    with pytest.raises(DataError, match=r"t\.csv: row 3: id 'zz' has no image zz\.\*"):
        read_table(table, tmp_path / "img")
    table.write_text("id,label\nb,1\n")
    with pytest.raises(DataError, match=r"found b_ed; use --channels"):
        read_table(table, tmp_path / "img")
    table.write_text("id,label\na,1\na,2\n")
    with pytest.raises(DataError, match=r"duplicate case id 'a' \(rows 2 and 3\)"):
        read_table(table, tmp_path / "img")
    table.write_text("id,label\na,\n")
    with pytest.raises(DataError, match=r"row 2 \(a\) has no 'label'"):
        read_table(table, tmp_path / "img")
    with pytest.raises(DataError, match="no column 'nope'"):
        read_table(table, tmp_path / "img", label_column="nope")


def test_class_folders(tmp_path: Path) -> None:
    make(tmp_path / "root", ["cat/a.nii.gz", "cat/b.nii.gz", "dog/c.nii.gz"])
    cases = find_class_folders(tmp_path / "root")
    assert [(c.id, c.target) for c in cases] == [("a", "cat"), ("b", "cat"), ("c", "dog")]
    assert find_classification_cases(tmp_path / "root", None) == cases
    (tmp_path / "root" / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: no image files found"):
        find_class_folders(tmp_path / "root")
    (tmp_path / "root" / "empty").rmdir()
    make(tmp_path / "root", ["dog/a.nii.gz"])
    with pytest.raises(DataError, match="duplicate case id 'a'"):
        find_class_folders(tmp_path / "root")
    make(tmp_path / "flat", ["a.nii.gz"])
    with pytest.raises(DataError, match="no class sub-folders"):
        find_class_folders(tmp_path / "flat")


def test_with_targets(tmp_path: Path) -> None:
    seg = [Case("a", (tmp_path / "a.nii",)), Case("b", (tmp_path / "b.nii",))]
    cls = [Case("a", (tmp_path / "a.nii",), target="X", group="P")]
    with pytest.raises(DataError, match="case 'b' has no row in the table"):
        with_targets(seg, cls)
    (a,) = with_targets(seg[:1], cls)
    assert (a.target, a.group) == ("X", "P")


# ------------------------------------------------------------------------- splits


def cohort(n_per_class: dict[str, int], images_per_group: int = 1) -> list[Case]:
    cases = []
    for target, n in n_per_class.items():
        for g in range(n):
            for i in range(images_per_group):
                cid = f"{target}{g}_{i}"
                cases.append(Case(cid, (Path(cid),), target=target, group=f"{target}{g}"))
    return cases


def test_split_per_class_is_stratified_group_aware_deterministic_nested() -> None:
    cases = cohort({"A": 6, "B": 5, "C": 4}, images_per_group=2)
    train, test = stratified_split(cases, per_class=2, seed=3)
    assert all(len({c.group for c in train if c.target == t}) == 2 for t in "ABC")
    assert len(train) == 12 and len(train) + len(test) == len(cases)
    assert not {c.group for c in train} & {c.group for c in test}
    assert stratified_split(cases, per_class=2, seed=3) == (train, test)
    other = stratified_split(cases, per_class=2, seed=4)[0]
    assert {c.id for c in other} != {c.id for c in train}
    bigger = stratified_split(cases, per_class=3, seed=3)[0]
    assert {c.id for c in train} < {c.id for c in bigger}
    with pytest.raises(DataError, match="class 'C' has 4 groups"):
        stratified_split(cases, per_class=5)


def test_split_fraction_and_no_targets() -> None:
    cases = cohort({"A": 10, "B": 5})
    train, held = stratified_split(cases, fraction=0.8, seed=0)  # 1 - val_fraction
    assert sum(c.target == "A" for c in held) == 2 and sum(c.target == "B" for c in held) == 1
    assert len(train) == 12
    two = cohort({"A": 2, "B": 1})  # a class of two still leaves one for validation
    assert [c.target for c in stratified_split(two, fraction=0.9)[1]] == ["A"]
    assert stratified_split(cases, fraction=1.0)[1] == []
    plain = [Case(f"c{i}", (Path(f"c{i}"),), group=f"g{i // 2}") for i in range(10)]
    first, second = stratified_split(plain, fraction=0.6, seed=1)
    assert len(second) == 4
    assert not {c.group for c in first} & {c.group for c in second}
    with pytest.raises(ValueError):
        stratified_split(plain)


def test_clinicadl_table_ids_are_participant_and_session(tmp_path: Path) -> None:
    from segfew.data import read_table

    make(tmp_path, ["sub-01_ses-M00.nii.gz", "sub-01_ses-M12.nii.gz", "sub-02_ses-M00.nii.gz"])
    table = tmp_path / "split.tsv"
    table.write_text("participant_id\tsession_id\tdiagnosis\n"
                     "sub-01\tses-M00\tAD\nsub-01\tses-M12\tAD\nsub-02\tses-M00\tCN\n")
    cases = read_table(table)
    assert [c.id for c in cases] == ["sub-01_ses-M00", "sub-01_ses-M12", "sub-02_ses-M00"]
    assert [c.group for c in cases] == ["sub-01", "sub-01", "sub-02"]
    assert [c.target for c in cases] == ["AD", "AD", "CN"]


def test_a_case_unit_is_its_group_else_its_id() -> None:
    from segfew.data import Case

    assert Case("p1_ed", (Path("a.nii.gz"),)).unit == "p1_ed"
    assert Case("p1_ed", (Path("a.nii.gz"),), group="p1").unit == "p1"
    assert {c.unit for c in Case("p1", (Path("a"), Path("b"))).per_channel()} == {"p1"}
