"""The one door (``segfew.data.read.read_case``): every check, the same message for every
command."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segfew.data import Case
from segfew.data.read import LabelRules, check_label_values, read_case
from segfew.errors import DataError, DataWarning
from tests.conftest import IMAGE_FORMATS, TinyImage, nii, save_itk


def test_read_case_checks_grid_and_returns_integer_labels(tmp_path: Path) -> None:
    img = nii(tmp_path / "a.nii.gz", dtype=np.float32)
    lab = nii(tmp_path / "a_gt.nii.gz", value=2, dtype=np.float32)
    _, labels = read_case(Case("a", (img,), (lab,)))
    assert labels[0].array.dtype == np.uint8 and set(np.unique(labels[0].array)) == {0, 2}
    bad_shape = nii(tmp_path / "b_gt.nii.gz", shape=(4, 4, 2))
    with pytest.raises(DataError, match=r"b_gt\.nii\.gz: shape \(4, 4, 2\) differs from"):
        read_case(Case("a", (img,), (bad_shape,)))
    moved = nii(tmp_path / "c_gt.nii.gz", affine=np.diag([1.0, 1.0, 2.0, 1.0]))
    with pytest.raises(DataError, match=r"c_gt\.nii\.gz: geometry .* differs"):
        read_case(Case("a", (img,), (moved,)))


def test_read_case_wrong_dimensionality(tmp_path: Path) -> None:
    img = nii(tmp_path / "a.nii.gz", shape=(3, 3, 3, 2))
    with pytest.raises(DataError, match=r"a\.nii\.gz: has 4 dimensions"):
        read_case(Case("a", (img,)))


def test_check_label_values(tmp_path: Path) -> None:
    p = tmp_path / "l.nii.gz"
    out = check_label_values(np.array([0.0, 1.0, 3.0]), {0, 1, 3}, p)
    assert out.dtype == np.uint8
    with pytest.raises(DataError, match=r"l\.nii\.gz: label values \[5\] outside the declared set"):
        check_label_values(np.array([0, 5]), {0, 1}, p)
    with pytest.raises(DataError, match="non-integer"):
        check_label_values(np.array([0.5]), None, p)
    with pytest.raises(DataError, match="negative"):
        check_label_values(np.array([-1, 0]), None, p)




# ------------------------------------------------------------------------- label checks


def test_near_integer_float_labels_are_rounded_with_a_warning(tmp_path: Path) -> None:
    p = tmp_path / "l.nii.gz"
    with pytest.warns(DataWarning, match=r"l\.nii\.gz: label map values rounded to integers"):
        out = check_label_values(np.array([0.0, 1.0004, 2.9999]), None, p)
    assert out.tolist() == [0, 1, 3] and out.dtype == np.uint8
    with pytest.raises(DataError, match=r"non-integer values \(e\.g\. 1\.01\)"):
        check_label_values(np.array([0.0, 1.01]), None, p)


@pytest.mark.parametrize("values", [[0, 255], [0, 1, 255]])
def test_a_0_255_mask_names_the_option_that_remaps_it(tmp_path: Path, values: list[int]) -> None:
    p = tmp_path / "m.png"
    with pytest.raises(DataError, match=r"binary mask stored as .*255: remap it with "
                                        r"--label-map 255:1"):
        check_label_values(np.array(values, np.uint8), None, p)
    remapped = check_label_values(np.array(values, np.uint8), None, p, remap={255: 1})
    assert set(remapped.tolist()) == {0, 1}
    if 1 in values:  # 0/1/255: 255 may be VOC's void border, which 255:1 would make structure
        with pytest.raises(DataError, match=r"or 255:0 where 255 marks a border to ignore"):
            check_label_values(np.array(values, np.uint8), None, p)
        voided = check_label_values(np.array(values, np.uint8), None, p, remap={255: 0})
        assert voided.tolist() == [0, 1, 0]
    # 255 declared as a label is not a mistake
    assert check_label_values(np.array(values, np.uint8), {0, 1, 255}, p).max() == 255


def test_colour_and_nan_labels_are_refused(tmp_path: Path) -> None:
    p = tmp_path / "m.png"
    with pytest.raises(DataError, match="colour label map: give one integer label per pixel"):
        check_label_values(np.zeros(4, np.float32), None, p, colour=True)
    with pytest.raises(DataError, match="NaN or infinite"):
        check_label_values(np.array([0.0, np.nan]), None, p)


def test_a_colour_png_mask_is_refused_and_a_grey_rgb_one_read(tmp_path: Path) -> None:
    import SimpleITK as sitk

    grey = np.zeros((8, 8, 3), np.uint8)
    grey[2:5, 2:5] = 2
    sitk.WriteImage(sitk.GetImageFromArray(grey, isVector=True), str(tmp_path / "a_gt.png"))
    colour = grey.copy()
    colour[..., 0] *= 100
    sitk.WriteImage(sitk.GetImageFromArray(colour, isVector=True), str(tmp_path / "b_gt.png"))
    sitk.WriteImage(sitk.GetImageFromArray(grey[..., 0]), str(tmp_path / "a.png"))
    _, (lab,) = read_case(Case("a", (tmp_path / "a.png",), (tmp_path / "a_gt.png",)))
    assert set(np.unique(lab.array).tolist()) == {0, 2}  # R = G = B: grey, kept exact
    with pytest.warns(DataWarning, match="RGB image converted to grey"), \
            pytest.raises(DataError, match=r"b_gt\.png: colour label map"):
        read_case(Case("a", (tmp_path / "a.png",), (tmp_path / "b_gt.png",)))


def test_label_rules_remap_and_declared_set(tmp_path: Path) -> None:
    img = nii(tmp_path / "a.nii.gz", dtype=np.float32)
    lab = nii(tmp_path / "a_gt.nii.gz", value=255)
    with pytest.raises(DataError, match="--label-map 255:1"):
        read_case(Case("a", (img,), (lab,)))
    _, (out,) = read_case(Case("a", (img,), (lab,)), LabelRules(remap={255: 1}))
    assert set(np.unique(out.array).tolist()) == {0, 1}
    with pytest.raises(DataError, match=r"label values \[1\] outside the declared set \[0\]"):
        read_case(Case("a", (img,), (lab,)), LabelRules(frozenset({0}), {255: 1}))


# ------------------------------------------------------------------------- images


def test_nan_voxels_are_replaced_with_a_warning_that_counts_them(tmp_path: Path) -> None:
    import nibabel as nib

    arr = np.arange(32, dtype=np.float32).reshape(4, 4, 2) + 5
    arr[0, 0, 0], arr[1, 1, 1] = np.nan, np.inf
    nib.save(nib.Nifti1Image(arr, np.eye(4)), str(tmp_path / "a.nii.gz"))
    with pytest.warns(DataWarning, match=r"a\.nii\.gz: 2 NaN/infinite voxel\(s\) of 32 "
                                         r"replaced by the image's finite minimum \(6\)"):
        (img,), _ = read_case(Case("a", (tmp_path / "a.nii.gz",)))
    assert np.isfinite(img.array).all() and img.array[0, 0, 0] == 6


def test_a_case_with_a_matching_problem_is_refused_by_the_door(tmp_path: Path) -> None:
    img = nii(tmp_path / "a_ed.nii.gz")
    case = Case("a", (img,), problem=f"{tmp_path}: case 'a' has no file for channel(s) es")
    with pytest.raises(DataError, match="has no file for channel"):
        read_case(case)
    assert case.per_channel() == [case]


@pytest.mark.parametrize("fmt", IMAGE_FORMATS)
def test_the_door_reads_every_format_and_checks_its_label_map_against_it(
        tiny_images: dict[str, TinyImage], fmt: str, tmp_path: Path) -> None:
    from segfew.io import read_image, write_image

    tiny = tiny_images[fmt]
    source = read_image(tiny.path)
    mask = (source.array > np.median(source.array)).astype(np.uint8)
    label = write_image(mask, source, tmp_path / "a_seg.nii.gz")  # in the image's geometry
    images, labels = read_case(Case("a", (tiny.path,), (label,)))
    assert images[0].shape == tiny.array.shape
    np.testing.assert_array_equal(labels[0].array, mask)
    other = nii(tmp_path / "b_seg.nii.gz", shape=(3, 3) if source.dim == 2 else (3, 3, 3))
    with pytest.raises(DataError, match=r"b_seg\.nii\.gz: shape .* differs from"):
        read_case(Case("a", (tiny.path,), (other,)))


def test_a_jpeg_mask_is_refused_before_it_is_read(tmp_path: Path) -> None:
    """The JPEG refusal needs only the name: it comes before what reading would say (here a
    grid that differs from the image's)."""
    img = nii(tmp_path / "a.nii.gz", dtype=np.float32)
    mask = save_itk(tmp_path / "a_seg.jpg", np.zeros((5, 7), np.uint8))
    with pytest.raises(DataError, match=r"a_seg\.jpg: label map stored as JPEG"):
        read_case(Case("a", (img,), (mask,)))


def test_a_map_of_the_same_voxels_stored_flipped_is_said_as_an_orientation(
        tmp_path: Path) -> None:
    """The same world grid with an axis stored the other way (flip and affine agree): not
    "geometry differs by more than 0.001 mm", which sends a user hunting for a shift."""
    from tests.conftest import ramp, save_nifti

    affine = np.diag([1.5, 1.5, 8.0, 1.0])
    save_nifti(tmp_path / "c1.nii.gz", ramp((64, 64, 4)), affine)
    flipped = affine.copy()
    flipped[0, 0], flipped[0, 3] = -1.5, 63 * 1.5
    lab = np.zeros((64, 64, 4), np.uint8)
    lab[10:20, 5:30] = 1
    save_nifti(tmp_path / "c1_seg.nii.gz", lab[::-1].copy(), flipped)
    case = Case("c1", (tmp_path / "c1.nii.gz",), (tmp_path / "c1_seg.nii.gz",))
    with pytest.raises(DataError, match=r"c1_seg\.nii\.gz: orientation LAS differs from .*"
                                        r"c1\.nii\.gz \(RAS\): the same voxels"):
        read_case(case)
