"""Real exports, read as their format means: each test pins one kind of input with the
issue's example and a second instance of the kind (print DPI, NIfTI pairs, several DICOM
series in one folder, damaged NIfTI geometry, alpha and odd picture modes, voxel size 0,
DICOM objects without pixels, unknown NIfTI units)."""

from __future__ import annotations

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image as PILImage

from segfew.errors import DataError
from segfew.io import read_image, write_image
from tests.conftest import ramp, save_nifti
from tests.test_exports import dicom_file, pydicom_file


def _quiet_read(path: Path):  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_image(path)


def _ids(folder: Path) -> list[str]:
    from segfew.data import collect_cases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [c.id for c in collect_cases([folder])]


def _skipped(folder: Path) -> str:
    from segfew.data.scan import list_folder

    return " | ".join(str(e) for e in list_folder(folder).skipped)


def _picture(rgb: bool = False) -> np.ndarray:
    grey = (np.arange(12 * 10).reshape(12, 10) % 5 * 50).astype(np.uint8)
    return np.dstack([grey, 255 - grey, grey]) if rgb else grey


# ------------------------------------------------------------------ 1. print DPI


@pytest.mark.parametrize(("name", "dpi"), [("photo.jpg", 72), ("photo.jpg", 150),
                                           ("slice.tif", 96), ("slice.bmp", 300),
                                           ("slice.png", 300)])
def test_a_pictures_dpi_is_no_pixel_size(tmp_path: Path, name: str, dpi: int) -> None:
    from segfew.data.inspect import inspect_dataset

    PILImage.fromarray(_picture(rgb=name.endswith(".jpg"))).save(tmp_path / name,
                                                                 dpi=(dpi, dpi))
    image = _quiet_read(tmp_path / name)
    assert image.spacing == (1.0, 1.0)
    assert image.spacing_placeholder == "pixel size 1 with no unit"
    report = inspect_dataset(tmp_path)
    assert report.no_spacing == {"photo" if name.endswith(".jpg") else "slice":
                                 "pixel size 1 with no unit"}


# ------------------------------------------------------------------ 2. NIfTI/Analyze pairs


@pytest.mark.parametrize("klass", [nib.Nifti1Pair, nib.Spm2AnalyzeImage, nib.AnalyzeImage])
def test_a_hdr_img_pair_is_one_case(tmp_path: Path, klass: type) -> None:
    from segfew.data.inspect import inspect_dataset

    data = np.arange(6 * 5 * 4, dtype=np.float32).reshape(6, 5, 4)
    img = klass(data, np.diag([2.0, 2.0, 3.0, 1.0]))
    nib.save(img, str(tmp_path / "pairum.img"))  # SPM Analyze: a .mat beside it; plain: none
    save_nifti(tmp_path / "other.nii.gz", data)
    assert {"pairum.hdr", "pairum.img"} < {p.name for p in tmp_path.iterdir()}
    assert _ids(tmp_path) == ["other", "pairum"]
    assert _skipped(tmp_path) == ""  # the .img (.mat) belong to the pair, they are no strays
    image = _quiet_read(tmp_path / "pairum.hdr")
    assert image.spacing == pytest.approx((2.0, 2.0, 3.0))
    assert np.array_equal(np.sort(image.array.ravel()), np.sort(data.ravel()))
    report = inspect_dataset(tmp_path)
    assert not report.fatal_problems, report.problems


def test_a_pair_in_microns_is_read_in_mm(tmp_path: Path) -> None:
    img = nib.Nifti1Pair(np.ones((4, 4, 3), np.float32), np.diag([500.0, 500.0, 500.0, 1]))
    img.header.set_xyzt_units("micron")
    nib.save(img, str(tmp_path / "um.hdr"))
    assert read_image(tmp_path / "um.hdr").spacing == pytest.approx((0.5, 0.5, 0.5))


def test_a_pair_without_its_data_file_or_a_foreign_hdr_is_said(tmp_path: Path) -> None:
    nib.save(nib.Nifti1Pair(np.ones((4, 4, 3), np.float32), np.eye(4)),
             str(tmp_path / "lost.hdr"))
    (tmp_path / "lost.img").unlink()
    with pytest.raises(DataError, match=r"lost.hdr: the data file lost.img .* missing"):
        read_image(tmp_path / "lost.hdr")
    envi = tmp_path / "envi" / "cube.hdr"
    envi.parent.mkdir()
    envi.write_text("ENVI\nsamples = 4\nlines = 4\n")
    save_nifti(envi.parent / "scan.nii.gz", np.ones((4, 4), np.float32))
    assert _ids(envi.parent) == ["scan"]
    assert "cube.hdr: skipped: not an image format" in _skipped(envi.parent)


