"""The door for label maps: lossy storage said from the content (not the name), and
``--label-map`` remaps that never merge two labels without a word."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest

from segfew.data import Case
from segfew.data.read import (
    SparseLabelsError,
    check_label_values,
    check_lossless,
    check_remap_keeps_labels_apart,
    label_map_hint,
    read_case,
)
from segfew.errors import DataError
from tests.conftest import invoke, ramp, save_nifti
from tests.jobs.conftest import TINY_PRETRAIN

LOSSY = "masks must be stored losslessly: PNG, NIfTI, NRRD"


def _mask() -> np.ndarray:
    mask = np.zeros((32, 32), np.uint8)
    mask[4:20, 4:20] = 1
    mask[8:14, 20:28] = 2
    mask[22:30, 6:12] = 3
    return mask


def _jpeg_bytes(mask: np.ndarray) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(mask).save(out, format="JPEG", quality=75)
    return out.getvalue()


def _dicom(path: Path, syntax: str, lossy_flag: str | None = None, series: str = "1.2.3.4",
           frame: bytes | None = None) -> Path:
    """A one-frame 32² DICOM whose header says ``syntax`` (the check reads no pixel)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import UID, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = UID(syntax)
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, generate_uid()
    ds.Modality, ds.PatientID, ds.StudyInstanceUID = "OT", "X", "1.2.3"
    ds.SeriesInstanceUID = series
    ds.Rows = ds.Columns = 32
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation, ds.SamplesPerPixel = 7, 0, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    if lossy_flag is not None:
        ds.LossyImageCompression = lossy_flag
    if UID(syntax).is_compressed:
        ds.PixelData = encapsulate([frame or _jpeg_bytes(_mask())])
        ds["PixelData"].is_undefined_length = True
    else:
        ds.PixelData = _mask().tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return path


def _tiff(path: Path, compression: str | None) -> Path:
    from PIL import Image

    Image.fromarray(_mask()).save(path, compression=compression)
    return path


# ------------------------------------------------------------------ lossy storage


@pytest.mark.parametrize(("name", "write", "says"), [
    ("case000.tif", lambda p: _tiff(p, "jpeg"), "TIFF with JPEG compression"),
    ("case000.png", lambda p: p.write_bytes(_jpeg_bytes(_mask())), "JPEG (by its bytes"),
    ("case000.jpg", lambda p: p.write_bytes(_jpeg_bytes(_mask())), "stored as JPEG,"),
    ("case000.dcm", lambda p: _dicom(p, "1.2.840.10008.1.2.4.50"), "JPEG Baseline"),
    ("case000.dcm", lambda p: _dicom(p, "1.2.840.10008.1.2.4.51"), "JPEG Extended"),
    ("case000.dcm", lambda p: _dicom(p, "1.2.840.10008.1.2.4.81"), "JPEG-LS Lossy (Near-Lossless)"),
    ("case000.dcm", lambda p: _dicom(p, "1.2.840.10008.1.2.4.91"), "JPEG 2000"),
    ("IM0001", lambda p: _dicom(p, "1.2.840.10008.1.2.4.50"), "JPEG Baseline"),  # no suffix
    ("case000.dcm", lambda p: _dicom(p, "1.2.840.10008.1.2.1", lossy_flag="01"),
     "Lossy Image Compression 01"),
])
def test_a_lossy_mask_is_refused_by_its_content(tmp_path: Path, name: str, write, says: str
                                                ) -> None:
    """The example: a TIFF with JPEG compression and a DICOM in JPEG Baseline passed,
    having no .jpg name; the other lossy transfer syntaxes and the lossy flag too."""
    path = tmp_path / name
    write(path)
    with pytest.raises(DataError, match=LOSSY) as err:
        check_lossless(path)
    assert str(err.value).startswith(f"{path}: label map stored as "), err.value
    assert says in str(err.value), err.value


@pytest.mark.parametrize(("name", "write"), [
    ("case000.tif", lambda p: _tiff(p, "tiff_lzw")),
    ("case000.tif", lambda p: _tiff(p, None)),
    ("case000.dcm", lambda p: _dicom(p, "1.2.840.10008.1.2.1")),
    ("case000.dcm", lambda p: _dicom(p, "1.2.840.10008.1.2.4.70", frame=b"\xff\xd8\xff\xd9")),
    ("case000.dcm", lambda p: _dicom(p, "1.2.840.10008.1.2.4.91", lossy_flag="00",
                                     frame=b"\xff\x4f\xff\x51")),
    ("case000.nii.gz", lambda p: save_nifti(p, _mask())),
    ("missing.jpg", lambda p: None),  # nothing to read: the reader says so
])
def test_a_lossless_mask_passes_whatever_its_name(tmp_path: Path, name: str, write) -> None:
    path = tmp_path / name
    write(path)
    check_lossless(path)


