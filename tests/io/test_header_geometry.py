"""NRRD and MetaImage headers whose geometry ITK would misread (a NaN position read as 0, a
file stating no voxel size given 1 mm) or crash on (an ASCII NRRD without the blank line
before its data) are said in words before ITK reads them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segfew.errors import DataError
from segfew.io import read_image
from segfew.io.header_geometry import header_problem

VOXELS = (np.arange(16 * 16 * 4) % 200).astype("<i2")


def _nrrd(path: Path, fields: str, encoding: str = "raw", blank: bool = True) -> Path:
    data = (" ".join(map(str, VOXELS)).encode() if encoding == "ascii" else VOXELS.tobytes())
    head = (f"NRRD0004\n# written by hand\ntype: short\ndimension: 3\nsizes: 16 16 4\n"
            f"endian: little\nencoding: {encoding}\n{fields}")
    path.write_bytes(head.encode() + (b"\n\n" if blank else b"\n") + data)
    return path


def _mha(path: Path, fields: str) -> Path:
    head = (f"ObjectType = Image\nNDims = 3\nDimSize = 16 16 4\nElementType = MET_SHORT\n"
            f"{fields}\nElementDataFile = LOCAL\n")
    path.write_bytes(head.encode() + VOXELS.tobytes())
    return path


def test_a_nrrd_without_the_blank_line_before_its_data_is_refused(tmp_path: Path) -> None:
    """ASCII data read as header lines crashed the process (SIGSEGV): a batch lost."""
    ascii_file = _nrrd(tmp_path / "a.nrrd", "spacings: 1 1 3", "ascii", blank=False)
    words = ("cannot read image (its header has no blank line before the voxel data: line 9 "
             "is no 'field: value' line; a NRRD header ends with an empty line)")
    assert header_problem(ascii_file) == words  # checked without ITK: no crash to risk
    raw = _nrrd(tmp_path / "r.nrrd", "spacings: 1 1 3", blank=False)
    with pytest.raises(DataError) as refused:
        read_image(raw)
    assert str(refused.value) == f"{raw}: {words}"
    good = _nrrd(tmp_path / "g.nrrd", "spacings: 1 1 3\nmodality:=MR", "ascii")
    assert read_image(good).spacing == (1.0, 1.0, 3.0)
    listed = tmp_path / "l.nhdr"  # teem's other spelling of "data file": names follow
    (tmp_path / "s0.raw").write_bytes(VOXELS[:256].tobytes())
    listed.write_text("NRRD0004\ntype: short\ndimension: 3\nsizes: 16 16 1\nendian: little\n"
                      "encoding: raw\ndatafile: LIST\ns0.raw\n")
    assert header_problem(listed) is None


@pytest.mark.parametrize(("name", "fields", "words"), [
    ("o.nrrd", "space: left-posterior-superior\nspace directions: (1,0,0) (0,1,0) (0,0,3)\n"
     "space origin: (nan,0,0)", "its space origin ((nan,0,0)) holds NaN or inf: the scan has "
     "no position"),
    ("d.nrrd", "space: left-posterior-superior\nspace directions: (0,0,0) (0,1,0) (0,0,3)",
     "its space directions give axis 1 a length of 0"),
    ("s.nrrd", "spacings: 1 0 3", "its spacings (1 0 3) are no voxel size"),
    ("o.mha", "ElementSpacing = 1 1 3\nOffset = nan 0 0", "its Offset (nan 0 0) holds NaN or "
     "inf: the scan has no position"),
    ("big.mha", "ElementSpacing = 1 1 3\nOffset = 1e999 0 0", "its Offset (1e999 0 0) holds "
     "NaN or inf"),  # strtod's inf
    ("alias.nrrd", "space: left-posterior-superior\nspacedirections: (1,0,0) (0,1,0) (0,0,3)\n"
     "spaceorigin: (nan,0,0)", "its space origin ((nan,0,0)) holds NaN"),  # teem's spelling
    ("z.mha", "ElementSpacing = nan 1 3", "its ElementSpacing (nan 1 3) is no voxel size"),
    ("z0.mha", "ElementSpacing = 0 0 0", "its ElementSpacing (0 0 0) is no voxel size"),
])
def test_a_nan_position_or_a_zero_voxel_size_is_refused_in_words(
        tmp_path: Path, name: str, fields: str, words: str) -> None:
    """A NaN Offset was read as 0 ("no problems found"); a NaN ElementSpacing was refused
    in ITK's words ("Zero-valued spacing is not supported …")."""
    path = (_nrrd if name.endswith(".nrrd") else _mha)(tmp_path / name, fields)
    with pytest.raises(DataError, match=words.replace("(", r"\(").replace(")", r"\)")):
        read_image(path)


@pytest.mark.parametrize(("name", "fields"), [
    ("nan.nrrd", "spacings: NaN NaN NaN"),  # NRRD's word for "not known"
    ("part.nrrd", "spacings: nan 1 3"),  # one axis without a size: no voxel size either
    ("none.nrrd", "kinds: domain domain domain"),
    ("none.mha", "Offset = 0 0 0"),
])
def test_a_file_stating_no_voxel_size_has_none(tmp_path: Path, name: str, fields: str) -> None:
    """ITK gives it 1 mm; it was measured in mm as if the file said so."""
    path = (_nrrd if name.endswith(".nrrd") else _mha)(tmp_path / name, fields)
    img = read_image(path)
    assert img.spacing_placeholder == "no voxel size in the header"
    stated = (_nrrd if name.endswith(".nrrd") else _mha)(
        tmp_path / f"stated_{name}", "spacings: 1 1 3" if name.endswith(".nrrd")
        else "ElementSpacing = 1 1 3")
    assert read_image(stated).spacing_placeholder is None


def test_a_nrrd_time_series_is_refused_as_other_4d_images_are(tmp_path: Path) -> None:
    path = tmp_path / "t.nrrd"
    head = ("NRRD0004\ntype: short\ndimension: 4\nsizes: 16 16 2 2\nendian: little\n"
            "encoding: raw\nkinds: domain domain domain time\n\n")
    path.write_bytes(head.encode() + VOXELS.tobytes())
    with pytest.raises(DataError, match=r"t\.nrrd: has 4 dimensions \(sizes 16 16 2 2, kinds "
                                        r"domain domain domain time\); expected a 2D or 3D"):
        read_image(path)
