"""Hospital exports: every file accounted for, nothing silently wrong, words.

Each test pins one kind of input, with the issue's example and a second instance of the
kind. The label-map kinds (FreeSurfer codes, JPEG masks) are also in the bad-input corpus
(:mod:`tests.test_bad_inputs`), run through every command.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from segfew.errors import DataError
from tests.conftest import ramp, save_itk, save_nifti, write_dicom_slice

NIBABEL_MOSAIC = Path(nib.__file__).parent / "nicom" / "tests" / "data" / "0.dcm"


def dicom_file(path: Path, array_yx: np.ndarray, series: str = "1.2.3.4", z: int = 0,
               **tags: str) -> Path:
    """One DICOM file (SimpleITK/GDCM) of ``series``; ``array_yx`` 2D, or 3D (frames)."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(array_yx).astype(np.uint16))
    values = {"0008|0060": "CT", "0020|000d": "1.2.3", "0020|000e": series,
              "0020|0013": str(z + 1), "0020|0032": f"0\\0\\{2.0 * z}",
              "0020|0037": "1\\0\\0\\0\\1\\0", "0028|0030": "1\\1", **tags}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_dicom_slice(path.with_suffix(".dcm") if not path.suffix else path, img,
                      {tag.replace("_", "|"): value for tag, value in values.items()})
    if not path.suffix:
        path.with_suffix(".dcm").rename(path)
    return path


def _slices(n: int = 8) -> np.ndarray:
    return (np.arange(n * n).reshape(n, n) % 50).astype(np.uint16)


def _series(folder: Path, uid: str, n: int = 4, suffix: str = ".dcm") -> Path:
    for z in range(n):
        dicom_file(folder / f"IM{z:04d}{suffix}", _slices() + z, uid, z)
    return folder


def _volume(path: Path, shape: tuple[int, ...] = (8, 8, 4)) -> Path:
    return save_nifti(path, np.arange(np.prod(shape), dtype=np.float32).reshape(shape))


def _ids(folder: Path, **kw: object) -> list[str]:
    from segfew.data import collect_cases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [c.id for c in collect_cases([folder], **kw)]  # type: ignore[arg-type]


def _skipped(folder: Path, recursive: bool = False) -> str:
    from segfew.data.scan import list_folder

    return " | ".join(str(e) for e in list_folder(folder, recursive).skipped)


# ------------------------------------------------------------------ one door for folders


@pytest.mark.parametrize("stray", ["ct.dcm", "IM000001"])
def test_a_stray_dicom_file_beside_volumes_is_a_case_of_its_own(
        tmp_path: Path, stray: str) -> None:
    from segfew.data import find_cases
    from segfew.data.inspect import inspect_dataset

    for i in range(4):
        _volume(tmp_path / f"scan{i}.nii.gz")
    dicom_file(tmp_path / stray, _slices())
    want = sorted([f"scan{i}" for i in range(4)] + [stray.removesuffix(".dcm")])
    assert _ids(tmp_path) == want  # predict
    assert sorted(c.id for c in find_cases(tmp_path)) == want  # label, pretrain
    assert sorted(c.id for c in inspect_dataset(tmp_path).cases) == want


@pytest.mark.parametrize("suffix", [".dcm", ""])
def test_a_folder_of_series_folders_gives_the_same_cases_everywhere(
        tmp_path: Path, suffix: str) -> None:
    from segfew.data.inspect import inspect_dataset

    study = tmp_path / "study"
    for p in range(3):
        _series(study / f"pat{p}", f"1.2.3.{p}", suffix=suffix)
    assert _ids(study) == ["pat0", "pat1", "pat2"]
    report = inspect_dataset(study)
    assert [c.id for c in report.cases] == ["pat0", "pat1", "pat2"], report.problems
    assert all(c.shape == (8, 8, 4) for c in report.cases)
    one = inspect_dataset(study / "pat1")
    assert [c.id for c in one.cases] == ["pat1"] and _ids(study / "pat1") == ["pat1"]


