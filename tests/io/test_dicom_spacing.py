"""DICOM voxel sizes that the header leaves out: ITK puts 1 mm for each, segfew says so.

In-plane: PixelSpacing, else the detector's ImagerPixelSpacing (with a warning), else no
real voxel size. Between slices without ImagePositionPatient: SpacingBetweenSlices, else
SliceThickness (with a warning), else no real voxel size. No ImageOrientationPatient: no
orientation claimed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    EnhancedCTImageStorage,
    ExplicitVRLittleEndian,
    generate_uid,
)

from segfew.errors import DataError
from segfew.io import read_image
from tests.conftest import dicom_dataset
from tests.io import read_warned as read

SHAPE = (6, 5, 4)  # X (columns), Y (rows), slices
FULL = {"PixelSpacing": [0.6, 0.5], "ImageOrientationPatient": [1, 0, 0, 0, 1, 0],
        "SliceThickness": 2.0}
NO_POSITION = ("ImagePositionPatient", "ImageOrientationPatient")


def _dataset(sop_class: str, tags: dict[str, Any], plane: np.ndarray, k: int) -> Dataset:
    ds = dicom_dataset(sop_class, ExplicitVRLittleEndian)
    ds.PatientID, ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "P", "CT", 1, k + 1
    ds.Rows, ds.Columns = plane.shape[1], plane.shape[0]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    for tag, value in tags.items():
        setattr(ds, tag, value)
    ds.PixelData = np.ascontiguousarray(plane.T).astype(np.uint16).tobytes()
    return ds


def series(folder: Path, drop: tuple[str, ...] = (), step: float = 2.0,
           **tags: Any) -> Path:
    """A series of ``SHAPE[2]`` slices ``step`` mm apart: ``FULL`` plus ``tags``, less
    ``drop`` (``ImagePositionPatient`` is each slice's unless dropped)."""
    folder.mkdir(parents=True)
    vol = np.arange(np.prod(SHAPE)).reshape(SHAPE)
    study, uid = generate_uid(), generate_uid()
    for k in range(SHAPE[2]):
        values = {**FULL, "ImagePositionPatient": [0.0, 0.0, step * k], **tags,
                  "StudyInstanceUID": study, "SeriesInstanceUID": uid}
        values = {t: v for t, v in values.items() if t not in drop}
        _dataset(CTImageStorage, values, vol[:, :, k], k).save_as(
            folder / f"IM{k:03d}.dcm", enforce_file_format=True)
    return folder


def one_file(path: Path, drop: tuple[str, ...] = (), **tags: Any) -> Path:
    """One 2D digital X-ray file (no position, no orientation, as most have)."""
    values = {"PixelSpacing": [0.6, 0.5], **tags, "StudyInstanceUID": generate_uid(),
              "SeriesInstanceUID": generate_uid()}
    values = {t: v for t, v in values.items() if t not in drop}
    _dataset(DigitalXRayImageStorageForPresentation, values,
             np.arange(30).reshape(6, 5), 0).save_as(path, enforce_file_format=True)
    return path



def test_a_complete_series_keeps_its_geometry_without_a_word(tmp_path: Path) -> None:
    img, said = read(series(tmp_path / "A"))
    assert img.spacing == (0.5, 0.6, 2.0) and img.spacing_known and said == []
    assert img.orientation == "LPS"


@pytest.mark.parametrize("imager", [[0.6, 0.5], [0.143, 0.139]])
def test_imager_pixel_spacing_stands_in_with_a_warning(tmp_path: Path,
                                                       imager: list[float]) -> None:
    img, said = read(series(tmp_path / "B", drop=("PixelSpacing",), ImagerPixelSpacing=imager))
    assert img.spacing == (imager[1], imager[0], 2.0) and img.spacing_known  # (X, Y) = (col, row)
    assert len(said) == 1 and said[0].startswith(f"{tmp_path / 'B'}: no PixelSpacing: the "
                                                 "detector's ImagerPixelSpacing")
    assert "magnification" in said[0]


@pytest.mark.parametrize("lacking", [(0,), (0, 3)])
def test_slices_without_pixel_spacing_take_the_others(tmp_path: Path,
                                                      lacking: tuple[int, ...]) -> None:
    """The first slice alone says nothing (an anonymiser's slip): the others' size, said."""
    folder = series(tmp_path / "C")
    for k in lacking:
        ds = pydicom.dcmread(folder / f"IM{k:03d}.dcm")
        del ds.PixelSpacing
        ds.save_as(folder / f"IM{k:03d}.dcm")
    img, said = read(folder)
    assert img.spacing == (0.5, 0.6, 2.0) and img.spacing_known
    assert said == [f"{folder}: {len(lacking)} of 4 slices give no PixelSpacing: the others' "
                    "0.6×0.5 mm is used"]


def test_a_projection_file_with_imager_pixel_spacing_only(tmp_path: Path) -> None:
    path = one_file(tmp_path / "dx.dcm", drop=("PixelSpacing",), ImagerPixelSpacing=[0.2, 0.3])
    img, said = read(path)
    assert img.dim == 2 and img.spacing == (0.3, 0.2) and img.spacing_known
    assert len(said) == 1 and said[0].startswith(f"{path}: no PixelSpacing")
    assert img.orientation == ""  # no ImageOrientationPatient: no LPS claimed


def test_no_pixel_spacing_is_no_real_voxel_size(tmp_path: Path) -> None:
    img, _ = read(series(tmp_path / "C", drop=("PixelSpacing",)))
    assert not img.spacing_known and "PixelSpacing" in str(img.spacing_placeholder)
    assert img.spacing[2] == 2.0  # the slice positions still measure the slice spacing
    img, _ = read(one_file(tmp_path / "c.dcm", drop=("PixelSpacing",)))
    assert not img.spacing_known and img.spacing == (1.0, 1.0)


@pytest.mark.parametrize("thickness", [2.0, 3.5])
def test_slice_thickness_stands_in_for_missing_positions_with_a_warning(
        tmp_path: Path, thickness: float) -> None:
    folder = series(tmp_path / "D", drop=NO_POSITION, SliceThickness=thickness)
    img, said = read(folder)
    assert img.spacing == (0.5, 0.6, thickness) and img.spacing_known
    assert img.orientation == ""
    assert len(said) == 1 and said[0].startswith(f"{folder}: no ImagePositionPatient")
    assert f"SliceThickness ({thickness:g} mm)" in said[0]


@pytest.mark.parametrize("between", [2.0, 2.5])
def test_spacing_between_slices_comes_before_slice_thickness(tmp_path: Path,
                                                             between: float) -> None:
    folder = series(tmp_path / "E", drop=NO_POSITION, SpacingBetweenSlices=between)
    img, said = read(folder)
    assert img.spacing == (0.5, 0.6, between) and img.spacing_known and said == []
    assert img.orientation == ""


def test_no_positions_and_no_slice_spacing_is_no_real_voxel_size(tmp_path: Path) -> None:
    img, _ = read(series(tmp_path / "F", drop=(*NO_POSITION, "SliceThickness")))
    assert not img.spacing_known and "slice" in str(img.spacing_placeholder)
    assert img.spacing == (0.5, 0.6, 1.0)


def test_positions_without_orientation_claim_no_orientation(tmp_path: Path) -> None:
    img, _ = read(series(tmp_path / "G", drop=("ImageOrientationPatient",)))
    assert img.orientation == "" and img.spacing == (0.5, 0.6, 2.0)


def test_pixel_spacing_comes_before_the_detector_spacing(tmp_path: Path) -> None:
    """GDCM reads a digital X-ray's ImagerPixelSpacing even where PixelSpacing (calibrated
    to the patient) is given."""
    img, said = read(one_file(tmp_path / "dx.dcm", ImagerPixelSpacing=[0.2, 0.3]))
    assert img.spacing == (0.5, 0.6) and img.spacing_known and said == []


@pytest.mark.parametrize("positions", [True, False])
def test_a_multi_frame_file_reads_its_functional_groups(tmp_path: Path,
                                                        positions: bool) -> None:
    """PixelSpacing and SliceThickness in the shared functional groups; GDCM gives 1 mm
    in-plane where the frames have no position."""
    measures = Dataset()
    measures.PixelSpacing, measures.SliceThickness = [0.6, 0.5], 2.0
    plane = Dataset()
    plane.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared = Dataset()
    shared.PixelMeasuresSequence, shared.PlaneOrientationSequence = \
        Sequence([measures]), Sequence([plane])
    frames = []
    for k in range(3):
        frame, where = Dataset(), Dataset()
        where.ImagePositionPatient = [0.0, 0.0, 2.0 * k]
        if positions:
            frame.PlanePositionSequence = Sequence([where])
        frames.append(frame)
    tags = {"NumberOfFrames": 3, "SharedFunctionalGroupsSequence": Sequence([shared]),
            "PerFrameFunctionalGroupsSequence": Sequence(frames),
            "StudyInstanceUID": generate_uid(), "SeriesInstanceUID": generate_uid()}
    path = tmp_path / "mf.dcm"
    ds = _dataset(EnhancedCTImageStorage, tags, np.zeros((6, 5)), 0)
    ds.PixelData = np.arange(90, dtype=np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    img, said = read(path)
    assert img.shape == (6, 5, 3) and img.spacing == (0.5, 0.6, 2.0) and img.spacing_known
    assert img.orientation == "LPS" and len(said) == (0 if positions else 1)


def test_slices_of_one_series_with_other_pixel_spacings_are_refused(tmp_path: Path) -> None:
    """Half the slices at 0.7 mm read as 0.5 with the first: a silent error of 2× in area."""
    folder = series(tmp_path / "A")
    for k in range(SHAPE[2] // 2, SHAPE[2]):
        path = folder / f"IM{k:03d}.dcm"
        ds = pydicom.dcmread(path)
        ds.PixelSpacing = [0.7, 0.7]
        ds.save_as(path)
    with pytest.raises(DataError, match=r"PixelSpacing differs between the slices of the "
                                        r"series \(0\.6×0\.5 and 0\.7×0\.7 mm\)"):
        read_image(folder)
