"""Whether the slices of one DICOM series stack into one volume, told from their headers
before ITK reads a voxel: one size, one orientation, one slice per position (several at a
position are echoes, phases, repeated acquisitions or copies), and the pixel type that
holds every slice's rescaled values (:func:`series_dtype`: PET gives each slice its own
RescaleSlope, and ITK reads the series in the type of its first slice)."""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segfew.errors import DataError

__all__ = ["ORIENTATION_TOLERANCE", "PROJECTION_MODALITIES", "SliceInfo", "check_stack",
           "series_dtype", "slice_info", "written_unit"]

#: direction cosines of two slices may differ by this much and still be one orientation
ORIENTATION_TOLERANCE = 1e-3
#: slices closer than this along the slice normal (mm) share one position
SAME_POSITION_MM = 1e-3
#: header elements that tell slices at one position apart, and what such slices are
_REPEATS = (("EchoTime", "echoes"), ("EchoNumbers", "echoes"),
            ("TemporalPositionIdentifier", "phases (time points)"),
            ("TriggerTime", "cardiac phases"), ("DiffusionBValue", "diffusion weightings"),
            ("AcquisitionNumber", "repeated acquisitions"))
_PLANES = ("sagittal", "coronal", "axial")
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
        intercept=_number(get("RescaleIntercept"), 0.0),
        bits_stored=bits if 0 < bits <= 32 else 16,
        signed=_number(get("PixelRepresentation"), 0) == 1,
        instance_uid=str(get("SOPInstanceUID") or ""),
        repeats=tuple(str(get(k) if get(k) is not None else "").strip() for k, _ in _REPEATS),
        modality=str(get("Modality") or "").strip().upper(),
        view=" ".join(str(v).strip() for v in (get("ImageLaterality") or get("Laterality"),
                                                get("ViewPosition")) if v and str(v).strip()),
    )


def check_stack(names: Sequence[str], slices: Sequence[SliceInfo], path: Path) -> None:
    """Refuse slices (``names`` their file names, ``slices`` their headers) that are no one
    volume: of different sizes, of different orientations (a 3-plane localizer, a reformat,
    a transposed slice), several at one position (echoes, phases, copies), or projection
    views (:func:`_check_projections`).

    Raises :class:`DataError` naming ``path`` and two of the files.
    """
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
        raise DataError(f"DICOM slices of {len(groups)} orientations in one series: {a} "
                        f"{_plane(ca)}, {b} {_plane(cb)}; a localizer or reformats? segfew "
                        "stacks slices of one orientation: give one orientation per folder", path)
    if len(oriented) == len(slices) and all(s.position is not None for s in slices):
        _check_one_per_position(names, slices, path)


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
                            path: Path) -> None:
    """Refuse several slices at one position along the slice normal, saying what they are."""
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
    kinds = " or ".join(dict.fromkeys(_REPEATS[k][1] for k in differ))
    what = f"several {kinds or 'echoes, phases or repeated acquisitions'}"
    by = ", ".join(_REPEATS[k][0] for k in differ)
    split = f"split them by {by}, one folder each" if by else "split them, one folder each " \
        "(no EchoTime, TemporalPositionIdentifier or AcquisitionNumber tells them apart)"
    counts = {len(c) for c in clusters}
    if len(counts) == 1:
        raise DataError(f"DICOM series holds {len(first)} slices at each of {len(clusters)} "
                        f"positions ({a} and {b} at {along[first[0]]:.4g} mm): {what} in one "
                        f"series; segfew reads one volume per folder: {split}", path)
    raise DataError(f"DICOM slices {a} and {b} lie at the same position ({len(shared)} of "
                    f"{len(clusters)} positions hold more than one slice: {what}?); give one "
                    f"series (one time point, one echo) per folder: {split}", path)


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