@pytest.mark.parametrize("patients", [2, 1])
def test_a_cd_export_is_followed_through_its_dicomdir(tmp_path: Path, patients: int) -> None:
    from pydicom import dcmread
    from pydicom.fileset import FileSet

    fs = FileSet()
    for p in range(patients):
        for series in range(3 - patients):
            for z in range(3):
                uid = f"1.2.7.{p}.{series}"
                path = dicom_file(tmp_path / "src" / f"{p}_{series}_{z}.dcm", _slices() + z, uid,
                                  z, **{"0010|0020": f"P{p}", "0010|0010": f"P{p}",
                                        "0008|0018": f"{uid}.{z}", "0008|0020": "20200101",
                                        "0008|0030": "120000", "0020|0010": "1",
                                        "0020|0011": str(series + 1),
                                        "0008|0016": "1.2.840.10008.5.1.4.1.1.7"})
                fs.add(dcmread(path))
    cd = tmp_path / "cd"
    fs.write(cd)
    assert (cd / "DICOMDIR").is_file()
    from segfew.data import find_cases
    from segfew.data.inspect import inspect_dataset

    for recursive in (False, True):
        ids = _ids(cd, recursive=recursive)
        assert len(ids) == 2 and all(i.startswith("PT00000") for i in ids), ids
        assert [c.id for c in find_cases(cd, recursive=recursive)] == ids  # label, pretrain
    assert [c.id for c in inspect_dataset(cd).cases] == ids
    assert "DICOMDIR" in _skipped(cd)


@pytest.mark.parametrize(("header", "data"), [("a.mhd", "a.raw"), ("b.nhdr", "b.raw")])
def test_a_detached_header_and_its_data_file_are_one_image(
        tmp_path: Path, header: str, data: str) -> None:
    from segfew.io import read_image

    save_itk(tmp_path / header, np.ones((6, 6, 3), np.int16))
    assert (tmp_path / data).is_file()
    (tmp_path / "orphan.raw").write_bytes(b"\0" * 16)
    assert _ids(tmp_path) == [Path(header).stem]  # no row for a.raw
    assert "orphan.raw: skipped: data file that no header" in _skipped(tmp_path)
    (tmp_path / data).unlink()
    with pytest.raises(DataError) as err:
        read_image(tmp_path / header)
    said = str(err.value)
    assert data in said and "missing" in said and "0x" not in said, said


@pytest.mark.parametrize("name", ["x.nii.gz", "y.nrrd"])
def test_dangling_links_and_folders_named_like_images_are_said(
        tmp_path: Path, name: str) -> None:
    from segfew.data.inspect import inspect_dataset

    _volume(tmp_path / "good.nii.gz")
    (tmp_path / name).mkdir()
    (tmp_path / f"link_{name}").symlink_to(tmp_path / "gone.nii.gz")
    (tmp_path / "README.md").write_text("export notes\n")
    (tmp_path / ".DS_Store").write_bytes(b"\0Bud1")
    (tmp_path / "._good.nii.gz").write_bytes(b"\0\5\26\7")  # a macOS AppleDouble file
    said = _skipped(tmp_path)
    for what in (f"{name}: skipped: a folder named like an image",
                 f"link_{name}: skipped: dangling symbolic link", "README.md: skipped",
                 ".DS_Store: skipped: a hidden file", "._good.nii.gz: skipped: a hidden file"):
        assert what in said, said
    with pytest.warns(Warning, match="dangling symbolic link"):
        from segfew.data import collect_cases
        assert [c.id for c in collect_cases([tmp_path])] == ["good"]
    notes = inspect_dataset(tmp_path).problems
    assert any(f"link_{name}" in n for n in notes), notes


# ------------------------------------------------------------------ unreadable inputs


@pytest.mark.parametrize("error", [PermissionError(13, "Permission denied"),
                                   OSError(5, "Input/output error")])
