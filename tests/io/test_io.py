"""Image readers and writers: every format, canonical orientation, geometry round trips."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from segfew.errors import DataError, DataWarning
from segfew.io import IMAGE_SUFFIXES, case_id, is_image_file, read_image, write_image
from tests.conftest import (
    IMAGE_FORMATS,
    TinyImage,
    huge_nifti,
    save_dicom_series,
    save_itk,
    save_nifti,
)

LPS_OBLIQUE = np.array([
    [-0.9, 0.1, -0.09, 12.0],  # oblique axes, perpendicular (a sheared grid is refused)
    [-0.1, -0.9, 0.81, -30.0],
    [0.0, 0.3, 2.46, 7.5],
    [0.0, 0.0, 0.0, 1.0],
])


@pytest.fixture
def vol(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 1000, size=(6, 5, 4)).astype(np.int16)


def test_case_id_strips_every_image_suffix() -> None:
    assert case_id(Path("a/b/p1_frame01.nii.gz")) == "p1_frame01"
    assert case_id(Path("x.y.NRRD")) == "x.y"
    assert case_id(Path("scan.mha")) == "scan"
    assert ".nii.gz" in IMAGE_SUFFIXES and ".dcm" in IMAGE_SUFFIXES


def test_is_image_file_ignores_hidden_and_other_files(tmp_path: Path) -> None:
    (tmp_path / "a.nii.gz").write_bytes(b"x")
    (tmp_path / ".a.nii.gz").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "b.raw").write_bytes(b"x")
    found = sorted(p.name for p in tmp_path.iterdir() if is_image_file(p))
    assert found == ["a.nii.gz"]


def test_nifti_ras_is_read_unchanged(tmp_path: Path, vol: np.ndarray) -> None:
    affine = np.diag([0.5, 0.7, 3.0, 1.0])
    img = read_image(save_nifti(tmp_path / "a.nii.gz", vol, affine))
    assert img.dim == 3 and img.array.dtype == np.int16
    np.testing.assert_array_equal(img.array, vol)
    np.testing.assert_allclose(img.affine, affine)
    assert img.spacing == (0.5, 0.7, 3.0)
    assert img.orientation == "RAS"


def test_nifti_lps_is_reoriented_to_ras(tmp_path: Path, vol: np.ndarray) -> None:
    affine = np.diag([-0.5, -0.7, 3.0, 1.0])
    img = read_image(save_nifti(tmp_path / "a.nii", vol, affine))
    assert img.orientation == "LPS"
    np.testing.assert_array_equal(img.array, vol[::-1, ::-1, :])
    assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
    # the same voxel keeps its world position
    world_src = affine @ np.array([1, 2, 3, 1])
    world_new = img.affine @ np.array([vol.shape[0] - 2, vol.shape[1] - 3, 3, 1])
    np.testing.assert_allclose(world_src, world_new)


@pytest.mark.parametrize("affine", [np.diag([-0.5, -0.7, 3.0, 1.0]), LPS_OBLIQUE],
                         ids=["lps", "oblique"])
@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_write_image_round_trip_restores_source_geometry(
        tmp_path: Path, vol: np.ndarray, affine: np.ndarray, suffix: str) -> None:
    src = save_nifti(tmp_path / "src.nii.gz", vol, affine)
    img = read_image(src)
    labels = (img.array > 500).astype(np.int64)  # a label map on the canonical grid
    out = write_image(labels, img, tmp_path / f"seg{suffix}")
    if suffix == ".nii.gz":
        raw = nib.load(str(out))
        assert raw.shape == vol.shape
        assert raw.get_data_dtype() == np.uint8
        np.testing.assert_allclose(raw.affine, affine, atol=1e-6)
        np.testing.assert_array_equal(np.asarray(raw.dataobj), (vol > 500).astype(np.uint8))
    back = read_image(out)
    np.testing.assert_array_equal(back.array, labels)
    np.testing.assert_allclose(back.affine, img.affine, atol=1e-5)
    np.testing.assert_allclose(back.source_affine, affine, atol=1e-5)
    assert back.source_shape == vol.shape


def test_write_probabilities_with_channel_axis(tmp_path: Path, vol: np.ndarray) -> None:
    img = read_image(save_nifti(tmp_path / "src.nii.gz", vol, np.diag([-1.0, 1.0, 2.0, 1.0])))
    probs = np.stack([img.array / 1000.0, 1 - img.array / 1000.0], axis=-1)
    raw = nib.load(str(write_image(probs, img, tmp_path / "p.nii.gz")))
    assert raw.shape == (*vol.shape, 2)
    assert raw.get_data_dtype() == np.float32
    np.testing.assert_allclose(raw.get_fdata()[..., 0], vol / 1000.0, rtol=1e-6)


def test_write_rejects_wrong_shape(tmp_path: Path, vol: np.ndarray) -> None:
    img = read_image(save_nifti(tmp_path / "src.nii.gz", vol))
    with pytest.raises(DataError, match="does not fit the reference grid"):
        write_image(np.zeros((3, 3, 3)), img, tmp_path / "x.nii.gz")
    assert not (tmp_path / "x.nii.gz").exists()


def test_2d_slice_stored_as_3d_is_squeezed_and_written_back(tmp_path: Path) -> None:
    arr = np.arange(12, dtype=np.uint8).reshape(4, 3, 1)
    img = read_image(save_nifti(tmp_path / "s.nii.gz", arr))
    assert img.dim == 2 and img.shape == (4, 3)
    raw = nib.load(str(write_image(img.array, img, tmp_path / "o.nii.gz")))
    assert raw.shape == (4, 3, 1)


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".mhd", ".tif"])
def test_itk_formats_read_3d_with_lps_geometry(tmp_path: Path, vol: np.ndarray,
                                               suffix: str) -> None:
    path = save_itk(tmp_path / f"a{suffix}", vol, spacing=(0.5, 0.7, 3.0), origin=(10, 20, 30))
    img = read_image(path)
    assert img.dim == 3
    assert img.orientation == "LPS"  # ITK identity direction is LPS
    np.testing.assert_array_equal(img.array, vol[::-1, ::-1, :])
    if suffix != ".tif":  # TIFF does not store an origin
        # voxel (0,0,0) of the file is at LPS (10,20,30) = RAS (-10,-20,30)
        np.testing.assert_allclose(img.source_affine[:3, 3], [-10, -20, 30])
        np.testing.assert_allclose(img.spacing, (0.5, 0.7, 3.0))
    out = write_image(img.array, img, tmp_path / f"b{suffix}")
    back = sitk.ReadImage(str(out))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), vol.transpose(2, 1, 0))
    if suffix != ".tif":
        np.testing.assert_allclose(back.GetOrigin(), (10, 20, 30))


@pytest.mark.parametrize("suffix", [".png", ".tif", ".jpg"])
def test_2d_formats(tmp_path: Path, suffix: str) -> None:
    arr = np.zeros((7, 5), dtype=np.uint8)
    arr[2:5, 1:3] = 200
    img = read_image(save_itk(tmp_path / f"a{suffix}", arr))
    assert img.dim == 2 and img.shape == (7, 5)
    if suffix == ".jpg":  # lossy
        assert abs(float(img.array[3, 2]) - 200) < 30 and float(img.array[6, 4]) < 30
    else:
        np.testing.assert_array_equal(img.array, arr)
        out = write_image(img.array, img, tmp_path / f"b{suffix}")
        np.testing.assert_array_equal(read_image(out).array, arr)


def test_rgb_png_becomes_grayscale(tmp_path: Path) -> None:
    rgb = np.zeros((4, 3, 3), dtype=np.uint8)
    rgb[..., 1] = 100
    with pytest.warns(DataWarning, match=r"rgb\.png: RGB image converted to grey"):
        img = read_image(save_itk(tmp_path / "rgb.png", rgb, vector=True))
    assert img.dim == 2 and img.shape == (4, 3)
    np.testing.assert_allclose(img.array, 71.54, atol=0.01)


def test_png_rejects_float_output(tmp_path: Path) -> None:
    img = read_image(save_itk(tmp_path / "a.png", np.zeros((4, 4), np.uint8)))
    with pytest.raises(DataError, match="cannot hold float"):
        write_image(np.zeros((4, 4), np.float32), img, tmp_path / "b.png")


def test_dicom_series_folder(tmp_path: Path, vol: np.ndarray) -> None:
    folder = save_dicom_series(tmp_path / "series", vol)
    img = read_image(folder)
    assert img.dim == 3 and img.shape == vol.shape
    np.testing.assert_array_equal(img.array, vol[::-1, ::-1, :])
    np.testing.assert_allclose(img.spacing, (0.8, 0.8, 3.0), atol=1e-4)
    assert img.orientation == "LPS"
    one = read_image(folder / "slice000.dcm")  # a single DICOM file is a 2D image
    assert one.dim == 2


def test_4d_and_1d_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"4 dimensions.*expected a 2D or 3D"):
        read_image(save_nifti(tmp_path / "a.nii.gz", np.zeros((3, 3, 3, 2), np.float32)))
    with pytest.raises(DataError, match="1 dimensions"):
        read_image(save_nifti(tmp_path / "b.nii.gz", np.zeros((5,), np.float32)))


@pytest.mark.parametrize("name, content, reason", [
    ("bad.nii.gz", b"not a gzip" * 40, "not a gzip file"),
    ("bad.nrrd", b"garbage" * 40, "unknown format or corrupt file"),
    ("empty.mha", b"", "empty file"),
])
def test_corrupt_files_give_one_line_error_naming_file(tmp_path: Path, name: str,
                                                       content: bytes, reason: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError) as err:
        read_image(path)
    assert str(err.value) == f"{path}: cannot read image ({reason})"


def test_missing_file_and_folder_without_dicom(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        read_image(tmp_path / "none.nii.gz")
    with pytest.raises(DataError, match="folder without DICOM"):
        read_image(tmp_path)


def test_truncated_nifti(tmp_path: Path, vol: np.ndarray) -> None:
    path = save_nifti(tmp_path / "a.nii", vol)
    path.write_bytes(path.read_bytes()[:400])
    with pytest.raises(DataError, match=r"a\.nii: file is truncated: the header declares 240 "
                                        r"bytes of voxels, the file holds 48 bytes"):
        read_image(path)


# ------------------------------------------------------------------------- bounded reading


def test_a_header_claiming_32000x32000x4_voxels_is_refused_before_reading(
        tmp_path: Path) -> None:
    path = huge_nifti(tmp_path / "huge.nii")
    with pytest.raises(DataError) as err:
        read_image(path)
    assert str(err.value) == (f"{path}: the header declares 32000×32000×4 = 4,096,000,000 "
                              "voxels, over the limit of 1,073,741,824 (raise it with "
                              "SEGFEW_MAX_VOXELS)")


def test_limits_come_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    path = save_nifti(tmp_path / "a.nii.gz", np.zeros((20, 20, 20), np.float32))
    monkeypatch.setenv("SEGFEW_MAX_VOXELS", "1e3")
    with pytest.raises(DataError, match=r"20×20×20 = 8,000 voxels, over the limit of 1,000"):
        read_image(path)
    monkeypatch.setenv("SEGFEW_MAX_VOXELS", "lots")
    with pytest.raises(DataError, match=r"SEGFEW_MAX_VOXELS='lots' is not a number"):
        read_image(path)


def test_a_gzip_stream_may_not_expand_beyond_its_header(tmp_path: Path) -> None:
    import gzip

    img = nib.Nifti1Image(np.ones((8, 8), np.float32), np.eye(4))
    img.header["vox_offset"] = 352
    body = img.header.binaryblock + bytes(4) + np.ones((8, 8), np.float32).tobytes()
    bomb = tmp_path / "bomb.nii.gz"
    with gzip.open(bomb, "wb") as f:
        f.write(body + bytes(8 << 20))
    with pytest.raises(DataError, match=r"bomb\.nii\.gz: compressed stream expands to 8\.0 MiB, "
                                        r"more than the 608 bytes its header declares"):
        read_image(bomb)
    short = tmp_path / "short.nii.gz"
    with gzip.open(short, "wb") as f:
        f.write(body[:-100])
    with pytest.raises(DataError, match=r"short\.nii\.gz: cannot read image"):
        read_image(short)


def test_a_cut_gzip_file_is_truncated_not_a_bomb(tmp_path: Path) -> None:
    """The last 4 bytes of a cut file are no ISIZE trailer: seen as what they are."""
    import gzip

    rng = np.random.default_rng(0)
    path = save_nifti(tmp_path / "a.nii.gz", rng.random((32, 32, 4)).astype(np.float32))
    data = path.read_bytes()
    for n, tail in enumerate((b"\xff\xff\xff\x7f", b"\x00\x00\x00\x10")):
        cut = tmp_path / f"cut{n}.nii.gz"
        cut.write_bytes(data[: len(data) // 2] + tail)  # a trailer claiming a huge size
        with pytest.raises(DataError, match=rf"cut{n}\.nii\.gz: cannot read image \(the file "
                                            r"is truncated, or its gzip stream is damaged"):
            read_image(cut)
    assert gzip.decompress(data)  # the whole file is fine


def test_a_truncated_plain_nifti_is_named(tmp_path: Path) -> None:
    path = save_nifti(tmp_path / "a.nii", np.ones((16, 16, 4), np.float32))
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(DataError, match=r"a\.nii: file is truncated: the header declares "
                                        r"4\.0 KiB of voxels, the file holds 3\.0 KiB"):
        read_image(path)


def test_mixed_case_suffixes_are_opened_by_their_real_name(tmp_path: Path,
                                                           vol: np.ndarray) -> None:
    path = save_nifti(tmp_path / "a.nii.gz", vol)
    for name in ("B.Nii.GZ", "C.NII"):
        other = tmp_path / name
        if name.endswith("GZ"):
            path.rename(other)
        else:
            save_nifti(tmp_path / "c.nii", vol).rename(other)
        assert is_image_file(other) and case_id(other) == name.split(".")[0]
        np.testing.assert_array_equal(read_image(other).array, vol)


def test_rgb_nifti_becomes_grey_and_says_so(tmp_path: Path) -> None:
    rgb = np.zeros((4, 5, 3), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    rgb["R"], rgb["G"], rgb["B"] = 200, 100, 0
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), str(tmp_path / "rgb.nii"))
    with pytest.warns(DataWarning, match=r"rgb\.nii: RGB image converted to grey"):
        img = read_image(tmp_path / "rgb.nii")
    assert img.shape == (4, 5, 3) and img.colour
    np.testing.assert_allclose(img.array, 0.2125 * 200 + 0.7154 * 100, rtol=1e-5)
    rgb["G"] = rgb["B"] = rgb["R"]  # a grey image stored as RGB: exact, no warning
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), str(tmp_path / "grey.nii"))
    grey = read_image(tmp_path / "grey.nii")
    assert not grey.colour and grey.array.dtype == np.uint8 and int(grey.array.max()) == 200


@pytest.mark.parametrize("name", ["a.MHA", "a.Nrrd", "a.PNG", "a.TIF"])
def test_mixed_case_itk_suffixes_are_read(tmp_path: Path, name: str) -> None:
    arr = (np.arange(72) % 50).astype(np.uint8).reshape(8, 9)
    lower = tmp_path / name.lower()
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(lower))
    lower.rename(tmp_path / name)
    np.testing.assert_array_equal(read_image(tmp_path / name).array, arr.T)


@pytest.mark.parametrize("fmt", IMAGE_FORMATS)
def test_every_format_reads_the_same_image_with_its_geometry(
        tiny_images: dict[str, TinyImage], fmt: str) -> None:
    tiny = tiny_images[fmt]
    img = read_image(tiny.path)
    assert img.shape == tiny.array.shape
    if tiny.lossy:  # JPEG: the bright block stays bright, the background dark
        assert abs(float(img.array[3, 2]) - 200) < 30 and float(img.array[6, 4]) < 30
    else:
        np.testing.assert_array_equal(img.array, tiny.array)
    np.testing.assert_allclose(img.spacing, tiny.spacing, atol=1e-4)
    if tiny.origin_ras is not None:  # the volumes: one geometry whatever the format
        assert img.orientation == "LPS"
        np.testing.assert_allclose(img.source_affine[:3, 3], tiny.origin_ras, atol=1e-4)
        reference = read_image(tiny_images["nii.gz"].path)
        np.testing.assert_allclose(img.affine, reference.affine, atol=1e-4)
