"""SimpleITK's formats: NRRD, MHA/MHD, TIFF, PNG/JPEG/BMP, DICOM files and DICOM series.

Everything here is bounded like :func:`segfew.io.read_image` (the header is checked before
the voxels are read) and quiet: what ITK would print is routed through a logger and said as
:class:`~segfew.errors.DataWarning` naming the file. A DICOM series is read only when its
slices are evenly spaced along the slice normal (:func:`check_slice_positions`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from segfew.errors import DataError, DataWarning
from segfew.io.dicom import (
    check_dicom_file,
    dicom_geometry,
    dicom_header,
    dicom_series_files,
    has_pixel_data,
    series_names,
    series_of_path,
)
from segfew.io.dicom_frames import frames_by_position
from segfew.io.dicom_stack import check_stack, series_dtype, warn_zero_slope, written_unit
from segfew.io.header_geometry import header_problem, nrrd_in_mm, states_voxel_size
from segfew.io.headers import data_size_problem, detached_data_files
from segfew.io.image import COMPLEX, LPS_TO_RAS, ReadLimits, grey, refuse_sheared_axes
from segfew.io.raster import LIBTIFF_PRINTS, as_picture, is_raster, pillow_reads, read_with_pillow

if TYPE_CHECKING:
    from segfew.io.image import Image

log = logging.getLogger(__name__)

#: ITK's reader for each suffix, named so that ``a.MHA`` opens as ``a.mha`` does
IMAGE_IOS = {".nrrd": "NrrdImageIO", ".nhdr": "NrrdImageIO", ".mha": "MetaImageIO",
             ".mhd": "MetaImageIO", ".png": "PNGImageIO", ".jpg": "JPEGImageIO",
             ".jpeg": "JPEGImageIO", ".tif": "TIFFImageIO", ".tiff": "TIFFImageIO",
             ".bmp": "BMPImageIO", ".dcm": "GDCMImageIO"}


def read_itk(path: Path, limits: ReadLimits, label: bool = False
             ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """A NRRD, MetaImage, raster picture or single DICOM file: (array indexed X, Y[, Z];
    RAS affine in mm; extra fields of :class:`~segfew.io.Image`).

    A NRRD's ``space units`` (or ``units``) are converted to mm; a unit segfew does not know
    leaves the file without a real voxel size (a warning says so). ``label``: the file is
    read as a label map, so a palette picture gives its indices (the labels), not colours.
    Raises :class:`DataError` for a missing data file, voxel data that do not fit the
    header's sizes (:func:`segfew.io.headers.data_size_problem`) or a header over ``limits``.
    """
    import SimpleITK as sitk

    if path.name.lower().endswith((".mhd", ".nhdr", ".mha", ".nrrd")):
        for data in detached_data_files(path):
            if not data.is_file():
                raise DataError(f"the header names the data file {data.name}, which is missing "
                                "(copy it beside the header)", path)
        problem = header_problem(path) or data_size_problem(path)  # before ITK reads
        if problem is not None:
            raise DataError(problem, path)
    dicom = path.suffix.lower() not in IMAGE_IOS or path.suffix.lower() == ".dcm"
    if dicom:
        check_dicom_file(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    io = IMAGE_IOS.get(path.suffix.lower())
    if io is not None and path.suffix != path.suffix.lower():
        reader.SetImageIO(io)
    raster = not dicom and is_raster(path, io or reader.GetImageIOFromFileName(str(path)))
    if raster and pillow_reads(path, palette=label):  # grey + alpha, a palette, turned
        return read_with_pillow(path, limits, indices=label)
    meta = path.name.lower().endswith((".mha", ".mhd", ".tif", ".tiff"))  # MetaIO, libtiff
    try:
        with itk_messages(path), console_of_c(meta) as printed:
            reader.ReadImageInformation()
            check_itk_header(reader, limits, path)
            img = reader.Execute()
    except RuntimeError as e:
        if dicom and not has_pixel_data(path):
            raise DataError("DICOM file has no pixel data", path) from None
        if raster:  # a mode ITK has no reader for (a 1-bit BMP): Pillow, or ITK's words
            return read_with_pillow(path, limits, after=e)
        raise
    if "Uncompress failed" in "".join(printed):  # MetaIO's only word of it; the voxels are junk
        raise DataError("cannot read image (the compressed voxel data do not decompress: the "
                        "file is damaged)", path)
    if raster:  # a picture's DPI is a print size: pixels of 1, no unit (as PNG)
        img = as_picture(img, "".join(printed), path)
    array, affine, colour = from_sitk(img, path, picture=raster or dicom)
    refuse_sheared_axes(affine, array.shape, path)  # NRRD space directions, MetaImage matrix
    extra: dict[str, Any] = {"format": "itk", "colour": colour, "units_stated": not raster}
    if not raster and not states_voxel_size(path):  # ITK's 1 mm is no measurement
        extra["spacing_placeholder"] = "no voxel size in the header"
    if path.name.lower().endswith((".nrrd", ".nhdr")):
        affine = nrrd_in_mm(affine, path, img.GetDimension(), extra)
    elif dicom:
        affine = dicom_geometry([path], path, img.GetSize(), affine, extra)
        warn_zero_slope([h.stack for h in [dicom_header(path)] if h and h.stack], path)
    return (*frames_by_position(path, array, affine), extra) if dicom else (array, affine, extra)


def check_itk_header(reader: Any, limits: ReadLimits, path: Path, slices: int = 1,
                     dtype: np.dtype | None = None) -> None:
    """Apply ``limits`` to a SimpleITK reader after ``ReadImageInformation``; ``slices`` is
    the number of frames of a whole series (every frame of every multi-frame file), ``dtype``
    the type it is read in where not the reader's own."""
    import SimpleITK as sitk

    shape = tuple(int(s) for s in reader.GetSize())
    if slices > 1:
        shape = (*shape[:2], slices)
    components = int(reader.GetNumberOfComponents())
    if reader.GetPixelID() in (sitk.sitkComplexFloat32, sitk.sitkComplexFloat64):
        raise DataError(COMPLEX, path)
    try:
        itemsize = sitk.Image([1] * len(shape), reader.GetPixelID()).GetSizeOfPixelComponent()
    except RuntimeError:
        itemsize = 8
    if dtype is not None:
        itemsize = dtype.itemsize
    limits.check(shape, components, int(itemsize), path)


