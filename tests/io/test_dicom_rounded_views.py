"""DICOM series as exporters and anonymisers write them: positions rounded to a few
decimals read (a missing slice and a real gantry tilt are still refused), and projection
radiographs (mammography views, a chest PA and lateral) in one series are refused rather
than stacked as slices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segfew.errors import DataError
from segfew.io import read_image
from segfew.io.dicom_stack import written_unit
from tests.conftest import dicom_dataset, write_dicom_slice


def _series(folder: Path, positions: list[tuple[float, float, float]], decimals: int,
            orientation: tuple[float, ...] = (1, 0, 0, 0, 1, 0)) -> Path:
    """One 16×16 slice per position, ImagePositionPatient written to ``decimals``."""
    import SimpleITK as sitk

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k, pos in enumerate(positions):
        sl = sitk.GetImageFromArray(rng.integers(0, 500, (16, 16)).astype(np.int16))
        write_dicom_slice(folder / f"IM{k:04d}.dcm", sl, {
            "0008|0060": "CT", "0020|000d": "1.2.826.0.1.3680043.2.1125.2",
            "0020|000e": "1.2.826.0.1.3680043.2.1125.1", "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{round(p, decimals):.{decimals}f}" for p in pos),
            "0020|0037": "\\".join(f"{c:.6f}" for c in orientation),
        })
    return folder


def _axial(step: float, n: int = 10, skip: int | None = None) -> list[tuple[float, float, float]]:
    return [(-125.0, -125.0, -100.0 + step * k) for k in range(n) if k != skip]


def _oblique(step: float, n: int = 10, tilt: float = 0.0
             ) -> tuple[list[tuple[float, float, float]], tuple[float, ...]]:
    """Slices 20° about x; ``tilt`` (degrees) shears them along their columns."""
    c, s = np.cos(np.radians(20)), np.sin(np.radians(20))
    col, normal = np.array([0, c, s]), np.array([0, -s, c])
    shear = np.tan(np.radians(tilt)) * step
    return ([tuple(np.array([-100.0, -80.0, 30.0]) + k * (step * normal + shear * col))
             for k in range(n)], (1, 0, 0, 0, c, s))


@pytest.mark.parametrize(("step", "decimals"), [(0.625, 2), (1.25, 1)])
def test_axial_positions_rounded_in_the_header_read(tmp_path: Path, step: float,
                                                    decimals: int) -> None:
    img = read_image(_series(tmp_path / "s", _axial(step), decimals))
    assert img.shape == (16, 16, 10)
    assert img.spacing[2] == pytest.approx(step, abs=10.0 ** -decimals)


def test_oblique_positions_rounded_in_the_header_read(tmp_path: Path) -> None:
    positions, orientation = _oblique(1.0)
    img = read_image(_series(tmp_path / "s", positions, 2, orientation))
    assert sorted(img.shape) == [10, 16, 16]


def test_a_missing_slice_is_refused_whatever_the_rounding(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"spacing is uneven: 1\.2\d? mm between IM0003\.dcm "
                                        r"and IM0004\.dcm"):
        read_image(_series(tmp_path / "s", _axial(0.625, skip=4), 2))


def test_a_real_gantry_tilt_is_refused_whatever_the_rounding(tmp_path: Path) -> None:
    positions, orientation = _oblique(1.0, tilt=5.0)
    with pytest.raises(DataError, match=r"gantry tilt of 5\.0°"):
        read_image(_series(tmp_path / "s", positions, 2, orientation))


@pytest.mark.parametrize("decimals", [2, 6])
def test_one_slice_moved_in_its_plane_is_refused_by_name(tmp_path: Path, decimals: int) -> None:
    """The first and last slices in line, one between them 3 mm to the side: no tilt of the
    stack, but no box of voxels either."""
    positions = _axial(1.25)
    positions[5] = (positions[5][0] + 3.0, *positions[5][1:])
    with pytest.raises(DataError, match=r"slice IM0005\.dcm lies 3 mm to the side of the "
                                        r"others"):
        read_image(_series(tmp_path / "s", positions, decimals))


def test_the_unit_of_the_last_written_decimal() -> None:
    assert written_unit(["-125.0", "-99.38 ", "7"]) == pytest.approx(0.01)
    assert written_unit(["1.5e2"]) == pytest.approx(10.0)
    assert written_unit(["", "abc"]) == 0.0


def _radiograph(path: Path, modality: str, view: dict[str, str], series: str) -> None:
    sop = "1.2.840.10008.5.1.4.1.1.1.2" if modality == "MG" else "1.2.840.10008.5.1.4.1.1.1.1"
    ds = dicom_dataset(sop)
    ds.preamble = b"\0" * 128
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3.4", series
    ds.Modality, ds.InstanceNumber = modality, 1
    ds.Rows, ds.Columns, ds.SamplesPerPixel = 24, 16, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    for key, value in view.items():
        setattr(ds, key, value)
    ds.PixelData = np.random.default_rng(0).integers(0, 4000, (24, 16), np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def test_mammography_views_in_one_series_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "mg"
    folder.mkdir()
    for i, (side, view) in enumerate((("R", "CC"), ("L", "CC"), ("R", "MLO"), ("L", "MLO"))):
        _radiograph(folder / f"IM{i}.dcm", "MG", {"ImageLaterality": side, "ViewPosition": view},
                    "1.2.3.4.5")
    with pytest.raises(DataError, match=r"mg: 4 projection views \(R CC, L CC, R MLO, L MLO\) "
                                        r"in one DICOM series.*each view is its own 2D image"):
        read_image(folder)
    assert read_image(folder / "IM0.dcm").shape == (16, 24)  # one view reads as a 2D image


def test_a_chest_pa_and_lateral_in_one_series_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "cxr"
    folder.mkdir()
    for i, view in enumerate(("PA", "LL")):
        _radiograph(folder / f"IM{i}.dcm", "DX", {"ViewPosition": view}, "1.2.3.4.6")
    with pytest.raises(DataError, match=r"2 projection views \(PA, LL\)"):
        read_image(folder)


def _moved(positions: list[tuple[float, float, float]], slices: range, mm: float = 3.0
           ) -> list[tuple[float, float, float]]:
    """``positions`` with ``slices`` moved ``mm`` along x, in their plane."""
    return [(p[0] + mm * (k in slices), p[1], p[2]) for k, p in enumerate(positions)]


@pytest.mark.parametrize("decimals", [2, 6])
@pytest.mark.parametrize("end", [0, 9])
def test_a_moved_end_slice_is_named_not_called_a_tilt(tmp_path: Path, end: int,
                                                      decimals: int) -> None:
    """A least-squares line through all ten slices leans towards the moved end one: the fit
    must not follow it, nor call the stack tilted."""
    folder = _series(tmp_path / "s", _moved(_axial(1.25), range(end, end + 1)), decimals)
    with pytest.raises(DataError, match=rf"slice IM000{end}\.dcm lies 3 mm to the side of the "
                                        r"others \(moved in its plane\)"):
        read_image(folder)


def test_two_moved_slices_are_counted(tmp_path: Path) -> None:
    folder = _series(tmp_path / "s", _moved(_axial(1.25), range(4, 6)), 2)
    with pytest.raises(DataError, match=r"slice IM0004\.dcm lies 3 mm to the side of the others "
                                        r"\(2 slices off the line through the rest\)"):
        read_image(folder)


def test_a_table_move_halfway_is_two_groups_not_a_tilt(tmp_path: Path) -> None:
    folder = _series(tmp_path / "s", _moved(_axial(1.25), range(5, 10)), 2)
    with pytest.raises(DataError, match=r"slices lie in two groups 3 mm apart sideways "
                                        r"\(IM0000\.dcm–IM0004\.dcm and IM0005\.dcm–IM0009\.dcm: "
                                        r"a table move\?\)") as err:
        read_image(folder)
    assert "tilt" not in str(err.value)


def test_a_moved_slice_in_a_tilted_stack_is_named(tmp_path: Path) -> None:
    """The tilt is a line of slices; the moved last slice is off that line."""
    positions, orientation = _oblique(1.0, tilt=5.0)
    folder = _series(tmp_path / "s", _moved(positions, range(9, 10)), 2, orientation)
    with pytest.raises(DataError, match=r"slice IM0009\.dcm lies 3 mm to the side of the others "
                                        r"\(moved in its plane\)"):
        read_image(folder)
