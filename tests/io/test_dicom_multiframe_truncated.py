"""A DICOM file cut short (a copy interrupted), alone, in a series folder or with several
frames: the error names the damaged file and says its pixel data are short, told from
its header and size before ITK reads (ITK said "unknown format or corrupt file" of the
folder)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from segfew.errors import DataError
from segfew.io import read_image
from tests.conftest import dicom_dataset
from tests.io.test_dicom_multiframe import multiframe


def _series(folder: Path, slices: int = 4) -> Path:
    """``slices`` 16×16 CT slices 2 mm apart, IM000.dcm, IM001.dcm, …"""
    folder.mkdir(parents=True)
    study, uid = generate_uid(), generate_uid()
    for k in range(slices):
        ds = dicom_dataset(CTImageStorage, ExplicitVRLittleEndian)
        ds.PatientID, ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "P", "CT", 1, k + 1
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, uid
        ds.ImagePositionPatient, ds.ImageOrientationPatient = [0, 0, 2.0 * k], [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.Rows, ds.Columns = [0.5, 0.5], 16, 16
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = np.full((16, 16), k, np.uint16).tobytes()
        ds.save_as(folder / f"IM{k:03d}.dcm", enforce_file_format=True)
    return folder


def _cut(path: Path, keep: int) -> Path:
    """``path`` cut to its first ``keep`` bytes."""
    path.write_bytes(path.read_bytes()[:keep])
    return path


def test_a_series_with_one_file_cut_short_names_that_file(tmp_path: Path) -> None:
    folder = _series(tmp_path / "series")
    damaged = folder / "IM002.dcm"
    _cut(damaged, damaged.stat().st_size - 300)  # 212 of the 512 pixel bytes kept
    with pytest.raises(DataError) as e:
        read_image(folder)
    assert e.value.path == damaged
    assert str(e.value).endswith("its pixel data hold 212 bytes where Rows × Columns × bits "
                                 "(16×16×16 bits) need 512: the file is truncated (cut short "
                                 "in a copy?)")


def test_a_multi_frame_file_cut_short_is_named_with_its_frames(tmp_path: Path) -> None:
    path = multiframe(tmp_path / "mf.dcm", [0, 1, 2])  # 3 frames of 6×5 × 16 bits: 180 bytes
    _cut(path, path.stat().st_size - 100)
    with pytest.raises(DataError, match=r"mf\.dcm: its pixel data hold 80 bytes where .* "
                                        r"\(5×6×3 frames×16 bits\) need 180: the file is "
                                        "truncated"):
        read_image(path)


@pytest.mark.parametrize("damage", ["rle_cut", "trailing_bytes"])
def test_a_series_whose_one_file_itk_cannot_read_names_that_file(tmp_path: Path,
                                                                 damage: str) -> None:
    """Damage the header and size cannot tell (compressed pixel data cut short, bytes after
    the data set): ITK's failure of the whole series named only the folder; the file it
    cannot read on its own is named."""
    import pydicom
    from pydicom.uid import RLELossless

    folder = _series(tmp_path / "series", slices=5)
    bad = folder / "IM002.dcm"
    if damage == "rle_cut":
        for path in sorted(folder.glob("*.dcm")):
            ds = pydicom.dcmread(path)
            ds.compress(RLELossless)
            ds.save_as(path)
        _cut(bad, len(bad.read_bytes()) - 40)
    else:
        bad.write_bytes(bad.read_bytes() + b"\0GARBAGE" * 64)
    with pytest.raises(DataError) as refused:
        read_image(folder)
    assert str(refused.value).startswith(
        f"{bad}: cannot read this file of the DICOM series series ("), str(refused.value)