class _ItkLogger:
    """Collects what ITK would print, so it can be said as warnings naming the file."""

    def __init__(self) -> None:
        import SimpleITK as sitk

        class Logger(sitk.LoggerBase):
            def __init__(self, sink: list[str]) -> None:
                super().__init__()
                self.sink = sink

            def DisplayText(self, t: str) -> None:
                self.sink.append(t)

            def DisplayWarningText(self, t: str) -> None:
                self.sink.append(t)

            def DisplayErrorText(self, t: str) -> None:
                self.sink.append(t)

            def DisplayGenericOutputText(self, t: str) -> None:
                self.sink.append(t)

            def DisplayDebugText(self, t: str) -> None:
                pass

        self.messages: list[str] = []
        self.logger = Logger(self.messages)


@contextlib.contextmanager
def itk_messages(path: Path) -> Iterator[list[str]]:
    """Route ITK's warnings into Python warnings naming ``path`` (the library never prints).

    Yields the list of raw messages, for callers that turn a known one into an error.
    """
    capture = _ItkLogger()
    previous = capture.logger.SetAsGlobalITKLogger()
    try:
        yield capture.messages
    finally:
        previous.SetAsGlobalITKLogger()
    for text in capture.messages:
        reason = _itk_reason(text)
        if reason:
            warnings.warn(DataWarning(f"ITK: {reason}", path), stacklevel=3)


_CONSOLE = threading.Lock()
#: what MetaIO and libtiff print to the console (std::cerr, stderr) themselves, past ITK's logger
_METAIO_PRINTS = re.compile(r"^\s*(MetaImage:|MetaObject:|ideal = |Uncompress failed|"
                            rf"{LIBTIFF_PRINTS}).*$\n?", re.MULTILINE)


@contextlib.contextmanager
def console_of_c(capture: bool = True) -> Iterator[list[str]]:
    """Keep what C and C++ code prints to the process's stderr (file descriptor 2) out of the
    terminal: MetaIO and libtiff write there themselves, past ITK's logger. Yields a list that
    receives the captured text when the block ends; text other than theirs is written
    back to stderr then (delayed, not lost). One block at a time (a lock): the descriptor is
    the process's. Does nothing where ``capture`` is False or descriptor 2 cannot be copied.
    """
    printed: list[str] = []
    if not capture:
        yield printed
        return
    with _CONSOLE, tempfile.TemporaryFile() as sink:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError):
            yield printed
            return
        os.dup2(sink.fileno(), 2)
        try:
            yield printed
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            printed.append(sink.read(1 << 16).decode("utf-8", "replace"))
            rest = _METAIO_PRINTS.sub("", printed[0])
            if rest:
                sys.stderr.write(rest)


