"""Compressed voxel data that inflate to other than the header's sizes are refused in one
line before ITK reads them: a MetaImage whose zlib stream is whole but short (MetaIO leaves
the rest zeros or whatever the memory held), cut, damaged or long; a detached NRRD whose gzip
or raw data file is short names that data file. The count is made in chunks, never holding
the inflated data."""

from __future__ import annotations

import gzip
import re
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest

from segfew.errors import DataError
from segfew.io import read_image
from segfew.io.content import misnamed
from segfew.io.headers import data_size_problem

VOXELS = np.arange(16 * 16 * 4, dtype=np.uint16)  # 16×16×4, 2048 bytes
NEED = VOXELS.nbytes

_MHA = """ObjectType = Image
NDims = 3
BinaryData = True
BinaryDataByteOrderMSB = False
CompressedData = True
CompressedDataSize = {size}
DimSize = 16 16 {slices}
ElementType = MET_USHORT
ElementDataFile = {data}
"""


def mha(path: Path, stream: bytes, slices: int = 4) -> Path:
    """A compressed .mha holding ``stream`` (its CompressedDataSize the stream's length)."""
    path.write_bytes(_MHA.format(size=len(stream), slices=slices, data="LOCAL").encode()
                     + stream)
    return path


def test_a_whole_stream_that_inflates_short_is_refused(tmp_path: Path) -> None:
    assert read_image(mha(tmp_path / "whole.mha", zlib.compress(VOXELS.tobytes()))
                      ).array.max() == VOXELS.max()
    path = mha(tmp_path / "half.mha", zlib.compress(VOXELS.tobytes()[: NEED // 2]))
    with pytest.raises(DataError) as refused:
        read_image(path)
    assert str(refused.value) == (
        f"{path}: cannot read image (its compressed data inflate to 1024 bytes where its "
        "sizes need 2048: the file is truncated or damaged; export it again)")


def test_a_detached_zraw_that_inflates_short_names_its_data_file(tmp_path: Path) -> None:
    (tmp_path / "v.zraw").write_bytes(zlib.compress(VOXELS.tobytes()[:1000]))
    path = tmp_path / "v.mhd"
    path.write_text(_MHA.format(size=(tmp_path / "v.zraw").stat().st_size, slices=4,
                                data="v.zraw"))
    with pytest.raises(DataError, match=r"v\.mhd: cannot read image \(its data file v\.zraw "
                                        r"inflates to 1000 bytes where its sizes need 2048: "):
        read_image(path)


def test_a_stream_that_ends_early_is_refused_in_words(tmp_path: Path,
                                                      capfd: pytest.CaptureFixture[str]) -> None:
    stream = zlib.compress(np.random.default_rng(0).integers(0, 4000, NEED // 2, np.uint16)
                           .tobytes())
    path = mha(tmp_path / "cut.mha", stream[: len(stream) // 2])  # its size says the cut one
    with pytest.raises(DataError, match=r"cut\.mha: cannot read image \(its compressed data "
                                        r"inflate to \d+ bytes where its sizes need 2048: the "
                                        r"file is truncated or damaged; export it again\)$"):
        read_image(path)
    assert "MetaImage" not in capfd.readouterr().err


def test_a_stream_that_inflates_long_is_refused(tmp_path: Path) -> None:
    path = mha(tmp_path / "long.mha", zlib.compress(VOXELS.tobytes()), slices=2)
    with pytest.raises(DataError, match=r"long\.mha: cannot read image \(its compressed data "
                                        r"inflate to more than the 1024 bytes its sizes need "
                                        r"\(16×16×2 MET_USHORT\): its DimSize or ElementType "
                                        r"is wrong\)$"):
        read_image(path)


def test_the_count_never_holds_the_inflated_data(tmp_path: Path) -> None:
    stream = zlib.compress(bytes(1 << 24))  # 16 MiB of zeros, some 16 kB compressed
    path = tmp_path / "big.mha"
    path.write_bytes(_MHA.format(size=len(stream), slices=1 << 17, data="LOCAL")
                     .replace("MET_USHORT", "MET_UCHAR").encode() + stream)  # needs 32 MiB
    tracemalloc.start()
    try:
        said = data_size_problem(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert said is not None and "inflate to 16777216 bytes where its sizes need 33554432" in said
    assert peak < 4 << 20


_NHDR = """NRRD0004
type: unsigned short
dimension: 3
sizes: 16 16 4
endian: little
encoding: {encoding}
data file: {data}
"""


@pytest.mark.parametrize(("encoding", "data", "words"), [
    ("raw", VOXELS.tobytes()[:1000], "its data file v.dat holds 1000 bytes where its sizes "
     "need 2048 (16×16×4 unsigned short): a truncated copy"),
    ("gzip", gzip.compress(VOXELS.tobytes()[:1000]), "its data file v.dat inflates to 1000 "
     "bytes where its sizes need 2048: the file is truncated or damaged; export it again"),
])
def test_a_short_data_file_of_a_nhdr_is_named(tmp_path: Path, encoding: str, data: bytes,
                                              words: str) -> None:
    (tmp_path / "v.dat").write_bytes(data)
    path = tmp_path / "v.nhdr"
    path.write_text(_NHDR.format(encoding=encoding, data="v.dat"))
    with pytest.raises(DataError) as refused:
        read_image(path)
    assert str(refused.value) == f"{path}: cannot read image ({words})"


def test_a_gzip_data_file_in_two_members_still_reads(tmp_path: Path) -> None:
    whole = VOXELS.tobytes()
    (tmp_path / "v.raw.gz").write_bytes(gzip.compress(whole[:1000]) + gzip.compress(whole[1000:]))
    path = tmp_path / "v.nhdr"
    path.write_text(_NHDR.format(encoding="gzip", data="v.raw.gz"))
    assert int(read_image(path).array.max()) == int(VOXELS.max())
    (tmp_path / "v.raw.gz").write_bytes(gzip.compress(whole[:1000]) + gzip.compress(whole[:24]))
    with pytest.raises(DataError, match=r"inflates to 1024 bytes where its sizes need 2048"):
        read_image(path)


def test_a_nrrd_header_named_nhdr_is_not_misnamed(tmp_path: Path) -> None:
    path = tmp_path / "v.nhdr"
    path.write_text(_NHDR.format(encoding="raw", data="v.raw"))
    assert misnamed(path) is None
    assert misnamed(path.rename(tmp_path / "v.png")) == (
        "holds a NRRD image but is named .png: rename it to end in .nrrd")


def test_an_attached_gzip_nrrd_whose_data_inflate_long_or_short_is_refused(
        tmp_path: Path) -> None:
    """Longer: its first part was read without a word (the sizes describe another file)."""
    import SimpleITK as sitk

    head = (b"NRRD0004\ntype: unsigned short\ndimension: 3\nsizes: 16 16 4\nendian: little\n"
            b"encoding: gzip\n\n")
    whole = VOXELS.tobytes()
    for name, data, words in (
            ("long", whole + whole[:1024], "inflate to more than the 2048 bytes its sizes "
                                           "need (16×16×4 unsigned short): its sizes or type"),
            ("short", whole[:1000], "inflate to 1000 bytes where its sizes need 2048")):
        path = tmp_path / f"{name}.nrrd"
        path.write_bytes(head + gzip.compress(data))
        with pytest.raises(DataError, match=re.escape(words)):
            read_image(path)
    written = tmp_path / "itk.nrrd"  # SimpleITK's own compressed NRRD: read as written
    sitk.WriteImage(sitk.GetImageFromArray(VOXELS.reshape(4, 16, 16)), str(written),
                    useCompression=True)
    assert int(read_image(written).array.max()) == int(VOXELS.max())
