"""DICOM headers, read with pydicom before any pixel (``stop_before_pixels``): what a file is
(an image, a structured report, a MOSAIC, a compressed syntax GDCM cannot decode), and which
files of a folder form one series (by SeriesInstanceUID, whatever their suffix)."""

from __future__ import annotations

import functools
import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segfew.errors import DataError

__all__ = [
    "GDCM_SYNTAXES",
    "DicomHeader",
    "check_dicom_file",
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
    a transfer syntax GDCM has no decoder for, or a file without pixel data, would fail
    with the library's words.
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
        ds, pixels = _read_before_pixels(path, force=not preamble)
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
    )


_PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})  # (Float/DoubleFloat) Pixel Data


def _read_before_pixels(path: Path, force: bool) -> tuple[Any, bool]:
    """The dataset up to its pixels, and whether a non-empty Pixel Data element follows.

    pydicom's ``stop_before_pixels`` cannot tell a file that ends before its pixels from one
    that holds them; its stop callback sees the element (sequences, e.g. an icon image,
    are not searched)."""
    from pydicom.filereader import read_partial

    seen: list[int] = []

    def at_pixels(tag: int, vr: str | None, length: int) -> bool:
        if int(tag) in _PIXEL_TAGS:
            if length:
                seen.append(int(tag))
            return True
        return False

    with open(path, "rb") as f:
        ds = read_partial(f, at_pixels, force=force)
    return ds, bool(seen)


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
