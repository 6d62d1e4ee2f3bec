"""DICOM headers, read with pydicom before any pixel (``stop_before_pixels``): what a file is
(an image, a structured report, a MOSAIC, a compressed syntax GDCM cannot decode), which
files of a folder form one series (by SeriesInstanceUID, whatever their suffix), and what
the header says of the voxel size (:func:`dicom_geometry`), where ITK puts 1 mm for what is
missing."""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segfew.errors import DataError, DataWarning
from segfew.io.dicom_frames import frame_stack
from segfew.io.dicom_stack import SliceInfo, pixel_data_problem, slice_info

__all__ = [
    "GDCM_SYNTAXES",
    "DicomHeader",
    "check_dicom_file",
    "dicom_geometry",
    "dicom_header",
    "dicom_series_files",
    "has_pixel_data",
    "is_dicom_series_dir",
    "series_names",
    "series_of_path",
    "series_path_files",
]

log = logging.getLogger("segfew.io")


def is_dicom_series_dir(path: Path) -> bool:
    """True for a folder that directly holds DICOM image files, found by their headers
    (:func:`segfew.io.dicom.dicom_series_files`), whatever their suffix."""
    path = Path(path)
    if not path.is_dir():
        return False
    return bool(dicom_series_files(path))


def check_dicom_file(path: Path) -> int:
    """Refuse a DICOM file segfew would read wrongly or not at all; returns its frames.

    A Siemens MOSAIC (many slices tiled in one frame) would be read as one large 2D image;
    a transfer syntax GDCM has no decoder for, a file without pixel data or with fewer
    bytes of them than its size needs (cut short), would fail with the library's words; a
    multi-frame file's frames must stack (:func:`segfew.io.dicom_frames.frame_stack`).
    """
    header = dicom_header(path)
    if header is None:
        return 1
    if not header.has_pixels:
        raise DataError("DICOM file has no pixel data" if header.image_module else
                        f"DICOM {header.kind} holds no image (no pixel data)", path)
    if header.mosaic:
        raise DataError("Siemens MOSAIC image (many slices tiled in one frame), which segfew "
                        "does not unpack; convert it first (e.g. dcm2niix)", path)
    if header.transfer_syntax and header.transfer_syntax not in GDCM_SYNTAXES:
        raise DataError(f"no decoder for the transfer syntax {header.transfer_syntax_name}; "
                        "decompress it first (e.g. gdcmconv --raw or dcmdjpeg)", path)
    if header.pixel_problem:
        raise DataError(header.pixel_problem, path)
    if header.frames > 1:
        frame_stack(path)  # raises for frames that do not stack into one volume
    return header.frames


#: transfer syntaxes GDCM (SimpleITK's DICOM reader) decodes: uncompressed, deflate,
#: JPEG baseline/extended/lossless, JPEG-LS, JPEG 2000, RLE
GDCM_SYNTAXES = frozenset({
    "1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51",
    "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80",
    "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.5",
})


_NOT_DICOM = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".png", ".jpg", ".jpeg",
              ".tif", ".tiff", ".bmp", ".raw", ".zraw", ".csv", ".txt", ".json", ".md")


@dataclass(frozen=True)
class DicomHeader:
    """What segfew needs from one DICOM file's header."""

    series_uid: str
    series_number: str
    """SeriesNumber as written (empty when absent)."""
    sop_class_uid: str
    kind: str
    """The SOP class in words (e.g. ``Basic Text SR Storage``), or ``object``."""
    has_pixels: bool
    """Rows, Columns and a Pixel Data element are present: an image that can be read. A
    structured report, presentation state or key-object selection has none; some exports
    keep an image's header without its pixels."""
    image_module: bool
    """Rows and Columns are present (an image header, with or without its pixels)."""
    frames: int
    """NumberOfFrames (1 for a single-frame file)."""
    mosaic: bool
    """A Siemens MOSAIC: many slices tiled in one frame (ImageType holds MOSAIC)."""
    transfer_syntax: str
    transfer_syntax_name: str
    lossy_compression: str = ""
    """Lossy Image Compression (0028,2110): ``01`` once lossy compressed, ``00`` never;
    empty where absent."""
    pixel_spacing: tuple[float, float] | None = None
    """PixelSpacing (row spacing, column spacing) in mm, of the file or of a multi-frame
    file's pixel measures; None where absent or not positive numbers."""
    imager_pixel_spacing: tuple[float, float] | None = None
    """ImagerPixelSpacing (0018,1164): the detector's spacing, in mm."""
    slice_thickness: float | None = None
    spacing_between_slices: float | None = None
    positioned: bool = False
    """ImagePositionPatient is present (a multi-frame file's: per frame; one for the file
    places its first frame only)."""
    oriented: bool = False
    """ImageOrientationPatient is present (a multi-frame file's plane orientation, too)."""
    sop_instance_uid: str = ""
    """SOPInstanceUID: the same in a copy of the file, another in each slice of a series."""
    stack: SliceInfo | None = None
    """Size, position, orientation and rescale: how the slice stacks with a series' others."""
    pixel_problem: str = ""
    """Why the pixel data cannot hold the image (the file cut short), in words; else empty."""


