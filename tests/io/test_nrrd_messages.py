"""A NRRD that ITK (teem) cannot read is said in words naming the file, not in teem's."""

from __future__ import annotations

import bz2
import gzip
from pathlib import Path

import numpy as np
import pytest

from segfew.errors import DataError
from segfew.io import read_image

VALUES = np.arange(256, dtype=np.float32).tobytes()  # 16×16 float


def nrrd(path: Path, encoding: str, data: bytes, typ: str = "float") -> Path:
    path.write_bytes((f"NRRD0004\ntype: {typ}\ndimension: 2\nspace dimension: 2\nsizes: 16 16\n"
                      "space directions: (1,0) (0,1)\nendian: little\n"
                      f"encoding: {encoding}\n\n").encode() + data)
    return path


@pytest.mark.parametrize(("name", "encoding", "data", "words"), [
    ("bzip2", "bzip2", bz2.compress(VALUES), "compressed as bzip2, which this build of ITK "
     "cannot read: re-save it with gzip or raw encoding"),
    ("raw_cut", "raw", VALUES[:400], "the data ends before the header's sizes (100 of 256 "
     "values): the file is truncated"),
    ("gzip_cut", "gzip", gzip.compress(VALUES)[:300], "its compressed data inflate to"),
    ("hex_cut", "hex", VALUES[:100].hex().encode(), "the data ends before the header's sizes "
     "(100 of 1024 bytes): the file is truncated"),
    ("ascii_bad", "ascii", b"1 2 x 4", 'value 3 of 256 ("x") is not a number'),
])
def test_a_nrrd_read_failure_is_said_in_words(tmp_path: Path, name: str, encoding: str,
                                              data: bytes, words: str) -> None:
    path = nrrd(tmp_path / f"{name}.nrrd", encoding, data)
    with pytest.raises(DataError) as err:
        read_image(path)
    text = str(err.value)
    assert text.startswith(f"{path}: cannot read image ({words}")
    said = text[len(str(path)):]
    assert "nrrd]" not in said and "_nrrd" not in said and "fread" not in said


def test_an_unknown_nrrd_type_is_named(tmp_path: Path) -> None:
    path = nrrd(tmp_path / "t.nrrd", "raw", VALUES, typ="floaty")
    with pytest.raises(DataError, match=r'cannot read image \(unknown NRRD type "floaty"\)$'):
        read_image(path)
