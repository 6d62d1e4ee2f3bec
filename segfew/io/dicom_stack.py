"""Whether the slices of one DICOM series (or the frames of one multi-frame file:
:mod:`segfew.io.dicom_frames`) stack into one volume, told from their headers before ITK
reads a voxel: one size, one orientation, one slice per position (several at a position
are echoes, phases, repeated acquisitions or copies), and the pixel type that holds every
slice's rescaled values (:func:`series_dtype`: PET gives each slice its own RescaleSlope,
and ITK reads the series in the type of its first slice); whether a file holds the pixel
bytes its header needs (:func:`pixel_data_problem`)."""

from __future__ import annotations

import itertools
import math
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segfew.errors import DataError, DataWarning

__all__ = ["ORIENTATION_TOLERANCE", "PROJECTION_MODALITIES", "SliceInfo", "check_stack",
           "frame_slices", "pixel_data_problem", "series_dtype", "slice_info", "warn_zero_slope",
           "written_unit"]

#: direction cosines of two slices may differ by this much and still be one orientation
ORIENTATION_TOLERANCE = 1e-3
#: slices closer than this along the slice normal (mm) share one position
SAME_POSITION_MM = 1e-3
#: frame steps may differ from their median by this fraction (plus 1 µm, plus the rounding
#: of the written positions), as a series' slice steps may (segfew.io.itk.SPACING_RTOL)
SPACING_RTOL = 0.01
#: header elements that tell slices at one position apart, and what such slices are
_REPEATS = (("EchoTime", "echoes"), ("EchoNumbers", "echoes"),
            ("TemporalPositionIdentifier", "phases (time points)"),
            ("TriggerTime", "cardiac phases"), ("DiffusionBValue", "diffusion weightings"),
            ("AcquisitionNumber", "repeated acquisitions"),
            # a multi-frame file's per-frame functional groups
            ("EffectiveEchoTime", "echoes"), ("TemporalPositionIndex", "phases (time points)"),
            ("NominalCardiacTriggerDelayTime", "cardiac phases"), ("StackID", "stacks"),
            ("DimensionIndexValues", ""))
_PLANES = ("sagittal", "coronal", "axial")
#: what the items of a stack, the stack and what segfew reads as one volume are called
_WORDS = {False: ("slices", "series", "folder"), True: ("frames", "multi-frame file", "file")}
#: modalities whose images are projections (one 2D view each), never slices of a volume
PROJECTION_MODALITIES = frozenset({"MG", "CR", "DX", "RG", "PX", "IO"})


@dataclass(frozen=True)
class SliceInfo:
    """What one DICOM file's header says of how its slice stacks with the others."""

    rows: int
    columns: int
    position: tuple[float, ...] | None
    """ImagePositionPatient (mm, 3 numbers), or None where absent or not numbers."""
    orientation: tuple[float, ...] | None
    """ImageOrientationPatient: the row then the column direction cosines (6 numbers)."""
    slope: float = 1.0
    intercept: float = 0.0
    """RescaleSlope and RescaleIntercept: a stored value v means ``v * slope + intercept``."""
    zero_slope: bool = False
    """The header states RescaleSlope 0, which ``slope`` (and GDCM) reads as 1."""
    bits_stored: int = 16
    signed: bool = False
    """PixelRepresentation 1: stored values are two's complement."""
    instance_uid: str = ""
    repeats: tuple[str, ...] = ()
    """The values of the elements of ``_REPEATS`` (empty strings where absent)."""
    modality: str = ""
    view: str = ""
    """ImageLaterality (else Laterality) and ViewPosition, e.g. ``R CC``; empty where absent."""


def _numbers(value: Any, n: int) -> tuple[float, ...] | None:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return out if len(out) == n and all(math.isfinite(v) for v in out) else None


def _number(value: Any, default: float) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return default
    return out if math.isfinite(out) else default