def test_an_unreadable_input_is_recorded_in_the_manifest_not_a_crash(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: OSError) -> None:
    from segfew import identity, runinfo

    good = _volume(tmp_path / "good.nii.gz")
    bad = _volume(tmp_path / "bad.nii.gz")
    real = identity.file_digest

    def digest(path: Path, chunk: int = 1 << 20) -> str:
        if Path(path).name == "bad.nii.gz":
            raise error
        return real(path, chunk)

    monkeypatch.setattr(identity, "file_digest", digest)
    rows = {Path(r["path"]).name: r for r in runinfo.manifest([good, bad])}
    assert "sha256" in rows["good.nii.gz"]
    assert rows["bad.nii.gz"]["unreadable"] == error.strerror


# ------------------------------------------------------------------ label maps


@pytest.mark.parametrize("values", [(0, 2, 41, 1035, 2035), (0, 100, 200)])
def test_label_codes_far_sparser_than_their_range_are_refused(
        tmp_path: Path, values: tuple[int, ...]) -> None:
    from segfew.data.read import check_label_values

    label = np.zeros((8, 8), np.uint16)
    for i, v in enumerate(values):
        label[i] = v
    with pytest.raises(DataError) as err:
        check_label_values(label, None, tmp_path / "aseg.nii.gz")
    said = str(err.value)
    assert "aseg.nii.gz" in said and "--label-map" in said and "sparser" in said, said
    assert f"{values[1]}:1" in said
    # declared or remapped, the same values are fine
    check_label_values(label, frozenset(values), tmp_path / "aseg.nii.gz")
    remap = {v: i for i, v in enumerate(values)}
    assert check_label_values(label, None, tmp_path / "a.nii.gz", remap).max() == len(values) - 1


@pytest.mark.parametrize("name", ["mask.jpg", "mask.JPEG"])
def test_masks_stored_as_jpeg_are_refused(tmp_path: Path, name: str) -> None:
    from segfew.data import Case
    from segfew.data.read import read_case

    image = save_itk(tmp_path / "scan.png", np.full((16, 16), 100, np.uint8))
    mask = np.zeros((16, 16), np.uint8)
    mask[4:12, 4:12] = 255
    save_itk(tmp_path / name, mask)
    with pytest.raises(DataError, match="masks must be stored losslessly: PNG, NIfTI, NRRD"):
        read_case(Case("scan", (image,), (tmp_path / name,)))


# ------------------------------------------------------------------ geometry


@pytest.mark.parametrize(("unit", "to_mm"), [("micron", 1e-3), ("meter", 1e3)])
def test_nifti_spatial_units_are_read_in_mm_and_written_back(
        tmp_path: Path, unit: str, to_mm: float) -> None:
    import SimpleITK as sitk

    from segfew.io import read_image, write_image

    img = nib.Nifti1Image(np.ones((6, 6, 4), np.float32), np.diag([500.0, 500.0, 2000.0, 1]))
    img.header.set_xyzt_units(unit)
    nib.save(img, str(tmp_path / "scan.nii.gz"))
    scan = read_image(tmp_path / "scan.nii.gz")
    assert scan.spacing == pytest.approx((500 * to_mm, 500 * to_mm, 2000 * to_mm))
    write_image(np.ones(scan.shape, np.uint8), scan, tmp_path / "seg.nii.gz")
    written = nib.load(str(tmp_path / "seg.nii.gz"))
    assert written.header.get_xyzt_units()[0] == unit
    itk_scan, itk_seg = (sitk.ReadImage(str(tmp_path / n)) for n in ("scan.nii.gz", "seg.nii.gz"))
    assert itk_seg.GetSpacing() == pytest.approx(itk_scan.GetSpacing())  # viewers overlay


def test_pixdim_zero_is_a_note_naming_the_file(tmp_path: Path) -> None:
    from segfew.io import read_image

    nib.save(nib.Nifti1Image(np.ones((6, 6, 4), np.float32), np.eye(4)), str(tmp_path / "flat.nii"))
    raw = bytearray((tmp_path / "flat.nii").read_bytes())
    raw[84:88] = np.float32(0).tobytes()  # pixdim[2], as a writer left it (nibabel would fix it)
    raw[252:256] = bytes(4)  # qform_code, sform_code 0: the affine comes from pixdim
    (tmp_path / "flat.nii").write_bytes(bytes(raw))
    with pytest.warns(Warning, match=r"flat.nii: pixdim\[2\]"):
        assert read_image(tmp_path / "flat.nii").spacing[1] == 1.0


