"""Label maps found for cases (segfew.data.label_maps.attach_labels, --masks): the images' own
folder given as the labels folder (ACDC: ``a.nii.gz`` beside ``a_gt.nii.gz``) never pairs
an image with itself; with --recursive, maps in patient sub-folders (beside their images,
or in a labels tree mirroring the images') pair with their images, same names included."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segfew.data import find_image_cases
from segfew.data.label_maps import attach_labels
from segfew.errors import DataError
from segfew.inference.masks import MaskMeasurer
from tests.conftest import ramp, save_nifti


def _pair(folder: Path, name: str, value: int = 1) -> None:
    """An image ``name`` and its label map ``name_gt`` (holding ``value``) in ``folder``."""
    save_nifti(folder / f"{name}.nii.gz", ramp((16, 16), base=100.0))
    lab = np.zeros((16, 16), np.uint8)
    lab[4:10, 4:10] = value
    save_nifti(folder / f"{name}_gt.nii.gz", lab)


def test_masks_given_as_the_image_folder_measure_the_gt_map_not_the_image(
        tmp_path: Path) -> None:
    flat = tmp_path / "acdc"
    for name in ("p1_frame01", "p1_frame02", "p2_frame01", "p2_frame02"):
        _pair(flat, name, value=2)
    cases = find_image_cases(flat, ["frame01", "frame02"])
    measurer = MaskMeasurer(flat, {1: "rv", 2: "myo"})
    for case in cases:
        _, maps = measurer.label_maps(case)
        assert [set(np.unique(m).tolist()) for m in maps] == [{0, 2}, {0, 2}]
    attached = attach_labels(cases, flat)
    assert [p.name for p in attached[0].labels] == ["p1_frame01_gt.nii.gz",
                                                    "p1_frame02_gt.nii.gz"]


def test_an_image_folder_without_its_map_says_so_rather_than_pairing_the_image(
        tmp_path: Path) -> None:
    flat = tmp_path / "flat"
    _pair(flat, "a")
    save_nifti(flat / "b.nii.gz", ramp((16, 16)))
    cases = find_image_cases(flat)
    with pytest.raises(DataError, match=r"b\.nii\.gz: image without label \(looked for "
                                        r"b_gt\.\*, b_seg"):  # not b.*: the image itself
        attach_labels(cases, flat)


def test_recursive_same_named_scans_pair_with_the_maps_beside_them(tmp_path: Path) -> None:
    root = tmp_path / "brats"
    for n, value in ((1, 1), (2, 2)):
        save_nifti(root / f"patient{n}" / "flair.nii.gz", ramp((16, 16), base=10.0 * n))
        lab = np.zeros((16, 16), np.uint8)
        lab[2:6, 2:6] = value
        save_nifti(root / f"patient{n}" / "flair_seg.nii.gz", lab)
    cases = attach_labels(find_image_cases(root, recursive=True), root, recursive=True)
    assert [(c.id, c.labels) for c in cases] == [
        ("patient1_flair", (root / "patient1" / "flair_seg.nii.gz",)),
        ("patient2_flair", (root / "patient2" / "flair_seg.nii.gz",))]


def test_recursive_a_patient_without_its_map_never_takes_another_patients(
        tmp_path: Path) -> None:
    root = tmp_path / "tree"
    _pair(root / "patient1", "flair")
    save_nifti(root / "patient2" / "flair.nii.gz", ramp((16, 16)))
    cases = find_image_cases(root, recursive=True)
    with pytest.raises(DataError, match=r"patient2.flair\.nii\.gz: image without label"):
        attach_labels(cases, root, recursive=True)


def test_recursive_a_labels_tree_mirroring_the_images_tree_pairs_by_path(
        tmp_path: Path) -> None:
    images, labels = tmp_path / "images", tmp_path / "labels"
    for n in (1, 2):
        save_nifti(images / f"patient{n}" / "flair.nii.gz", ramp((16, 16)))
        save_nifti(labels / f"patient{n}" / "flair_seg.nii.gz", np.eye(16, dtype=np.uint8))
    cases = attach_labels(find_image_cases(images, recursive=True), labels, recursive=True)
    assert [c.labels for c in cases] == [(labels / "patient1" / "flair_seg.nii.gz",),
                                         (labels / "patient2" / "flair_seg.nii.gz",)]


def test_recursive_a_mirrored_tree_missing_a_patients_map_says_so(tmp_path: Path) -> None:
    """Not "several label files": the other patients' maps share the name, not the path."""
    images, labels = tmp_path / "images", tmp_path / "labels"
    for n in (1, 2, 3):
        save_nifti(images / f"patient{n}" / "flair.nii.gz", ramp((16, 16)))
    for n in (1, 2):
        save_nifti(labels / f"patient{n}" / "flair_seg.nii.gz", np.eye(16, dtype=np.uint8))
    with pytest.raises(DataError, match=r"patient3.flair\.nii\.gz: image without label "
                                        r"\(looked for patient3_flair\.\*"):
        attach_labels(find_image_cases(images, recursive=True), labels, recursive=True)


