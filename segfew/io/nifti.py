"""NIfTI-1/2 with nibabel: bounded reading and writing in the source geometry.

:func:`segfew.io.read_image` and :func:`segfew.io.write_image` dispatch here by suffix
(the other formats are :mod:`segfew.io.itk`). Reading checks the header against
:class:`~segfew.io.ReadLimits` and the stored size against the header before any voxel is
read, so a truncated file or a gzip bomb is a one-line error, never unbounded memory.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import logging
import math
import os
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from segfew.errors import DataError, DataWarning
from segfew.io.content import misnamed
from segfew.io.image import COMPLEX, ReadLimits, axcodes, format_bytes, grey, refuse_sheared_axes

if TYPE_CHECKING:
    from segfew.io.image import Image

__all__ = ["is_pair_header", "pair_data_file", "pair_files", "read_nifti", "spm_mat",
           "write_nifti"]


def read_nifti(path: Path, limits: ReadLimits) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """NIfTI-1/2, gzipped or not, recognised by content (so ``a.Nii.GZ`` opens too).

    A ``.hdr`` is the header of a pair (a NIfTI pair, or Analyze 7.5 as SPM writes it)
    whose voxels are in the ``.img`` beside it (:func:`pair_data_file`).
    """
    pair = path.name.lower().endswith(".hdr")
    data = pair_data_file(path) if pair else path
    if data is None:
        raise DataError(f"the data file {path.name[:-4]}.img of this header is missing (copy it "
                        "beside the header)", path)
    with open(data, "rb") as raw:
        gzipped = raw.read(2) == b"\x1f\x8b"
    if not pair and path.name.lower().endswith(".gz") and not gzipped:
        raise DataError(f"cannot read image ({misnamed(path) or 'not a gzip file'})", path)
    with contextlib.ExitStack() as files:
        f = files.enter_context(gzip.open(data, "rb") if gzipped else open(data, "rb"))  # noqa: SIM115
        h = files.enter_context(open(path, "rb")) if pair else f
        return _read_opened(h, f, path, data, gzipped, limits)


def pair_files(header: Path) -> list[Path]:
    """The files a ``.hdr`` reads besides itself: its data file, and SPM's ``.mat`` (the
    voxel-to-world affine SPM keeps beside an Analyze pair) where there is one."""
    data = pair_data_file(header)
    mat = header.parent / (header.name[:-4] + ".mat")
    return [p for p in (data, mat) if p is not None and p.is_file()]


def spm_mat(header: Path) -> Path | None:
    """The SPM ``.mat`` beside an Analyze 7.5 ``.hdr`` (sizeof_hdr 348, no NIfTI magic),
    whose affine :func:`read_nifti` takes instead of the header's; None where there is
    none, or the pair is NIfTI (its reader never opens a ``.mat``)."""
    mat = header.parent / (header.name[:-4] + ".mat")
    try:
        with open(header, "rb") as f:
            head = f.read(348)
    except OSError:
        return None
    sizes = {int.from_bytes(head[:4], "little"), int.from_bytes(head[:4], "big")}
    return mat if 348 in sizes and _analyze(head) and mat.is_file() else None


def _analyze(header: bytes) -> bool:
    """Whether a 348-byte header is Analyze 7.5 (SPM's): without NIfTI-1's magic."""
    return len(header) >= 348 and header[344:347] not in (b"ni1", b"n+1")


def pair_data_file(header: Path) -> Path | None:
    """The data file of a ``.hdr`` (``.img`` or ``.img.gz`` beside it, in the header's
    case), or None when there is none."""
    stem = header.name[:-4]
    for suffix in (".img", ".IMG", ".img.gz", ".IMG.GZ"):
        if (header.parent / (stem + suffix)).is_file():
            return header.parent / (stem + suffix)
    return None


def is_pair_header(path: Path) -> bool:
    """Whether ``path`` starts like a NIfTI-1/2 or Analyze header (sizeof_hdr 348 or 540):
    ``.hdr`` also names ENVI and Interfile headers, which are no images segfew reads."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return len(head) == 4 and {int.from_bytes(head, "little"), int.from_bytes(head, "big")} \
        & {348, 540} != set()


def _check_scaling(header: Any, path: Path) -> None:
    """Refuse an infinite ``scl_slope``, or an infinite ``scl_inter`` beside a slope that
    scales (``header``: as stored, before nibabel reads it): nibabel reads the first as no
    scaling (the stored values, without a word) and refuses the second in its own words. A
    slope of 0 (NIfTI-1) or NaN (as nibabel writes an unscaled file: ACDC's) means none."""
    try:
        slope, inter = float(header["scl_slope"]), float(header["scl_inter"])
    except (KeyError, ValueError, TypeError):  # Analyze 7.5: no scaling fields
        return
    bad = [f"scl_slope {slope}"] if math.isinf(slope) else [
        f"scl_inter {inter}"] if slope and math.isfinite(slope) and math.isinf(inter) else []
    if bad:
        raise DataError(f"its {bad[0]} cannot scale the voxel values: the header is damaged"
                        + (" (a slope of 0 means no scaling)" if "slope" in bad[0] else ""), path)


def _read_opened(h: Any, f: Any, path: Path, data: Path, gzipped: bool, limits: ReadLimits
                 ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Read from the header stream ``h`` and the voxel stream ``f`` (one stream for ``.nii``)."""
    import nibabel as nib

    sizeof_hdr = int.from_bytes(h.read(4), "little")
    if sizeof_hdr not in (348, 540):
        sizeof_hdr = int.from_bytes(sizeof_hdr.to_bytes(4, "little"), "big")
    if sizeof_hdr not in (348, 540):
        raise DataError("cannot read image (not a NIfTI header)", path)
    h.seek(0)
    raw_header = h.read(sizeof_hdr)
    h.seek(0)
    f.seek(0)
    klass: Any = nib.Nifti1Image if sizeof_hdr == 348 else nib.Nifti2Image
    if h is not f:  # a pair: NIfTI magic "ni1"/"ni2", else Analyze 7.5
        klass = nib.Nifti2Pair if sizeof_hdr == 540 else nib.Spm2AnalyzeImage \
            if _analyze(raw_header) else nib.Nifti1Pair
    file_map = {"header": nib.fileholders.FileHolder(fileobj=h),
                "image": nib.fileholders.FileHolder(fileobj=f)}
    if klass is nib.Spm2AnalyzeImage:  # SPM's affine beside the pair, where there is one
        mat = spm_mat(path)
        file_map["mat"] = nib.fileholders.FileHolder(filename=str(mat)) if mat is not None \
            else nib.fileholders.FileHolder(fileobj=io.BytesIO())
    _check_scaling(klass.header_class(raw_header, check=False), path)
    with _quiet_nibabel():
        img = klass.from_file_map(file_map)
    header = img.header
    raw_dtype = np.dtype(header.get_data_dtype())
    shape = tuple(int(s) for s in img.shape)
    components = len(raw_dtype.fields) if raw_dtype.fields else 1
    limits.check(shape, components, raw_dtype.itemsize // components, path)
    if raw_dtype.kind == "c":
        raise DataError(COMPLEX, path)
    offset = int(getattr(img.dataobj, "offset", header.get_data_offset()))
    _check_stored_size(data, gzipped, offset, math.prod(shape) * raw_dtype.itemsize)
    slope, inter = header.get_slope_inter()
    scaled = (slope not in (None, 1.0)) or (inter not in (None, 0.0))
    extra: dict[str, Any] = {"format": "nifti", "nifti_codes": _codes(header),
                             "units_stated": _unit(header) != "unknown"}
    pixdim = _raw_pixdim(raw_header, sizeof_hdr)
    affine = _affine_in_mm(img, path, extra, pixdim)
    placed = klass is nib.Spm2AnalyzeImage and (  # by SPM's .mat or origin: nibabel's own
        spm_mat(path) is not None or bool(np.any(np.asarray(header["origin"])[:3])))
    if extra["nifti_codes"] == (0, 0) and not placed:  # outputs keep its pixdim, codes 0/0
        extra["nifti_pixdim"] = tuple(float(v) for v in pixdim[1:4])
    if raw_dtype.fields:  # RGB24 / RGBA32: a record per voxel
        array = np.asarray(img.dataobj)
        names = raw_dtype.names or ()
        array, extra["colour"] = grey(np.stack([array[n] for n in names], -1), path)
    elif raw_dtype.kind in "iub" and not scaled:
        array = np.asarray(img.dataobj)  # keeps label maps integer
    else:
        array = np.asarray(img.get_fdata(dtype=np.float32))
    if array.ndim == 5 and array.shape[3] == 1 and array.shape[4] in (3, 4):  # vector intent
        array, extra["colour"] = grey(array[:, :, :, 0, :], path)
    return array, affine, extra


#: NIfTI spatial units (``xyzt_units``) → millimetres; "unknown" is taken as mm, as ITK does
UNIT_MM = {"mm": 1.0, "micron": 1e-3, "meter": 1e3, "unknown": 1.0}


def _codes(header: Any) -> tuple[int, int]:
    """(qform_code, sform_code); (0, 0) for Analyze, which has neither."""
    keys = set(header.keys())
    return tuple(int(header[k]) if k in keys else 0  # type: ignore[return-value]
                 for k in ("qform_code", "sform_code"))


def _unit(header: Any) -> str:
    """The spatial unit a NIfTI header states; Analyze 7.5 sizes are mm (SPM, ITK)."""
    if not hasattr(header, "get_xyzt_units"):
        return "mm"
    return str(header.get_xyzt_units()[0] or "unknown")


def _raw_pixdim(block: bytes, sizeof_hdr: int) -> np.ndarray:
    """pixdim as stored (nibabel replaces a 0 by 1 on loading, with a log line)."""
    little = int.from_bytes(block[:4], "little") == sizeof_hdr
    offset, kind = (76, "f4") if sizeof_hdr == 348 else (104, "f8")
    return np.frombuffer(block, dtype=("<" if little else ">") + kind, count=8, offset=offset)


@contextlib.contextmanager
def _quiet_nibabel() -> Iterator[None]:
    """nibabel logs header fixes and problems (printed); segfew says them itself."""
    logger = logging.getLogger("nibabel.global")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


def _affine_in_mm(img: Any, path: Path, extra: dict[str, Any], pixdim: np.ndarray
                  ) -> np.ndarray:
    """The voxel → world affine in mm, whatever spatial unit the file declares.

    The unit is kept (``extra["nifti_units"]``) so that :func:`write_nifti` writes outputs in
    it: ITK-SNAP and 3D Slicer convert µm and m to mm, so a label map must say the scan's
    unit to overlay it. A voxel size of 0 (pixdim, or an sform column of zeros) is taken as
    1 and said in a warning; the file then has no real voxel size (sizes in voxels). A
    voxel size or position that is NaN or infinite is refused: no grid can be drawn from it;
    so are axes that are not perpendicular (:func:`~segfew.io.image.refuse_sheared_axes`).
    An sform whose axes have no extent (rows of zeros) beside a usable qform gives way to the
    qform, as in ITK, with a warning.
    """
    header = img.header
    unit = _unit(header)
    scale = UNIT_MM.get(unit, 1.0)
    if unit in ("micron", "meter", "unknown"):
        extra["nifti_units"] = unit
    qcode, scode = extra["nifti_codes"]
    ndim = min(3, len(img.shape))
    zooms = pixdim[1: ndim + 1]
    _check_finite(header, path, zooms, qcode, scode)
    affine = np.array(img.affine, dtype=float)
    if scode and qcode and _degenerate(affine, ndim) and not _degenerate(
            qform := np.asarray(header.get_qform(), dtype=float), ndim):
        _check_finite(header, path, zooms, qcode, 0)
        warnings.warn(DataWarning(
            f"the sform (sform_code {scode}) {_no_extent(affine, ndim)}: segfew uses the "
            f"qform instead ({_sizes(qform, ndim, unit)}, {axcodes(qform)[:ndim]}), as ITK "
            "does", path), stacklevel=4)
        affine, scode = qform, 0
        extra["nifti_codes"] = (qcode, 0)  # outputs carry the qform alone
    refuse_sheared_axes(affine, tuple(img.shape), path)
    for axis, zoom in enumerate(zooms):
        column = float(np.linalg.norm(affine[:3, axis]))
        if column == 0 or (zoom == 0 and not scode):
            where = f"pixdim[{axis + 1}] (voxel size along axis {axis}) is {zoom:g}" \
                if not scode else f"the sform gives axis {axis} no extent (a column of zeros)"
            warnings.warn(DataWarning(f"{where}: taken as 1", path), stacklevel=4)
            extra["spacing_placeholder"] = "voxel size 0 in the header"
            extra["nifti_units"] = "unknown"  # outputs claim no mm the scan never had
            if column == 0:
                affine[axis, axis] = 1.0
        elif zoom < 0 and not scode:
            warnings.warn(DataWarning(f"pixdim[{axis + 1}] (voxel size along axis {axis}) is "
                                      f"negative ({zoom:g}): its size {-zoom:g} is used, as "
                                      "nibabel does", path), stacklevel=4)
    if qcode > 0 and scode > 0 and not _degenerate(affine, ndim):
        _check_forms_agree(header, path, ndim, unit)
        qform = np.asarray(header.get_qform(), dtype=float)
        if not np.allclose(qform, header.get_sform(), rtol=FORMS_RTOL, atol=1e-4):
            extra["nifti_qform"] = qform
    affine[:3, :] *= scale
    return affine


def _degenerate(form: np.ndarray, ndim: int) -> bool:
    """Whether the first ``ndim`` axes of a form span fewer than ``ndim`` directions (an axis
    of no extent, e.g. srow rows left at zero by a writer that set the code alone)."""
    values = np.linalg.svd(np.asarray(form, dtype=float)[:3, :ndim], compute_uv=False)
    return bool(values[0] == 0 or values[-1] <= 1e-6 * values[0])


def _no_extent(form: np.ndarray, ndim: int) -> str:
    """What is wrong with a degenerate form, in words."""
    zero = [str(a) for a in range(ndim) if not np.any(form[:3, a])]
    if len(zero) == ndim:
        return "has no axes (srow_x, srow_y and srow_z are zeros)"
    if zero:
        return f"gives axis {' and '.join(zero)} no extent (a column of zeros)"
    return "has axes that lie in one plane (no volume)"


def _sizes(form: np.ndarray, ndim: int, unit: str) -> str:
    """Voxel sizes of a form, e.g. ``1.5×1.5×10 mm``."""
    word = {"unknown": "", "micron": " µm", "meter": " m"}.get(unit, f" {unit}")
    return "×".join(f"{v:.4g}" for v in np.linalg.norm(form[:3, :ndim], axis=0)) + word


#: relative difference of voxel sizes taken as float noise between the qform and the sform
FORMS_RTOL = 1e-3


def _check_forms_agree(header: Any, path: Path, ndim: int, unit: str) -> None:
    """Warn where the qform and the sform (both set) give different voxel sizes or
    orientations: segfew uses the sform, as the NIfTI standard prefers, while ITK-based
    viewers (ITK-SNAP, 3D Slicer) may show the qform."""
    qform, sform = (np.asarray(f, dtype=float) for f in (header.get_qform(),
                                                          header.get_sform()))
    sizes = [np.linalg.norm(f[:3, :ndim], axis=0) for f in (qform, sform)]
    axes = [axcodes(f)[:ndim] for f in (qform, sform)]
    directions = [f[:3, :ndim] / np.where(z > 0, z, 1.0) for f, z in zip((qform, sform), sizes,
                                                                         strict=True)]
    if np.allclose(sizes[0], sizes[1], rtol=FORMS_RTOL, atol=1e-6) and np.allclose(
            directions[0], directions[1], atol=1e-4):  # matrices, not nearest-axis letters
        return
    q, s = (_sizes(f, ndim, unit) for f in (qform, sform))
    if axes[0] != axes[1] and "?" not in axes[0] + axes[1]:
        q, s = f"{q} ({axes[0]})", f"{s} ({axes[1]})"
    elif not np.allclose(directions[0], directions[1], atol=1e-4):  # same letters: say how
        turn = max(float(np.degrees(np.arccos(np.clip(a @ b, -1.0, 1.0))))
                   for a, b in zip(directions[0].T, directions[1].T, strict=True))
        s += f" with axes turned up to {turn:.0f}° from the qform's"
    warnings.warn(DataWarning(f"qform and sform disagree: the sform gives voxels of {s}, the "
                              f"qform {q}; segfew uses the sform (the NIfTI standard's "
                              "choice), which ITK-SNAP or 3D Slicer may not show", path),
                  stacklevel=5)


def _check_finite(header: Any, path: Path, zooms: np.ndarray, qcode: int, scode: int) -> None:
    """Refuse a NaN or infinite voxel size or position in the fields the affine comes from:
    the sform (``srow_*``) where its code is set, else pixdim and the qform's quaternion and
    offsets."""
    if not scode:
        for axis, zoom in enumerate(zooms):
            if not np.isfinite(zoom):
                raise DataError(f"voxel size is not a finite positive number (pixdim[{axis + 1}]"
                                f" = {zoom:g})", path)
    fields = ("srow_x", "srow_y", "srow_z") if scode else (
        ("quatern_b", "quatern_c", "quatern_d", "qoffset_x", "qoffset_y", "qoffset_z")
        if qcode else ())
    for name in fields:
        values = np.asarray(header[name], dtype=float)
        if not np.all(np.isfinite(values)):
            form = "sform" if scode else "qform"
            raise DataError(f"the {form} holds a value that is not a finite number ({name} = "
                            f"{' '.join(f'{v:g}' for v in np.atleast_1d(values))}): the voxel "
                            "size or position is unusable", path)


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
        raise DataError("cannot read image (the file is truncated, or its gzip stream is "
                        "damaged: copy or download it again)", path)


def _gunzip_exceeds(path: Path, limit: int) -> bool:
    """Whether the gzip members of ``path`` expand to more than ``limit`` bytes (False when
    the stream is cut or corrupt before that). Reads at most ``limit + 1`` output bytes."""
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
    unit = reference.nifti_units
    affine = np.array(reference.source_affine, dtype=float)
    affine[:3, :] /= UNIT_MM.get(unit, 1.0)  # back in the scan's unit, so viewers overlay
    img = nib.Nifti1Image(array, affine)
    qcode, scode = reference.nifti_codes
    if reference.nifti_pixdim is not None:  # neither form: the scan's pixdim, codes 0/0
        img = nib.Nifti1Image(array, None)
        img.header["pixdim"][1: 1 + len(reference.nifti_pixdim)] = reference.nifti_pixdim
        img.header.set_data_dtype(array.dtype)
        img.header.set_xyzt_units(unit)
        nib.save(img, str(path))
        return
    qform = affine if reference.nifti_qform is None else reference.nifti_qform
    img.set_qform(qform, code=qcode or 1)
    img.set_sform(affine, code=scode or (0 if qcode else 1))
    img.header.set_data_dtype(array.dtype)
    img.header.set_xyzt_units(unit)  # "unknown" stays unknown: no unit the scan did not state
    nib.save(img, str(path))