def _itk_reason(text: str) -> str:
    """ITK's message in words, "" for none worth saying: a private TIFF tag (50838, …) it
    cannot keep in its meta-data dictionary concerns no voxel."""
    if "for meta-data dictionary" in text:
        return ""
    text = text.split("WARNING:", 1)[-1]
    text = re.sub(r"^\s*In\s+\S+,\s*line\s+\d+\s*", "", text)
    text = re.sub(r"\w+ImageIO\s*\(0x[0-9a-f]+\):\s*", "", text)
    text = re.sub(r"\w+\s*\(0x[0-9a-f]+\):\s*", "", text)
    return " ".join(text.split())[:300]


def from_sitk(img: Any, path: Path, picture: bool = True) -> tuple[np.ndarray, np.ndarray, bool]:
    """SimpleITK image → (array indexed X, Y[, Z], RAS affine, converted from colour).
    ``picture``: a raster or DICOM file, whose 16-bit RGB is colour (:func:`grey`)."""
    import SimpleITK as sitk

    array = sitk.GetArrayFromImage(img)  # (Z, Y, X[, C]) or (Y, X[, C])
    ncomp = img.GetNumberOfComponentsPerPixel()
    dim = img.GetDimension()
    colour = False
    if ncomp > 1:
        array, colour = grey(array, path, picture)
    array = np.ascontiguousarray(array.transpose(tuple(range(dim))[::-1]))
    spacing = np.array(img.GetSpacing(), dtype=float)
    origin = np.array(img.GetOrigin(), dtype=float)
    direction = np.array(img.GetDirection(), dtype=float).reshape(dim, dim)
    lps = np.eye(4)
    lps[:dim, :dim] = direction * spacing
    lps[:dim, 3] = origin
    return array, LPS_TO_RAS @ lps, colour



def write_itk(array: np.ndarray, reference: Image, path: Path, suffix: str,
               vector: bool) -> None:
    import SimpleITK as sitk

    ndim = array.ndim - int(vector)
    if suffix in (".png", ".jpg", ".jpeg", ".bmp"):
        if array.dtype.kind == "f" or vector:
            raise DataError(f"{suffix} cannot hold float or multi-channel values; "
                            "write .nii.gz, .mha or .tif", path)
        if ndim != 2:
            raise DataError(f"{suffix} holds 2D images only; write .nii.gz or .mha", path)
        if array.dtype != np.uint8:
            if array.min() < 0 or array.max() > 65535:
                raise DataError(f"values outside 0..65535 do not fit {suffix}", path)
            array = array.astype(np.uint16)
    axes = tuple(range(ndim))[::-1] + ((ndim,) if vector else ())
    img = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(axes)), isVector=vector)
    lps = LPS_TO_RAS @ reference.source_affine
    linear = lps[:ndim, :ndim]
    spacing = np.linalg.norm(linear, axis=0)
    spacing[spacing == 0] = 1.0
    img.SetSpacing([float(s) for s in spacing])
    img.SetOrigin([float(o) for o in lps[:ndim, 3]])
    with contextlib.suppress(RuntimeError):  # a singular direction is left as identity
        img.SetDirection([float(d) for d in (linear / spacing).ravel()])
    with itk_messages(path):
        sitk.WriteImage(img, str(path), useCompression=suffix in (".nrrd", ".mha", ".nhdr"))


# ------------------------------------------------------------------------- DICOM series

SPACING_RTOL = 0.01
"""Slice steps may differ from their median by 1 % (plus 1 µm, plus the rounding of the
written positions) before a series is uneven."""
TILT_DEGREES = 0.1
"""A line of slices leaning from their normal by more than this angle (beyond the rounding
of the written positions) is a gantry tilt."""
MOVED_MM = 0.1  # mm: a slice this far (beyond the rounding) off the others' line was moved