def slice_info(ds: Any) -> SliceInfo:
    """:class:`SliceInfo` of a pydicom dataset (read up to its pixels). Never raises."""
    def get(keyword: str) -> Any:
        try:
            return ds.get(keyword)
        except Exception:  # a damaged element: pydicom raises many kinds
            return None

    bits = int(_number(get("BitsStored"), _number(get("BitsAllocated"), 16)))
    return SliceInfo(
        rows=int(_number(get("Rows"), 0)), columns=int(_number(get("Columns"), 0)),
        position=_numbers(get("ImagePositionPatient"), 3),
        orientation=_numbers(get("ImageOrientationPatient"), 6),
        slope=_number(get("RescaleSlope"), 1.0) or 1.0,
        zero_slope=_number(get("RescaleSlope"), 1.0) == 0,
        intercept=_number(get("RescaleIntercept"), 0.0),
        bits_stored=bits if 0 < bits <= 32 else 16,
        signed=_number(get("PixelRepresentation"), 0) == 1,
        instance_uid=str(get("SOPInstanceUID") or ""),
        repeats=tuple(str(get(k) if get(k) is not None else "").strip() for k, _ in _REPEATS),
        modality=str(get("Modality") or "").strip().upper(),
        view=" ".join(str(v).strip() for v in (get("ImageLaterality") or get("Laterality"),
                                                get("ViewPosition")) if v and str(v).strip()),
    )


def check_stack(names: Sequence[str], slices: Sequence[SliceInfo], path: Path,
                frames: bool = False) -> None:
    """Refuse slices (``names`` their file names, ``slices`` their headers) that are no one
    volume: of different sizes, of different orientations (a 3-plane localizer, a reformat,
    a transposed slice), several at one position (echoes, phases, copies), or projection
    views (:func:`_check_projections`). ``frames``: the slices are the frames of one
    multi-frame file (``names`` ``frame 1``, …), and the words say so.

    Raises :class:`DataError` naming ``path`` and two of the files (frames).
    """
    item, whole, unit = _WORDS[frames]
    _check_projections(names, slices, path)
    sizes = {(s.columns, s.rows) for s in slices}
    if len(sizes) > 1:
        one = slices[0]
        k = next(i for i, s in enumerate(slices) if (s.columns, s.rows) != (one.columns, one.rows))
        raise DataError(f"DICOM slices differ in size: {names[k]} is "
                        f"{slices[k].columns}×{slices[k].rows} pixels, {names[0]} "
                        f"{one.columns}×{one.rows} (columns × rows); they are no one volume: "
                        "give one series per folder", path)
    oriented = [(n, s.orientation) for n, s in zip(names, slices, strict=True)
                if s.orientation is not None]
    groups: list[tuple[str, tuple[float, ...]]] = []
    for name, cosines in oriented:
        if not any(np.max(np.abs(np.subtract(cosines, g))) <= ORIENTATION_TOLERANCE
                   for _, g in groups):
            groups.append((name, cosines))
    if len(groups) > 1:
        (a, ca), (b, cb) = groups[:2]
        raise DataError(f"DICOM {item} of {len(groups)} orientations in one {whole}: {a} "
                        f"{_plane(ca)}, {b} {_plane(cb)}; a localizer or reformats? segfew "
                        f"stacks {item} of one orientation: give one orientation per {unit}", path)
    if len(oriented) == len(slices) and all(s.position is not None for s in slices):
        _check_one_per_position(names, slices, path, frames)


def _check_projections(names: Sequence[str], slices: Sequence[SliceInfo], path: Path) -> None:
    """Refuse several projection images in one series: radiographs (mammography views R CC,
    L CC, R MLO, L MLO; a chest PA and lateral) have no ImagePositionPatient, and ITK would
    stack them as slices of one volume. Slices without a position are taken as views when
    their laterality or view position differ, or their modality is a projection one
    (:data:`PROJECTION_MODALITIES`); other slices without positions stack as before."""
    if len(slices) < 2 or any(s.position is not None for s in slices):
        return
    views = list(dict.fromkeys(s.view for s in slices))
    modality = next((s.modality for s in slices if s.modality in PROJECTION_MODALITIES), "")
    if len(views) < 2 and not modality:
        return
    shown = ", ".join(v or "no view named" for v in views[:6]) + (", …" if len(views) > 6 else "")
    what = f"projection views ({shown})" if len(views) > 1 else \
        f"{modality} projection images ({names[0]}, {names[1]}{', …' if len(names) > 2 else ''})"
    raise DataError(f"{len(slices)} {what} in one DICOM series, without slice positions: each "
                    "view is its own 2D image, not a slice of a volume; give one view per file "
                    "or folder", path)