def dicom_header(path: Path) -> DicomHeader | None:
    """The header of ``path`` if it is a DICOM file (preamble ``DICM``, or a ``.dcm`` file
    with DICOM tags), else None. Never raises for a file that cannot be read.

    Kept per file (its path, size, modification time and inode): listing a folder, naming
    its series, digesting and reading one series each ask for every header of the folder,
    and a study export holds thousands of files."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError:
        return None
    return _header(path, st.st_size, st.st_mtime_ns, st.st_ino)


@functools.lru_cache(maxsize=1 << 16)
def _header(path: Path, size: int, mtime_ns: int, inode: int) -> DicomHeader | None:
    """:func:`dicom_header` of a file as it is now (the stat fields are the cache key)."""
    try:
        with open(path, "rb") as f:
            f.seek(128)
            preamble = f.read(4) == b"DICM"
    except OSError:
        return None
    if not preamble and path.suffix.lower() not in (".dcm", ".ima", ".dicom", ".dic"):
        return None
    try:
        ds, pixels, at = _read_before_pixels(path, force=not preamble)
    except Exception as e:  # a corrupt header: pydicom raises many kinds
        log.debug("%s: pydicom: %r", path, e)
        return None
    meta = getattr(ds, "file_meta", None)
    sop = str(ds.get("SOPClassUID", "") or (meta.get("MediaStorageSOPClassUID", "")
                                             if meta is not None else ""))
    if not preamble and not sop and "Rows" not in ds:
        return None  # forced open of something that is not DICOM
    syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        frames = 1
    image_type = ds.get("ImageType", "")
    if isinstance(image_type, str):
        types = image_type.upper().split("\\")
    else:
        types = [str(t).upper() for t in image_type]
    mosaic = "MOSAIC" in types or 0x0019100A in ds  # Siemens NumberOfImagesInMosaic
    image_module = "Rows" in ds and "Columns" in ds
    return DicomHeader(
        series_uid=str(ds.get("SeriesInstanceUID", "") or ""),
        series_number=str(ds.get("SeriesNumber", "") or "").strip(),
        sop_class_uid=sop,
        kind=_uid_name(sop) or "object",
        has_pixels=image_module and pixels,
        image_module=image_module,
        frames=max(1, frames),
        mosaic=mosaic,
        transfer_syntax=syntax,
        transfer_syntax_name=_uid_name(syntax) or syntax,
        lossy_compression=str(ds.get("LossyImageCompression", "") or "").strip(),
        sop_instance_uid=str(ds.get("SOPInstanceUID", "") or ""),
        stack=slice_info(ds),
        pixel_problem=pixel_data_problem(ds, syntax, at, size, max(1, frames)) if pixels else "",
        **_geometry_fields(ds),
    )


def _geometry_fields(ds: Any) -> dict[str, Any]:
    """What a dataset says of its voxel size and placement: the file's own elements, else
    those of a multi-frame file's shared or first per-frame functional groups."""
    groups = [ds]
    for name in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        with contextlib.suppress(TypeError, IndexError, KeyError, AttributeError):
            groups.append(ds.get(name)[0])

    def find(macro: str | None, keyword: str) -> Any:
        for i, group in enumerate(groups):  # the file's own element, then the groups' macro
            try:
                item = group if macro is None or i == 0 else group.get(macro)[0]
                value = item.get(keyword)
            except (TypeError, IndexError, KeyError, AttributeError):
                continue
            if value not in (None, ""):
                return value
        return None

    def numbers(value: Any, n: int) -> tuple[float, ...] | None:
        try:
            out = tuple(float(v) for v in (value if n > 1 else [value]))
        except (TypeError, ValueError):
            return None
        good = len(out) == n and all(math.isfinite(v) and v > 0 for v in out)
        return out if good else None

    pixel = numbers(find("PixelMeasuresSequence", "PixelSpacing"), 2)
    imager = numbers(find(None, "ImagerPixelSpacing"), 2)
    thickness = numbers(find("PixelMeasuresSequence", "SliceThickness"), 1)
    between = numbers(find("PixelMeasuresSequence", "SpacingBetweenSlices"), 1)
    return {
        "pixel_spacing": pixel, "imager_pixel_spacing": imager,
        "slice_thickness": thickness[0] if thickness else None,
        "spacing_between_slices": between[0] if between else None,
        "positioned": find("PlanePositionSequence", "ImagePositionPatient") is not None and (
            int(ds.get("NumberOfFrames") or 1) < 2 or "PerFrameFunctionalGroupsSequence" in ds),
        "oriented": find("PlaneOrientationSequence", "ImageOrientationPatient") is not None,
    }