def read_dicom_series(path: Path, limits: ReadLimits
                      ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """One DICOM series, checked first for slices of one size and orientation, one at each
    position (:func:`segfew.io.dicom_stack.check_stack`), even slice spacing and no gantry
    tilt; read in a type that holds every slice's rescaled values where their RescaleSlope
    or RescaleIntercept differ (:func:`segfew.io.dicom_stack.series_dtype`).

    ``path`` is a folder, whose series is its DICOM image files grouped by
    SeriesInstanceUID (:func:`segfew.io.dicom.dicom_series_files`; a series of one file
    beside others, a stray slice, is not part of it), or one series of a folder holding
    several (:func:`segfew.io.dicom.series_of_path`); a folder of one multi-frame file
    reads as that file. Every frame of every file counts against ``limits``."""
    import SimpleITK as sitk

    folder, wanted = (path, None) if path.is_dir() else (path.parent, series_of_path(path))
    grouped = dicom_series_files(folder)
    multi = {wanted: grouped.get(wanted, [])} if wanted is not None else \
        {uid: files for uid, files in grouped.items() if len(files) > 1} or grouped
    if not multi or not next(iter(multi.values())):
        raise DataError("cannot read image (no DICOM series found)", path)
    if len(multi) > 1:
        names = ", ".join(sorted(series_names(folder, multi).values()))
        raise DataError(f"holds {len(multi)} DICOM series; each is read as {folder}/<name> "
                        f"({names}), as a folder input lists them", path)
    uid, found = next(iter(multi.items()))
    frames = sum(check_dicom_file(f) for f in found)
    if len(found) == 1 and frames > 1:  # a folder of one multi-frame file: that file
        return read_itk(found[0], limits)
    with itk_messages(path) as messages:
        files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)) if uid \
            else []
        if sorted(Path(f).name for f in files) != sorted(f.name for f in found):
            files = [str(f) for f in found]
        headers = [dicom_header(Path(f)) for f in files]
        stacks = [h.stack for h in headers if h is not None and h.stack is not None]
        warn_zero_slope(stacks, path)
        dtype = None
        if len(stacks) == len(files) and frames == len(files):
            check_stack([Path(f).name for f in files], stacks, path)
            dtype = series_dtype(stacks)
        positions, written, normal, first = [], [], None, None
        for name in files:
            reader = sitk.ImageFileReader()
            reader.SetFileName(name)
            reader.ReadImageInformation()
            if first is None:
                first = reader
                check_itk_header(reader, limits, path, slices=max(frames, len(files)),
                                 dtype=dtype)
                if reader.GetNumberOfComponents() != 1:
                    dtype = None  # a colour series: slopes are for grey values
            keys = set(reader.GetMetaDataKeys())
            if "0020|0032" in keys and "0020|0037" in keys:
                parts = reader.GetMetaData("0020|0032").split("\\")
                written += parts
                positions.append([float(v) for v in parts])
                cosines = [float(v) for v in reader.GetMetaData("0020|0037").split("\\")]
                normal = np.cross(cosines[:3], cosines[3:6])
        if frames > len(files):
            raise DataError(f"a series of {len(files)} multi-frame DICOM files ({frames} "
                            "frames); give one multi-frame file per case", path)
        if normal is not None and len(positions) == len(files):
            check_slice_positions(np.array(positions), normal, [Path(f).name for f in files],
                                  path, unit=written_unit(written))
        series_reader = sitk.ImageSeriesReader()
        series_reader.SetFileNames(files)
        if dtype is not None:  # each slice is rescaled by its own slope, then cast to this
            series_reader.SetOutputPixelType(
                sitk.GetImageFromArray(np.zeros((1, 1), dtype)).GetPixelID())
        img = series_reader.Execute()
        if normal is not None and len(positions) == len(files):  # checked above, rounding known
            messages[:] = [m for m in messages if "Non uniform sampling" not in m]
    array, affine, colour = from_sitk(img, path)
    extra: dict[str, Any] = {"format": "dicom", "colour": colour}
    affine = dicom_geometry([Path(f) for f in files], path, img.GetSize(), affine, extra)
    return array, affine, extra


