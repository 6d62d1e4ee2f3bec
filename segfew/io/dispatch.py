"""``read_image`` and ``write_image``: the format of a file chosen by its suffix (or its
DICOM preamble), the reader's failure said in words, and 3D arrays reoriented to RAS."""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from segfew.errors import DataError
from segfew.files import atomic_path
from segfew.io import itk, nifti
from segfew.io.content import misfit, misnamed
from segfew.io.dicom import dicom_series_files, is_dicom_series_dir, series_of_path
from segfew.io.headers import metaimage_shortfall
from segfew.io.image import (
    IMAGE_SUFFIXES,
    NIFTI_SUFFIXES,
    Image,
    ReadLimits,
    image_suffix,
    placeholder_spacing,
)


def read_image(path: str | Path, limits: ReadLimits | None = None, label: bool = False
               ) -> Image:
    """Read a 2D or 3D image; any failure is a one-line :class:`DataError` naming the file.

    ``affine`` and :attr:`Image.spacing` are in mm whatever unit the file states (NIfTI
    ``xyzt_units``, NRRD ``space units``); where the file holds no real voxel size,
    :attr:`Image.spacing_placeholder` says why (sizes are then in voxels). ``label``: read
    as a label map, so a palette picture (a VOC-style PNG mask) gives its indices, the
    labels, instead of its colours.

    The header is checked against ``limits`` (default :meth:`ReadLimits.from_env`) before
    the voxels are read. RGB(A) pixels become grey (luminance, BT.709); an image whose
    three channels differ is flagged ``colour`` and a warning says so (a label map must
    not be colour: :mod:`segfew.data.read` refuses it). Suffixes match in any case (``.Nii``).
    ``path`` may also name one series of a folder holding several
    (:func:`segfew.io.dicom.series_of_path`), a path no disk holds, as the folder's listing
    gives it.
    """
    path = Path(path)
    limits = limits if limits is not None else ReadLimits.from_env()
    series = not path.exists() and series_of_path(path) is not None
    if not path.exists() and not series:
        raise DataError("no such file", path)

    if path.is_dir() or series:
        if not series and not is_dicom_series_dir(path):
            raise DataError("is a folder without DICOM files", path)
        loader: Callable[[Path, ReadLimits], tuple[np.ndarray, np.ndarray, dict[str, Any]]] = \
            itk.read_dicom_series
    else:
        said = misfit(path, "image")  # an LFS pointer, an HTML page, a damaged PNG…
        if said is not None:
            raise DataError(f"cannot read image ({said})", path)
        suffix = image_suffix(path.name)
        if suffix is None and _is_dicom_file(path):
            suffix = ".dcm"  # DICOM files often have no suffix (IM000001)
        if suffix is None:
            raise DataError(f"not a supported image file (suffixes: {', '.join(IMAGE_SUFFIXES)})",
                            path)
        loader = nifti.read_nifti if suffix in (*NIFTI_SUFFIXES, ".hdr") else \
            functools.partial(itk.read_itk, label=label)
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
        meta = path.is_file() and path.name.lower().endswith((".mha", ".mhd"))
        short = metaimage_shortfall(path) if meta else None
        said = misnamed(path) if path.is_file() else None  # a PNG named .nrrd…
        reason = _TRUNCATED.format(*short, "bytes") if short else said or _reason(e, path)
        damaged = _unreadable_slice(path) if path.is_dir() else None
        if damaged is not None:  # which file of the series to fetch again, not the folder
            raise DataError(f"cannot read this file of the DICOM series {path.name} "
                            f"({damaged[1]}): fetch or export it again", damaged[0]) from None
        raise DataError(f"cannot read image ({reason})", path) from None
    return _make_image(array, affine, path, **extra)


