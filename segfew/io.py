"""Read and write medical images with their geometry.

Every reader returns an :class:`Image` whose array holds spatial axes only, indexed
``(X, Y[, Z])`` like nibabel, with a 4×4 voxel→world affine in RAS. 3D arrays are reoriented
to the closest canonical (RAS) orientation so that every network sees anatomy the same way
whatever the scanner wrote (issue 2, item 2). The source geometry is kept so that
:func:`write_image` puts a label or probability map back on the source grid: same shape,
same affine, so it overlays the input in ITK-SNAP or 3D Slicer.

NIfTI is read with nibabel; NRRD, MHA/MHD, TIFF, PNG/JPEG/BMP, single DICOM files and DICOM
series folders (:mod:`segfew.dicom`) with SimpleITK (whose LPS geometry is converted to RAS).
Reading is bounded: the header is checked against :class:`ReadLimits` before any voxel is
read. What ITK would print goes out as :class:`~segfew.errors.DataWarning` naming the file.
"""

from __future__ import annotations

import contextlib
import gzip
import math
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segfew.atomic import atomic_path
from segfew.errors import DataError, DataWarning

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
    colour: bool = False
    """The file held colour (RGB) pixels, converted to grey on reading."""

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
                            f"{_size(nbytes)} of data, over the limit of {_size(self.max_bytes)} "
                            f"(raise it with {BYTES_ENV})", path)


VOXELS_ENV = "SEGFEW_MAX_VOXELS"
BYTES_ENV = "SEGFEW_MAX_IMAGE_BYTES"


def _dims(shape: tuple[int, ...], components: int) -> str:
    dims = "×".join(str(int(s)) for s in shape)
    return f"{dims}×{components}" if components > 1 else dims


def _size(nbytes: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} bytes"


def read_image(path: str | Path, limits: ReadLimits | None = None) -> Image:
    """Read a 2D or 3D image; any failure is a one-line :class:`DataError` naming the file.

    The header is checked against ``limits`` (default :meth:`ReadLimits.from_env`) before
    the voxels are read. RGB(A) pixels become grey (luminance, BT.709); an image whose
    three channels differ is flagged ``colour`` and a warning says so (a label map must
    not be colour: :mod:`segfew.cases` refuses it). Suffixes match in any case (``.Nii``).
    """
    path = Path(path)
    limits = limits if limits is not None else ReadLimits.from_env()
    if not path.exists():
        raise DataError("no such file", path)
    from segfew import itk

    if path.is_dir():
        if not is_dicom_series_dir(path):
            raise DataError("is a folder without DICOM files", path)
        loader: Callable[[Path, ReadLimits], tuple[np.ndarray, np.ndarray, dict[str, Any]]] = \
            itk.read_dicom_series
    else:
        if path.stat().st_size == 0:
            raise DataError("cannot read image (empty file)", path)
        suffix = _image_suffix(path.name)
        if suffix is None:
            raise DataError(f"not a supported image file (suffixes: {', '.join(IMAGE_SUFFIXES)})",
                            path)
        loader = _read_nifti if suffix in NIFTI_SUFFIXES else itk.read_itk
    try:
        array, affine, extra = loader(path, limits)
    except DataError:
        raise
    except MemoryError:
        raise DataError("not enough memory to read this image", path) from None
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


