"""Read and write medical images with their geometry.

Every reader returns an :class:`Image` whose array holds spatial axes only, indexed
``(X, Y[, Z])`` like nibabel, with a 4×4 voxel→world affine in RAS. 3D arrays are reoriented
to the closest canonical (RAS) orientation so that every network sees anatomy the same way
whatever the scanner wrote (issue 2, item 2). The source geometry is kept so that
:func:`write_image` puts a label or probability map back on the source grid: same shape,
same affine, so it overlays the input in ITK-SNAP or 3D Slicer.

NIfTI is read with nibabel (:mod:`segfew.io.nifti`); NRRD, MHA/MHD, TIFF, PNG/JPEG/BMP, single
DICOM files and DICOM series folders with SimpleITK (:mod:`segfew.io.itk`, whose LPS geometry
is converted to RAS).
Reading is bounded: the header is checked against :class:`ReadLimits` before any voxel is
read. What ITK would print goes out as :class:`~segfew.errors.DataWarning` naming the file.
"""

from __future__ import annotations

import logging
import math
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segfew.errors import DataError, DataWarning
from segfew.files import atomic_path

__all__ = [
    "IMAGE_SUFFIXES",
    "Image",
    "ReadLimits",
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
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


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
    """True for a folder that directly holds DICOM image files, found by their headers
    (:func:`segfew.io.itk.dicom_series_files`), whatever their suffix."""
    path = Path(path)
    if not path.is_dir():
        return False
    from segfew.io.itk import dicom_series_files

    return bool(dicom_series_files(path))


def case_id(path: Path) -> str:
    """File name without its image suffix: ``a/b/p1_frame01.nii.gz`` → ``p1_frame01``.

    A series folder of a CD export (below a ``DICOMDIR``) is named by its path from there,
    ``PT000000_ST000000_SE000000``, since every patient's first series is ``SE000000``.
    """
    path = Path(path)
    name = path.name
    if not _image_suffix(name) and path.is_dir():
        for parent in list(path.parents)[:6]:
            if (parent / "DICOMDIR").is_file():
                return "_".join(path.relative_to(parent).parts)
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
    colour: bool = False
    """The file held colour (RGB) pixels, converted to grey on reading."""
    nifti_units: str = "mm"
    """Spatial unit of a NIfTI source (``mm``, ``micron``, ``meter``); ``affine`` is in mm
    whatever it is, and outputs are written in it."""
    spacing_placeholder: str | None = None
    """Why the file holds no real voxel size (:func:`placeholder_spacing`), or None: sizes
    measured on it are then in voxels (pixels), not mm."""

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
    def spacing_known(self) -> bool:
        """Whether :attr:`spacing` is a measurement (not a placeholder of 1)."""
        return self.spacing_placeholder is None

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


@dataclass(frozen=True)
class ReadLimits:
    """What one image may claim before anything is allocated (issue 8, bounded reading).

    ``max_voxels`` counts voxels times components; ``max_bytes`` the stored voxel data. Both
    are checked against the file's header before its voxels are read, so a header that
    claims 32000×32000×4 voxels, or a small ``.nii.gz`` that expands to gigabytes, is a
    one-line error instead of an allocation. The defaults hold any routine CT or MR scan
    (a 512×512×2000 int16 CT is 1 GiB); raise them with ``SEGFEW_MAX_VOXELS`` and
    ``SEGFEW_MAX_IMAGE_BYTES``.
    """

    max_voxels: int = 2**30
    max_bytes: int = 2**30

    @classmethod
    def from_env(cls) -> ReadLimits:
        values = {}
        for name, env in (("max_voxels", VOXELS_ENV), ("max_bytes", BYTES_ENV)):
            raw = os.environ.get(env)
            if raw:
                try:
                    values[name] = int(float(raw))
                except ValueError:
                    raise DataError(f"{env}={raw!r} is not a number") from None
        return cls(**values)

    def check(self, shape: tuple[int, ...], components: int, itemsize: int, path: Path) -> None:
        voxels = math.prod(int(s) for s in shape) * max(1, components)
        nbytes = voxels * itemsize
        if voxels > self.max_voxels:
            raise DataError(f"the header declares {_dims(shape, components)} = {voxels:,} voxels, "
                            f"over the limit of {self.max_voxels:,} (raise it with {VOXELS_ENV})",
                            path)
        if nbytes > self.max_bytes:
            raise DataError(f"the header declares {_dims(shape, components)} voxels = "
                            f"{format_bytes(nbytes)} of data, over the limit of "
                            f"{format_bytes(self.max_bytes)} (raise it with {BYTES_ENV})", path)


VOXELS_ENV = "SEGFEW_MAX_VOXELS"
BYTES_ENV = "SEGFEW_MAX_IMAGE_BYTES"


def _dims(shape: tuple[int, ...], components: int) -> str:
    dims = "×".join(str(int(s)) for s in shape)
    return f"{dims}×{components}" if components > 1 else dims


def format_bytes(nbytes: int) -> str:
    """A byte count in words for error messages (``1.5 GiB``)."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} bytes"


def read_image(path: str | Path, limits: ReadLimits | None = None) -> Image:
    """Read a 2D or 3D image; any failure is a one-line :class:`DataError` naming the file.

    The header is checked against ``limits`` (default :meth:`ReadLimits.from_env`) before
    the voxels are read. RGB(A) pixels become grey (luminance, BT.709); an image whose
    three channels differ is flagged ``colour`` and a warning says so (a label map must
    not be colour: :mod:`segfew.data.read` refuses it). Suffixes match in any case (``.Nii``).
    """
    path = Path(path)
    limits = limits if limits is not None else ReadLimits.from_env()
    if not path.exists():
        raise DataError("no such file", path)
    from segfew.io import itk, nifti

    if path.is_dir():
        if not is_dicom_series_dir(path):
            raise DataError("is a folder without DICOM files", path)
        loader: Callable[[Path, ReadLimits], tuple[np.ndarray, np.ndarray, dict[str, Any]]] = \
            itk.read_dicom_series
    else:
        if path.stat().st_size == 0:
            raise DataError("cannot read image (empty file)", path)
        suffix = _image_suffix(path.name)
        if suffix is None and _is_dicom_file(path):
            suffix = ".dcm"  # DICOM files often have no suffix (IM000001)
        if suffix is None:
            raise DataError(f"not a supported image file (suffixes: {', '.join(IMAGE_SUFFIXES)})",
                            path)
        loader = nifti.read_nifti if suffix in NIFTI_SUFFIXES else itk.read_itk
    try:
        array, affine, extra = loader(path, limits)
    except DataError:
        raise
    except MemoryError:
        raise DataError("not enough memory to read this image", path) from None
    except PermissionError:
        raise DataError("file cannot be read (permission denied)", path) from None
    except Exception as e:
        log.debug("%s: %s", path, e)  # the library's own words, for a bug report
        raise DataError(f"cannot read image ({_reason(e, path)})", path) from None
    return _make_image(array, affine, path, **extra)


def _is_dicom_file(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


log = logging.getLogger("segfew.io")

#: library messages that have a cause in words
_CAUSES = (
    ("Unable to determine ImageIO reader", "unknown format or corrupt file"),
    ("File cannot be read", "file cannot be read (missing data file or corrupt header)"),
    ("No pixel data", "no pixel data"),
    ("Could not find a decoder", "no decoder for the transfer syntax"),
    ("Unhandled Transfer Syntax", "no decoder for the transfer syntax"),
    ("Unsupported", "unsupported object type"),
)


def _reason(e: Exception, path: Path) -> str:
    """The cause in words, without pointer addresses, C++ source paths or call chains.

    Known library messages become a fixed phrase; others are stripped of ITK's
    ``Class(0x…)`` prefixes, ``/…/file.cxx:123`` locations and ``sitk::ERROR`` chains. The raw
    text goes to the ``segfew.io`` logger at DEBUG level.
    """
    raw = str(e).strip()
    for needle, words in _CAUSES:
        if needle.lower() in raw.lower():
            return words
    text = raw
    teem = re.findall(r"\[\w+\]\s*\w+:\s*(.+)", text)  # teem (NRRD): a chain, innermost last
    if teem:
        text = teem[-1]
    if "ERROR:" in text:
        text = text.rsplit("ERROR:", 1)[1]
    text = re.sub(r"\w+\s*\(0x[0-9a-fA-F]+\)\s*:?", "", text)  # Class(0x55…):
    text = re.sub(r"\S+\.(cxx|cpp|hxx|h|txx|c)(:\d+)?:?", "", text)  # C++ source locations
    text = re.sub(r"\b(in|In)\s+\S+::\S+", "", text)
    text = re.sub(r"0x[0-9a-fA-F]{6,}", "", text)
    text = text.replace(f'"{path}"', "").replace(str(path), "").replace(path.name, "")
    text = re.sub(r"^\s*File\s+(is\s+)?", "", text.replace('""', "").replace("''", ""))
    text = " ".join(text.split()).strip(" :.") or type(e).__name__
    return text[:160]


def grey(rgb: np.ndarray, path: Path) -> tuple[np.ndarray, bool]:
    """RGB (last axis) → grey; equal channels are kept as stored (a grey image saved as RGB).

    Returns ``(grey, colour)``: ``colour`` is True when the channels differed and the
    luminance (scikit-image's rgb2gray weights, ITU-R BT.709) was taken, which is said in a
    :class:`DataWarning`.
    """
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
        return np.ascontiguousarray(rgb[..., 0]), False
    warnings.warn(DataWarning("RGB image converted to grey (luminance, ITU-R BT.709)", path),
                  stacklevel=3)
    return (rgb.astype(np.float64) @ _RGB_WEIGHTS).astype(np.float32), True


def placeholder_spacing(affine: np.ndarray, dim: int, units_stated: bool) -> str | None:
    """Why a file's voxel size is a placeholder rather than a measurement, or None.

    An identity affine (no geometry was stored: the public ACDC copy), or a spacing of 1 in
    a file that states no unit (NIfTI ``xyzt_units`` unknown; PNG/JPEG, which hold no pixel
    size) is read as 1 mm by every library, but means nothing: sizes are then in voxels.
    """
    spacing = np.linalg.norm(np.asarray(affine)[:3, :dim], axis=0)
    if np.allclose(affine, np.eye(4)):
        return "identity affine"
    if not units_stated and np.allclose(spacing, 1.0):
        return "pixel size 1 with no unit" if dim == 2 else "voxel size 1 with no unit"
    return None


def _make_image(array: np.ndarray, affine: np.ndarray, path: Path, **extra: Any) -> Image:
    """Squeeze trailing singleton axes, check dimensionality, reorient 3D to RAS."""
    import nibabel as nib

    units_stated = bool(extra.pop("units_stated", True))
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
                 source_affine=affine, source_shape=source_shape, ornt=ornt,
                 spacing_placeholder=placeholder_spacing(affine, array.ndim, units_stated),
                 **extra)


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

    from segfew.io import itk, nifti

    suffix = _image_suffix(path.name)
    if suffix is None:
        raise DataError(f"not a supported image suffix (use one of {', '.join(IMAGE_SUFFIXES)})",
                        path)
    if suffix in NIFTI_SUFFIXES:
        with atomic_path(path) as tmp:
            nifti.write_nifti(array, reference, tmp, vector=bool(channels))
    elif suffix in (".mhd", ".nhdr"):  # a detached header names its data file: no renaming
        path.parent.mkdir(parents=True, exist_ok=True)
        itk.write_itk(array, reference, path, suffix, vector=bool(channels))
    else:
        with atomic_path(path) as tmp:
            itk.write_itk(array, reference, tmp, suffix, vector=bool(channels))
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
