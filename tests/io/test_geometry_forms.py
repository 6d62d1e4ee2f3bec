"""Which NIfTI form gives the geometry, and what an output carries so that every reader
(nibabel, ITK: ITK-SNAP, 3D Slicer, SimpleITK) places it where it places its scan.

- An sform whose code is set but whose axes are zeros (or lie in one plane) gives way to a
  usable qform, as in ITK, said in one warning; no "???" orientation is printed.
- A scan with neither form (codes 0/0: ``nib.Nifti1Image(arr, None)``, Analyze conversions)
  gets outputs with codes 0/0 and its own pixdim: nibabel centres such a file and flips x,
  ITK puts its first voxel at 0 with identity axes, and each does the same for the output.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from segfew.io import read_image, write_image
from tests.conftest import ramp
from tests.io import read_warned

QFORM = np.diag([1.5, 1.5, 10.0, 1.0])
QFORM[:3, 3] = (-20.0, 31.0, 7.5)


def zero_sform(path: Path, srows: np.ndarray, data: np.ndarray) -> Path:
    """sform_code 1 with the given srow_x/y/z, beside a valid qform (code 1)."""
    header = nib.Nifti1Header()
    header.set_data_shape(data.shape)
    header.set_data_dtype(data.dtype)
    header.set_qform(QFORM, code=1)
    header.set_xyzt_units("mm")
    header["sform_code"] = 1
    for name, row in zip(("srow_x", "srow_y", "srow_z"), srows, strict=True):
        header[name] = row
    nib.save(nib.Nifti1Image(data, None, header=header), str(path))
    return path


def itk_geometry(path: Path) -> tuple[tuple[float, ...], ...]:
    img = sitk.ReadImage(str(path))
    return tuple(tuple(round(v, 4) for v in t)
                 for t in (img.GetOrigin(), img.GetDirection(), img.GetSpacing()))


@pytest.mark.parametrize(("srows", "says"), [
    (np.zeros((3, 4)), "has no axes (srow_x, srow_y and srow_z are zeros)"),
    (np.array([[1.5, 0, 0, 0], [0, 1.5, 0, 0], [0, 0, 0, 0]]),
     "gives axis 2 no extent (a column of zeros)"),
], ids=["all-zero", "one-row"])
def test_an_empty_sform_gives_way_to_the_qform(tmp_path: Path, srows: np.ndarray,
                                               says: str) -> None:
    data = ramp((8, 7, 5), np.int16, 0)
    path = zero_sform(tmp_path / "sformzero.nii.gz", srows, data)
    img, said = read_warned(path)
    assert said == [f"{path}: the sform (sform_code 1) {says}: segfew uses the qform instead "
                    "(1.5×1.5×10 mm, RAS), as ITK does"]
    assert img.spacing == (1.5, 1.5, 10.0) and img.spacing_known
    assert np.allclose(img.affine, QFORM)
    assert itk_geometry(path)[2] == img.spacing  # ITK's own reading
    # a label map written for it carries the qform alone, where every reader places the scan
    write_image((img.array > 20).astype(np.uint8), img, tmp_path / "seg.nii.gz")
    out = nib.load(str(tmp_path / "seg.nii.gz"))
    assert (int(out.header["qform_code"]), int(out.header["sform_code"])) == (1, 0)
    assert np.allclose(out.affine, QFORM, atol=1e-4)
    assert itk_geometry(tmp_path / "seg.nii.gz") == itk_geometry(path)


def test_no_question_marks_where_both_forms_are_unusable(tmp_path: Path) -> None:
    """pixdim 0 makes the qform empty too: the sform stays (its zero axis taken as 1); the
    words never hold "???" for an orientation."""
    data = ramp((8, 7, 5), np.int16, 0)
    path = zero_sform(tmp_path / "both.nii.gz", np.array([[1.5, 0, 0, 0], [0, 1.5, 0, 0],
                                                          [0, 0, 0, 0]]), data)
    img = nib.load(str(path))
    img.header["pixdim"][3] = 0.0
    nib.save(img, str(path))
    _, said = read_warned(path)
    assert said and not any("?" in s for s in said)


@pytest.mark.parametrize(("shape", "pixdim"), [((9, 7, 5), (0.8, 0.8, 3.0)),
                                               ((9, 7, 5), (1.0, 1.0, 1.0)),
                                               ((9, 7), (0.5, 0.7, 1.0))],
                         ids=["mm", "unit", "2d"])
def test_an_output_of_a_scan_without_forms_overlays_it_in_every_reader(
        tmp_path: Path, shape: tuple[int, ...], pixdim: tuple[float, ...]) -> None:
    data = ramp(shape, np.int16, 0)
    scan = nib.Nifti1Image(data, None)
    scan.header["pixdim"][1:4] = pixdim
    scan.header.set_xyzt_units("mm")
    nib.save(scan, str(tmp_path / "noaffine.nii.gz"))
    img = read_image(tmp_path / "noaffine.nii.gz")
    write_image((img.array > 20).astype(np.uint8), img, tmp_path / "seg.nii.gz")

    source, out = (nib.load(str(tmp_path / n)) for n in ("noaffine.nii.gz", "seg.nii.gz"))
    assert (int(out.header["qform_code"]), int(out.header["sform_code"])) == (0, 0)
    assert np.allclose(out.affine, source.affine)  # nibabel
    assert itk_geometry(tmp_path / "seg.nii.gz") == itk_geometry(tmp_path / "noaffine.nii.gz")
    # the same voxels: each label lies on the voxel of the scan it was computed from
    assert np.array_equal(np.asanyarray(out.dataobj), (data > 20).astype(np.uint8))


def test_an_analyze_pair_keeps_the_affine_nibabel_reads(tmp_path: Path) -> None:
    """Analyze 7.5 (SPM) also has no codes, but its origin field moves nibabel's affine: its
    outputs keep that affine (codes 1), not a bare pixdim."""
    scan = nib.Spm2AnalyzeImage(ramp((9, 7, 5), np.int16, 0), np.diag([2.0, 2.0, 3.0, 1.0]))
    nib.save(scan, str(tmp_path / "an.hdr"))
    img = read_image(tmp_path / "an.hdr")
    assert img.nifti_pixdim is None
    write_image((img.array > 20).astype(np.uint8), img, tmp_path / "seg.nii.gz")
    out = nib.load(str(tmp_path / "seg.nii.gz"))
    assert np.allclose(out.affine, nib.load(str(tmp_path / "an.hdr")).affine)


def test_an_analyze_pair_placed_by_nothing_gets_outputs_every_reader_overlays(
        tmp_path: Path) -> None:
    """Analyze 7.5 without SPM's origin or .mat: nibabel centres it, ITK puts it at 0 — as a
    NIfTI of codes 0/0, whose outputs keep codes 0/0 and the pixdim for both to agree."""
    data = ramp((9, 7, 5), np.int16, 0)
    scan = nib.AnalyzeImage(data, None)
    scan.header.set_zooms((1.5, 1.5, 10.0))
    nib.save(scan, str(tmp_path / "an.hdr"))
    img = read_image(tmp_path / "an.hdr")
    assert img.nifti_pixdim == (1.5, 1.5, 10.0)
    write_image((img.array > 20).astype(np.uint8), img, tmp_path / "seg.nii.gz")
    out = nib.load(str(tmp_path / "seg.nii.gz"))
    assert np.allclose(out.affine, nib.load(str(tmp_path / "an.hdr")).affine)  # nibabel
    assert itk_geometry(tmp_path / "seg.nii.gz") == itk_geometry(tmp_path / "an.hdr")  # ITK
    assert np.array_equal(np.asanyarray(out.dataobj), (data > 20).astype(np.uint8))
