"""Enhanced (multi-frame) DICOM: frames stack by their per-frame positions
(PerFrameFunctionalGroupsSequence → PlanePositionSequence), not by the order they are
stored in, and get the checks a series of single-frame files gets: one orientation, one
frame per position (naming what tells the frames at one position apart), even spacing,
no frame off the line of the others."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import EnhancedMRImageStorage, ExplicitVRLittleEndian, generate_uid

from segfew.errors import DataError
from tests.conftest import dicom_dataset
from tests.io import read_warned as read

SIZE = (6, 5)  # X (columns), Y (rows)
STEP = 3.0  # mm between slices


def _group(**macros: Dataset) -> Dataset:
    """A functional group holding each macro as a sequence of one item."""
    group = Dataset()
    for name, item in macros.items():
        setattr(group, name, Sequence([item]))
    return group


def multiframe(path: Path, slices: list[int], times: list[int] | None = None,
               positions: list[tuple[float, float, float]] | None = None,
               orientations: list[list[float]] | None = None) -> Path:
    """An Enhanced MR file whose stored frame ``i`` is slice ``slices[i]`` (its voxels all
    ``10 * slice + 100 * time``), at ``(0, 0, STEP * slice)`` unless ``positions`` say;
    ``times``: each frame's TemporalPositionIndex."""
    times = times or [1] * len(slices)
    ds = dicom_dataset(EnhancedMRImageStorage, ExplicitVRLittleEndian)
    ds.PatientID, ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "P", "MR", 1, 1
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.NumberOfFrames, ds.Rows, ds.Columns = len(slices), SIZE[1], SIZE[0]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    measures, plane = Dataset(), Dataset()
    measures.PixelSpacing, measures.SliceThickness = [0.5, 0.5], STEP
    plane.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared = {"PixelMeasuresSequence": measures}
    if orientations is None:
        shared["PlaneOrientationSequence"] = plane
    ds.SharedFunctionalGroupsSequence = Sequence([_group(**shared)])
    frames = []
    for i, (k, t) in enumerate(zip(slices, times, strict=True)):
        where, content = Dataset(), Dataset()
        where.ImagePositionPatient = list(positions[i] if positions else (0.0, 0.0, STEP * k))
        content.TemporalPositionIndex, content.DimensionIndexValues = t, [t, k + 1]
        macros: dict[str, Any] = {"PlanePositionSequence": where,
                                  "FrameContentSequence": content}
        if orientations is not None:
            own = Dataset()
            own.ImageOrientationPatient = orientations[i]
            macros["PlaneOrientationSequence"] = own
        frames.append(_group(**macros))
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    values = [np.full(SIZE[::-1], 10 * k + 100 * t, np.uint16) for k, t in zip(slices, times,
                                                                               strict=True)]
    ds.PixelData = np.stack(values).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_frames_stored_out_of_order_read_in_order_of_position(tmp_path: Path) -> None:
    """Frames stored in acquisition (interleaved) order were read as stored, 1 mm apart."""
    ordered, said = read(multiframe(tmp_path / "ordered.dcm", [0, 1, 2, 3, 4]))
    falling, _ = read(multiframe(tmp_path / "falling.dcm", [4, 3, 2, 1, 0]))
    mixed, said_mixed = read(multiframe(tmp_path / "mixed.dcm", [0, 2, 4, 1, 3]))
    for img in (ordered, falling, mixed):
        assert img.spacing == (0.5, 0.5, STEP)
        assert [int(img.array[0, 0, k]) for k in range(5)] == [100, 110, 120, 130, 140]
        np.testing.assert_allclose(img.affine, ordered.affine, atol=1e-6)
    assert said == said_mixed == []


def test_several_frames_at_each_position_are_refused_naming_what_tells_them_apart(
        tmp_path: Path) -> None:
    """2 time points × 3 slices were read as one volume of 6 slices 3 mm apart."""
    path = multiframe(tmp_path / "cine.dcm", [0, 1, 2, 0, 1, 2], times=[1, 1, 1, 2, 2, 2])
    with pytest.raises(DataError) as e:
        read(path)
    words = str(e.value)
    assert "cine.dcm" in words and "2 frames at each of 3 positions" in words
    assert "frame 1 and frame 4" in words and "TemporalPositionIndex" in words


