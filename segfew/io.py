"""Read and write medical images with their geometry.

Every reader returns an :class:`Image` whose array holds spatial axes only, indexed
``(X, Y[, Z])`` like nibabel, with a 4×4 voxel→world affine in RAS. 3D arrays are reoriented
to the closest canonical (RAS) orientation so that every network sees anatomy the same way
whatever the scanner wrote (issue 2, item 2). The source geometry is kept so that
:func:`write_image` puts a label or probability map back on the source grid: same shape,
same affine, so it overlays the input in ITK-SNAP or 3D Slicer.

NIfTI is read with nibabel; NRRD, MHA/MHD, TIFF, PNG/JPEG/BMP, single DICOM files and DICOM
series folders with SimpleITK (whose LPS geometry is converted to RAS).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segfew.atomic import atomic_path
from segfew.errors import DataError

__all__ = [
    "IMAGE_SUFFIXES",
    "Image",
    "case_id",
    "is_dicom_series_dir",
    "is_image_file",
    "read_image",
    "write_image",
]

NIFTI_SUFFIXES = (".nii.gz", ".nii")
IMAGE_SUFFIXES: tuple[str, ...] = (
    ".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd",
    ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm",
)
_RGB_WEIGHTS = np.array([0.2125, 0.7154, 0.0721])  # scikit-image's rgb2gray (ITU-R BT.709)
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _image_suffix(name: str) -> str | None:
    lower = name.lower()
    for suffix in IMAGE_SUFFIXES:  # ".nii.gz" is listed before ".nii"
        if lower.endswith(suffix) and len(lower) > len(suffix):
            return suffix
    return None


def is_image_file(path: Path) -> bool:
    """True for a visible file with a supported image suffix (DICOM folders: see below)."""
    path = Path(path)
    return not path.name.startswith(".") and _image_suffix(path.name) is not None and (
        path.is_file() or not path.exists()
    )


def is_dicom_series_dir(path: Path) -> bool:
    """True for a folder whose files are DICOM (``.dcm`` or the ``DICM`` preamble)."""
    path = Path(path)
    if not path.is_dir():
        return False
    for child in sorted(path.iterdir())[:50]:
        if not child.is_file() or child.name.startswith("."):
            continue
        if child.suffix.lower() == ".dcm":
            return True
        if child.suffix == "" or child.suffix.lower() == ".ima":
            with contextlib.suppress(OSError), open(child, "rb") as f:
                f.seek(128)
                if f.read(4) == b"DICM":
                    return True
    return False


def case_id(path: Path) -> str:
    """File name without its image suffix: ``a/b/p1_frame01.nii.gz`` → ``p1_frame01``."""
    name = Path(path).name
    suffix = _image_suffix(name)
    return name[: -len(suffix)] if suffix else name


@dataclass
class Image:
    """An image on its canonical grid, plus what is needed to write results back.

    ``array`` has spatial axes only, ``(X, Y)`` or ``(X, Y, Z)``; a 3D array is in RAS.
    ``affine`` maps voxel indices of ``array`` to RAS world coordinates (mm).
    """

    array: np.ndarray
    affine: np.ndarray
    path: Path | None = None
    source_affine: np.ndarray = field(default_factory=lambda: np.eye(4))
    """RAS affine of the array as stored in the file (before reorientation)."""
    source_shape: tuple[int, ...] = ()
    """Array shape as stored in the file, trailing singleton axes included."""
    ornt: np.ndarray | None = None
    """nibabel orientation transform from the stored axes to RAS (None: unchanged)."""
    format: str = "nifti"
    """``nifti``, ``itk`` (any SimpleITK file) or ``dicom`` (a series folder)."""
    nifti_codes: tuple[int, int] = (1, 1)
    """(qform_code, sform_code) of a NIfTI source, so written files keep the same meaning."""

    def __post_init__(self) -> None:
        if not self.source_shape:
            self.source_shape = tuple(self.array.shape)

    @property
    def dim(self) -> int:
        return int(self.array.ndim)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.array.shape)

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size in mm along each axis of ``array``."""
        norms = np.linalg.norm(self.affine[:3, : self.dim], axis=0)
        return tuple(float(round(s, 6)) for s in norms)

    @property
    def orientation(self) -> str:
        """Axis codes of the source file, e.g. ``"LPS"`` (``"RA"`` for a 2D image)."""
        return _axcodes(self.source_affine)[: self.dim]


def _axcodes(affine: np.ndarray) -> str:
    import nibabel as nib

    try:
        return "".join(c or "?" for c in nib.aff2axcodes(affine))
    except Exception:  # a singular affine has no orientation
        return "???"


# ------------------------------------------------------------------------- reading