def test_a_png_called_jpg_is_read_exactly_and_jpeg_in_a_tiff_refused(tmp_path: Path) -> None:
    """A lossless PNG saved as ``.jpg`` holds exact values: the door reads it (the name does
    not change a value); a mask in a JPEG-compressed TIFF is refused before it is read."""
    from PIL import Image

    Image.fromarray(ramp((32, 32), np.uint8, 100)).save(tmp_path / "case000.png")
    Image.fromarray(_mask()).save(tmp_path / "case000_seg.jpg", format="PNG")
    _, (label,) = read_case(Case("case000", (tmp_path / "case000.png",),
                                 (tmp_path / "case000_seg.jpg",)))
    assert sorted(np.unique(label.array).tolist()) == [0, 1, 2, 3]
    tiff = _tiff(tmp_path / "case000_seg.tif", "jpeg")
    with pytest.raises(DataError, match=rf"case000_seg\.tif: label map stored as TIFF .*{LOSSY}"):
        read_case(Case("case000", (tmp_path / "case000.png",), (tiff,)))


def test_a_dicom_series_mask_with_one_lossy_slice_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "case000_seg"
    folder.mkdir()
    _dicom(folder / "s1.dcm", "1.2.840.10008.1.2.1")
    _dicom(folder / "s2.dcm", "1.2.840.10008.1.2.4.50")
    with pytest.raises(DataError, match=rf"s2\.dcm: label map stored as DICOM .*{LOSSY}"):
        check_lossless(folder)


# ------------------------------------------------------------------ remaps that merge


def _freesurfer_set(root: Path) -> tuple[Path, Path]:
    """Four 2D cases coded 0, 2, 41, 1035; case000 lacks 2."""
    rng = np.random.default_rng(0)
    for i in range(4):
        save_nifti(root / "images" / f"case{i:03d}.nii.gz",
                   rng.normal(100, 10, (32, 32)).astype(np.float32))
        label = np.zeros((32, 32), np.int16)
        label[2:12, 2:12] = 41
        label[16:28, 16:28] = 1035
        if i:
            label[20:30, 2:10] = 2
        save_nifti(root / "labels" / f"case{i:03d}_seg.nii.gz", label)
    return root / "images", root / "labels"


def _hint(output: str) -> str:
    """The ``--label-map`` pairs the refusal gives over all maps."""
    found = re.search(r"over all \d+ label maps that is --label-map ([0-9:,]+)", output)
    assert found, output
    return found.group(1)


def test_following_pretrains_sparse_hint_keeps_every_label(tmp_path: Path) -> None:
    """The example: the hint was built from case000's values (41:1,1035:2) and, followed,
    merged 2 with 1035 in every other map. Now the pairs to follow come from every map
    (and ``consecutive``, which pretrain takes); following them trains 4 labels; the one
    map's pairs are refused, naming a map, the value and the fix."""
    from segfew.modelfile import read_model_file

    images, labels = _freesurfer_set(tmp_path)
    out = tmp_path / "seg.pt"
    said = invoke("pretrain", "--images", str(images), "--labels", str(labels), "--out",
                  str(out), *TINY_PRETRAIN, expect=2)
    assert "case000_seg.nii.gz: label values 0, 41, 1035 are far sparser" in said, said
    assert "remap them with --label-map OLD:NEW pairs (this map alone: 41:1,1035:2)" in said
    assert said.rstrip().endswith("or --label-map consecutive, which numbers the values of "
                                  "every map"), said
    assert _hint(said) == "2:1,41:2,1035:3" and said.count("error:") == 1, said
    assert not out.exists()

    said = invoke("pretrain", "--images", str(images), "--labels", str(labels), "--out",
                  str(out), "--label-map", "41:1,1035:2", *TINY_PRETRAIN, expect=2)
    assert re.search(r"case00[123]_seg\.nii\.gz: label value 2 is left unmapped by "
                     r"--label-map, which also maps 1035:2", said), said
    assert "map 2 too (2:2 merges on purpose)" in said and not out.exists()

    invoke("pretrain", "--images", str(images), "--labels", str(labels), "--out", str(out),
           "--label-map", "2:1,41:2,1035:3", *TINY_PRETRAIN)
    assert len(read_model_file(out)[0].classes) == 4