def test_unevenly_spaced_frames_are_refused(tmp_path: Path) -> None:
    """A missing frame (slice 3 of 0–4): the file was read as 4 slices 3 mm apart."""
    with pytest.raises(DataError, match=r"uneven: 6 mm between frame 3 and frame 4"):
        read(multiframe(tmp_path / "gap.dcm", [0, 1, 2, 4]))


def test_frames_off_one_line_are_refused(tmp_path: Path) -> None:
    """Frames sheared along their plane (a gantry tilt of 18°): no box of voxels holds them."""
    positions = [(0.0, 1.0 * k, STEP * k) for k in range(4)]
    with pytest.raises(DataError, match=r"frame 4 lies 3 mm to the side of frame 1"):
        read(multiframe(tmp_path / "tilt.dcm", [0, 1, 2, 3], positions=positions))


def test_frames_of_two_orientations_are_refused(tmp_path: Path) -> None:
    axial, coronal = [1, 0, 0, 0, 1, 0], [1, 0, 0, 0, 0, -1]
    path = multiframe(tmp_path / "planes.dcm", [0, 1, 2], orientations=[axial, axial, coronal])
    with pytest.raises(DataError, match=r"frames of 2 orientations in one multi-frame file: "
                                        r"frame 1 axial .*, frame 3 coronal"):
        read(path)


def test_a_folder_holding_one_multi_frame_file_reads_as_that_file(tmp_path: Path) -> None:
    """Refused as "a series of 1 multi-frame DICOM files", though the file read when named."""
    (tmp_path / "case").mkdir()
    path = multiframe(tmp_path / "case" / "IM0001", [0, 2, 4, 1, 3])
    as_file, _ = read(path)
    as_folder, said = read(tmp_path / "case")
    np.testing.assert_array_equal(as_folder.array, as_file.array)
    np.testing.assert_allclose(as_folder.affine, as_file.affine)
    assert [int(as_folder.array[0, 0, k]) for k in range(5)] == [100, 110, 120, 130, 140]
    assert said == []


def _legacy(path: Path, frames: int, **elements: Any) -> Path:
    """A legacy multi-frame MR file (no functional groups): one ImagePositionPatient for
    the file, NumberOfFrames, and ``elements`` (FrameIncrementPointer, FrameTime …)."""
    from pydicom.uid import MRImageStorage

    ds = dicom_dataset(MRImageStorage)
    ds.PatientID, ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "P", "MR", 1, 1
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.NumberOfFrames, ds.Rows, ds.Columns = frames, SIZE[1], SIZE[0]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelSpacing, ds.ImagePositionPatient = [0.5, 0.5], [0, 0, 0]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    ds.PixelData = np.stack([np.full(SIZE[::-1], 10 * k, np.uint16)
                             for k in range(frames)]).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_a_legacy_cine_loop_is_refused_as_time_points_not_slices(tmp_path: Path) -> None:
    """An ultrasound/XA-style cine (FrameIncrementPointer → FrameTime) was read as a volume
    with slices 33.3 "mm" apart (the frame time)."""
    from pydicom.tag import Tag

    path = _legacy(tmp_path / "cine.dcm", 3, FrameTime=33.3,
                   FrameIncrementPointer=Tag(0x0018, 0x1063))
    with pytest.raises(DataError, match=r"cine\.dcm: its 3 frames are time points "
                                        r"\(FrameIncrementPointer: FrameTime\), not slices"):
        read(path)


def test_legacy_frames_placed_by_one_position_are_not_spaced_by_it(tmp_path: Path) -> None:
    """The file's one ImagePositionPatient places its first frame only: ITK's 1 mm between
    frames was taken as measured. SliceThickness is used, said; without it, no voxel size."""
    thick, said = read(_legacy(tmp_path / "thick.dcm", 3, SliceThickness=4.0))
    assert thick.spacing[2] == 4.0 and any("SliceThickness (4 mm) apart" in s for s in said)
    bare, _ = read(_legacy(tmp_path / "bare.dcm", 3))
    assert bare.spacing_placeholder == "no slice positions or slice spacing in the DICOM header"


def test_a_spacing_between_slices_of_0_is_refused_in_words(tmp_path: Path) -> None:
    """ITK's own words were said: "Zero-valued spacing is not supported and may result in
    undefined behavior. Refusing to change spacing from [1, 1, 1] to …"."""
    with pytest.raises(DataError) as refused:
        read(_legacy(tmp_path / "sbs0.dcm", 3, SpacingBetweenSlices=0))
    said = str(refused.value)
    assert "its header gives a voxel size of 0" in said and "Refusing" not in said
