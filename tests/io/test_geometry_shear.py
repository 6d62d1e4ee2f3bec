"""Sheared geometry (axes that are not perpendicular, as a gantry-tilted CT kept unresampled is
stored) is refused in one line naming the file and the angle, as a DICOM series with the same
tilt is; an orthogonal affine with float noise still reads."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from segfew.errors import DataError
from segfew.io import read_image
from segfew.io.image import SHEAR_DEGREES, refuse_sheared_axes
from tests.conftest import ramp, save_nifti
from tests.io import read_warned

DATA = ramp((8, 7, 5), np.int16, 0)


def sform_nifti(path: Path, sform: np.ndarray, data: np.ndarray = DATA) -> Path:
    img = nib.Nifti1Image(data, sform)
    img.set_sform(sform, code=1)
    img.set_qform(None, code=0)
    img.header.set_xyzt_units("mm")
    nib.save(img, str(path))
    return path


def tilted(shift: float) -> np.ndarray:
    """1.5 × 1.5 × 10 mm voxels whose slice axis moves ``shift`` mm along y per slice."""
    affine = np.diag([1.5, 1.5, 10.0, 1.0])
    affine[1, 2] = shift
    return affine


def test_a_tilted_sform_is_refused_naming_the_file_and_the_angle(tmp_path: Path) -> None:
    """The tester's example: 3 mm of y per 10 mm slice, a lean of 16.7°; its voxel volume
    would have been 1.5·1.5·10.44 mm³ instead of |det| = 22.5 mm³."""
    path = sform_nifti(tmp_path / "tilted.nii.gz", tilted(3.0))
    with pytest.raises(DataError) as err:
        read_image(path)
    said = str(err.value)
    assert said.startswith(f"{path}: its axes are sheared: axes 1 and 2 meet at 73.3°, not 90° "
                           "(a lean of 16.7°")
    assert "resample it to a grid of perpendicular axes" in said and "\n" not in said


def test_a_shear_within_the_plane_and_a_rotated_one_are_refused(tmp_path: Path) -> None:
    """Another instance of the kind: axes 0 and 1 leaning, in a rotated frame."""
    rotation = nib.eulerangles.euler2mat(0.4, -0.2, 0.3)
    shear = np.eye(3)
    shear[0, 1] = np.tan(np.radians(5.0))
    affine = np.eye(4)
    affine[:3, :3] = rotation @ shear @ np.diag([0.8, 0.8, 2.0])
    with pytest.raises(DataError, match=r"axes 0 and 1 meet at 85\.0°, not 90° \(a lean of 5\.0°"):
        read_image(sform_nifti(tmp_path / "r.nii.gz", affine))


@pytest.mark.parametrize("noise", [0.0, 1e-6, 1e-5])
def test_float_noise_reads_where_a_lean_does_not(tmp_path: Path, noise: float) -> None:
    """An orthogonal affine off by float noise reads, without a word; the same rotated frame
    with its slice axis leaning 1° is refused."""
    rotation = nib.eulerangles.euler2mat(0.3, 0.2, 0.1)
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.7, 0.9, 3.3])
    leaning = affine.copy()
    affine[:3, :3] += noise * np.random.default_rng(1).standard_normal((3, 3))
    img, said = read_warned(sform_nifti(tmp_path / "ok.nii.gz", affine))
    assert said == []
    assert sorted(img.spacing) == pytest.approx(sorted([0.7, 0.9, 3.3]), abs=1e-4)
    leaning[:3, 2] += leaning[:3, 0] / 0.7 * 3.3 * np.tan(np.radians(1.0))
    with pytest.raises(DataError, match=r"axes 0 and 2 meet at 89\.0°"):
        read_image(sform_nifti(tmp_path / "lean.nii.gz", leaning))


def test_the_bound_is_the_dicom_gantry_tilts() -> None:
    """A NIfTI and a DICOM series of one tilted scan get the same answer."""
    from segfew.io.itk import TILT_DEGREES

    assert SHEAR_DEGREES == TILT_DEGREES
    lean = np.radians(SHEAR_DEGREES)
    refuse_sheared_axes(tilted(10 * np.tan(lean * 0.9)), (8, 7, 5), Path("under.nii"))
    with pytest.raises(DataError, match=r"under\.nii: its axes are sheared"):
        refuse_sheared_axes(tilted(10 * np.tan(lean * 1.1)), (8, 7, 5), Path("under.nii"))


def test_a_dropped_axis_of_one_slice_is_not_checked(tmp_path: Path) -> None:
    """A 2D image stored as X × Y × 1: its slice axis is dropped on reading, so its lean
    changes no size segfew measures; its two axes are checked."""
    img = read_image(sform_nifti(tmp_path / "flat.nii.gz", tilted(3.0), DATA[:, :, :1]))
    assert img.shape == (8, 7) and img.spacing == (1.5, 1.5)
    sheared = tilted(0.0)
    sheared[0, 1] = 0.5
    with pytest.raises(DataError, match=r"flat2.nii.gz: its axes are sheared: axes 0 and 1"):
        read_image(sform_nifti(tmp_path / "flat2.nii.gz", sheared, DATA[:, :, :1]))


def test_a_sheared_scan_beside_good_ones_is_one_fatal_problem(tmp_path: Path) -> None:
    from segfew.data.inspect import inspect_dataset

    sform_nifti(tmp_path / "tilted.nii.gz", tilted(3.0))
    save_nifti(tmp_path / "good.nii.gz", DATA)
    report = inspect_dataset(tmp_path)
    assert [c.id for c in report.cases if c.ok] == ["good"]
    assert any("tilted.nii.gz: its axes are sheared" in p for p in report.fatal_problems)


def test_a_sheared_nrrd_is_refused_as_well(tmp_path: Path) -> None:
    path = tmp_path / "sheared.nrrd"
    path.write_bytes(b"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 4 3 2\nencoding: raw\n"
                     b"space: left-posterior-superior\n"
                     b"space directions: (1.5,0,0) (0,1.5,0) (0,3,10)\n"
                     b"space origin: (0,0,0)\n\n" + bytes(range(24)))
    with pytest.raises(DataError, match=r"sheared.nrrd: its axes are sheared: .*16\.7°"):
        read_image(path)