def written_unit(values: Iterable[str]) -> float:
    """The unit of the last decimal written in DICOM decimal strings (``"-99.38"``: 0.01 mm;
    ``"1.5e2"``: 10 mm), the finest among ``values``; 0.0 where none is a number.

    An exporter or anonymiser that rounds positions writes every value to at most that many
    decimals (dropping trailing zeros writes fewer, never more), so the finest unit seen is
    its rounding: each written value lies within half a unit of the true one."""
    unit = math.inf
    for value in values:
        m = _DECIMAL.match(value.strip())
        if m is None or not (m.group(1) or m.group(2)):
            continue
        unit = min(unit, 10.0 ** (int(m.group(3) or 0) - len(m.group(2) or "")))
    return unit if math.isfinite(unit) else 0.0


_DECIMAL = re.compile(r"^[+-]?(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d+))?$")


def _plane(cosines: tuple[float, ...]) -> str:
    """``axial (ImageOrientationPatient 1 0 0 0 1 0)``: the plane the normal is nearest."""
    normal = np.cross(cosines[:3], cosines[3:])
    axis = int(np.argmax(np.abs(normal)))
    plane = _PLANES[axis] if abs(normal[axis]) > 0.9999 else f"oblique (near {_PLANES[axis]})"
    numbers = " ".join(f"{round(c, 3) + 0.0:g}" for c in cosines)
    return f"{plane} (ImageOrientationPatient {numbers})"


def _check_one_per_position(names: Sequence[str], slices: Sequence[SliceInfo],
                            path: Path, frames: bool = False) -> None:
    """Refuse several slices at one position along the slice normal, saying what they are."""
    item, whole, unit = _WORDS[frames]
    cosines = slices[0].orientation
    assert cosines is not None
    normal = np.cross(cosines[:3], cosines[3:])
    normal = normal / (np.linalg.norm(normal) or 1.0)
    along = np.array([s.position for s in slices], dtype=float) @ normal
    order = np.argsort(along, kind="stable")
    clusters: list[list[int]] = [[int(order[0])]]
    for prev, i in itertools.pairwise(order):
        if along[i] - along[prev] < SAME_POSITION_MM:
            clusters[-1].append(int(i))
        else:
            clusters.append([int(i)])
    shared = [c for c in clusters if len(c) > 1]
    if not shared:
        return
    first = shared[0]
    a, b = names[first[0]], names[first[1]]
    if all(len({slices[i].instance_uid for i in c}) == 1 and slices[c[0]].instance_uid
           for c in shared):
        raise DataError(f"DICOM slices {a} and {b} lie at the same position and are copies of "
                        "one slice (the same SOPInstanceUID): remove the copy", path)
    differ = [k for k in range(len(_REPEATS)) if len({slices[i].repeats[k] for i in first}) > 1]
    kinds = " or ".join(dict.fromkeys(_REPEATS[k][1] for k in differ if _REPEATS[k][1]))
    what = f"several {kinds or 'echoes, phases or repeated acquisitions'}"
    by = ", ".join(_REPEATS[k][0] for k in differ)
    split = f"split them by {by}, one {unit} each" if by else f"split them, one {unit} each " \
        "(no EchoTime, TemporalPositionIdentifier or AcquisitionNumber tells them apart)"
    counts = {len(c) for c in clusters}
    if len(counts) == 1:
        raise DataError(f"DICOM {whole} holds {len(first)} {item} at each of {len(clusters)} "
                        f"positions ({a} and {b} at {along[first[0]]:.4g} mm): {what} in one "
                        f"{whole}; segfew reads one volume per {unit}: {split}", path)
    pair = f"{a} and {b}" if frames else f"slices {a} and {b}"  # frames are named "frame 3"
    give = "one time point, one echo per file" if frames else \
        "one series (one time point, one echo) per folder"
    raise DataError(f"DICOM {pair} lie at the same position ({len(shared)} of "
                    f"{len(clusters)} positions hold more than one {item[:-1]}: {what}?); give "
                    f"{give}: {split}", path)


def warn_zero_slope(slices: Sequence[SliceInfo], path: Path) -> None:
    """A RescaleSlope of 0 would make every voxel the intercept: GDCM reads it as 1 (the
    stored values plus the intercept), as segfew does, and a :class:`DataWarning` naming
    ``path`` says so — the header is damaged, and the values may not be what it meant."""
    zero = sum(s.zero_slope for s in slices)
    if zero:
        warnings.warn(DataWarning(f"RescaleSlope 0 in {zero} of {len(slices)} DICOM header(s), "
                                  "which would make every voxel the intercept: read as 1 (the "
                                  "stored values plus the intercept)", path), stacklevel=3)