# ------------------------------------------------------------------ 3. several series


def _two_series(folder: Path, numbers: tuple[str, str]) -> None:
    """Two series of 4 slices, files interleaved as a PACS export names them."""
    base = (np.arange(64).reshape(8, 8) % 50).astype(np.uint16)
    for z in range(4):
        for k, (uid, number) in enumerate(zip(("1.2.9.11", "1.2.9.22"), numbers, strict=True)):
            dicom_file(folder / f"{2 * z + k:08d}.DCM", base + 100 * k + z, uid, z,
                       **({"0020|0011": number} if number else {}))


@pytest.mark.parametrize(("numbers", "ids"), [
    (("1", "1"), ["exam1_series1_12911", "exam1_series1_12922"]),  # the numbers repeat
    (("2", "5"), ["exam1_series2", "exam1_series5"]),
    (("", "3"), ["exam1_series3", "exam1_series_12911"]),
])
def test_each_series_of_a_folder_is_a_case(tmp_path: Path, numbers: tuple[str, str],
                                           ids: list[str]) -> None:
    from segfew.data import find_cases
    from segfew.data.inspect import inspect_dataset

    study = tmp_path / "study"
    _two_series(study / "exam1", numbers)
    (study / "exam1" / "README.txt").write_text("exported by PACS")
    for folder in (study, study / "exam1"):  # the study, or the series folder itself
        assert _ids(folder) == ids
        assert sorted(c.id for c in find_cases(folder)) == ids
        report = inspect_dataset(folder)
        assert sorted(c.id for c in report.cases) == ids and not report.fatal, report.problems
    means = sorted(float(_quiet_read(study / "exam1" / i).array.mean()) for i in ids)
    assert means[1] - means[0] == pytest.approx(100.0)  # each case holds its own series
    assert _ids(study / "exam1" / ids[0]) == [ids[0]]  # a case named by its path
    # README.txt is said from the study folder too (it is no part of either series)
    assert "exam1/README.txt: skipped" in _skipped(study)


def test_a_table_naming_the_folder_of_several_series_names_its_cases(tmp_path: Path) -> None:
    from segfew.data import find_classification_cases

    _two_series(tmp_path / "study" / "exam1", ("2", "5"))
    table = tmp_path / "labels.csv"
    table.write_text("id,label\nexam1,a\n")
    with pytest.raises(DataError, match=r"several DICOM series, each a case: exam1_series2, "
                                        r"exam1_series5\)"):
        find_classification_cases(tmp_path / "study", table)


def test_a_batch_predicts_each_series_of_a_folder(tmp_path: Path) -> None:
    from tests.conftest import invoke, make_segmenter, read_csv

    _two_series(tmp_path / "in" / "exam1", ("3", "4"))
    invoke("predict", "-m", str(make_segmenter(tmp_path / "seg.pt")), "-i",
           str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--threads", "1",
           "--no-progress")
    rows = read_csv(tmp_path / "out" / "predictions.csv")
    assert [(r["id"], r["status"]) for r in rows] == [("exam1_series3", "ok"),
                                                      ("exam1_series4", "ok")]
    assert nib.load(str(tmp_path / "out" / "exam1_series4_seg.nii.gz")).shape == (8, 8, 4)


# ------------------------------------------------------------------ 4. damaged geometry


def _nifti_with(path: Path, pixdim: tuple[float, float, float], codes: tuple[int, int] = (0, 0),
                **fields: list[float]) -> Path:
    img = nib.Nifti1Image(np.random.default_rng(0).random((6, 6, 4)).astype(np.float32), None)
    header = img.header
    header.set_xyzt_units("mm")  # a unit stated, as scanners' exports do
    header["pixdim"][1:4] = pixdim
    for name, value in fields.items():
        header[name] = value
    header["qform_code"], header["sform_code"] = codes
    nib.save(img, str(path))
    return path


@pytest.mark.parametrize(("pixdim", "codes", "fields", "says"), [
    ((np.nan, 1.5, 1.5), (0, 0), {}, r"pixdim\[1\] = nan"),
    ((1.0, np.inf, 1.0), (0, 0), {}, r"pixdim\[2\] = inf"),
    ((1.0, 1.0, 1.0), (0, 1), {"srow_x": [np.nan, 0, 0, 0]}, "the sform holds .*srow_x"),
    ((1.0, 1.0, 1.0), (1, 0), {"qoffset_y": np.inf}, "the qform holds .*qoffset_y"),
])
def test_a_non_finite_voxel_size_or_position_is_one_line(
        tmp_path: Path, pixdim: tuple[float, float, float], codes: tuple[int, int],
        fields: dict[str, list[float]], says: str) -> None:
    from segfew.data.inspect import inspect_dataset

    path = _nifti_with(tmp_path / "bad.nii.gz", pixdim, codes, **fields)
    save_nifti(tmp_path / "good.nii.gz", ramp((6, 6, 4)))
    with pytest.raises(DataError, match=says) as err:
        read_image(path)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)
    report = inspect_dataset(tmp_path)
    assert any("bad.nii.gz" in p for p in report.fatal_problems), report.problems
    assert [c.id for c in report.cases if c.ok] == ["good"]


