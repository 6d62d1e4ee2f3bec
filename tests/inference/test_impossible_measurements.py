"""Measurements that cannot be, and names that differ by channel: ED and ES swapped give
negative ejection fractions, said in one warning per case (one text, folded over a batch)
and flagged ``low_confidence``; a case whose channels are not the model's is told so, not
blamed on its spacing; 2D perimeter and width on non-square pixels."""

from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from segfew.errors import DataWarning, RepeatedWarnings
from segfew.inference.batch import PredictionRow
from segfew.inference.ensemble import average_rows, flag_confidence
from segfew.inference.measure import measure_images, structure_measurements
from tests.conftest import invoke, save_nifti

HEART = {1: "RV", 2: "myocardium", 3: "LV"}


def _heart(lv: int, rv: int) -> np.ndarray:
    """A label map (24, 24, 3): an LV square of side ``lv``, an RV of side ``rv``, a wall."""
    m = np.zeros((24, 24, 3), np.int16)
    m[2:22, 2:22, :] = 2
    m[4:4 + lv, 4:4 + lv, :] = 3
    m[14:14 + rv, 14:14 + rv, :] = 1
    return m


def _images(tmp_path: Path, name: str) -> list[SimpleNamespace]:
    return [SimpleNamespace(path=tmp_path / f"{name}_{ch}.nii.gz", spacing=(1.5, 1.5, 10.0),
                            spacing_known=True, array=np.full((24, 24, 3), 50.0),
                            shape=(24, 24, 3))
            for ch in ("frame01", "frame02")]


