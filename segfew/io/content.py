"""What a file really is, from its first bytes, for the files that cannot be what their name
says: a Git LFS pointer, an HTML page (a failed download), a workbook, an archive, a PDF,
an empty file, a picture given as a table, and a PNG or JPEG cut short or damaged.

One helper for the image readers (:func:`segfew.io.read_image`) and the table reader
(:func:`segfew.data.table_rows.read_table_rows`), so both say the same in plain words, with
what to do, instead of a library's phrase for its symptom ("not a gzip file", "not UTF-8").
A damaged PNG is found here, before ITK reads it: libpng writes its own error lines to the
terminal, past any logger. So is a JPEG cut short (an interrupted download or copy): ITK's
libjpeg fills what is missing with grey, says "Premature end of JPEG file" on the
terminal and returns the picture as if whole; Pillow, which decodes it here, refuses it.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import Literal

__all__ = ["misfit", "misnamed"]

Wanted = Literal["image", "table"]

_HEAD = 512
_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG = b"\xff\xd8\xff"
_OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # Excel 97-2003, Word, …
_LFS = b"version https://git-lfs.github.com/spec"
_HTML = (b"<!doctype html", b"<html", b"<head", b"<body")
_AS_CSV = "save it as CSV UTF-8, as Excel's Save As 'CSV UTF-8' does"

#: first bytes of the formats segfew reads, at their offsets, and their names in words
_FORMATS = ((0, _PNG, "a PNG picture", ".png"), (0, _JPEG, "a JPEG picture", ".jpg"),
            (0, b"II*\x00", "a TIFF picture", ".tif"), (0, b"MM\x00*", "a TIFF picture", ".tif"),
            (0, b"NRRD000", "a NRRD image", ".nrrd"), (128, b"DICM", "a DICOM file", ".dcm"),
            (344, b"n+1\x00", "an uncompressed NIfTI image", ".nii"),
            (4, b"n+2\x00", "an uncompressed NIfTI image", ".nii"),
            (0, b"\x1f\x8b", "gzip-compressed data", ".gz"))


def _head(path: Path) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read(_HEAD)
    except OSError:
        return None  # not this helper's to say: the reader names the cause


def _zip_words(path: Path, wanted: Wanted) -> str:
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            mimetype = z.read("mimetype").decode("ascii", "replace") \
                if "mimetype" in names else ""
    except (zipfile.BadZipFile, OSError, KeyError):
        names, mimetype = [], ""
    if any(n.startswith("xl/") for n in names):
        return ("an Excel workbook, not a CSV table: " + _AS_CSV if wanted == "table"
                else "an Excel workbook, not an image")
    if "spreadsheet" in mimetype:
        return ("an OpenDocument spreadsheet, not a CSV table: save it as CSV UTF-8"
                if wanted == "table" else "an OpenDocument spreadsheet, not an image")
    return f"a zip archive, not {'a table' if wanted == 'table' else 'an image'}: unpack it " \
           "and give the file inside"


def misfit(path: Path, wanted: Wanted) -> str | None:
    """Words for what ``path`` really is when its first bytes show it cannot be the
    ``wanted`` kind of file (an image, or a CSV/TSV table), with what to do; for an image,
    also a PNG whose chunks are damaged or cut short, or a JPEG cut short. None where
    nothing in its bytes says so (the reader then tries it and names its own cause), or the
    file cannot be opened.
    Reads the first 512 bytes (a zip's listing; every chunk of a PNG; a JPEG is decoded)."""
    head = _head(path)
    if head is None:
        return None
    what = "an image" if wanted == "image" else "a table"
    if not head:
        return "empty file"
    if wanted == "image" and head[128:132] == b"DICM":  # a DICOM preamble may hold anything
        return None
    if head.startswith(_LFS):
        return (f"a Git LFS pointer, not the {wanted} it stands for: fetch the file with "
                "`git lfs pull`")
    if head.lstrip(b"\xef\xbb\xbf \t\r\n").lower().startswith(_HTML):
        return f"an HTML page, not {what}: a failed download? fetch it again"
    if head.startswith(b"%PDF-"):
        return f"a PDF document, not {what}"
    if head.startswith(b"PK\x03\x04"):
        return _zip_words(path, wanted)
    if head.startswith(_OLE2):
        return (f"an Excel 97-2003 workbook or another Office file, not a CSV table: "
                f"{_AS_CSV}" if wanted == "table" else "an Office document, not an image")
    if wanted == "table":
        if head.startswith((b"\xff\xfe", b"\xfe\xff")):
            return ("UTF-16 text, as Excel's 'Unicode Text' saves it, not UTF-8: convert it with "
                    "`iconv -f utf-16 -t utf-8`, or " + _AS_CSV)
        kind = _format(head) if b"\x00" in head else None  # text never holds a NUL byte
        if kind is not None and kind[1] == ".gz":
            return "gzip-compressed, not a table: unpack it with gunzip and give the CSV inside"
        if kind is not None:
            return f"{kind[0]}, not a table: give the CSV table that lists the cases"
        return None
    if head.startswith(_PNG):
        damage = _png_damage(path)
        return None if damage is None else f"a damaged PNG file: {damage}"
    if head.startswith(_JPEG):
        damage = _jpeg_damage(path)
        return None if damage is None else f"a damaged JPEG file: {damage}"
    return None


def _format(head: bytes) -> tuple[str, str] | None:
    """``(name in words, usual suffix)`` of the image format ``head`` begins, else None."""
    for offset, magic, name, suffix in _FORMATS:
        if head[offset:offset + len(magic)] == magic:
            return name, suffix
    return None


def misnamed(path: Path) -> str | None:
    """Words for an image file that another format's reader failed on because its name
    does not say what it holds (a PNG named ``.nii.gz``, an uncompressed NIfTI named
    ``.nii.gz``), with the name to give it; None where its first bytes fit its name (a
    NRRD header named ``.nhdr`` too: a detached header is named so) or show no format
    segfew knows."""
    head = _head(path)
    kind = _format(head) if head else None
    if kind is None:
        return None
    name, suffix = kind
    lower = path.name.lower()
    if suffix == ".dcm" or lower.endswith((suffix, ".hdr", ".img")) \
            or (suffix == ".nrrd" and lower.endswith(".nhdr")) \
            or (suffix == ".jpg" and lower.endswith(".jpeg")) \
            or (suffix == ".tif" and lower.endswith(".tiff")):
        return None  # DICOM and NIfTI are read by content, whatever their name
    if suffix == ".gz":
        return None if lower.endswith(".nii") else \
            f"holds {name}, a .nii.gz?, but is named {path.suffix}"
    if lower.endswith(".gz") and suffix == ".nii":
        return f"{name} named .gz, though not compressed: rename it to end in .nii"
    return f"holds {name} but is named {path.suffix}: rename it to end in {suffix}"


def _png_damage(path: Path) -> str | None:
    """What is wrong with a PNG's chunks (their types, lengths and checksums), else None."""
    try:
        with open(path, "rb") as f:
            f.seek(len(_PNG))
            for number in range(1, 1 << 20):
                head = f.read(8)
                if len(head) < 8:
                    return "it ends before its last chunk, IEND: the file is truncated"
                length, kind = int.from_bytes(head[:4], "big"), head[4:]
                if not kind.isalpha() or length >= 1 << 31:
                    return (f"its chunk {number} has no valid type or length; fetch or export "
                            "it again")
                crc = zlib.crc32(kind)
                left = length
                while left:
                    block = f.read(min(left, 1 << 20))
                    if not block:
                        return (f"it ends inside its {kind.decode('ascii')} chunk: the file is "
                                "truncated")
                    crc, left = zlib.crc32(block, crc), left - len(block)
                stored = f.read(4)
                if len(stored) < 4:
                    return f"it ends inside its {kind.decode('ascii')} chunk: the file is truncated"
                if int.from_bytes(stored, "big") != crc:
                    return (f"the checksum of its {kind.decode('ascii')} chunk does not match; "
                            "fetch or export it again")
                if kind == b"IEND":
                    return None
    except OSError:
        return None
    return None


def _jpeg_damage(path: Path) -> str | None:
    """Words for a JPEG that ends before its image data does, else None.

    Trailing bytes after the picture are not damage (Pillow stops at its end). Any other
    failure of Pillow's (a 12-bit or lossless JPEG it does not decode, a decompression bomb)
    is left to ITK, which reads it or says why not, under the reader's own limits."""
    from PIL import Image as PILImage

    try:
        with PILImage.open(path) as im:
            im.load()
    except OSError as error:  # Pillow: "image file is truncated (N bytes not processed)"
        if "truncated" in str(error):
            return "its image data ends early: the file is truncated; fetch or export it again"
    except Exception:
        return None
    return None