def _read_nifti(path: Path, limits: ReadLimits) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """NIfTI-1/2, gzipped or not, recognised by content (so ``a.Nii.GZ`` opens too)."""
    import nibabel as nib

    with open(path, "rb") as raw:
        gzipped = raw.read(2) == b"\x1f\x8b"
    if path.name.lower().endswith(".gz") and not gzipped:
        raise DataError("cannot read image (not a gzip file)", path)
    stream = gzip.open(path, "rb") if gzipped else open(path, "rb")  # noqa: SIM115
    with stream as f:
        sizeof_hdr = int.from_bytes(f.read(4), "little")
        if sizeof_hdr not in (348, 540):
            sizeof_hdr = int.from_bytes(sizeof_hdr.to_bytes(4, "little"), "big")
        if sizeof_hdr not in (348, 540):
            raise DataError("cannot read image (not a NIfTI header)", path)
        f.seek(0)
        klass = nib.Nifti1Image if sizeof_hdr == 348 else nib.Nifti2Image
        holder = nib.fileholders.FileHolder(fileobj=f)
        img = klass.from_file_map({"header": holder, "image": holder})
        header = img.header
        raw_dtype = np.dtype(header.get_data_dtype())
        shape = tuple(int(s) for s in img.shape)
        components = len(raw_dtype.fields) if raw_dtype.fields else 1
        limits.check(shape, components, raw_dtype.itemsize // components, path)
        offset = int(getattr(img.dataobj, "offset", header.get_data_offset()))
        _check_stored_size(path, gzipped, offset,
                           math.prod(shape) * raw_dtype.itemsize)
        slope, inter = header.get_slope_inter()
        scaled = (slope not in (None, 1.0)) or (inter not in (None, 0.0))
        extra: dict[str, Any] = {"format": "nifti", "nifti_codes":
                                 (int(header["qform_code"]), int(header["sform_code"]))}
        if raw_dtype.fields:  # RGB24 / RGBA32: a record per voxel
            array = np.asarray(img.dataobj)
            names = raw_dtype.names or ()
            array, extra["colour"] = grey(np.stack([array[n] for n in names[:3]], -1), path)
        elif raw_dtype.kind in "iub" and not scaled:
            array = np.asarray(img.dataobj)  # keeps label maps integer
        else:
            array = np.asarray(img.get_fdata(dtype=np.float32))
    if array.ndim == 5 and array.shape[3] == 1 and array.shape[4] in (3, 4):  # vector intent
        array, extra["colour"] = grey(array[:, :, :, 0, :3], path)
    return array, np.asarray(img.affine, dtype=float), extra


def _check_stored_size(path: Path, gzipped: bool, offset: int, declared: int) -> None:
    """The voxel data the header declares must be what the file holds.

    A plain file shorter than declared is truncated. For gzip, the trailer's ISIZE (the
    uncompressed size modulo 2^32, of the last member) is compared: a stream that expands
    beyond what the header declares is refused, after decompressing (bounded) to tell it
    from a cut file, whose last 4 bytes are no trailer. (A short stream is left to the reader: a
    multi-member file, e.g. BGZF, ends in an empty member whose ISIZE is 0.)
    """
    size = path.stat().st_size
    if not gzipped:
        if size < offset + declared:
            raise DataError(f"file is truncated: the header declares {_size(declared)} of "
                            f"voxels, the file holds {_size(max(0, size - offset))}", path)
        return
    if offset + declared >= 2**32:
        return  # ISIZE wraps; nibabel then reads exactly the declared bytes
    with open(path, "rb") as f:
        f.seek(-4, os.SEEK_END)
        isize = int.from_bytes(f.read(4), "little")
    if isize > offset + declared + _GZIP_SLACK:
        # The trailer of a cut file is any 4 bytes: decompress (at most the bound) to tell.
        if _gunzip_exceeds(path, offset + declared + _GZIP_SLACK):
            raise DataError(f"compressed stream expands to {_size(isize)}, more than the "
                            f"{_size(offset + declared)} its header declares", path)
        raise DataError("truncated or corrupt gzip stream", path)


def _gunzip_exceeds(path: Path, limit: int) -> bool:
    """Whether the gzip members of ``path`` expand to more than ``limit`` bytes (False when
    the stream is cut or corrupt before that). Reads at most ``limit + 1`` output bytes."""
    import zlib

    total = 0
    with open(path, "rb") as f:
        z = zlib.decompressobj(wbits=31)
        pending = b""
        while total <= limit:
            if not pending:
                pending = f.read(1 << 16)
                if not pending:
                    return False  # input ended inside a member: truncated
            try:
                total += len(z.decompress(pending, limit + 1 - total))
            except zlib.error:
                return False
            pending = z.unconsumed_tail
            if z.eof:  # next member, if any
                rest = z.unused_data
                z = zlib.decompressobj(wbits=31)
                pending = rest + pending
                if not pending and not (pending := f.read(1 << 16)):
                    return False
    return True


_GZIP_SLACK = 1 << 20  # padding or extensions some writers append


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

    from segfew import itk

    suffix = _image_suffix(path.name)
    if suffix is None:
        raise DataError(f"not a supported image suffix (use one of {', '.join(IMAGE_SUFFIXES)})",
                        path)
    if suffix in NIFTI_SUFFIXES:
        with atomic_path(path) as tmp:
            _write_nifti(array, reference, tmp, vector=bool(channels))
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


def _write_nifti(array: np.ndarray, reference: Image, path: Path, vector: bool = False
                 ) -> None:
    """A channel axis (probability maps) is the 4th NIfTI axis; a 2D map gets a slice axis
    of one first, so it stays a 2D image (X, Y, 1, C) rather than a volume of C slices."""
    import nibabel as nib

    if vector and array.ndim == 3:
        array = array[:, :, None, :]
    img = nib.Nifti1Image(array, reference.source_affine)
    qcode, scode = reference.nifti_codes
    img.set_qform(reference.source_affine, code=qcode or 1)
    img.set_sform(reference.source_affine, code=scode or (0 if qcode else 1))
    img.header.set_data_dtype(array.dtype)
    img.header.set_xyzt_units("mm")
    nib.save(img, str(path))


