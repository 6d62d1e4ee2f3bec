"""The text headers of NRRD and MetaImage files, read without ITK: the data files a detached
header names (:func:`detached_data_files`), and the units of a NRRD's voxel size
(:func:`nrrd_world_units`), which ITK ignores.

A NRRD may state its unit (``space units: "cm" "cm" "cm"``, or per axis ``units:`` where
it has no ``space``); ITK reads the numbers as mm whatever the unit, so a volume saved in
cm or µm would measure 10³ or 10⁻⁹ times off. MetaImage has no unit field: ITK's
convention, mm, stands.
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = ["DOMAIN_KINDS", "MAX_HEADER_BYTES", "MM_PER_UNIT", "data_size_problem",
           "detached_data_files", "metaimage_fields", "metaimage_shortfall", "nrrd_fields",
           "nrrd_world_units"]

#: a header's text read for its data file names (a ``LIST`` of a few thousand slices)
MAX_HEADER_BYTES = 1 << 20
#: more files than this in a pattern is no scan segfew reads (the voxel limit says so first)
MAX_PATTERN_FILES = 100_000

#: millimetres per unit, for the units a NRRD header may state (lower case; a plural ``s``
#: is dropped before looking up: ``microns``, ``meters``)
MM_PER_UNIT = {
    "mm": 1.0, "millimeter": 1.0, "millimetre": 1.0,
    "cm": 10.0, "centimeter": 10.0, "centimetre": 10.0,
    "m": 1000.0, "meter": 1000.0, "metre": 1000.0,
    "um": 1e-3, "\u00b5m": 1e-3, "\u03bcm": 1e-3, "micron": 1e-3, "micrometer": 1e-3,
    "micrometre": 1e-3,
    "nm": 1e-6, "nanometer": 1e-6, "nanometre": 1e-6,
}
#: what a NRRD writes for a unit it does not state: read as mm, as ITK does
_UNSTATED = frozenset({"", "???", "none"})
#: the kinds of NRRD axes that are image axes (the others are a pixel's components)
DOMAIN_KINDS = frozenset({"domain", "space", "time", "???", "none", ""})


def _read_head(header: Path) -> bytes | None:
    try:
        with open(header, "rb") as f:
            return f.read(MAX_HEADER_BYTES)
    except OSError:
        return None


def detached_data_files(header: Path) -> list[Path]:
    """The data files a detached header names: MetaImage ``ElementDataFile`` (not
    ``LOCAL``), NRRD ``data file:`` — one file, a ``printf`` pattern with its first, last and
    step (``sl%03d.raw 0 15 1``: one file a slice), or ``LIST`` and the names on the lines
    after it. Empty for an attached header or one that cannot be read. All of them are the
    scan: its identity and its cache key cover every one."""
    header = Path(header)
    head = _read_head(header)
    if head is None:
        return []
    text = head.decode("latin-1")
    if header.suffix.lower() in (".mhd", ".mha"):
        key = r"^\s*ElementDataFile\s*=\s*(.+?)\s*$"
    else:
        text = text.split("\n\n", 1)[0]
        key = r"^data ?file\s*:\s*(.+?)\s*$"
    m = re.search(key, text, re.MULTILINE)
    if m is None or m.group(1).upper() == "LOCAL":
        return []
    value = m.group(1)
    if value.upper().split()[0] == "LIST":
        names = [line.strip() for line in text[m.end():].splitlines() if line.strip()]
    else:
        names = _pattern_names(value) or [value]
    return [header.parent / n for n in names]


#: bytes per element of MetaImage's element types
_MET_BYTES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4,
              "MET_UINT": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4,
              "MET_DOUBLE": 8}


def metaimage_shortfall(header: Path) -> tuple[int, int] | None:
    """``(bytes present, bytes the header's sizes need)`` of an uncompressed MetaImage
    (``.mha``, or ``.mhd`` with one data file) whose voxel data ends early, else None.

    ITK says only "file cannot be read" of a truncated file (MetaIO prints the cause to
    the console), so the reader asks this to say it in words."""
    sizes = _metaimage_sizes(header)
    if sizes is None or sizes.compressed or sizes.offset is not None:
        return None
    return (sizes.have, sizes.need) if sizes.have < sizes.need else None


class _DataSizes(NamedTuple):
    have: int
    """bytes of voxel data present (a ``.mha``'s after its header; a data file's whole)"""
    need: int
    """bytes the header's sizes and element type need (uncompressed)"""
    detached: bool
    compressed: int | None
    """a compressed file's stated compressed size (0 where it states none), else None"""
    offset: int | None
    """HeaderSize / ``byte skip`` (-1: the data end the file), None where absent or 0"""
    sizes: str
    data: Path
    """the file holding the voxel data (the header itself for a ``.mha``)"""
    start: int
    """where the voxel data begin in ``data`` (before any ``offset``)"""
    step: int
    """the fewest bytes another size would change ``need`` by (one more along the longest
    axis): a surplus under it is trailing bytes, not a wrong DimSize or element type"""


def metaimage_fields(header: Path) -> dict[str, str]:
    """The fields of a MetaImage header (a ``.mha`` up to its ``ElementDataFile`` line, or a
    ``.mhd``) by name, values stripped; empty when it cannot be read."""
    head = _read_head(header)
    if head is None:
        return {}
    text = head.decode("latin-1")
    end = re.search(r"^\s*ElementDataFile\s*=.*$", text, re.MULTILINE)
    return dict(re.findall(r"^\s*(\w+)\s*=\s*(.*?)\s*$", text[:end.end()] if end else text,
                           re.MULTILINE))


def _metaimage_sizes(header: Path) -> _DataSizes | None:
    head = _read_head(header)
    if head is None:
        return None
    fields = metaimage_fields(header)
    size = _MET_BYTES.get(fields.get("ElementType", ""))
    try:
        dims = [int(v) for v in fields.get("DimSize", "").split()]
        channels = int(fields.get("ElementNumberOfChannels", "1"))
        offset = int(fields.get("HeaderSize", "0")) or None
        compressed = int(fields.get("CompressedDataSize", "0")) if \
            fields.get("CompressedData", "False").lower() == "true" else None
    except ValueError:
        return None
    if size is None or not dims:
        return None
    data = detached_data_files(header)
    try:
        if not data:  # LOCAL: the data follow the ElementDataFile line
            m = re.search(rb"^\s*ElementDataFile\s*=\s*LOCAL[^\n]*\n", head, re.MULTILINE)
            if m is None:
                return None
            file, start = header, m.end()
        elif len(data) == 1:
            file, start = data[0], 0
        else:
            return None
        have = file.stat().st_size - start
    except OSError:
        return None
    if offset is not None and offset > 0:
        have -= offset
    return _DataSizes(have, size * channels * int(np.prod(dims)), bool(data), compressed,
                      offset, f"{'×'.join(map(str, dims))} {fields['ElementType']}"
                      + (f" × {channels} channels" if channels > 1 else ""), file, start,
                      size * channels * int(np.prod(dims)) // max(dims))


#: bytes per element of NRRD's types, by their names with spaces and a ``_t`` dropped
_NRRD_BYTES = {
    **dict.fromkeys(("signedchar", "int8", "uchar", "unsignedchar", "uint8"), 1),
    **dict.fromkeys(("short", "shortint", "signedshort", "signedshortint", "int16", "ushort",
                     "unsignedshort", "unsignedshortint", "uint16"), 2),
    **dict.fromkeys(("int", "signedint", "int32", "uint", "unsignedint", "uint32", "float"),
                    4),
    **dict.fromkeys(("longlong", "longlongint", "signedlonglong", "signedlonglongint", "int64",
                     "ulonglong", "unsignedlonglong", "unsignedlonglongint", "uint64",
                     "double"), 8),
}


def _nrrd_sizes(header: Path) -> _DataSizes | None:
    """The sizes of a NRRD's one raw or gzip data file (``data file:``), or of the gzip data
    after an attached header's blank line, else None."""
    fields = nrrd_fields(header)
    data = detached_data_files(header)
    kind = fields.get("type", "").lower().replace(" ", "").removesuffix("_t")
    size = _NRRD_BYTES.get(kind)
    encoding = fields.get("encoding", "").lower()
    start = 0
    if not data and encoding in ("gzip", "gz"):  # attached: the data after the blank line
        head = _read_head(header) or b""
        found = re.search(rb"\r?\n\r?\n", head)
        data, start = ([header], found.end()) if found else ([], 0)
    if (len(data) != 1 or size is None or encoding not in ("raw", "gzip", "gz")
            or fields.get("line skip", fields.get("lineskip", "0")).strip() != "0"):
        return None
    try:
        dims = [int(v) for v in fields.get("sizes", "").split()]
        offset = int(fields.get("byte skip", fields.get("byteskip", "0"))) or None
        have = data[0].stat().st_size - start
    except (ValueError, OSError):
        return None
    if not dims:
        return None
    if offset is not None and offset > 0:
        have -= offset
    return _DataSizes(have, size * int(np.prod(dims)), data[0] != header,
                      None if encoding == "raw" else 0, offset,
                      f"{'×'.join(map(str, dims))} {fields['type']}", data[0], start,
                      size * int(np.prod(dims)) // max(dims))


def data_size_problem(header: Path) -> str | None:
    """Why the voxel data of a MetaImage (``.mha``, ``.mhd``) or a NRRD with one raw or
    gzip data file (``.nhdr``) do not fit its header, in words (a one-line refusal); None
    where they fit or the header cannot tell. Read before ITK, which prints MetaIO's own
    words to the console for a short file, fills what a short compressed stream lacks with
    zeros or whatever the memory held, and reads the first part of a long one without a word.

    - uncompressed data shorter than the header's sizes need: the file (a detached
      header's data file, named) is truncated;
    - a compressed MetaImage's data shorter than its ``CompressedDataSize``: truncated;
    - compressed data (a MetaImage's zlib, a ``.nhdr``'s gzip data file) that inflate to
      fewer bytes than the sizes need, or more, or do not decompress: inflated here in
      chunks of 1 MiB, never held whole, and only up to one byte past the sizes' need;
    - a data file (detached, uncompressed) longer than the sizes need by as much as one
      more voxel along the longest axis would add, where no ``HeaderSize`` or ``byte skip``
      places the data within it: the header's sizes or element type do not describe the
      file (16 of 20 slices would be read). Fewer trailing bytes are read past, as ITK
      does and as an attached file's are.

    Never raises.
    """
    name = header.name.lower()
    meta = name.endswith((".mha", ".mhd"))
    sizes = _metaimage_sizes(header) if meta else \
        _nrrd_sizes(header) if name.endswith((".nhdr", ".nrrd")) else None
    if sizes is None:
        return None
    fields = "DimSize or ElementType" if meta else "sizes or type"
    if sizes.compressed is not None:
        if sizes.have < sizes.compressed:
            return (f"cannot read image (the compressed voxel data end before the header's "
                    f"CompressedDataSize ({sizes.have} of {sizes.compressed} bytes): the file "
                    "is truncated)")
        return None if sizes.offset is not None else _inflate_problem(sizes, meta, fields)
    if sizes.have < sizes.need and (meta or sizes.offset is None or sizes.offset > 0):
        if meta and not sizes.detached:
            return _SHORT.format(sizes.have, sizes.need)
        return (f"cannot read image (its data file {sizes.data.name} holds {sizes.have} bytes "
                f"where its sizes need {sizes.need} ({sizes.sizes}): a truncated copy)")
    if sizes.detached and sizes.offset is None and sizes.have - sizes.need >= sizes.step:
        return (f"the data file {sizes.data.name} holds {sizes.have} bytes where the header's "
                f"sizes need {sizes.need} ({sizes.sizes}): its {fields} is wrong")
    return None


_SHORT = ("cannot read image (the data ends before the header's sizes ({} of {} bytes): the "
          "file is truncated)")
#: compressed bytes read at a time, and the most inflated bytes held at once
_CHUNK = 1 << 20


def _inflate_problem(sizes: _DataSizes, meta: bool, fields: str) -> str | None:
    """Words for compressed voxel data that inflate to other than ``sizes.need`` bytes or do
    not decompress, else None (also where the file cannot be read: the reader says why)."""
    length = sizes.compressed or sizes.have
    try:
        got = _inflated_size(sizes.data, sizes.start, length, sizes.need + 1, members=not meta)
    except OSError:
        return None
    what = (f"its data file {sizes.data.name} inflates" if sizes.detached
            else "its compressed data inflate")
    if got is None:
        if not sizes.detached:
            return "cannot read image (the compressed voxel data do not decompress: the file " \
                   "is damaged)"
        return (f"cannot read image (its data file {sizes.data.name} does not decompress: it "
                "is damaged; export it again)")
    if got < sizes.need:
        return (f"cannot read image ({what} to {got} bytes where its sizes need {sizes.need}: "
                "the file is truncated or damaged; export it again)")
    if got > sizes.need:
        return (f"cannot read image ({what} to more than the {sizes.need} bytes its sizes need "
                f"({sizes.sizes}): its {fields} is wrong)")
    return None


def _inflated_size(path: Path, start: int, length: int, most: int, members: bool) -> int | None:
    """How many bytes the zlib or gzip stream in ``length`` bytes of ``path`` from ``start``
    inflates to, counted up to ``most``; a stream that ends early counts what it gave. With
    ``members``, gzip members that follow the first count too (as gzread reads them). None
    where the data do not decompress. Holds at most 2 MiB at once; raises OSError."""
    stream = zlib.decompressobj(47)  # 32 + 15: a zlib or a gzip header, as MetaIO and teem
    total = 0
    with open(path, "rb") as f:
        f.seek(start)
        while length > 0 and total < most:
            data = f.read(min(_CHUNK, length))
            if not data:
                break
            length -= len(data)
            while total < most:
                if stream.eof:  # a stream ended: another gzip member, or what is not read
                    if not data:
                        break
                    if not (members and data.startswith(b"\x1f\x8b")):
                        return total
                    stream = zlib.decompressobj(47)
                try:
                    out = len(stream.decompress(data, _CHUNK))
                except zlib.error:
                    return None
                total += out
                data = stream.unused_data if stream.eof else stream.unconsumed_tail
                if not data and out < _CHUNK:  # all of this chunk inflated
                    break
    return min(total, most)


def _pattern_names(value: str) -> list[str] | None:
    """The file names of a ``printf`` pattern ``name%03d.raw first last step`` (MetaImage and
    NRRD both), or None when ``value`` is not one."""
    parts = value.split()
    if len(parts) < 4 or "%" not in parts[0]:
        return None
    try:
        first, last, step = (int(p) for p in parts[1:4])
        numbers = range(first, last + (1 if step > 0 else -1), step)
        if len(numbers) > MAX_PATTERN_FILES:
            return None
        return [parts[0] % i for i in numbers]
    except (ValueError, TypeError):  # not integers, a zero step, a pattern without %d
        return None


def nrrd_fields(header: Path) -> dict[str, str]:
    """The fields of a NRRD header (``.nrrd`` up to its blank line, or a ``.nhdr``), keys in
    lower case; comments and ``key:=value`` pairs are left out. Empty when it cannot be
    read."""
    head = _read_head(header)
    if head is None:
        return {}
    head = head.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:  # µ in Latin-1
        text = head.decode("latin-1")
    fields = {}
    for line in text.split("\n")[1:]:  # the first line is the magic, NRRD000x
        key, sep, value = line.partition(":")
        if sep and not line.startswith("#") and not value.startswith("="):
            fields[key.strip().lower()] = value.strip()
    return fields


def _quoted(value: str) -> list[str]:
    return re.findall(r'"([^"]*)"', value)


def nrrd_world_units(header: Path, dim: int) -> tuple[tuple[float, ...], str | None]:
    """Millimetres per unit along each of the first ``dim`` world axes of a NRRD, and the
    first unit segfew does not know (None when it knows them all).

    ``space units`` gives one unit per world axis; without ``space``, the ``units`` of the
    image (domain) axes give them (the axes of such a file are the world axes). A unit not
    stated (no field, ``""``, ``"???"``) is mm, ITK's convention; ``units`` of the other
    axes (a vector or list axis, a time axis beyond ``dim``) are not spatial and ignored. With
    an unknown unit, the scales are 1: the file then has no real voxel size. Never raises.
    """
    fields = nrrd_fields(header)
    if "space" in fields or "space dimension" in fields:
        units = _quoted(fields.get("space units", ""))
    else:
        units = _quoted(fields.get("units", ""))
        kinds = fields.get("kinds", "").split()
        if kinds and len(kinds) == len(units):
            units = [u for u, k in zip(units, kinds, strict=True)
                     if k.lower() in DOMAIN_KINDS]
    scales = []
    for unit in units[:dim]:
        key = unit.strip().lower()
        if key in _UNSTATED:
            scales.append(1.0)
            continue
        plural = key.endswith("s") and len(key) > 3  # microns, meters (never ms: a time)
        scale = MM_PER_UNIT.get(key[:-1] if plural else key)
        if scale is None:
            return (1.0,) * dim, unit
        scales.append(scale)
    return tuple(scales) + (1.0,) * (dim - len(scales)), None