def test_acdc_download_folders_pair_without_recursive_when_the_images_lie_in_them(
        tmp_path: Path) -> None:
    root = tmp_path / "acdc_own"
    for p in ("patient001", "patient002"):
        _pair(root / p, f"{p}_frame01")
        _pair(root / p, f"{p}_frame02")
        save_nifti(root / p / f"{p}_4d.nii.gz", ramp((16, 16, 2)))
    cases = find_image_cases(root, ["frame01", "frame02"], recursive=True)
    attached = attach_labels(cases, root)  # the images' own tree: read with its sub-folders
    assert [[p.name for p in c.labels] for c in attached] == [
        ["patient001_frame01_gt.nii.gz", "patient001_frame02_gt.nii.gz"],
        ["patient002_frame01_gt.nii.gz", "patient002_frame02_gt.nii.gz"]]


def test_an_image_with_two_maps_in_the_labels_folder_is_refused_for_every_pairing(
        tmp_path: Path) -> None:
    """``<id>.nii.gz`` beside ``<id>_gt.nii.gz`` (a draft and the expert's map): the pairing
    that pretrain --table, train-classifier and --masks share took the first name without a
    word; now it names both."""
    images, labels = tmp_path / "images", tmp_path / "labels"
    save_nifti(images / "a.nii.gz", ramp((16, 16), base=100.0))
    for name in ("a", "a_gt"):
        save_nifti(labels / f"{name}.nii.gz", np.ones((16, 16), np.uint8))
    with pytest.raises(DataError, match=r"labels: several label files for 'a': a\.nii\.gz, "
                                        r"a_gt\.nii\.gz: keep one"):
        attach_labels(find_image_cases(images), labels)
    (labels / "a.nii.gz").unlink()
    (case,) = attach_labels(find_image_cases(images), labels)
    assert case.labels == (labels / "a_gt.nii.gz",)


def test_every_image_with_two_maps_is_named_in_one_run(tmp_path: Path) -> None:
    """pretrain --table --labels stopped on the first such image: a second run found the
    next."""
    import warnings

    images, labels = tmp_path / "images", tmp_path / "labels"
    for case in ("a", "b", "c"):
        save_nifti(images / f"{case}.nii.gz", ramp((16, 16), base=100.0))
        save_nifti(labels / f"{case}_gt.nii.gz", np.ones((16, 16), np.uint8))
    for extra in ("a_seg", "c_mask"):
        save_nifti(labels / f"{extra}.nii.gz", np.ones((16, 16), np.uint8))
    with warnings.catch_warnings(record=True) as said, pytest.raises(DataError) as refused:
        warnings.simplefilter("always")
        attach_labels(find_image_cases(images), labels)
    text = " ".join([str(refused.value), *(str(w.message) for w in said)])
    assert "several label files for 'a'" in text and "several label files for 'c'" in text
    assert "and 1 more of the 3 cases cannot be paired with a label map" in str(refused.value)


def test_the_folder_form_names_every_unpaired_image_in_one_run(tmp_path: Path) -> None:
    """pretrain --images --labels (no table) stopped on the first image with two maps, or
    without one: a second run found the next."""
    import warnings

    from segfew.data import find_segmentation_cases

    images, labels = tmp_path / "images", tmp_path / "labels"
    for case in ("a", "b", "c", "d"):
        save_nifti(images / f"{case}.nii.gz", ramp((16, 16), base=100.0))
    for name in ("a_gt", "a_seg", "b_gt", "c_gt", "c_mask"):  # d has none
        save_nifti(labels / f"{name}.nii.gz", np.ones((16, 16), np.uint8))
    with warnings.catch_warnings(record=True) as said, pytest.raises(DataError) as refused:
        warnings.simplefilter("always")
        find_segmentation_cases(images, labels)
    text = " ".join([str(refused.value), *(str(w.message) for w in said)])
    assert "'a'" in text and "'c'" in text and "d.nii.gz: image without label" in text, text
    assert "and 2 more of the 3 problems found" in str(refused.value)
    with pytest.raises(DataError, match=r"nowhere: no such folder$"):  # said alone
        find_segmentation_cases(images, tmp_path / "nowhere")


def test_a_table_names_every_row_without_an_image_in_one_run(tmp_path: Path) -> None:
    """train-classifier --table stopped on the first row whose image is missing."""
    import warnings

    from segfew.data import read_table

    images = tmp_path / "images"
    save_nifti(images / "a.nii.gz", ramp((16, 16), base=100.0))
    table = tmp_path / "t.csv"
    table.write_text("id,class\na,x\nb,y\nc,y\n")
    with warnings.catch_warnings(record=True) as said, pytest.raises(DataError) as refused:
        warnings.simplefilter("always")
        read_table(table, images)
    text = " ".join([str(refused.value), *(str(w.message) for w in said)])
    assert "id 'b' has no image" in text and "id 'c' has no image" in text, text
    assert "and 1 more of the 2 problems found" in str(refused.value)
