"""DICOM headers without pixels (pydicom): what a file is, before ITK/GDCM reads it.

:mod:`segfew.data.scan` groups DICOM files into series by SeriesInstanceUID and skips
objects that hold no image (a DICOMDIR, a structured report, a presentation state);
:mod:`segfew.itk` uses the same header to refuse what it cannot read truthfully (a Siemens
MOSAIC, a transfer syntax without a decoder) and to count every frame of a multi-frame
file against :class:`~segfew.io.ReadLimits`. pydicom reads only the header
(``stop_before_pixels``), so this costs a few KB per file.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DicomHeader", "dicom_header", "dicom_series_files"]

log = logging.getLogger(__name__)

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
    sop_class_uid: str
    kind: str
    """The SOP class in words (e.g. ``Basic Text SR Storage``), or ``object``."""
    has_pixels: bool
    """Rows and Columns are present (an image object)."""
    frames: int
    """NumberOfFrames (1 for a single-frame file)."""
    mosaic: bool
    """A Siemens MOSAIC: many slices tiled in one frame (ImageType holds MOSAIC)."""
    transfer_syntax: str
    transfer_syntax_name: str


def dicom_header(path: Path) -> DicomHeader | None:
    """The header of ``path`` if it is a DICOM file (preamble ``DICM``, or a ``.dcm`` file
    with DICOM tags), else None. Never raises for a file that cannot be read."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    try:
        with open(path, "rb") as f:
            f.seek(128)
            preamble = f.read(4) == b"DICM"
    except OSError:
        return None
    if not preamble and path.suffix.lower() not in (".dcm", ".ima", ".dicom", ".dic"):
        return None
    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True, force=not preamble)
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError,
            AttributeError, IndexError, OverflowError) as e:
        log.debug("%s: pydicom: %s", path, e)
        return None
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
    mosaic = "MOSAIC" in types or _has_tag(ds, 0x0019, 0x100A)
    return DicomHeader(
        series_uid=str(ds.get("SeriesInstanceUID", "") or ""),
        sop_class_uid=sop,
        kind=_uid_name(sop) or "object",
        has_pixels="Rows" in ds and "Columns" in ds,
        frames=max(1, frames),
        mosaic=mosaic,
        transfer_syntax=syntax,
        transfer_syntax_name=_uid_name(syntax) or syntax,
    )


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


def _has_tag(ds: object, group: int, element: int) -> bool:
    try:
        return (group << 16 | element) in ds  # type: ignore[operator]
    except Exception:
        return False


def _uid_name(uid: str) -> str:
    if not uid:
        return ""
    from pydicom.uid import UID

    try:
        name = UID(uid).name
    except Exception:
        return ""
    return "" if name == uid else str(name)
