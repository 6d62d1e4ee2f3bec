"""A NIfTI whose qform and sform (both set) disagree: segfew keeps the sform, the NIfTI
standard's choice, and says so once, naming both voxel sizes (and orientations)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.io import read_warned as read

DATA = np.zeros((4, 3, 2), np.uint8)


def forms(path: Path, sform: np.ndarray, qform: np.ndarray, codes: tuple[int, int] = (1, 1),
          unit: str = "mm") -> Path:
    img = nib.Nifti1Image(DATA, None)
    img.set_sform(sform, code=codes[1])
    img.set_qform(qform, code=codes[0])
    img.header.set_xyzt_units(unit)
    nib.save(img, path)
    return path



def affine(*sizes: float) -> np.ndarray:
    out = np.diag([*sizes, 1.0])
    out[:3, 3] = (-3, 7, 11)
    return out


def test_a_qform_twice_the_sform_is_said_once(tmp_path: Path) -> None:
    path = forms(tmp_path / "qs.nii.gz", affine(1.25, 1.25, 1.25), affine(2.5, 2.5, 2.5))
    img, said = read(path)
    assert img.spacing == (1.25, 1.25, 1.25)  # the sform
    assert said == [f"{path}: qform and sform disagree: the sform gives voxels of "
                    "1.25×1.25×1.25 mm, the qform 2.5×2.5×2.5 mm; segfew uses the sform (the "
                    "NIfTI standard's choice), which ITK-SNAP or 3D Slicer may not show"]


def test_one_axis_and_another_unit(tmp_path: Path) -> None:
    path = forms(tmp_path / "z.nii", affine(500, 500, 3000), affine(500, 500, 5000),
                 unit="micron")
    img, said = read(path)
    assert img.spacing == (0.5, 0.5, 3.0)
    assert len(said) == 1 and "500×500×3000 µm, the qform 500×500×5000 µm" in said[0]


def test_an_orientation_that_differs_is_named(tmp_path: Path) -> None:
    flipped = affine(-1.0, 1.0, 2.0)
    img, said = read(forms(tmp_path / "o.nii.gz", affine(1.0, 1.0, 2.0), flipped))
    assert len(said) == 1 and "1×1×2 mm (RAS), the qform 1×1×2 mm (LAS)" in said[0]
    assert img.orientation == "RAS"


@pytest.mark.parametrize("codes", [(1, 1), (0, 1), (1, 0), (2, 4)])
def test_forms_that_agree_or_one_unset_say_nothing(tmp_path: Path,
                                                   codes: tuple[int, int]) -> None:
    """Float noise (the qform's quaternion in float32) is no disagreement; a form whose code
    is 0 is not used by anyone."""
    rotation = nib.eulerangles.euler2mat(0.3, 0.2, 0.1)
    sform = np.eye(4)
    sform[:3, :3] = rotation @ np.diag([0.7, 0.9, 3.3])
    sform[:3, 3] = (1.1, -2.2, 3.3)
    qform = sform if codes[0] and codes[1] else affine(2.5, 2.5, 2.5)
    _, said = read(forms(tmp_path / "a.nii.gz", sform, qform, codes))
    assert said == []


@pytest.mark.parametrize("qform", [affine(2.5, 2.5, 2.5), affine(-1.0, 1.0, 2.0),
                                   np.diag([1.0, 1.0, 2.0, 1.0])],  # the position alone
                         ids=["size", "orientation", "position"])
def test_an_output_keeps_both_forms_so_it_overlays_its_scan_in_any_viewer(
        tmp_path: Path, qform: np.ndarray) -> None:
    """A label map written for such a scan carries its qform and its sform as stored, each
    with its code: a viewer that shows the qform places it where it places the scan."""
    from segfew.io import read_image, write_image

    path = forms(tmp_path / "s.nii.gz", affine(1.0, 1.0, 2.0), qform, codes=(1, 2))
    img = read_image(path, label=True)
    out = write_image(np.ones(img.shape, np.uint8), img, tmp_path / "s_seg.nii.gz")
    source, written = nib.load(path), nib.load(out)
    for get in ("get_qform", "get_sform"):
        expected, code = getattr(source, get)(coded=True)
        actual, written_code = getattr(written, get)(coded=True)
        assert written_code == code and np.allclose(actual, expected, atol=1e-5), get
    assert np.array_equal(np.asarray(written.dataobj), np.ones(DATA.shape, np.uint8))


def test_a_position_alone_that_differs_is_not_said(tmp_path: Path) -> None:
    """segfew's numbers do not depend on where the scan lies, and outputs keep both forms."""
    _, said = read(forms(tmp_path / "p.nii.gz", affine(1.0, 1.0, 2.0),
                         np.diag([1.0, 1.0, 2.0, 1.0])))
    assert said == []


def test_one_matrix_as_qform_and_sform_agrees_even_at_45_degrees(tmp_path: Path) -> None:
    """At 45° the nearest-axis letters of one matrix stored twice (qform in float32) fall
    either way: the forms are compared as matrices, so no "disagree" is said."""
    c = np.cos(np.pi / 4)
    affine = np.array([[-1.5 * c, 1.5 * c, 0, 10], [1.5 * c, 1.5 * c, 0, 5], [0, 0, 10, 0],
                       [0, 0, 0, 1]])
    scan = nib.Nifti1Image(np.random.default_rng(0).normal(100, 10, (12, 12, 4))
                           .astype(np.float32), affine)
    scan.set_qform(affine, 1)
    scan.set_sform(affine, 1)
    nib.save(scan, str(tmp_path / "oblique.nii.gz"))
    _, said = read(tmp_path / "oblique.nii.gz")
    assert not [w for w in said if "disagree" in w]


def test_forms_that_differ_by_a_turn_alone_say_so(tmp_path: Path) -> None:
    """+45° against -45° about z: the same sizes and nearest-axis letters, so the note read
    as two equal descriptions; it says the axes are turned."""
    def turned(angle: float) -> np.ndarray:
        c, s = np.cos(angle), np.sin(angle)
        return np.array([[1.5 * c, -1.5 * s, 0, 0], [1.5 * s, 1.5 * c, 0, 0], [0, 0, 10, 0],
                         [0, 0, 0, 1]])

    scan = nib.Nifti1Image(np.random.default_rng(0).normal(100, 10, (12, 12, 4))
                           .astype(np.float32), turned(np.pi / 4))
    scan.set_sform(turned(np.pi / 4), 1)
    scan.set_qform(turned(-np.pi / 4), 1)
    nib.save(scan, str(tmp_path / "turned.nii.gz"))
    _, said = read(tmp_path / "turned.nii.gz")
    (note,) = [w for w in said if "disagree" in w]
    assert "with axes turned up to 90° from the qform's" in note, note