@pytest.mark.parametrize("source", ["nibabel", "synthetic"])
def test_a_siemens_mosaic_is_refused_saying_mosaic(tmp_path: Path, source: str) -> None:
    from segfew.io import read_image

    if source == "nibabel":
        if not NIBABEL_MOSAIC.is_file():
            pytest.skip("nibabel's test data is not installed")
        path = NIBABEL_MOSAIC
    else:
        path = dicom_file(tmp_path / "mosaic.dcm", _slices(16),
                          **{"0008|0008": "ORIGINAL\\PRIMARY\\M\\ND\\MOSAIC"})
    with pytest.raises(DataError, match="MOSAIC"):
        read_image(path)


@pytest.mark.parametrize("files", [2, 1])
def test_the_voxel_limit_counts_every_frame(tmp_path: Path, files: int) -> None:
    from segfew.io import ReadLimits, read_image

    frames = np.stack([_slices()] * 5)
    for k in range(files):
        dicom_file(tmp_path / "series" / f"mf{k}.dcm", frames, "1.2.5", k)
    target = tmp_path / "series" if files > 1 else tmp_path / "series" / "mf0.dcm"
    with pytest.raises(DataError, match="over the limit"):
        read_image(target, ReadLimits(max_voxels=8 * 8 * 4 * files))


# ------------------------------------------------------------------ messages in words


@pytest.mark.parametrize("odd", ["2d", "3d"])
def test_inspect_names_the_images_that_break_a_rule(tmp_path: Path, odd: str) -> None:
    from segfew.data.inspect import inspect_dataset

    majority, minority = ((8, 8, 4), (8, 8)) if odd == "2d" else ((8, 8), (8, 8, 4))
    for i in range(3):
        _volume(tmp_path / f"v{i}.nii.gz", majority)
    _volume(tmp_path / "odd.nii.gz", minority)
    report = inspect_dataset(tmp_path)
    (mix,) = [p for p in report.fatal_problems if "mix 2D and 3D" in p]
    assert "odd.nii.gz is" in mix and "3 are" in mix, mix


@pytest.mark.parametrize("text", [
    "/tmp/SimpleITK-build/ITK/Modules/IO/Meta/src/itkMetaImageIO.cxx:123:\nITK ERROR: "
    "MetaImageIO(0x55a0df1a52b0): Something odd happened",
    "Exception thrown in SimpleITK ImageFileReader_Execute: /src/itkGDCMImageIO.cxx:400: "
    "ITK ERROR: GDCMImageIO(0x5600aa): Odd thing"])
def test_library_messages_lose_addresses_and_source_paths(tmp_path: Path, text: str) -> None:
    from segfew.io.dispatch import _reason

    said = _reason(RuntimeError(text), tmp_path / "a.mhd")
    assert "0x" not in said and ".cxx" not in said and "odd" in said.lower(), said


