"""Units are honest: a placeholder spacing is noticed, and sizes then say vox/px, not ml/mm;
clinical names only where they mean what clinicians mean."""

from __future__ import annotations

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from segfew.data import Case
from segfew.errors import DataError, DataWarning
from segfew.inference.measure import is_cavity, measure_case
from segfew.inference.measure_names import fitted_names
from segfew.io import read_image
from tests.conftest import save_itk, save_nifti


def _nifti_with_units(path: Path, affine: np.ndarray, unit: str | None) -> Path:
    img = nib.Nifti1Image(np.ones((4, 4, 3), np.int16), affine)
    if unit is not None:
        img.header.set_xyzt_units(unit)
    nib.save(img, str(path))
    return path


def test_placeholder_spacings_are_noticed(tmp_path: Path) -> None:
    shifted = np.eye(4)
    shifted[:3, 3] = (-40, 12, 7)
    mm = np.diag([1.4, 1.4, 8.0, 1.0])
    assert not read_image(save_nifti(tmp_path / "eye.nii.gz", np.ones((4, 4, 3)))).spacing_known
    # pixdim 1 and no unit (an offset, so no identity affine): still no size
    no_unit = read_image(_nifti_with_units(tmp_path / "nounit.nii.gz", shifted, None))
    assert no_unit.spacing_placeholder == "voxel size 1 with no unit"
    # 1 mm stated in the header, or a real spacing: a measurement
    assert read_image(_nifti_with_units(tmp_path / "mm1.nii.gz", shifted, "mm")).spacing_known
    assert read_image(_nifti_with_units(tmp_path / "mm.nii.gz", mm, None)).spacing_known
    png = read_image(save_itk(tmp_path / "a.png", np.zeros((7, 5), np.uint8)))
    assert png.spacing_placeholder == "pixel size 1 with no unit"
    mha = read_image(save_itk(tmp_path / "a.mha", np.zeros((4, 4, 3), np.int16), (1.0, 1.0, 1.0),
                              (3.0, 2.0, 1.0)))
    assert mha.spacing_known  # MetaImage states its spacing: 1 mm is a measurement there


def test_without_spacing_sizes_are_in_voxels_and_say_so() -> None:
    ed = np.zeros((20, 20, 4), dtype=np.int16)
    ed[2:12, 2:12] = 3  # 400 voxels
    es = np.zeros_like(ed)
    es[2:12, 2:7] = 3
    m = measure_case([ed, es], [None, None], {3: "LV"}, ["ED", "ES"])
    assert m["LV_volume_vox_ED"] == 400 and m["LV_volume_vox_ES"] == 200
    assert not [k for k in m if k.endswith(("_ml_ED", "_mm_ED", "_mm2_ED"))]
    assert "LV_thickness_mean_vox_ED" in m and "LV_surface_vox_ED" in m
    assert m["LV_ejection_fraction_ED_ES"] == pytest.approx(0.5)  # unit-free: kept
    # one channel without spacing puts the whole case in voxels (no mixed units)
    mixed = measure_case([ed, es], [(1.5, 1.5, 8.0), None], {3: "LV"}, ["ED", "ES"])
    assert set(mixed) == set(m)
    # 2D without a pixel size: pixels
    flat = measure_case([ed[..., 0]], [None], {3: "lesion"}, ["all"])
    assert flat["lesion_area_px_all"] == 100 and "lesion_perimeter_px_all" in flat


def test_a_wall_has_a_volume_change_not_an_ejection_fraction() -> None:
    ed = np.zeros((24, 24, 4), dtype=np.int16)
    ed[4:20, 4:20] = 2  # myocardium ring around the LV cavity
    ed[8:16, 8:16] = 3
    es = ed.copy()
    es[9:15, 9:15] = 2  # systole: the wall thickens, the cavity empties
    names = {1: "RV", 2: "myocardium", 3: "LV"}
    m = measure_case([ed, es], [(1.5, 1.5, 8.0)] * 2, names, ["ED", "ES"])
    assert "myocardium_ejection_fraction_ED_ES" not in m
    assert m["myocardium_volume_change_ED_ES"] < 0  # it grew: a change, not an ejection
    assert m["LV_ejection_fraction_ED_ES"] == pytest.approx(1 - (64 - 36) / 64)
    # the synthetic phantoms' names, and other words for cavities and walls
    assert [is_cavity(n) for n in ("wall", "cavity", "blob", "LV wall", "left ventricle",
                                   "RA", "tumour", "LV_blood_pool")] == [
        False, True, False, False, True, True, False, True]


def test_models_fitted_on_the_old_wall_name_still_load(tmp_path: Path) -> None:
    case = Case("p1", (tmp_path / "p1.nii.gz",))
    measured = {"LV_volume_ml_ED": 1.0, "myocardium_volume_change_ED_ES": -0.2,
                "LV_ejection_fraction_ED_ES": 0.5}
    old = ["LV_volume_ml_ED", "myocardium_ejection_fraction_ED_ES", "LV_ejection_fraction_ED_ES"]
    assert fitted_names(old, measured, case) == [
        "LV_volume_ml_ED", "myocardium_volume_change_ED_ES", "LV_ejection_fraction_ED_ES"]
    # a model fitted in ml, shown images without spacing: refused, naming the units
    in_voxels = {"LV_volume_vox_ED": 400.0, "LV_ejection_fraction_ED_ES": 0.5}
    with pytest.raises(DataError, match=r"LV_volume_ml_ED.*sizes are in vox"):
        fitted_names(["LV_volume_ml_ED"], in_voxels, case)