def _unreadable_slice(folder: Path) -> tuple[Path, str] | None:
    """The first file of the DICOM series in ``folder`` that ITK cannot read on its own,
    with the cause in words, where the series as a whole could not be read (a slice cut
    short inside its compressed pixel data, bytes after its data set); None where each
    reads. Read only after the series failed: one file at a time, until the culprit."""
    import SimpleITK as sitk

    for files in dicom_series_files(folder).values():
        for file in files:
            reader = sitk.ImageFileReader()
            reader.SetFileName(str(file))
            try:
                with itk.itk_messages(file):
                    reader.Execute()
            except RuntimeError as e:
                return file, _reason(e, file)
    return None


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
    ("Zero-valued spacing", "its header gives a voxel size of 0 (a DICOM PixelSpacing or "
     "SpacingBetweenSlices of 0): no voxel size to read it by; fix or remove the field"),
)
_TRUNCATED = "the data ends before the header's sizes ({} of {} {}): the file is truncated"
#: teem's (NRRD) innermost messages, and their cause in words (groups fill the braces)
_TEEM = (
    (r"bzip2 encoding not available", "compressed as bzip2, which this build of ITK cannot "
     "read: re-save it with gzip or raw encoding"),
    (r"fread got only (\d+) \d+-sized things, not (\d+)", _TRUNCATED, "values"),
    (r"hit EOF getting byte (\d+) of (\d+)", _TRUNCATED, "bytes"),
    (r"couldn't parse element (\d+) of (\d+)", _TRUNCATED, "values"),
    (r"expected (\d+) bytes but received (\d+)", "the compressed data gives {1} of the {0} "
     "bytes the header's sizes need: the file is truncated or damaged"),
    (r"couldn't parse \w+ (\d+) of (\d+) \(\"(.*)\"\)", "value {0} of {1} (\"{2}\") is not a "
     "number"),
    (r"couldn't parse encoding \"(.*)\"", "unknown NRRD encoding \"{0}\" (raw, gzip, ascii "
     "and hex are read)"),
    (r"couldn't parse type \"(.*)\"", "unknown NRRD type \"{0}\""),
    (r"didn't see required field: (.+)", "the NRRD header has no \"{0}\" field"),
    (r"couldn't parse \"(.*)\" as magic", "not a NRRD file (it begins \"{0}\")"),
    (r"axis (\d+) size is zero", "the header gives axis {0} no size (a whole number above 0)"),
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
    # teem (NRRD): a chain of "[nrrd] function: message" lines, innermost last
    teem = re.findall(r"^\[\w+\][ \t]*\w+:[ \t]*(\S.*?)\s*$", text, re.MULTILINE)
    if teem:
        text = teem[-1]
        for pattern, words, *unit in _TEEM:
            m = re.search(pattern, text)
            if m:
                return words.format(*m.groups(), *unit)
    if "ERROR:" in text:
        text = text.rsplit("ERROR:", 1)[1]
    text = re.sub(r"\w+\s*\(0x[0-9a-fA-F]+\)\s*:?", "", text)  # Class(0x55…):
    text = re.sub(r"\S+\.(cxx|cpp|hxx|h|txx|c)(:\d+)?:?", "", text)  # C++ source locations
    text = re.sub(r"\b(in|In)\s+\S+::\S+", "", text)
    text = re.sub(r"0x[0-9a-fA-F]{6,}", "", text)
    # the file's own name goes (the message names it); a file inside the folder keeps its path
    text = re.sub(rf"[\"']?{re.escape(str(path))}(?![\\/\w.-])[\"']?", "", text)
    text = re.sub(rf"(?<![\\/\w.-]){re.escape(path.name)}(?![\\/\w.-])", "", text)
    text = re.sub(r"^\s*File\s+(is\s+)?", "", text.replace('""', "").replace("''", ""))
    text = " ".join(text.split()).strip(" :.") or type(e).__name__
    return text[:160]


def _make_image(array: np.ndarray, affine: np.ndarray, path: Path, **extra: Any) -> Image:
    """Squeeze trailing singleton axes, check dimensionality, reorient 3D to RAS."""
    import nibabel as nib

    units_stated = bool(extra.pop("units_stated", True))
    placeholder = extra.pop("spacing_placeholder", None)
    if not np.all(np.isfinite(affine)):
        raise DataError("voxel size or position is not a finite number (NaN or inf in the "
                        "geometry); the file's header is damaged", path)
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
                 spacing_placeholder=placeholder or placeholder_spacing(affine, array.ndim,
                                                                        units_stated),
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
    path = Path(path)
    array = np.asarray(array)
    spatial = reference.shape
    if array.shape[: len(spatial)] != spatial or array.ndim > len(spatial) + 1:
        raise DataError(f"array of shape {array.shape} does not fit the reference grid {spatial} "
                        "(give the spatial shape, or it plus one channel axis)", path)
    channels = array.shape[len(spatial):]
    array = to_stored(_storage_dtype(array), reference).reshape(reference.source_shape + channels)

    suffix = image_suffix(path.name)
    if suffix is None:
        raise DataError(f"not a supported image suffix (use one of {', '.join(IMAGE_SUFFIXES)})",
                        path)
    if suffix == ".hdr":  # a pair is two files; one renamed into place could be half of one
        raise DataError("a .hdr/.img pair is read but not written; write .nii.gz", path)
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


def to_stored(array: np.ndarray, reference: Image) -> np.ndarray:
    """``array`` on ``reference.array``'s grid (RAS; trailing channel axes kept) in the
    axis order and directions the file stores (trailing singleton axes left out): what
    another tool reading the file sees, e.g. nnU-Net's readers."""
    import nibabel as nib

    if reference.ornt is None:
        return array
    back = nib.orientations.ornt_transform(_RAS_ORNT, reference.ornt)
    return nib.orientations.apply_orientation(array, back)


def from_stored(array: np.ndarray, reference: Image) -> np.ndarray:
    """The inverse of :func:`to_stored`: an array in the file's stored axis order on
    ``reference.array``'s grid (RAS)."""
    import nibabel as nib

    if reference.ornt is None:
        return array
    return nib.orientations.apply_orientation(array, reference.ornt)


def stored_spacing(reference: Image) -> tuple[float, ...]:
    """Voxel size in mm along each stored axis of the file (:func:`to_stored`'s order)."""
    norms = np.linalg.norm(np.asarray(reference.source_affine)[:3, : reference.dim], axis=0)
    return tuple(float(round(s, 6)) for s in norms)


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
