"""A MetaImage whose voxel data ends before its header's sizes is said to be truncated,
naming the file (ITK says only "file cannot be read"); a compressed one, whose size says
nothing, keeps ITK's reason; a whole file reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segfew.errors import DataError
from segfew.io import read_image


def _write(path: Path, compress: bool = False) -> Path:
    import SimpleITK as sitk

    array = np.random.default_rng(0).random((6, 16, 16)).astype(np.float32)
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path), useCompression=compress)
    return path


def _cut(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def test_a_truncated_metaimage_is_said_to_be_truncated(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.mha")
    assert read_image(path).shape == (16, 16, 6)
    _cut(path, path.stat().st_size - 1000)
    with pytest.raises(DataError, match=r"a\.mha: cannot read image \(the data ends before the "
                                        r"header's sizes \(\d+ of 6144 bytes\): the file is "
                                        r"truncated\)"):
        read_image(path)


def test_a_truncated_data_file_of_a_mhd_is_named(tmp_path: Path) -> None:
    """The header was named ("the file is truncated"), though the header is whole."""
    path = _write(tmp_path / "a.mhd")
    _cut(tmp_path / "a.raw", 5144)
    with pytest.raises(DataError) as refused:
        read_image(path)
    assert str(refused.value) == (f"{path}: cannot read image (its data file a.raw holds 5144 "
                                  "bytes where its sizes need 6144 (16×16×6 MET_FLOAT): a "
                                  "truncated copy)")


def test_a_damaged_compressed_metaimage_keeps_the_readers_reason(tmp_path: Path) -> None:
    path = _write(tmp_path / "z.mha", compress=True)
    _cut(path, path.stat().st_size - 200)
    with pytest.raises(DataError, match=r"z\.mha: cannot read image") as refused:
        read_image(path)
    assert "of 6144 bytes" not in str(refused.value)  # its size says nothing of its voxels