def dicom_geometry(files: Sequence[Path], path: Path, size: Sequence[int],
                   affine: np.ndarray, extra: dict[str, Any]) -> np.ndarray:
    """``affine`` (ITK's RAS affine of the image read from ``files``, of ``size`` voxels) with
    the voxel sizes the headers give, where ITK put 1 mm for a missing one.

    In-plane: PixelSpacing (GDCM reads a digital X-ray's ImagerPixelSpacing first, and a
    multi-frame file's without positions not at all); without it, the detector's
    ImagerPixelSpacing, said in a :class:`DataWarning` (the standard's fallback for a
    projection image, not corrected for magnification); without either, no real voxel size
    (``extra["spacing_placeholder"]``).
    Between slices, where the files give no ImagePositionPatient and
    ImageOrientationPatient to measure it: SpacingBetweenSlices, else SliceThickness (said
    in a warning), else no real voxel size. Without ImageOrientationPatient the image
    claims no orientation (``extra["orientation_stated"]``). Warnings name ``path``.
    """
    headers = [h for h in (dicom_header(f) for f in files) if h is not None]
    if not headers:
        return affine
    given = sorted({h.pixel_spacing for h in headers if h.pixel_spacing is not None})
    if len(given) > 1 and not np.allclose(given[0], given[-1], rtol=1e-4):
        low, high = ("×".join(f"{v:g}" for v in g) for g in (given[0], given[-1]))
        raise DataError(f"PixelSpacing differs between the slices of the series ({low} and "
                        f"{high} mm): they are no one volume", path)
    dim = min(3, len(size))
    spacing = np.linalg.norm(np.asarray(affine, dtype=float)[:3, :dim], axis=0)
    wanted = spacing.copy()
    reasons = []
    # what any slice says (GDCM reads the first slice's alone, 1 mm where it says nothing)
    first = next((h for h in headers if h.pixel_spacing is not None), headers[0])
    lacking = sum(h.pixel_spacing is None for h in headers)
    if first.pixel_spacing is not None and lacking:
        others = "other slice's" if len(headers) - lacking == 1 else "others'"
        warnings.warn(DataWarning(
            f"{lacking} of {len(headers)} slices give no PixelSpacing: the {others} "
            f"{'×'.join(f'{v:g}' for v in first.pixel_spacing)} mm is used", path),
            stacklevel=4)
    if first.pixel_spacing is not None:  # GDCM may take another (a DX's ImagerPixelSpacing)
        wanted[:2] = first.pixel_spacing[::-1]
    elif first.imager_pixel_spacing is not None:
        row, column = first.imager_pixel_spacing
        wanted[:2] = (column, row)
        warnings.warn(DataWarning(
            f"no PixelSpacing: the detector's ImagerPixelSpacing ({column:g} × {row:g} mm) is "
            "used, which for a projection image is not corrected for magnification", path),
            stacklevel=4)
    elif np.allclose(spacing[:2], 1.0):
        reasons.append("no PixelSpacing in the DICOM header")
    slices = int(size[2]) if len(size) > 2 else 1
    if slices > 1 and not all(h.positioned and h.oriented for h in headers):
        if first.spacing_between_slices is not None:
            wanted[2] = first.spacing_between_slices
        elif first.slice_thickness is not None:
            wanted[2] = first.slice_thickness
            warnings.warn(DataWarning(
                f"no ImagePositionPatient to measure the slice spacing: slices are taken "
                f"SliceThickness ({first.slice_thickness:g} mm) apart, which holds only for "
                "contiguous slices", path), stacklevel=4)
        else:
            wanted[2] = 1.0
            reasons.append("no slice positions or slice spacing in the DICOM header")
    if not all(h.oriented for h in headers):
        extra["orientation_stated"] = False
    if reasons:
        extra["spacing_placeholder"] = reasons[0]
    affine = np.array(affine, dtype=float)
    for axis in range(dim):
        if spacing[axis] > 0:
            affine[:3, axis] *= wanted[axis] / spacing[axis]
        else:
            affine[axis, axis] = wanted[axis]
    return affine


_PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})  # (Float/DoubleFloat) Pixel Data