def read_image(path: str | Path) -> Image:
    """Read a 2D or 3D image; any failure is a one-line :class:`DataError` naming the file."""
    path = Path(path)
    if not path.exists():
        raise DataError("no such file", path)
    if path.is_dir():
        if not is_dicom_series_dir(path):
            raise DataError("is a folder without DICOM files", path)
        loader = _read_dicom_series
    else:
        if path.stat().st_size == 0:
            raise DataError("cannot read image (empty file)", path)
        suffix = _image_suffix(path.name)
        if suffix is None:
            raise DataError(f"not a supported image file (suffixes: {', '.join(IMAGE_SUFFIXES)})",
                            path)
        loader = _read_nifti if suffix in NIFTI_SUFFIXES else _read_itk
    try:
        array, affine, extra = loader(path)
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"cannot read image ({_reason(e, path)})", path) from None
    return _make_image(array, affine, path, **extra)


def _reason(e: Exception, path: Path) -> str:
    """The useful part of a library's error message, without paths or C++ locations."""
    text = str(e).strip()
    if "ERROR:" in text:
        text = text.rsplit("ERROR:", 1)[1]
    text = text.replace(f'"{path}"', "").replace(str(path), "").replace(path.name, "")
    text = re.sub(r"^\s*File\s+(is\s+)?", "", text.replace('""', "").replace("''", ""))
    text = " ".join(text.split()).strip(" :.") or type(e).__name__
    if "Unable to determine ImageIO reader" in str(e):
        text = "unknown format or corrupt file"
    return text[:160]


def _read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    import nibabel as nib

    img = nib.load(str(path))
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise DataError(f"not a NIfTI image ({type(img).__name__})", path)
    header = img.header
    slope, inter = header.get_slope_inter()
    raw_dtype = np.dtype(header.get_data_dtype())
    scaled = (slope not in (None, 1.0)) or (inter not in (None, 0.0))
    if raw_dtype.kind in "iub" and not scaled:
        array = np.asarray(img.dataobj)  # keeps label maps integer
    else:
        array = np.asarray(img.get_fdata(dtype=np.float32))
    codes = (int(header["qform_code"]), int(header["sform_code"]))
    return array, np.asarray(img.affine, dtype=float), {"format": "nifti", "nifti_codes": codes}


def _read_itk(path: Path) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    import SimpleITK as sitk

    with _quiet_itk():
        img = sitk.ReadImage(str(path))
    return (*_from_sitk(img, path), {"format": "itk"})


def _read_dicom_series(path: Path) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    import SimpleITK as sitk

    with _quiet_itk():
        series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path))
        if not series:
            raise DataError("cannot read image (no DICOM series found)", path)
        if len(series) > 1:
            raise DataError(f"holds {len(series)} DICOM series; give one folder per series", path)
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path), series[0]))
        img = reader.Execute()
    return (*_from_sitk(img, path), {"format": "dicom"})


@contextlib.contextmanager
def _quiet_itk() -> Iterator[None]:
    """ITK prints warnings to stderr; library code must not."""
    import SimpleITK as sitk

    previous = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(previous)


def _from_sitk(img: Any, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """SimpleITK image → (array indexed X, Y[, Z], RAS affine)."""
    import SimpleITK as sitk

    array = sitk.GetArrayFromImage(img)  # (Z, Y, X[, C]) or (Y, X[, C])
    ncomp = img.GetNumberOfComponentsPerPixel()
    dim = img.GetDimension()
    if ncomp > 1:
        if ncomp in (3, 4):  # RGB(A) photo or scan: luminance, alpha dropped
            array = array[..., :3].astype(np.float64) @ _RGB_WEIGHTS
            array = array.astype(np.float32)
        else:
            raise DataError(f"has {ncomp} components per pixel; give one file per channel", path)
    array = np.ascontiguousarray(array.transpose(tuple(range(dim))[::-1]))
    spacing = np.array(img.GetSpacing(), dtype=float)
    origin = np.array(img.GetOrigin(), dtype=float)
    direction = np.array(img.GetDirection(), dtype=float).reshape(dim, dim)
    lps = np.eye(4)
    lps[:dim, :dim] = direction * spacing
    lps[:dim, 3] = origin
    return array, _LPS_TO_RAS @ lps


def _make_image(array: np.ndarray, affine: np.ndarray, path: Path, **extra: Any) -> Image:
    """Squeeze trailing singleton axes, check dimensionality, reorient 3D to RAS."""
    import nibabel as nib

    source_shape = tuple(int(s) for s in array.shape)
    while array.ndim > 2 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3):
        raise DataError(f"has {array.ndim} dimensions (shape {source_shape}); "
                        "expected a 2D or 3D image", path)
    if array.size == 0:
        raise DataError(f"cannot read image (empty array, shape {source_shape})", path)
    ornt = None
    canonical = affine
    if array.ndim == 3:
        try:
            ornt = nib.orientations.io_orientation(affine)
        except Exception:
            ornt = None
        if ornt is not None and np.array_equal(ornt, [[0, 1], [1, 1], [2, 1]]):
            ornt = None
        if ornt is not None:
            canonical = affine @ nib.orientations.inv_ornt_aff(ornt, array.shape)
            array = nib.orientations.apply_orientation(array, ornt)
    return Image(array=np.ascontiguousarray(array), affine=canonical, path=path,
                 source_affine=affine, source_shape=source_shape, ornt=ornt, **extra)


