"""A NRRD's stated unit (``space units``, or ``units`` without ``space``), which ITK ignores:
the voxel size is converted to mm; a unit segfew does not know leaves no real voxel size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segfew.io import read_image
from tests.io import read_warned as read

VOL = np.arange(24, dtype=np.uint8).reshape(4, 3, 2)  # X, Y, Z


def nrrd(path: Path, fields: list[str], array: np.ndarray = VOL, detached: bool = False,
         encoding: str = "utf-8") -> Path:
    """A raw NRRD (fastest axis first) with ``fields`` after the sizes; ``detached``: a
    ``.nhdr`` naming a ``.raw`` beside it."""
    lines = ["NRRD0004", f"type: {'uint8' if array.dtype == np.uint8 else 'float'}",
             f"dimension: {array.ndim}", f"sizes: {' '.join(map(str, array.shape))}",
             "endian: little", "encoding: raw", *fields]
    data = np.ascontiguousarray(array).tobytes(order="F")
    if detached:
        (path.parent / (path.stem + ".raw")).write_bytes(data)
        path.write_bytes(("\n".join([*lines, f"data file: {path.stem}.raw"]) + "\n")
                         .encode(encoding))
    else:
        path.write_bytes(("\n".join(lines) + "\n\n").encode(encoding) + data)
    return path


def spaced(sx: float, sy: float, sz: float, units: str | None) -> list[str]:
    fields = ["space: left-posterior-superior",
              f"space directions: ({sx},0,0) (0,{sy},0) (0,0,{sz})", "space origin: (4,8,12)"]
    return fields + ([f"space units: {units}"] if units else [])



@pytest.mark.parametrize(("unit", "size"), [
    ("mm", 1.25), (None, 1.25), ("cm", 0.125), ("m", 0.00125), ("um", 1250.0),
    ("µm", 1250.0), ("microns", 1250.0), ("MM", 1.25), ("micrometre", 1250.0)])
def test_space_units_become_mm(tmp_path: Path, unit: str | None, size: float) -> None:
    """The same volume in any unit measures the same in mm (and its origin too)."""
    units = None if unit is None else " ".join([f'"{unit}"'] * 3)
    img, said = read(nrrd(tmp_path / "a.nrrd", spaced(size, size, size, units)))
    assert img.spacing == (1.25, 1.25, 1.25) and img.spacing_known and said == []
    scale = 1.25 / size
    np.testing.assert_allclose(img.source_affine[:3, 3], np.array([-4, -8, 12]) * scale)
    np.testing.assert_array_equal(img.array, VOL[::-1, ::-1, :])


def test_units_that_differ_per_axis(tmp_path: Path) -> None:
    img, _ = read(nrrd(tmp_path / "a.nrrd", spaced(0.1, 200, 2.5, '"cm" "um" "mm"')))
    assert img.spacing == (1.0, 0.2, 2.5)


def test_a_latin1_header_and_a_detached_header(tmp_path: Path) -> None:
    img, _ = read(nrrd(tmp_path / "a.nrrd", spaced(500, 500, 2000, '"µm" "µm" "µm"'),
                       encoding="latin-1"))
    assert img.spacing == (0.5, 0.5, 2.0)
    img, _ = read(nrrd(tmp_path / "b.nhdr", spaced(0.05, 0.05, 0.2, '"cm" "cm" "cm"'),
                       detached=True))
    assert img.spacing == (0.5, 0.5, 2.0)


def test_units_of_a_file_without_space(tmp_path: Path) -> None:
    fields = ["spacings: 0.05 0.05 0.2", 'units: "cm" "cm" "cm"',
              "kinds: domain domain domain"]
    img, _ = read(nrrd(tmp_path / "a.nrrd", fields))
    assert img.spacing == (0.5, 0.5, 2.0) and img.spacing_known


@pytest.mark.parametrize("space", [True, False])
def test_units_of_a_colour_axis_are_not_spatial(tmp_path: Path, space: bool) -> None:
    """A colour axis's unit is no length: it neither scales nor voids the voxel size."""
    rgb = np.stack([VOL] * 3, 0)
    fields = ["kinds: RGB-color domain domain domain"] + (
        ["space: left-posterior-superior",
         "space directions: none (0.05,0,0) (0,0.05,0) (0,0,0.2)",
         'space units: "cm" "cm" "cm"', 'units: "furlong" "" "" ""'] if space else
        ["spacings: nan 0.05 0.05 0.2", 'units: "furlong" "cm" "cm" "cm"'])
    img, said = read(nrrd(tmp_path / "a.nrrd", fields, rgb))
    assert img.spacing == (0.5, 0.5, 2.0) and img.spacing_known and said == []


@pytest.mark.parametrize("unit", ["furlong", "pixel", "ms"])
def test_an_unknown_unit_is_no_real_voxel_size(tmp_path: Path, unit: str) -> None:
    path = nrrd(tmp_path / "a.nrrd", spaced(1.5, 1.5, 3, f'"{unit}" "{unit}" "{unit}"'))
    img, said = read(path)
    assert not img.spacing_known and unit in str(img.spacing_placeholder)
    assert img.spacing == (1.5, 1.5, 3.0)  # the stored numbers: their ratios still hold
    assert len(said) == 1 and said[0].startswith(f'{path}: NRRD unit "{unit}" is none')


def test_a_mask_in_cm_measures_as_its_scan_in_mm(tmp_path: Path) -> None:
    """One volume as NRRD in mm and in cm gives one volume in mL."""
    mask = (VOL > 10).astype(np.uint8)
    mm = read_image(nrrd(tmp_path / "mm.nrrd", spaced(1.25, 1.25, 1.25, '"mm" "mm" "mm"'),
                         mask))
    cm = read_image(nrrd(tmp_path / "cm.nrrd", spaced(0.125, 0.125, 0.125,
                                                      '"cm" "cm" "cm"'), mask))
    volume = [float(np.prod(im.spacing)) * int(im.array.sum()) / 1000 for im in (mm, cm)]
    assert volume[0] == pytest.approx(volume[1]) == pytest.approx(13 * 1.25**3 / 1000)
