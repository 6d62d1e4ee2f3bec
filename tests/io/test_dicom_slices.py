"""The slices of one DICOM series: each slice's own RescaleSlope read exactly (PET), slices of
other orientations or several at one position refused saying what they are, a slice of
another size named with its file."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    PositronEmissionTomographyImageStorage,
    generate_uid,
)

from segfew.errors import DataError, DataWarning
from segfew.io import read_image
from tests.conftest import dicom_dataset

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
COS, SIN = np.cos(np.radians(15)), np.sin(np.radians(15))


def write_series(folder: Path, n: int = 6, stored: np.ndarray | None = None,
                 sop: str = CTImageStorage, other: dict[int, np.ndarray] | None = None,
                 **per_slice: Any) -> Path:
    """``n`` slices 2 mm apart (16×16 unsigned 16-bit, ``stored[k]`` or a ramp; ``other[k]``
    instead where given), one series; ``per_slice`` maps a header keyword to a function of
    the slice index (None: the default)."""
    folder.mkdir(parents=True)
    study, uid = generate_uid(), generate_uid()
    for k in range(n):
        ds = dicom_dataset(sop, ExplicitVRLittleEndian)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, uid, study
        ds.PatientID, ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "P", "CT", 1, k + 1
        ds.PixelSpacing, ds.SliceThickness = [1.0, 1.0], 2.0
        ds.ImagePositionPatient, ds.ImageOrientationPatient = [0.0, 0.0, 2.0 * k], list(AXIAL)
        plane = stored[k] if stored is not None else \
            (np.arange(256).reshape(16, 16) * (k + 1)).astype(np.uint16)
        for keyword, value in per_slice.items():
            if value(k) is not None:
                setattr(ds, keyword, value(k))
        plane = (other or {}).get(k, plane)
        ds.Rows, ds.Columns = plane.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = np.ascontiguousarray(plane, dtype=np.uint16).tobytes()
        ds.save_as(folder / f"IM{k:04d}.dcm", enforce_file_format=True)
    return folder


def header_values(folder: Path) -> np.ndarray:
    """Every slice's stored values rescaled by its own slope and intercept (pydicom), as
    (slices, rows, columns) in file order: what the headers define."""
    out = []
    for f in sorted(folder.iterdir()):
        ds = pydicom.dcmread(f)
        slope, intercept = float(ds.get("RescaleSlope", 1)), float(ds.get("RescaleIntercept", 0))
        out.append(ds.pixel_array.astype(np.float64) * slope + intercept)
    return np.stack(out)


def as_read(folder: Path) -> np.ndarray:
    """``read_image(folder)`` as (slices, rows, columns): RAS X, Y flipped back to LPS."""
    img = read_image(folder)
    return np.asarray(img.array)[::-1, ::-1, :].transpose(2, 1, 0)


def _pet(tmp_path: Path, name: str, slope: float) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(0)
    stored = rng.integers(0, 30000, (4, 16, 16)).astype(np.uint16)
    folder = write_series(tmp_path / name, n=4, stored=stored,
                          sop=PositronEmissionTomographyImageStorage,
                          RescaleSlope=lambda k: 1 if k == 0 else slope,
                          RescaleIntercept=lambda k: 0)
    return folder, header_values(folder)


@pytest.mark.parametrize("slope", [0.0004, 0.37])
def test_per_slice_fractional_slopes_after_a_slope_of_1_are_read_exactly(
        tmp_path: Path, slope: float) -> None:
    folder, truth = _pet(tmp_path, "pet", slope)
    got = as_read(folder)
    assert got.dtype.kind == "f"
    np.testing.assert_array_equal(got, truth)


def test_per_slice_slopes_past_the_stored_type_do_not_wrap(tmp_path: Path) -> None:
    folder, truth = _pet(tmp_path, "pet", 3.0)
    assert truth.max() > 65535
    got = as_read(folder)
    np.testing.assert_array_equal(got, truth)


def test_per_slice_intercepts_read_exactly(tmp_path: Path) -> None:
    stored = np.full((4, 16, 16), 65000, np.uint16)
    folder = write_series(tmp_path / "ct", n=4, stored=stored, RescaleSlope=lambda k: 1,
                          RescaleIntercept=lambda k: 1000 if k % 2 else 0)
    np.testing.assert_array_equal(as_read(folder), header_values(folder))


def test_a_rescale_slope_of_0_is_read_as_1_and_said(tmp_path: Path) -> None:
    """RescaleSlope 0 (a damaged header: every voxel would be the intercept) was read as 1
    by GDCM without a word; the series and its single file say it now."""
    stored = np.tile(np.arange(256, dtype=np.uint16).reshape(16, 16), (3, 1, 1))
    folder = write_series(tmp_path / "ct", n=3, stored=stored, RescaleSlope=lambda k: 0,
                          RescaleIntercept=lambda k: -1000)
    for path, n in ((folder, 3), (folder / "IM0000.dcm", 1)):
        with pytest.warns(DataWarning, match=rf"RescaleSlope 0 in {n} of {n} DICOM header\(s\)"
                                             r".*read as 1"):
            got = np.asarray(read_image(path).array)
        assert got.min() == -1000 and got.max() == 255 - 1000
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a slope of 1: nothing to say
        read_image(write_series(tmp_path / "one", n=3, RescaleSlope=lambda k: 1))


def test_one_transposed_slice_is_refused_naming_both_files(tmp_path: Path) -> None:
    folder = write_series(tmp_path / "inplane",
                          ImageOrientationPatient=lambda k: [0, 1, 0, 1, 0, 0] if k == 3 else None)
    with pytest.raises(DataError) as err:
        read_image(folder)
    text = str(err.value)
    assert text.startswith(f"{folder}: DICOM slices of 2 orientations in one series: IM0000.dcm ")
    assert "IM0003.dcm axial (ImageOrientationPatient 0 1 0 1 0 0)" in text
    assert "give one orientation per folder" in text


def test_one_slice_rotated_15_degrees_is_refused(tmp_path: Path) -> None:
    jitter = write_series(tmp_path / "jitter", ImageOrientationPatient=lambda k:
                          [1, 0, 0, 0, 0.9999998, 0.0005] if k == 2 else None)
    assert read_image(jitter).shape == (16, 16, 6)  # within the tolerance: one orientation
    folder = write_series(tmp_path / "oblique", ImageOrientationPatient=lambda k:
                          [COS, SIN, 0, -SIN, COS, 0] if k == 2 else None)
    with pytest.raises(DataError, match=r"2 orientations .* IM0002\.dcm axial "
                                        r"\(ImageOrientationPatient 0\.966 0\.259 0"):
        read_image(folder)


def test_a_three_plane_localizer_is_said_as_such(tmp_path: Path) -> None:
    planes = {0: ((0, 1, 0, 0, 0, -1), lambda o: [o, -8, 8]),
              1: ((1, 0, 0, 0, 0, -1), lambda o: [-8, o, 8]),
              2: (AXIAL, lambda o: [-8, -8, o])}
    folder = write_series(
        tmp_path / "localizer", n=9,
        ImageOrientationPatient=lambda k: list(planes[k // 3][0]),
        ImagePositionPatient=lambda k: planes[k // 3][1](10.0 * (k % 3 - 1)))
    with pytest.raises(DataError) as err:
        read_image(folder)
    text = str(err.value)
    assert "DICOM slices of 3 orientations in one series: IM0000.dcm sagittal" in text
    assert "IM0003.dcm coronal" in text and "a localizer or reformats?" in text
    assert "same position" not in text


def _at(zs: list[float]) -> Any:
    return lambda k: [0.0, 0.0, zs[k]]


def test_two_echoes_at_the_same_positions_are_said_as_echoes(tmp_path: Path) -> None:
    folder = write_series(tmp_path / "echoes", ImagePositionPatient=_at([0, 2, 4, 0, 2, 4]),
                          EchoTime=lambda k: 10.0 if k < 3 else 80.0)
    with pytest.raises(DataError) as err:
        read_image(folder)
    assert str(err.value) == (
        f"{folder}: DICOM series holds 2 slices at each of 3 positions (IM0000.dcm and "
        "IM0003.dcm at 0 mm): several echoes in one series; segfew reads one volume per "
        "folder: split them by EchoTime, one folder each")


def test_phases_without_a_telling_tag_are_not_a_missing_slice(tmp_path: Path) -> None:
    folder = write_series(tmp_path / "phases", ImagePositionPatient=_at([0, 2, 4, 0, 2, 4]))
    with pytest.raises(DataError, match=r"2 slices at each of 3 positions .*several echoes, "
                                        r"phases or repeated acquisitions in one series") as err:
        read_image(folder)
    assert "uneven" not in str(err.value) and "missing" not in str(err.value)


def test_some_positions_twice_name_the_differing_tag(tmp_path: Path) -> None:
    folder = write_series(tmp_path / "repeat", n=5, ImagePositionPatient=_at([0, 2, 4, 6, 4]),
                          AcquisitionNumber=lambda k: 2 if k == 4 else 1)
    with pytest.raises(DataError, match=r"IM0002\.dcm and IM0004\.dcm lie at the same position "
                                        r"\(1 of 4 positions .*repeated acquisitions\?\).*split "
                                        r"them by AcquisitionNumber"):
        read_image(folder)


def test_a_copy_of_a_slice_is_said_as_a_copy(tmp_path: Path) -> None:
    folder = write_series(tmp_path / "copy", n=4)
    (folder / "IM0002 copy.dcm").write_bytes((folder / "IM0002.dcm").read_bytes())
    with pytest.raises(DataError, match=r"IM0002 copy\.dcm and IM0002\.dcm lie at the same "
                                        r"position and are copies of one slice"):
        read_image(folder)


def test_a_slice_of_another_size_is_named(tmp_path: Path) -> None:
    small = np.zeros((16, 12), np.uint16)
    folder = write_series(tmp_path / "sizes", other={3: small})
    with pytest.raises(DataError) as err:
        read_image(folder)
    assert str(err.value) == (f"{folder}: DICOM slices differ in size: IM0003.dcm is 12×16 "
                              "pixels, IM0000.dcm 16×16 (columns × rows); they are no one "
                              "volume: give one series per folder")


def test_a_library_message_keeps_a_file_path_inside_the_folder(tmp_path: Path) -> None:
    from segfew.io.dispatch import _reason

    folder = tmp_path / "series"
    error = RuntimeError(f"Size mismatch! The size of {folder}/IM0003.dcm is [40, 32, 1]")
    assert _reason(error, folder) == f"Size mismatch! The size of {folder}/IM0003.dcm is " \
                                     "[40, 32, 1]"
