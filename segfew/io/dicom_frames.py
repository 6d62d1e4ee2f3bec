"""How the frames of one multi-frame DICOM file stack into a volume: by their per-frame
positions (PerFrameFunctionalGroupsSequence → PlanePositionSequence), with the checks a
series of single-frame files gets (:mod:`segfew.io.dicom_stack`); and the frames that are
no slices at all, a legacy cine loop's time points."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segfew.errors import DataError
from segfew.io.dicom_stack import SPACING_RTOL, check_stack, frame_slices, written_unit

__all__ = ["FRAME_MOVED_MM", "TIME_INCREMENTS", "FrameStack", "frame_stack", "frames_by_position"]

#: a frame further than this (mm, beyond the rounding of the written positions, or what a
#: lean of 0.1° gives over the stack's length) from the line of the others was moved
FRAME_MOVED_MM = 0.1

@dataclass(frozen=True)
class FrameStack:
    """How the frames of one multi-frame file stack, by their per-frame positions (LPS mm)."""

    order: tuple[int, ...]
    """The stored frame (0-based) of each slice: along the slice normal, or the stored
    order where the positions fall along it (as ITK reads those)."""
    origin: tuple[float, ...]
    """ImagePositionPatient of the first frame of ``order`` (mm)."""
    step: tuple[float, ...]
    """From one frame of ``order`` to the next (mm): the slice normal times the spacing."""


def frame_stack(path: Path) -> FrameStack | None:
    """How the frames of the multi-frame DICOM file ``path`` stack, from its per-frame
    functional groups (PlanePositionSequence, PlaneOrientationSequence; read with pydicom
    before the pixels); None where it is no multi-frame file or a frame gives no position
    or orientation (ITK's reading stands).

    Raises :class:`DataError` naming ``path`` for frames that are time points (a legacy
    cine loop: FrameIncrementPointer names FrameTime, :data:`TIME_INCREMENTS`), frames of
    several orientations, several
    frames at one position (naming what tells them apart: TemporalPositionIndex,
    DimensionIndexValues, …, as :func:`check_stack` does for a series), uneven spacing
    along the normal (the rule of a series), or a frame off the line of the others (a
    gantry tilt).
    """
    path = Path(path)
    try:
        st = path.stat()
    except OSError:
        return None
    return _frame_stack(path, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _frame_stack(path: Path, size: int, mtime_ns: int) -> FrameStack | None:
    """:func:`frame_stack` of a file as it is now (the stat fields are the cache key)."""
    import pydicom

    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True, force=True)
        found = frame_slices(ds)
        timed = _timed_by(ds)
    except Exception:  # a corrupt header: pydicom raises many kinds; ITK's words stand
        return None
    if timed:
        raise DataError(f"its {int(ds.NumberOfFrames)} frames are time points "
                        f"(FrameIncrementPointer: {', '.join(timed)}), not slices: a cine loop "
                        "or a dynamic series, which is no volume; export one frame (one time "
                        "point) per file", path)
    if found is None:
        return None
    slices, written = found
    names = [f"frame {i + 1}" for i in range(len(slices))]
    check_stack(names, slices, path, frames=True)
    cosines = slices[0].orientation or (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)  # every frame has one
    normal = np.cross(cosines[:3], cosines[3:])
    normal = normal / (np.linalg.norm(normal) or 1.0)
    positions = np.array([s.position for s in slices], dtype=float)
    along = positions @ normal
    falling = bool(np.all(np.diff(along) < 0))  # stored top to bottom: ITK reads them so
    order = np.arange(len(slices)) if falling else np.argsort(along, kind="stable")
    steps = np.diff(along[order])
    median = float(np.median(steps))
    unit = written_unit(written)
    rounding = min(unit * float(np.sum(np.abs(normal))), abs(median) / 2)
    off = np.abs(steps - median)
    if np.any(off > SPACING_RTOL * abs(median) + 1e-3 + rounding * (1 + 1e-6)):
        i = int(np.argmax(off))
        raise DataError(f"DICOM frame spacing is uneven: {abs(steps[i]):.3g} mm between "
                        f"{names[order[i]]} and {names[order[i + 1]]} (along the slice normal), "
                        f"{abs(median):.3g} mm elsewhere (a missing frame?); segfew reads evenly "
                        "spaced frames only: resample it first (e.g. dcm2niix)", path)
    placed = positions[order]
    side = placed - placed[0] - np.outer(along[order] - along[order[0]], normal)
    sideways = np.linalg.norm(side, axis=1)
    length = float(np.ptp(along))
    tol = 2 * unit * math.sqrt(3) + max(FRAME_MOVED_MM, math.tan(math.radians(0.1)) * length)
    if np.any(sideways > tol):
        i = int(np.argmax(sideways))
        raise DataError(f"DICOM {names[order[i]]} lies {sideways[i]:.3g} mm to the side of "
                        f"{names[order[0]]} (a gantry tilt, or a moved frame), which a box of "
                        "voxels cannot hold; resample it first (e.g. dcm2niix corrects tilt)",
                        path)
    return FrameStack(order=tuple(int(i) for i in order),
                      origin=tuple(float(v) for v in placed[0]),
                      step=tuple(float(v) for v in normal * median))


#: the attributes a legacy multi-frame file's FrameIncrementPointer names when its frames
#: follow one another in time (PS3.3 C.7.6.6: cine, ultrasound, X-ray angiography, NM)
TIME_INCREMENTS = {0x00181063: "FrameTime", 0x00181065: "FrameTimeVector",
                   0x00540070: "TimeSlotVector", 0x00540100: "TimeSliceVector"}


def _timed_by(ds: Any) -> list[str]:
    """The time attributes the FrameIncrementPointer of a file of several frames names."""
    if int(ds.get("NumberOfFrames") or 1) < 2 or "FrameIncrementPointer" not in ds:
        return []
    pointer = ds.FrameIncrementPointer
    tags = [pointer] if isinstance(pointer, int) else list(pointer)  # one tag, or several
    return [TIME_INCREMENTS[int(t)] for t in tags if int(t) in TIME_INCREMENTS]


def frames_by_position(path: Path, array: np.ndarray, affine: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray]:
    """``array`` (X, Y, frames[, channels], as ITK read the file ``path``) and its RAS
    ``affine`` (mm), with the frames of a multi-frame DICOM file in the order of
    :func:`frame_stack` and the slice axis and origin its positions give; unchanged where
    ITK read them so already, or where the file is no such file.

    Raises :class:`DataError` as :func:`frame_stack` does."""
    if array.ndim < 3:
        return array, affine
    stack = frame_stack(path)
    if stack is None or array.shape[2] != len(stack.order):
        return array, affine
    lps_to_ras = np.array([-1.0, -1.0, 1.0])
    placed = np.array(affine, dtype=float)
    placed[:3, 2] = lps_to_ras * np.array(stack.step)
    placed[:3, 3] = lps_to_ras * np.array(stack.origin)
    if stack.order == tuple(range(len(stack.order))) and \
            np.allclose(placed, affine, rtol=0, atol=1e-4):
        return array, affine
    return np.ascontiguousarray(np.take(array, stack.order, axis=2)), placed