def test_train_classifier_and_predict_say_a_missing_spacing(tmp_path: Path) -> None:
    from segfew.data.read import warn_placeholder_spacing

    eye = Case("a", (save_nifti(tmp_path / "a.nii.gz", np.ones((4, 4, 3), np.int16)),))
    png = Case("b", (save_itk(tmp_path / "b.png", np.zeros((7, 5), np.uint8)),))
    real = Case("c", (save_nifti(tmp_path / "c.nii.gz", np.ones((4, 4, 3), np.int16),
                                 np.diag([1.4, 1.4, 8.0, 1.0])),))
    for case, unit in ((eye, "vox"), (png, "px")):
        with pytest.warns(DataWarning, match=f"no real voxel size.*say {unit} instead of ml/mm"):
            assert warn_placeholder_spacing([case]) is not None
        with pytest.warns(DataWarning) as said:  # a model without measurements: none said
            warn_placeholder_spacing([case], measures=False)
        assert "measurements" not in str(said[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert warn_placeholder_spacing([real]) is None


@pytest.mark.parametrize(("suffix", "unit"), [(".png", "px"), (".nii.gz", "vox")])
def test_a_case_without_spacing_is_measured_in_voxels_end_to_end(
        tmp_path: Path, suffix: str, unit: str) -> None:
    from segfew.inference.measure import case_measurements
    from segfew.modelfile import load_model
    from tests.conftest import make_segmenter, scan

    rng = np.random.default_rng(0)
    if suffix == ".png":
        path = save_itk(tmp_path / f"a{suffix}", (scan(rng, (32, 32)) + 50).astype(np.uint8))
    else:  # an identity affine, as in the public ACDC copy
        path = save_nifti(tmp_path / f"a{suffix}", scan(rng, (32, 32, 4)))
    model, meta = load_model(make_segmenter(tmp_path / "seg.pt"))
    m = case_measurements(model, meta.preprocess.plain(), meta.classes, Case("a", (path,)))
    kind = "area" if unit == "px" else "volume"
    assert [k for k in m if k.startswith(f"l1_{kind}_")] == [f"l1_{kind}_{unit}_0"]
    assert f"l1_major_axis_{unit}_0" in m
    assert not [k for k in m if any(u in k for u in ("_ml_", "_mm_", "_mm2_"))]


def test_measures_refuses_a_training_set_mixing_ml_and_voxels(tmp_path: Path) -> None:
    from segfew.inference.fit_measures import fit_measurement_classifier
    from segfew.inference.measure import Measurer
    from segfew.modelfile import load_model
    from tests.conftest import make_segmenter, scan

    rng = np.random.default_rng(0)
    real = np.diag([1.4, 1.4, 8.0, 1.0])
    cases = [Case(f"c{i}", (save_nifti(tmp_path / f"c{i}.nii.gz", scan(rng, (32, 32, 4)),
                                       None if i == 3 else real),)) for i in range(4)]
    model, meta = load_model(make_segmenter(tmp_path / "seg.pt"))
    measurer = Measurer(model, meta.preprocess.plain(), meta.classes)
    with pytest.raises(DataError, match=r"c3.nii.gz: this case does not give measurements"):
        fit_measurement_classifier(measurer, cases, [0, 1, 0, 1], 2)


def test_a_case_in_voxels_against_a_model_in_ml_is_refused_before_any_work(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Measuring a large scan takes minutes; the mismatch is known from its header."""
    import segfew.inference.measure
    from segfew.inference.measure import Measurer
    from segfew.inference.measure_names import spacing_expected
    from segfew.modelfile import load_model
    from tests.conftest import make_segmenter, scan

    rng = np.random.default_rng(0)
    in_voxels = Case("v", (save_nifti(tmp_path / "v.nii.gz", scan(rng, (32, 32, 4))),))
    model, meta = load_model(make_segmenter(tmp_path / "seg.pt"))
    measure = Measurer(model, meta.preprocess.plain(), meta.classes)
    measure.expect_real = spacing_expected(["l1_volume_ml_0", "l1_volume_change_0"])
    assert measure.expect_real is True and spacing_expected(["l1_volume_vox_0"]) is False

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("segmented before the refusal")

    monkeypatch.setattr(segfew.inference.measure, "segment_on_source", never)
    with pytest.raises(DataError, match=r"v\.nii\.gz: this case's sizes would be in voxels"):
        measure(in_voxels)


def test_a_one_slice_case_against_a_3d_model_says_it_reads_as_2d(tmp_path: Path) -> None:
    """One slice of an LGG volume (256 × 256 × 1) against a model fitted on volumes was told
    its "structures or channels differ": it is read as a 2D image, measured in pixels."""
    from segfew.inference.measure_names import fitted_names

    flat = Case("one", (tmp_path / "one.nii.gz",))
    fitted = ["tumour_volume_vox_0", "tumour_surface_vox_0"]
    measured = {"tumour_area_px_0": 10.0, "tumour_perimeter_px_0": 12.0,
                "tumour_to_oedema_volume_ratio_0": 0.5}  # ratios are named so in 2D too
    with pytest.raises(DataError, match=r"one\.nii\.gz: this case does not give .*; it reads "
                                        r"as a 2D image and the model was fitted on 3D ones"):
        fitted_names(fitted, measured, flat)
    with pytest.raises(DataError, match="structures or channels differ"):  # same dimension
        fitted_names(fitted, {"liver_volume_vox_0": 1.0}, flat)