def test_inspect_refuses_a_remap_onto_values_other_maps_keep(tmp_path: Path) -> None:
    """The second instance: ``3:1,17:2,42:3`` from one map's codes, where the other maps
    hold 0, 1, 2, 3: their 1 and 2 would have taken 3's and 17's places without a word."""
    images, labels = tmp_path / "images", tmp_path / "labels"
    for i in range(3):
        save_nifti(images / f"case{i:03d}.nii.gz", ramp((8, 8), base=10.0 + i))
        label = np.repeat(np.array([0, 3, 17, 42] if i == 0 else [0, 1, 2, 3], np.int16), 16)
        save_nifti(labels / f"case{i:03d}_seg.nii.gz", label.reshape(8, 8))
    said = invoke("inspect", "--images", str(images), "--labels", str(labels),
                  "--label-map", "3:1,17:2,42:3", expect=1)
    flat = " ".join(said.replace("│", " ").split())
    assert "case001_seg.nii.gz: label values 1, 2 are left unmapped by --label-map, which " \
           "also maps 3:1, 17:2" in flat, said
    invoke("inspect", "--images", str(images), "--labels", str(labels),
           "--label-map", "consecutive")


@pytest.mark.parametrize(("values", "remap", "refused"), [
    ([0, 1, 3], {3: 1}, "label value 1 is left unmapped"),
    ([0, 2, 5, 9], {5: 2, 9: 3}, "label value 2 is left unmapped"),
    ([0, 1, 2, 255], {255: 1}, "label value 1 is left unmapped"),
    ([0, 1, 3], {3: 1, 1: 1}, None),  # 1:1: merged on purpose
    ([0, 1, 3], {3: 0}, None),  # to background
    ([0, 1, 3], {3: 2}, None),
    ([0, 1, 255], {255: 1}, None),  # what the binary-mask refusal proposes
])
def test_a_remap_never_merges_a_value_it_leaves(tmp_path: Path, values: list[int],
                                                remap: dict[int, int], refused: str | None
                                                ) -> None:
    path = tmp_path / "m.nii.gz"
    if refused is None:
        check_remap_keeps_labels_apart(values, remap, path)
        check_label_values(np.array(values, np.uint8), None, path, remap)
        return
    with pytest.raises(DataError, match=rf"m\.nii\.gz: {refused}.*merges on purpose\)$"):
        check_label_values(np.array(values, np.uint8), None, path, remap)


def test_the_sparse_hint_is_complete_with_a_given_remap(tmp_path: Path) -> None:
    """With a remap given, the pairs replace it whole (the flag replaces, never adds), and
    :meth:`SparseLabelsError.over` adds them from every map to the door's own line."""
    assert label_map_hint([0, 2, 41, 1035]) == "2:1,41:2,1035:3"
    assert label_map_hint([0, 41, 1035, 2000], {41: 1}) == "41:1,1035:2,2000:3"
    label = np.array([[0, 41], [1035, 41]], np.int16)
    with pytest.raises(SparseLabelsError, match=r"pairs \(this map alone: 41:1,1035:2\)$"
                       ) as err:
        check_label_values(label, None, tmp_path / "a_seg.nii.gz")
    save_nifti(tmp_path / "a_seg.nii.gz", label)
    save_nifti(tmp_path / "b_seg.nii.gz", np.array([[0, 2], [41, 1035]], np.int16))
    union = err.value.over([tmp_path / "a_seg.nii.gz", tmp_path / "b_seg.nii.gz"], None)
    assert str(union) == f"{err.value}; over all 2 label maps that is --label-map 2:1,41:2,1035:3"
    with pytest.raises(SparseLabelsError, match=r"this map alone: 41:1,1035:2,2000:3\)$"):
        check_label_values(np.array([[0, 41], [1035, 2000]]), None, tmp_path / "c.nii.gz",
                           {41: 1})


def test_a_label_map_flag_giving_one_value_twice_is_refused() -> None:
    import typer

    from segfew.cli.common import parse_label_map

    assert parse_label_map("41:1, 1035:2") == {41: 1, 1035: 2}
    with pytest.raises(typer.BadParameter, match="label value 3 is mapped twice"):
        parse_label_map("3:1,17:2,3:2")
