"""SimpleITK formats: bounded headers, DICOM slice geometry, ITK's messages as warnings."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from segfew.errors import DataError, DataWarning
from segfew.io import ReadLimits, read_image
from segfew.io.itk import check_slice_positions
from tests.conftest import save_dicom_series


@pytest.fixture
def vol() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 500, (12, 10, 6)).astype(np.int16)


def test_a_series_with_a_missing_slice_is_a_one_line_error(tmp_path: Path,
                                                           vol: np.ndarray) -> None:
    folder = save_dicom_series(tmp_path / "gap", vol, skip=(3,))
    with pytest.raises(DataError) as err:
        read_image(folder)
    text = str(err.value)
    assert text.startswith(f"{folder}: DICOM slice spacing is uneven: 6 mm between "
                           "slice002.dcm and slice004.dcm, 3 mm elsewhere (a missing slice?)")
    assert "\n" not in text


def test_a_gantry_tilt_is_a_one_line_error(tmp_path: Path, vol: np.ndarray) -> None:
    folder = save_dicom_series(tmp_path / "tilt", vol, shear=0.5)  # atan(0.5 / 3) = 9.5°
    with pytest.raises(DataError, match=r"tilt: DICOM series has a gantry tilt of 9\.5°"):
        read_image(folder)


def test_an_even_series_reads_without_a_warning(tmp_path: Path, vol: np.ndarray) -> None:
    folder = save_dicom_series(tmp_path / "ok", vol)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        img = read_image(folder)
    assert img.shape == vol.shape
    np.testing.assert_allclose(img.spacing, (0.8, 0.8, 3.0), atol=1e-4)


def test_slice_positions_rules() -> None:
    normal = np.array([0.0, 0.0, 1.0])
    names = [f"s{i}" for i in range(4)]
    even = np.array([[0, 0, 0], [0, 0, 2.0], [0, 0, 4.0], [0, 0, 6.0]])
    check_slice_positions(even, normal, names, Path("d"))
    check_slice_positions(even[::-1], normal, names, Path("d"))  # descending is fine
    with pytest.raises(DataError, match="same position"):
        check_slice_positions(np.array([[0, 0, 0], [0, 0, 0.0]]), normal, names, Path("d"))
    jitter = even + np.array([[0, 0, 0], [0, 0, 0.01], [0, 0, 0], [0, 0, 0]])
    check_slice_positions(jitter, normal, names, Path("d"))  # 0.5 % is within tolerance


def test_the_header_is_checked_before_the_voxels_are_read(tmp_path: Path) -> None:
    path = tmp_path / "big.mha"
    sitk.WriteImage(sitk.Image([64, 64, 64], sitk.sitkFloat32), str(path))
    with pytest.raises(DataError, match=r"64×64×64 = 262,144 voxels, over the limit of 1,000"):
        read_image(path, ReadLimits(max_voxels=1000))
    with pytest.raises(DataError, match=r"1\.0 MiB of data, over the limit of 1\.0 KiB "
                                        r"\(raise it with SEGFEW_MAX_IMAGE_BYTES\)"):
        read_image(path, ReadLimits(max_bytes=1024))


def test_itk_warnings_become_warnings_naming_the_file(tmp_path: Path,
                                                      vol: np.ndarray) -> None:
    """What ITK prints (here: about the gap, reading the files behind segfew's back)."""
    from segfew.io.itk import itk_messages

    folder = save_dicom_series(tmp_path / "gap", vol, skip=(3,))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sorted(str(p) for p in folder.iterdir()))
    with pytest.warns(DataWarning, match=r"gap: ITK: .*[Nn]on.?uniform") as caught, \
            itk_messages(folder):
        reader.Execute()
    assert all("\n" not in str(w.message) for w in caught)


def test_a_small_table_move_in_a_long_stack_is_two_groups() -> None:
    """200 slices of 0.5 mm written to 3 decimals, the last 80 moved 0.5 mm: as much as a
    0.3° tilt over the stack, but the slices lie on two lines, not one leaning line."""
    normal = np.array([0.0, 0.0, 1.0])
    positions = np.array([[-120.0 + 0.5 * (k >= 120), -90.0, 0.5 * k] for k in range(200)])
    names = [f"s{i}" for i in range(200)]
    with pytest.raises(DataError, match=r"two groups 0\.5 mm apart sideways \(s0–s119 and "
                                        r"s120–s199: a table move\?\)"):
        check_slice_positions(positions, normal, names, Path("d"), unit=0.001)