# ------------------------------------------------------------------------- writing


def write_image(array: np.ndarray, reference: Image, path: str | Path) -> Path:
    """Write ``array`` (on ``reference.array``'s grid) in the source geometry of ``reference``.

    ``array`` has ``reference.shape`` or, for probability maps, ``(*reference.shape, C)``.
    It is mapped back to the file's stored orientation and shape, so the result overlays the
    reference's source file. The format follows the suffix of ``path``. Integer and boolean
    maps are written as uint8 / int16 / int32 (the smallest that holds them), others as float32.
    The file is written atomically.
    """
    import nibabel as nib

    path = Path(path)
    array = np.asarray(array)
    spatial = reference.shape
    if array.shape[: len(spatial)] != spatial or array.ndim > len(spatial) + 1:
        raise DataError(f"array of shape {array.shape} does not fit the reference grid {spatial} "
                        "(give the spatial shape, or it plus one channel axis)", path)
    channels = array.shape[len(spatial):]
    array = _storage_dtype(array)
    if reference.ornt is not None:
        back = nib.orientations.ornt_transform(_RAS_ORNT, reference.ornt)
        array = nib.orientations.apply_orientation(array, back)
    array = array.reshape(reference.source_shape + channels)

    suffix = _image_suffix(path.name)
    if suffix is None:
        raise DataError(f"not a supported image suffix (use one of {', '.join(IMAGE_SUFFIXES)})",
                        path)
    if suffix in NIFTI_SUFFIXES:
        with atomic_path(path) as tmp:
            _write_nifti(array, reference, tmp)
    elif suffix in (".mhd", ".nhdr"):  # a detached header names its data file: no renaming
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_itk(array, reference, path, suffix, vector=bool(channels))
    else:
        with atomic_path(path) as tmp:
            _write_itk(array, reference, tmp, suffix, vector=bool(channels))
    return path


_RAS_ORNT = np.array([[0, 1], [1, 1], [2, 1]], dtype=float)


def _storage_dtype(array: np.ndarray) -> np.ndarray:
    if array.dtype.kind == "b":
        return array.astype(np.uint8)
    if array.dtype.kind in "iu":
        lo, hi = (int(array.min()), int(array.max())) if array.size else (0, 0)
        for dt in (np.uint8, np.int16, np.int32):
            info = np.iinfo(dt)
            if info.min <= lo and hi <= info.max:
                return array.astype(dt)
        return array.astype(np.int64)
    return array.astype(np.float32)


def _write_nifti(array: np.ndarray, reference: Image, path: Path) -> None:
    import nibabel as nib

    img = nib.Nifti1Image(array, reference.source_affine)
    qcode, scode = reference.nifti_codes
    img.set_qform(reference.source_affine, code=qcode or 1)
    img.set_sform(reference.source_affine, code=scode or (0 if qcode else 1))
    img.header.set_data_dtype(array.dtype)
    img.header.set_xyzt_units("mm")
    nib.save(img, str(path))


def _write_itk(array: np.ndarray, reference: Image, path: Path, suffix: str,
               vector: bool) -> None:
    import SimpleITK as sitk

    ndim = array.ndim - int(vector)
    if suffix in (".png", ".jpg", ".jpeg", ".bmp"):
        if array.dtype.kind == "f" or vector:
            raise DataError(f"{suffix} cannot hold float or multi-channel values; "
                            "write .nii.gz, .mha or .tif", path)
        if ndim != 2:
            raise DataError(f"{suffix} holds 2D images only; write .nii.gz or .mha", path)
        if array.dtype != np.uint8:
            if array.min() < 0 or array.max() > 65535:
                raise DataError(f"values outside 0..65535 do not fit {suffix}", path)
            array = array.astype(np.uint16)
    axes = tuple(range(ndim))[::-1] + ((ndim,) if vector else ())
    img = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(axes)), isVector=vector)
    lps = _LPS_TO_RAS @ reference.source_affine
    linear = lps[:ndim, :ndim]
    spacing = np.linalg.norm(linear, axis=0)
    spacing[spacing == 0] = 1.0
    img.SetSpacing([float(s) for s in spacing])
    img.SetOrigin([float(o) for o in lps[:ndim, 3]])
    with contextlib.suppress(RuntimeError):  # a singular direction is left as identity
        img.SetDirection([float(d) for d in (linear / spacing).ravel()])
    with _quiet_itk():
        sitk.WriteImage(img, str(path), useCompression=suffix in (".nrrd", ".mha", ".nhdr"))