def pydicom_file(path: Path, syntax: str = "1.2.840.10008.1.2.1",
                 sop: str = "1.2.840.10008.5.1.4.1.1.7", pixels: bool = True,
                 image: bool = True) -> Path:
    """A DICOM file built with pydicom: any transfer syntax or SOP class, with or without
    pixel data."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import generate_uid

    from tests.conftest import dicom_dataset

    ds = dicom_dataset(sop, syntax)
    ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.Modality = generate_uid(), generate_uid(), "OT"
    if image:
        ds.Rows = ds.Columns = 8
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit, ds.PixelRepresentation, ds.SamplesPerPixel = 15, 0, 1
        ds.PhotometricInterpretation = "MONOCHROME2"
    if pixels:
        raw = np.zeros((8, 8), np.uint16).tobytes()
        ds.PixelData = raw if syntax == "1.2.840.10008.1.2.1" else encapsulate([raw])
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(str(path), enforce_file_format=True)
    return path


@pytest.mark.parametrize(("kind", "says"), [
    ({"pixels": False}, "DICOM file has no pixel data"),
    ({"pixels": False, "image": False, "sop": "1.2.840.10008.5.1.4.1.1.88.11"},
     "DICOM Basic Text SR Storage holds no image"),
    ({"syntax": "1.2.840.10008.1.2.4.201"},
     "no decoder for the transfer syntax High-Throughput JPEG 2000"),
    ({"syntax": "1.2.840.10008.1.2.4.202"}, "no decoder for the transfer syntax"),
])
def test_dicom_failures_are_said_in_words(tmp_path: Path, kind: dict, says: str) -> None:
    from segfew.io import read_image

    path = pydicom_file(tmp_path / "x.dcm", **kind)
    with pytest.raises(DataError) as err:
        read_image(path)
    said = str(err.value)
    assert says in said and "x.dcm" in said and "0x" not in said and "ITK" not in said, said


@pytest.mark.parametrize("sop", ["1.2.840.10008.5.1.4.1.1.88.11",  # Basic Text SR
                                 "1.2.840.10008.5.1.4.1.1.11.1"])  # presentation state
def test_non_image_dicom_objects_in_a_folder_are_skipped_with_the_reason(
        tmp_path: Path, sop: str) -> None:
    _series(tmp_path / "series", "1.2.3.9")
    pydicom_file(tmp_path / "series" / "report.dcm", sop=sop, pixels=False, image=False)
    assert _ids(tmp_path / "series") == ["series"]
    assert "report.dcm: skipped: DICOM" in _skipped(tmp_path / "series")
    from segfew.io import read_image

    assert read_image(tmp_path / "series").shape == (8, 8, 4)


@pytest.mark.parametrize("values", [(0, 2, 41, 1035, 2035), (0, 1, 2, 100)])
def test_label_map_consecutive_remaps_the_values_found(
        tmp_path: Path, values: tuple[int, ...]) -> None:
    from segfew.data.inspect import inspect_dataset

    for i in range(2):
        save_nifti(tmp_path / "images" / f"c{i}.nii.gz", ramp((8, 8), base=i))
        label = np.zeros((8, 8), np.uint16)
        for k, v in enumerate(values[: len(values) - i]):
            label[k] = v
        save_nifti(tmp_path / "labels" / f"c{i}.nii.gz", label)
    refused = inspect_dataset(tmp_path / "images", tmp_path / "labels")
    assert any("sparser" in p and "--label-map" in p for p in refused.fatal_problems)
    report = inspect_dataset(tmp_path / "images", tmp_path / "labels", label_map="consecutive")
    assert not report.fatal, report.problems
    assert sorted(report.label_counts) == list(range(len(values)))
    assert any(f"{values[-1]} → {len(values) - 1}" in p for p in report.problems)


def test_a_batch_with_an_unreadable_input_writes_its_table_and_run_json(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from segfew import identity
    from tests.conftest import invoke, make_segmenter, read_csv

    for name in ("a", "b"):
        save_nifti(tmp_path / "in" / f"{name}.nii.gz", ramp((32, 32), base=ord(name)))
    locked = tmp_path / "in" / "locked.nii.gz"
    locked.write_bytes(b"\0" * 64)
    real = identity.file_digest

    def digest(path: Path, chunk: int = 1 << 20) -> str:
        if Path(path).name == locked.name:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, chunk)

    monkeypatch.setattr(identity, "file_digest", digest)
    model = make_segmenter(tmp_path / "seg.pt")
    invoke("predict", "--model", str(model), "--input", str(tmp_path / "in"), "--out",
           str(tmp_path / "out"), "--device", "cpu", "--no-progress", expect=1)
    rows = {r["id"]: r["status"] for r in read_csv(tmp_path / "out" / "predictions.csv")}
    assert rows == {"a": "ok", "b": "ok", "locked": "error"}
    data = json.loads((tmp_path / "out" / "run.json").read_text())["data"]
    assert {Path(r["path"]).name: r.get("unreadable") for r in data}["locked.nii.gz"]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="mode 000 does not stop root from reading")
@pytest.mark.parametrize("name", ["locked.nii.gz", "IM000009"])
def test_inspect_prints_its_whole_report_beside_an_unreadable_file(
        tmp_path: Path, name: str) -> None:
    from tests.conftest import invoke

    for i in range(2):
        _volume(tmp_path / f"v{i}.nii.gz")
    locked = _volume(tmp_path / "locked.nii.gz") if name.endswith(".gz") else \
        dicom_file(tmp_path / name, _slices())
    locked.chmod(0)
    try:
        out = invoke("inspect", "--images", str(tmp_path), "--no-progress", expect=1)
    finally:
        locked.chmod(0o644)
    assert name in out and "v0" in out and "Traceback" not in out, out


@pytest.mark.parametrize("recursive", [False, True])
def test_sub_folders_and_link_loops_are_said_not_walked_forever(
        tmp_path: Path, recursive: bool) -> None:
    _volume(tmp_path / "top.nii.gz")
    _volume(tmp_path / "sub" / "inner.nii.gz")
    (tmp_path / "sub" / "loop").symlink_to(tmp_path, target_is_directory=True)
    ids = _ids(tmp_path, recursive=recursive)
    said = _skipped(tmp_path, recursive)
    if recursive:
        assert ids == ["inner", "top"] and "loop: skipped: a link to a folder already read" in said
    else:
        assert ids == ["top"]
        assert ("sub: skipped: a sub-folder, not read (predict, label and pretrain read "
                "sub-folders with --recursive)") in said


@pytest.mark.parametrize(("name", "content", "cause"), [
    ("d.nrrd", b"NRRD0004\ntype: shrt\ndimension: 2\nsizes: 4 4\nencoding: raw\n\n" + bytes(32),
     'unknown NRRD type "shrt"'),
    ("e.nhdr", b"NRRD0004\ntype: short\ndimension: 2\nsizes: 4 4\nencoding: raw\n"
     b"data file: e.raw\n\n", "e.raw, which is missing"),
])
def test_teem_call_chains_become_one_cause(tmp_path: Path, name: str, content: bytes,
                                           cause: str, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from segfew.io import read_image

    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError) as err, caplog.at_level(logging.DEBUG, logger="segfew"):
        read_image(tmp_path / name)
    said = str(err.value)
    assert cause in said and name in said, said
    assert "[nrrd]" not in said and "0x" not in said and ".cxx" not in said, said
    if name == "d.nrrd":  # the library's own words are kept for a bug report, at DEBUG
        assert any("[nrrd]" in r.getMessage() for r in caplog.records)


def test_a_data_sets_own_description_files_are_not_skipped_aloud(tmp_path: Path) -> None:
    """label_names.json (segfew label, synth), centres.json, an nnU-Net dataset.json and
    segfew label's run.json and preview/ describe the folder; a README beside them is
    still said, and so is a preview/ folder where no label_names.json (or an older output's
    centres.json) says whose it is."""
    from segfew.data.scan import list_folder

    folder = tmp_path / "labels"
    folder.mkdir()
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4)), folder / "a.nii.gz")
    for name in ("label_names.json", "centres.json", "dataset.json", "run.json", "README.md"):
        (folder / name).write_text("{}")
    (folder / "preview").mkdir()
    (folder / "preview" / "kmeans_preview.png").write_bytes(b"\x89PNG")
    for recursive in (False, True):
        listing = list_folder(folder, recursive)
        assert [p.name for p in listing.images] == ["a.nii.gz"]
        assert [str(e).split(":")[0].rsplit("/", 1)[-1]
                for e in listing.skipped] == ["README.md"]
    (folder / "label_names.json").unlink()
    (folder / "centres.json").unlink()
    assert "preview: skipped: a sub-folder" in " ".join(map(str, list_folder(folder).skipped))