def _read_before_pixels(path: Path, force: bool) -> tuple[Any, bool, tuple[int, int]]:
    """The dataset up to its pixels, whether a non-empty Pixel Data element follows, and
    where its value starts in the file and its stated length (bytes).

    pydicom's ``stop_before_pixels`` cannot tell a file that ends before its pixels from one
    that holds them; its stop callback sees the element (sequences, e.g. an icon image,
    are not searched)."""
    from pydicom.filereader import read_partial

    seen: list[tuple[int, int]] = []

    def at_pixels(tag: int, vr: str | None, length: int) -> bool:
        if int(tag) in _PIXEL_TAGS:
            if length:
                seen.append((f.tell(), length))  # pydicom stands at the value
            return True
        return False

    with open(path, "rb") as f:
        ds = read_partial(f, at_pixels, force=force)
    return ds, bool(seen), seen[0] if seen else (0, 0)


def dicom_series_files(folder: Path) -> dict[str, list[Path]]:
    """SeriesInstanceUID → the DICOM image files of that series directly in ``folder``."""
    series: dict[str, list[Path]] = defaultdict(list)
    try:
        children = sorted(Path(folder).iterdir())
    except OSError:
        return {}
    for child in children:
        if child.name.startswith(".") or child.name.lower().endswith(_NOT_DICOM) or \
                not child.is_file():
            continue
        header = dicom_header(child)
        if header is not None and header.has_pixels:
            series[header.series_uid].append(child)
    return dict(series)


def has_pixel_data(path: Path) -> bool:
    """Whether the file holds a (Float/DoubleFloat) Pixel Data element (values not loaded)."""
    import pydicom

    try:
        ds = pydicom.dcmread(str(path), defer_size=256, force=True)
    except Exception:
        return True  # not for pydicom to say: the library's message stands
    return any(t in ds for t in (0x7FE00010, 0x7FE00008, 0x7FE00009))


def _uid_name(uid: str) -> str:
    if not uid:
        return ""
    from pydicom.uid import UID

    try:
        name = UID(uid).name
    except Exception:
        return ""
    return "" if name == uid else str(name)


# ------------------------------------------------------------------------- several series


def series_names(folder: Path, series: dict[str, list[Path]]) -> dict[str, str]:
    """A case name for each series of a folder that holds several (a PACS study export).

    ``<folder id>_series<SeriesNumber>`` (``exam1_series3``), the folder id as
    :func:`segfew.io.case_id` gives it. Where a series has no number, or two share one, the
    last 8 digits of the SeriesInstanceUID are added (``exam1_series1_40395512``); where even
    those clash, the whole UID. The name depends on the headers only, never on the order
    of the files, so it is the same in every command and on every copy of the export.
    """
    from segfew.io.image import case_id

    base = case_id(folder)
    numbers = {}
    for uid, files in series.items():
        header = dicom_header(files[0])
        numbers[uid] = header.series_number if header is not None else ""
    repeated = {n for n in numbers.values() if list(numbers.values()).count(n) > 1}

    def tail(uid: str, digits: int | None) -> str:
        plain = "".join(c for c in uid if c.isdigit()) or "nouid"
        return plain if digits is None else plain[-digits:]

    names = {}
    for uid, number in numbers.items():
        label = f"{base}_series{number}" if number else f"{base}_series"
        names[uid] = label if number and number not in repeated else f"{label}_{tail(uid, 8)}"
    if len(set(names.values())) < len(names):  # the UIDs' last digits clash too
        names = {uid: f"{base}_series{n}_{tail(uid, None)}" for uid, n in numbers.items()}
    return names


def several_series(folder: Path) -> dict[str, list[Path]]:
    """The series of ``folder`` that hold more than one file, when there are several."""
    multi = {uid: files for uid, files in dicom_series_files(folder).items() if len(files) > 1}
    return multi if len(multi) > 1 else {}


def series_of_path(path: Path) -> str | None:
    """The SeriesInstanceUID a series path names, or None.

    A folder holding several DICOM series gives each its own case, ``<folder>/<name>``
    with the name of :func:`series_names`: a path that exists on no disk, which
    :func:`segfew.io.read_image` reads as that series of the folder.
    """
    path = Path(path)
    if path.exists() or not path.parent.is_dir():
        return None
    multi = several_series(path.parent)
    if not multi:
        return None
    found = [uid for uid, name in series_names(path.parent, multi).items() if name == path.name]
    return found[0] if found else None


def series_path_files(path: Path) -> list[Path]:
    """The files of the series a series path names (:func:`series_of_path`), sorted; empty
    for any other path. What a manifest or a cache digests for such a case."""
    uid = series_of_path(path)
    return [] if uid is None else sorted(dicom_series_files(Path(path).parent).get(uid, []))
