"""NIfTI-1/2 with nibabel: bounded reading and writing in the source geometry.

:func:`segfew.io.read_image` and :func:`segfew.io.write_image` dispatch here by suffix
(the other formats are :mod:`segfew.itk`). Reading checks the header against
:class:`~segfew.io.ReadLimits` and the stored size against the header before any voxel is
read, so a truncated file or a gzip bomb is a one-line error, never unbounded memory.
"""

from __future__ import annotations

import gzip
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from segfew.errors import DataError
from segfew.io import ReadLimits, format_bytes, grey

if TYPE_CHECKING:
    from segfew.io import Image

__all__ = ["read_nifti", "write_nifti"]


def read_nifti(path: Path, limits: ReadLimits) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
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
                                 (int(header["qform_code"]), int(header["sform_code"])),
                                 "units_stated": header.get_xyzt_units()[0] != "unknown"}
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
            raise DataError(f"file is truncated: the header declares {format_bytes(declared)} of "
                            f"voxels, the file holds {format_bytes(max(0, size - offset))}", path)
        return
    if offset + declared >= 2**32:
        return  # ISIZE wraps; nibabel then reads exactly the declared bytes
    with open(path, "rb") as f:
        f.seek(-4, os.SEEK_END)
        isize = int.from_bytes(f.read(4), "little")
    if isize > offset + declared + _GZIP_SLACK:
        # The trailer of a cut file is any 4 bytes: decompress (at most the bound) to tell.
        if _gunzip_exceeds(path, offset + declared + _GZIP_SLACK):
            raise DataError(f"compressed stream expands to {format_bytes(isize)}, more than the "
                            f"{format_bytes(offset + declared)} its header declares", path)
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


def write_nifti(array: np.ndarray, reference: Image, path: Path, vector: bool = False
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