def check_slice_positions(positions: np.ndarray, normal: np.ndarray, names: list[str],
                          path: Path, unit: float = 0.0) -> None:
    """Refuse a series that ITK would read as an evenly spaced box, but is not one.

    ``positions`` are the slices' ImagePositionPatient (N, 3) in mm, in reading order;
    ``normal`` the slice normal from ImageOrientationPatient; ``unit`` (mm) the unit of the
    last decimal the positions are written with (:func:`segfew.io.dicom_stack.written_unit`:
    0.625 mm slices written to 2 decimals step 0.62 or 0.63 mm).

    A missing slice shows as one step longer than the others: a step may differ from the
    median by 1 % plus the rounding, ``unit`` times the sum of the normal's absolute
    components (each written coordinate is within half a unit of the true one, so two steps
    differ by at most that), but never by half the median. A slice further than MOVED_MM
    (or what TILT_DEGREES gives over the stack's length) plus 2·unit·√3 (the rounding) from
    the line fitted through the slices' positions against their depth was moved in its plane;
    a line leaning from the normal by over TILT_DEGREES is a gantry tilt.
    """
    if len(positions) < 2:
        return
    normal = np.asarray(normal, dtype=float) / (np.linalg.norm(normal) or 1.0)
    steps = np.diff(positions, axis=0)
    along = steps @ normal
    median = float(np.median(np.abs(along)))
    if median < 1e-6 or np.any(np.abs(along) < 1e-6):
        i = int(np.argmin(np.abs(along)))
        raise DataError(f"DICOM slices {names[i]} and {names[i + 1]} lie at the same position; "
                        "give one series (one time point, one echo) per folder", path)
    rounding = min(unit * float(np.sum(np.abs(normal))), median / 2)
    off = np.abs(np.abs(along) - median)
    if np.any(off > SPACING_RTOL * median + 1e-3 + rounding * (1 + 1e-6)):
        i = int(np.argmax(off))
        raise DataError(f"DICOM slice spacing is uneven: {abs(along[i]):.3g} mm between "
                        f"{names[i]} and {names[i + 1]}, {median:.3g} mm elsewhere (a missing "
                        "slice?); segfew reads evenly spaced series only: complete the series "
                        "or resample it (e.g. dcm2niix) first", path)
    depth, n, rounding = positions @ normal, len(positions), 2 * unit * np.sqrt(3)
    length = float(np.ptp(depth))  # or what a 0.1° lean gives over the stack's length
    tol = rounding + max(MOVED_MM, np.tan(np.radians(TILT_DEGREES)) * length)
    design = np.column_stack([np.ones(n), depth - depth.mean()])
    def fit(rows: np.ndarray) -> tuple[float, np.ndarray]:  # lean (mm/mm), distances (N,)
        coef = np.linalg.lstsq(design[rows], positions[rows], rcond=None)[0]
        return (float(np.linalg.norm(coef[1] - (coef[1] @ normal) * normal)),
                np.linalg.norm(positions - design @ coef, axis=1))
    lean, off = fit(np.arange(n))
    tilt = np.tan(np.radians(TILT_DEGREES)) * length + rounding + 1e-3
    if np.any(off > tol) or lean * length > tilt:
        # A moved end slice or block pulls a least-squares line, and dropping the worst slice
        # at a time can end on a line leaning through two groups: fit the longest run of
        # slices whose steps agree with the median step, then all the slices near that line.
        jumps = np.linalg.norm(steps - np.outer(along, np.median(steps.T / along, 1)), axis=1)
        run = max(np.split(np.arange(n), np.flatnonzero(jumps > tol) + 1), key=len)
        if len(run) > 1:
            lean, off = fit(run)
            lean, off = fit(np.flatnonzero(off <= tol)) if np.sum(off <= tol) > 1 else (lean, off)
    bad = np.flatnonzero(off > tol)
    if bad.size:
        i, rest, k = int(bad[np.argmax(off[bad])]), np.setdiff1d(np.arange(n), bad), bad.size
        said = ("moved in its plane", f"{k} slices off the line through the rest")[k > 1]
        what = f"DICOM slice {names[i]} lies {off[i]:.3g} mm to the side of the others ({said})"
        if min(k, rest.size) > 1 and np.ptp(bad) + np.ptp(rest) == n - 2:  # two blocks
            ends = [f"{names[g[0]]}–{names[g[-1]]}" for g in sorted((bad, rest), key=min)]
            what = (f"DICOM slices lie in two groups {off[i]:.3g} mm apart sideways ({ends[0]} "
                    f"and {ends[1]}: a table move?)")
        raise DataError(f"{what}, which a box of voxels cannot hold; give one series of aligned "
                        "slices", path)
    if lean * length > tilt:
        raise DataError(f"DICOM series has a gantry tilt of {np.degrees(np.arctan(lean)):.1f}° "
                        "(slices sheared along their plane), which a box of voxels cannot "
                        "hold; resample it first (e.g. dcm2niix corrects tilt)", path)