def test_a_batch_keeps_its_good_cases_beside_a_nan_voxel_size(tmp_path: Path) -> None:
    from tests.conftest import invoke, make_segmenter, read_csv

    (tmp_path / "in").mkdir()
    _nifti_with(tmp_path / "in" / "nanpix.nii.gz", (np.nan, 1.5, 1.5))
    save_nifti(tmp_path / "in" / "ok.nii.gz", ramp((6, 6, 4)))
    out = invoke("predict", "-m", str(make_segmenter(tmp_path / "seg.pt")), "-i",
                 str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--threads", "1",
                 "--no-progress", expect=1)
    assert "Traceback" not in out and "decompose" not in out
    rows = {r["id"]: r for r in read_csv(tmp_path / "out" / "predictions.csv")}
    assert rows["ok"]["status"] == "ok" and rows["nanpix"]["status"] == "error"
    assert "voxel size is not a finite positive number" in rows["nanpix"]["error"]
    assert sorted(p.name for p in (tmp_path / "out").glob("*.nii.gz")) == ["ok_seg.nii.gz"]


def test_a_negative_pixdim_is_read_by_its_size_with_a_note(tmp_path: Path) -> None:
    path = _nifti_with(tmp_path / "neg.nii.gz", (-1.5, 1.5, 1.5))
    with pytest.warns(Warning, match=r"neg.nii.gz: pixdim\[1\] .* negative"):
        assert read_image(path).spacing == pytest.approx((1.5, 1.5, 1.5))


# ------------------------------------------------------------------ 5. alpha and modes


def _save_mode(path: Path, mode: str) -> np.ndarray:
    """A picture in PIL ``mode`` whose grey values are ``expected`` (returned, (X, Y))."""
    grey = _picture()
    if mode == "LA":
        PILImage.fromarray(np.dstack([grey, np.full_like(grey, 128)]), mode="LA").save(path)
    elif mode == "P":
        PILImage.fromarray(grey).convert("P").save(path, transparency=0)
    elif mode == "1":
        grey = np.where(grey > 100, 255, 0).astype(np.uint8)
        PILImage.fromarray(grey > 100).save(path)
    return grey.T


@pytest.mark.parametrize(("name", "mode"), [("la.png", "LA"), ("la.tif", "LA"),
                                            ("p.png", "P"), ("p.tif", "P"),
                                            ("bits.bmp", "1"), ("bits.png", "1")])
def test_picture_modes_read_as_their_grey_values(tmp_path: Path, name: str, mode: str) -> None:
    expected = _save_mode(tmp_path / name, mode)
    image = _quiet_read(tmp_path / name)
    assert image.array.shape == expected.shape and not image.colour
    assert np.array_equal(image.array, expected)