#: integer types a series may be read in, smallest first
_INTEGERS: tuple[type[np.integer], ...] = (np.uint8, np.int8, np.uint16, np.int16, np.uint32,
                                           np.int32)


def series_dtype(slices: Sequence[SliceInfo]) -> np.dtype | None:
    """The pixel type that holds every slice's rescaled values exactly, where the slices'
    RescaleSlope or RescaleIntercept differ; None where they are all alike (ITK's own type
    then holds them).

    From the headers only (the range BitsStored allows, rescaled by each slice's own slope
    and intercept): the smallest integer type holding them all when every slope and
    intercept is a whole number, else float64 (what ITK reads a non-integer slope in).
    """
    if len({(s.slope, s.intercept) for s in slices}) <= 1:
        return None
    if not all(float(s.slope).is_integer() and float(s.intercept).is_integer() for s in slices):
        return np.dtype(np.float64)
    low, high = math.inf, -math.inf
    for s in slices:
        lo, hi = (-(2 ** (s.bits_stored - 1)), 2 ** (s.bits_stored - 1) - 1) if s.signed else \
            (0, 2 ** s.bits_stored - 1)
        ends = (lo * s.slope + s.intercept, hi * s.slope + s.intercept)
        low, high = min(low, *ends), max(high, *ends)
    for dtype in _INTEGERS:
        info = np.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return np.dtype(dtype)
    return np.dtype(np.float64)


#: transfer syntaxes whose pixel data are stored as they are (not compressed, not deflated)
_NATIVE = frozenset({"", "1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"})


def pixel_data_problem(ds: Any, syntax: str, at: tuple[int, int], size: int, frames: int) -> str:
    """Why the pixel data of a file of ``size`` bytes cannot hold its image (their value
    starts at byte ``at[0]`` and states ``at[1]`` bytes), in words; empty where they can
    or where it cannot be told (compressed or deflated pixels, a YBR 4:2:2 image)."""
    start, stated = at
    if syntax not in _NATIVE or stated == 0xFFFFFFFF or "422" in str(
            ds.get("PhotometricInterpretation", "")):
        return ""
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
        bits, samples = int(ds.get("BitsAllocated", 16)), int(ds.get("SamplesPerPixel", 1) or 1)
    except (TypeError, ValueError, AttributeError):
        return ""
    need = -(-rows * columns * samples * frames * bits // 8)
    held = min(stated, max(0, size - start))
    if held >= need:
        return ""
    sizes = f"{rows}×{columns}" + (f"×{samples} samples" if samples > 1 else "") + \
        (f"×{frames} frames" if frames > 1 else "") + f"×{bits} bits"
    why = "the file is truncated (cut short in a copy?)" if held < stated else \
        "the file is damaged"
    return (f"its pixel data hold {held} bytes where Rows × Columns × bits ({sizes}) need "
            f"{need}: {why}")


def frame_slices(ds: Any) -> tuple[list[SliceInfo], list[str]] | None:
    """A :class:`SliceInfo` for each frame of a multi-frame dataset (position and
    orientation from its per-frame, else shared, functional groups; the elements of
    ``_REPEATS`` from those, else the file's own), and the positions as written; None where
    the file has no frames, or a frame no position or orientation."""
    count = int(_number(ds.get("NumberOfFrames"), 1))
    per = ds.get("PerFrameFunctionalGroupsSequence") or []
    shared = list(ds.get("SharedFunctionalGroupsSequence") or [])[:1]
    if count < 2 or len(per) != count:
        return None

    def find(groups: Sequence[Any], keyword: str) -> Any:
        for group in groups:  # each functional group macro is a sequence of one item
            for element in group:
                if element.VR == "SQ" and len(element.value) and keyword in element.value[0]:
                    value = element.value[0].get(keyword)
                    if value not in (None, ""):
                        return value
        return None

    one = slice_info(ds)
    slices, written = [], []
    for frame in per:
        position = find([frame, *shared], "ImagePositionPatient")
        orientation = find([frame, *shared], "ImageOrientationPatient")
        repeats = []
        for k, (keyword, _) in enumerate(_REPEATS):
            value = find([frame, *shared], keyword)
            repeats.append(one.repeats[k] if value is None else str(value).strip())
        info = SliceInfo(rows=one.rows, columns=one.columns, position=_numbers(position, 3),
                         orientation=_numbers(orientation, 6), repeats=tuple(repeats))
        if info.position is None or info.orientation is None:
            return None
        slices.append(info)
        written += [str(v) for v in position]
    return slices, written
