"""Voxel data that do not fit their header are refused in one line before ITK reads them:
a data file longer than a .mhd's or .nhdr's sizes (a wrong DimSize would read 16 of 20
slices), a compressed .mha cut short or damaged; nothing of MetaIO's own console text
reaches the terminal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segfew.errors import DataError
from segfew.io import read_image

_MHD = """ObjectType = Image
NDims = 3
BinaryData = True
BinaryDataByteOrderMSB = False
CompressedData = False
DimSize = 16 16 {slices}
ElementType = MET_SHORT
{extra}ElementDataFile = vol.raw
"""
_NHDR = """NRRD0004
type: short
dimension: 3
sizes: 16 16 {slices}
endian: little
encoding: raw
{extra}data file: vol.raw
"""


def _pair(folder: Path, suffix: str, slices: int, extra: str = "") -> Path:
    (folder / "vol.raw").write_bytes(np.arange(16 * 16 * 20, dtype=np.int16).tobytes())
    header = folder / f"vol{suffix}"
    header.write_text((_MHD if suffix == ".mhd" else _NHDR).format(slices=slices, extra=extra))
    return header


@pytest.mark.parametrize(("suffix", "fields"), [(".mhd", "DimSize or ElementType"),
                                                (".nhdr", "sizes or type")])
def test_a_data_file_longer_than_the_header_says_is_refused(tmp_path: Path, suffix: str,
                                                            fields: str) -> None:
    assert read_image(_pair(tmp_path, suffix, 20)).shape == (16, 16, 20)
    with pytest.raises(DataError) as refused:
        read_image(_pair(tmp_path, suffix, 16))
    assert str(refused.value) == (
        f"{tmp_path / ('vol' + suffix)}: the data file vol.raw holds 10240 bytes where the "
        f"header's sizes need 8192 (16×16×16 {'MET_SHORT' if suffix == '.mhd' else 'short'}): "
        f"its {fields} is wrong")


@pytest.mark.parametrize("suffix", [".mhd", ".nhdr"])
def test_trailing_bytes_fewer_than_a_wrong_size_would_leave_are_read_past(
        tmp_path: Path, suffix: str) -> None:
    """400 bytes after 16×16×20 shorts: no other DimSize or type leaves that (one more voxel
    along the longest axis adds 640), so the file reads, as ITK and an attached file do."""
    header = _pair(tmp_path, suffix, 20)
    whole = read_image(header).array
    with (tmp_path / "vol.raw").open("ab") as f:
        f.write(b"\0" * 400)
    assert np.array_equal(read_image(header).array, whole)
    with (tmp_path / "vol.raw").open("ab") as f:
        f.write(b"\0" * 240)  # 640 in all: DimSize 17 16 20 would fit
    with pytest.raises(DataError, match="is wrong"):
        read_image(header)


@pytest.mark.parametrize(("suffix", "skip"), [(".mhd", "HeaderSize = 2048\n"),
                                              (".nhdr", "byte skip: 2048\n"),
                                              (".nhdr", "byte skip: -1\n")])
def test_a_stated_offset_places_the_data_within_a_longer_file(tmp_path: Path, suffix: str,
                                                              skip: str) -> None:
    img = read_image(_pair(tmp_path, suffix, 16, skip))
    assert img.shape == (16, 16, 16)
    assert int(img.array.min()) == 1024  # the data start after the skipped 2048 bytes


def _compressed(path: Path) -> Path:
    import SimpleITK as sitk

    array = np.random.default_rng(0).random((6, 16, 16)).astype(np.float32)
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path), useCompression=True)
    return path


def test_a_truncated_compressed_mha_is_said_in_words(tmp_path: Path,
                                                     capfd: pytest.CaptureFixture[str]) -> None:
    path = _compressed(tmp_path / "z.mha")
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) - 1500])
    with pytest.raises(DataError, match=r"z\.mha: cannot read image \(the compressed voxel data "
                                        r"end before the header's CompressedDataSize \(\d+ of "
                                        r"\d+ bytes\): the file is truncated\)"):
        read_image(path)
    assert "MetaImage" not in capfd.readouterr().err


def test_a_damaged_compressed_mha_is_refused_quietly(tmp_path: Path,
                                                     capfd: pytest.CaptureFixture[str]) -> None:
    path = _compressed(tmp_path / "z.mha")
    data = bytearray(path.read_bytes())
    for i in range(len(data) - 2000, len(data) - 1000):
        data[i] ^= 0x55
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"z\.mha: cannot read image \(the compressed voxel data "
                                        r"do not decompress: the file is damaged\)"):
        read_image(path)
    assert "Uncompress" not in capfd.readouterr().err


def test_a_truncated_uncompressed_mha_prints_nothing(tmp_path: Path,
                                                     capfd: pytest.CaptureFixture[str]) -> None:
    import SimpleITK as sitk

    path = tmp_path / "a.mha"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((6, 16, 16), np.float32)), str(path))
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(DataError, match=r"of 6144 bytes\): the file is truncated"):
        read_image(path)
    assert capfd.readouterr().err == ""