@pytest.mark.parametrize("name", ["la.png", "la.tif"])
def test_a_grey_alpha_mask_is_read_as_its_labels(tmp_path: Path, name: str) -> None:
    from segfew.data import Case
    from segfew.data.read import read_case

    labels = (np.arange(80).reshape(10, 8) % 3).astype(np.uint8)
    PILImage.fromarray(labels * 50).save(tmp_path / "scan.png")
    PILImage.fromarray(np.dstack([labels, np.full_like(labels, 255)]), mode="LA").save(
        tmp_path / name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, (mask,) = read_case(Case("scan", (tmp_path / "scan.png",), (tmp_path / name,)))
    assert np.array_equal(mask.array, labels.T)


def test_a_picture_named_as_another_format_is_said(tmp_path: Path) -> None:
    PILImage.fromarray(_picture()).save(tmp_path / "odd.png", format="JPEG")
    with pytest.raises(DataError, match=r"odd.png: holds JPEG data but is named \.png"):
        read_image(tmp_path / "odd.png")


# ------------------------------------------------------------------ 6. voxel size 0


@pytest.mark.parametrize("where", ["pixdim", "sform"])
def test_a_voxel_size_of_zero_is_no_real_voxel_size(tmp_path: Path, where: str) -> None:
    from segfew.data.inspect import inspect_dataset

    if where == "pixdim":
        path = _nifti_with(tmp_path / "flat.nii.gz", (1.5, 1.5, 0.0))
    else:
        path = _nifti_with(tmp_path / "flat.nii.gz", (1.5, 1.5, 1.5), (0, 1),
                           srow_x=[1.5, 0, 0, 0], srow_y=[0, 1.5, 0, 0], srow_z=[0, 0, 0, 0])
    with pytest.warns(Warning, match="flat.nii.gz: .*taken as 1"):
        image = read_image(path)
    assert image.spacing == pytest.approx((1.5, 1.5, 1.0))
    assert not image.spacing_known
    assert inspect_dataset(tmp_path).no_spacing == {"flat": "voxel size 0 in the header"}
    # a label map written on it claims no unit the scan never had
    write_image(np.ones(image.shape, np.uint8), image, tmp_path / "seg.nii.gz")
    assert nib.load(str(tmp_path / "seg.nii.gz")).header.get_xyzt_units()[0] == "unknown"


# ------------------------------------------------------------------ 7. DICOM without pixels


@pytest.mark.parametrize("sop", ["1.2.840.10008.5.1.4.1.1.2",  # CT header, pixels stripped
                                 "1.2.840.10008.5.1.4.1.1.88.22"])  # Enhanced SR with Rows
def test_a_dicom_object_without_pixel_data_in_a_series_is_skipped(tmp_path: Path,
                                                                  sop: str) -> None:
    from segfew.data.inspect import inspect_dataset

    series = tmp_path / "exam2"
    for z in range(4):
        dicom_file(series / f"IM{z}", (np.arange(64).reshape(8, 8) % 7).astype(np.uint16),
                   "1.2.9.5", z)
    pydicom_file(series / "SR0001", sop=sop, pixels=False, image=True)
    assert _ids(series) == ["exam2"] and _ids(tmp_path) == ["exam2"]
    assert "SR0001: skipped: DICOM" in _skipped(series)
    # read from the folder above too: what the series folder holds besides is said there
    (series / "README.txt").write_text("exported by the PACS")
    assert "SR0001: skipped: DICOM" in _skipped(tmp_path)
    assert "README.txt: skipped: not an image" in _skipped(tmp_path)
    assert _ids(tmp_path) == ["exam2"]
    assert read_image(series).shape == (8, 8, 4)
    report = inspect_dataset(tmp_path)
    assert not report.fatal, report.problems


# ------------------------------------------------------------------ 8. unknown units


@pytest.mark.parametrize(("unit", "spacing"), [("unknown", 1.0), ("unknown", 0.8),
                                               ("mm", 2.0)])
def test_nifti_units_are_written_back_as_stated(tmp_path: Path, unit: str,
                                                spacing: float) -> None:
    img = nib.Nifti1Image(np.ones((6, 6, 4), np.float32), np.diag([spacing] * 3 + [1.0]))
    img.header.set_xyzt_units(unit)
    nib.save(img, str(tmp_path / "scan.nii.gz"))
    scan = _quiet_read(tmp_path / "scan.nii.gz")
    write_image(np.ones(scan.shape, np.uint8), scan, tmp_path / "seg.nii.gz")
    written = nib.load(str(tmp_path / "seg.nii.gz"))
    assert written.header.get_xyzt_units()[0] == unit
    assert written.header.get_zooms() == pytest.approx((spacing,) * 3)


@pytest.mark.parametrize(("slope", "inter", "says"), [
    (np.inf, 0.0, "its scl_slope inf cannot scale the voxel values"),
    (-np.inf, 0.0, "its scl_slope -inf cannot scale the voxel values"),
    (2.0, np.inf, "its scl_inter inf cannot scale the voxel values"),
    (np.nan, np.nan, None),  # as nibabel writes an unscaled file (ACDC's): no scaling
    (0.0, np.inf, None),  # a slope of 0: no scaling, the intercept unused
    (2.0, 1.0, None),
])
def test_a_scaling_slope_that_is_no_number_is_refused(tmp_path: Path, slope: float,
                                                     inter: float, says: str | None) -> None:
    """scl_slope inf was read as no scaling, without a word; scl_inter inf was refused in
    nibabel's words ("Valid slope but invalid intercept inf")."""
    import struct

    path = save_nifti(tmp_path / "s.nii", ramp((6, 6, 4)).astype(np.int16))
    raw = bytearray(path.read_bytes())
    struct.pack_into("<ff", raw, 112, slope, inter)  # scl_slope, scl_inter of NIfTI-1
    path.write_bytes(bytes(raw))
    if says is None:
        scales = bool(slope) and np.isfinite(slope)
        assert float(read_image(path).array.max()) == float(ramp((6, 6, 4)).max()) * (
            slope if scales else 1.0) + (inter if scales else 0.0)
        return
    with pytest.raises(DataError, match=says):
        read_image(path)