def _measure(tmp_path: Path, name: str, maps: list[np.ndarray]
             ) -> tuple[dict[str, float], list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = measure_images(_images(tmp_path, name), maps, HEART, ["frame01", "frame02"],
                             ["frame01", "frame02"], -1)
    return out, [w for w in caught if issubclass(w.category, DataWarning)]


def test_swapped_phases_are_said_once_per_case_in_one_text_and_kept(tmp_path: Path) -> None:
    ed, es = _heart(8, 6), _heart(5, 4)
    right, said = _measure(tmp_path, "ok", [ed, es])
    assert said == [] and right["LV_ejection_fraction_frame01_frame02"] > 0
    swapped, said = _measure(tmp_path, "a", [es, ed])
    assert swapped["LV_ejection_fraction_frame01_frame02"] < 0  # the value is kept
    assert len(said) == 1
    line = str(said[0].message)
    assert line.startswith(str(tmp_path / "a_frame01.nii.gz"))
    assert "ejection fraction below 0" in line and "wrong order" in line
    assert "frame01 is read as end-diastole (ED) and frame02 as end-systole (ES)" in line
    lv = swapped["LV_ejection_fraction_frame01_frame02"]
    assert f"LV_ejection_fraction_frame01_frame02 {lv:.3g}" in line
    _, other = _measure(tmp_path, "b", [_heart(4, 3), _heart(9, 7)])
    # the folded text is the same for every case; each case's values are in its own line
    assert said[0].message.message == other[0].message.message
    assert str(said[0].message) != str(other[0].message)
    repeats = RepeatedWarnings(shown=1)
    assert repeats.admit(said[0].message) and not repeats.admit(other[0].message)
    (counted,) = repeats.counts()
    assert "b_frame01.nii.gz" in counted and said[0].message.message in counted


def test_the_kind_of_impossible_values_not_only_the_ejection_fraction() -> None:
    from segfew.inference.measure_names import impossible

    nan = float("nan")
    measured = {"LV_ejection_fraction_a_b": -0.2, "RV_ejection_fraction_a_b": 0.5,
                "LV_volume_ml_a": -1.0, "LV_area_px_a": 3.0, "LV_to_RV_volume_ratio_a": -0.5,
                "wall_volume_change_a_b": -0.3, "blob_volume_change_a_b": 1.5,
                "LV_ejection_fraction_a_c": 1.2, "LV_thickness_mean_mm_a": nan,
                "LV_intensity_mean_a": -40.0, "t_volume_vox": -2.0}
    assert impossible(measured) == {"LV_ejection_fraction_a_b": -0.2, "LV_volume_ml_a": -1.0,
                                    "LV_to_RV_volume_ratio_a": -0.5,
                                    "blob_volume_change_a_b": 1.5,
                                    "LV_ejection_fraction_a_c": 1.2, "t_volume_vox": -2.0}


def test_a_flagged_row_stays_low_confidence_whatever_its_confidence() -> None:
    def row(flag: bool) -> PredictionRow:
        r = PredictionRow(id="a", path="a", predicted="x", probabilities={"x": 0.99, "y": 0.01})
        r.low_confidence = flag
        return r

    rows = [row(True), row(False)]
    flag_confidence(rows, 0.5)
    assert [r.low_confidence for r in rows] == [True, False]
    averaged = average_rows([[row(True)], [row(False)]], ["x", "y"])
    flag_confidence(averaged, 0.5)
    assert averaged[0].confidence == pytest.approx(0.99) and averaged[0].low_confidence


def _cine(folder: Path, masks: Path, case: str, big: int, swap: bool,
          names: tuple[str, str] = ("frame01", "frame02")) -> None:
    ed, es = _heart(big, big - 2), _heart(big - 3, big - 4)
    for name, m in zip(names, (es, ed) if swap else (ed, es), strict=True):
        affine = np.diag([1.5, 1.5, 10.0, 1.0])
        save_nifti(folder / f"{case}_{name}.nii.gz",
                   (m * 40 + 10).astype(np.float32), affine)
        save_nifti(masks / f"{case}_{name}_seg.nii.gz", m, affine)


@pytest.fixture(scope="module")
def cine_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A measures classifier trained with ``--masks`` on ED/ES cases in order
    (``frame01`` ED, ``frame02`` ES), and the masks folder."""
    tmp = tmp_path_factory.mktemp("cine")
    train, masks = tmp / "train", tmp / "masks"
    lines = ["id,label"]
    for i in range(8):
        _cine(train, masks, f"c{i}", 8 + 2 * (i % 2) + i // 4, swap=False)
        lines.append(f"c{i},{'big' if i % 2 else 'small'}")
    (tmp / "t.csv").write_text("\n".join(lines) + "\n")
    clf = tmp / "clf.pt"
    invoke("train-classifier", "--table", str(tmp / "t.csv"), "--images", str(train),
           "--channels", "frame01,frame02", "--framework", "measures", "--masks", str(masks),
           "--label-names", "background,RV,myocardium,LV", "--out", str(clf), "--threads", "1",
           "--no-progress", "--no-cache")
    return clf, masks


def test_predict_flags_swapped_phases_low_confidence_in_a_few_lines(
        cine_model: tuple[Path, Path], tmp_path: Path) -> None:
    clf, masks = cine_model
    new = tmp_path / "new"
    for i in range(5):
        _cine(new, masks, f"n{i}", 9 + i % 2, swap=True)
    out = tmp_path / "p.csv"
    said = invoke("predict", "--model", str(clf), "--input", str(new), "--masks", str(masks),
                  "--out", str(out), "--threads", "1", "--no-progress", "--workers", "0")
    text = " ".join(said.split())
    assert text.count("ejection fraction below 0") == 4  # 3 cases said, the rest counted
    assert "n0_frame01.nii.gz: an ejection fraction below 0" in text
    assert "also 2 more files" in text
    assert "5 cases, 0 failed, 5 low_confidence" in text  # the last line counts them
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 5 and {r["low_confidence"] for r in rows} == {"yes"}


def test_the_models_channels_under_other_names_are_said_not_blamed_on_spacing(
        cine_model: tuple[Path, Path], tmp_path: Path) -> None:
    """Refused before any work at the door; a case that reaches the model under other
    channel names is said as such, not as a matter of spacing."""
    from segfew.data import Case
    from segfew.errors import DataError
    from segfew.inference.measure_names import fitted_names

    clf, masks = cine_model
    renamed = tmp_path / "renamed"
    _cine(renamed, masks, "r0", 9, swap=False, names=("ED", "ES"))
    out = tmp_path / "p.csv"
    said = invoke("predict", "--model", str(clf), "--input", str(renamed), "--masks",
                  str(masks), "--channels", "ED,ES", "--out", str(out), "--threads", "1",
                  "--no-progress", "--workers", "0", expect=2)
    assert "the model measures channels frame01, frame02 in that order" in " ".join(
        said.split()) and not out.exists()
    case = Case("r0", (renamed / "r0_ED.nii.gz", renamed / "r0_ES.nii.gz"))
    with pytest.raises(DataError) as err:
        fitted_names(["LV_volume_ml_frame01", "LV_volume_ml_frame02"],
                     {"LV_volume_ml_ED": 1.0, "LV_volume_ml_ES": 0.5}, case,
                     ["frame01", "frame02"])
    error = str(err.value)
    assert "r0_ED.nii.gz" in error
    assert "the model's channels are frame01, frame02 in that order" in error
    assert "this case's are ED, ES" in error and "--channels frame01,frame02" in error
    assert "spacing" not in error


def _disc(spacing: tuple[float, float], radius: float = 10.0) -> np.ndarray:
    ny, nx = int(40 / spacing[0]), int(40 / spacing[1])
    yy, xx = np.meshgrid((np.arange(ny) - ny / 2) * spacing[0],
                         (np.arange(nx) - nx / 2) * spacing[1], indexing="ij")
    return (yy**2 + xx**2) < radius**2


@pytest.mark.parametrize("spacing", [(0.1, 0.3), (0.3, 0.1), (0.1, 0.5)])
def test_a_disc_on_non_square_pixels_reads_as_on_square_ones(spacing: tuple[float, float]
                                                             ) -> None:
    square = structure_measurements(_disc((0.2, 0.2)), (0.2, 0.2))
    m = structure_measurements(_disc(spacing), spacing)
    assert square["perimeter_mm"] == pytest.approx(65.28, abs=0.05)  # as before on square
    assert m["perimeter_mm"] == pytest.approx(2 * math.pi * 10, rel=0.06)
    assert m["sphericity"] == pytest.approx(square["sphericity"], abs=0.05)
    assert m["thickness_mean_mm"] == pytest.approx(20.0, abs=0.7)  # its diameter


def _ring(spacing: tuple[float, float], inner: float, outer: float) -> np.ndarray:
    ny, nx = int(24 / spacing[0]), int(24 / spacing[1])
    yy, xx = np.meshgrid((np.arange(ny) - ny / 2 + 0.5) * spacing[0],
                         (np.arange(nx) - nx / 2 + 0.5) * spacing[1], indexing="ij")
    r = np.sqrt(yy**2 + xx**2)
    return (r >= inner) & (r < outer)


@pytest.mark.parametrize("spacing", [(0.1, 1.0), (0.6, 0.1)])
def test_small_and_thin_structures_on_non_square_pixels_are_kept(spacing: tuple[float, float]
                                                                 ) -> None:
    """Not rounded to the coarse pixel size: a 2 mm disc keeps its perimeter (a circularity
    of at most 1), a 0.5 mm ring a perimeter and width, a 2 mm annulus its two edges."""
    disc = structure_measurements(_ring(spacing, -1.0, 2.0), spacing)
    assert disc["perimeter_mm"] == pytest.approx(2 * math.pi * 2, rel=0.05)
    assert disc["sphericity"] <= 1.0
    thin = structure_measurements(_ring(spacing, 8.0, 8.5), spacing)
    assert thin["perimeter_mm"] > 25 and thin["thickness_mean_mm"] < 0.7
    wall = structure_measurements(_ring(spacing, 6.0, 8.0), spacing)
    square = structure_measurements(_ring((0.1, 0.1), 6.0, 8.0), (0.1, 0.1))
    assert wall["perimeter_mm"] == pytest.approx(square["perimeter_mm"], rel=0.03)
    assert wall["thickness_mean_mm"] == pytest.approx(2.0, abs=0.2)


def test_a_cavity_missing_from_one_phase_is_said_and_flagged(tmp_path: Path) -> None:
    from segfew.inference.measure_names import impossible

    healthy, said = _measure(tmp_path, "ok", [_heart(8, 6), _heart(5, 4)])
    assert said == [] and impossible(healthy) == {}
    no_es, said_es = _measure(tmp_path, "es", [_heart(8, 6), _heart(0, 4)])
    assert no_es["LV_ejection_fraction_frame01_frame02"] == 1.0
    assert "LV_ejection_fraction_frame01_frame02" in impossible(no_es)
    assert "LV absent from the map at frame02 while present at frame01: check the label " \
        "maps" in str(said_es[0].message)
    no_ed, said_ed = _measure(tmp_path, "ed", [_heart(0, 6), _heart(9, 4)])
    assert impossible(no_ed) == {"LV_volume_ml_frame01": 0.0}  # its NaN EF is not the cause
    assert "LV absent from the map at frame01 while present at frame02" in str(
        said_ed[0].message)
    _, said_other = _measure(tmp_path, "es2", [_heart(9, 7), _heart(0, 5)])
    assert said_es[0].message.message == said_other[0].message.message  # one folded text
    assert str(said_es[0].message) != str(said_other[0].message)
    neither, said = _measure(tmp_path, "none", [_heart(0, 6), _heart(0, 4)])
    assert said == [] and impossible(neither) == {}  # absent from both: nothing to compare


def test_a_negative_ejection_fraction_in_one_cavity_only_is_not_blamed_on_the_phases(
        tmp_path: Path) -> None:
    out, said = _measure(tmp_path, "rv", [_heart(8, 4), _heart(5, 6)])
    assert out["LV_ejection_fraction_frame01_frame02"] > 0
    assert out["RV_ejection_fraction_frame01_frame02"] < 0
    (line,) = [str(w.message) for w in said]
    assert "wrong order" not in line and "check the label maps of that structure" in line
    assert "RV_ejection_fraction_frame01_frame02" in line
