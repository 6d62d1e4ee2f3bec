"""What an image must hold to be a scan: checked at the door (:func:`segfew.data.read.read_case`).

Whatever it holds, an image is resized onto the network's grid and given a class. One of a
single value everywhere (a blank export), or a strip a few pixels wide, would be answered
as confidently as a scan; so both are refused. A few voxels far outside the rest of the
image's range — a hot pixel, a burnt-in marker at the top of the scale — would squeeze the
image's contrast in every min–max scaling (CLAHE's included) and change its class: they
are said, and :func:`segfew.preprocess.grid.normalise` leaves them out of the scaling
(:func:`spike_range`). The measurements of ``measures`` read the values as stored.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from segfew.errors import DataError, DataWarning

__all__ = ["MIN_SIDE", "SPIKE_RATIO", "SPIKE_SHARE", "check_scan_content", "extremes",
           "spike_range"]

MIN_SIDE = 4
"""Voxels an image needs along each in-plane axis (every axis of a 2D image; the two
longest of a 3D one, whose shortest may be a stack of few slices)."""
SPIKE_SHARE = 1e-4
"""Spikes are at most this share of an image's voxels (and at least one voxel) ..."""
SPIKE_RATIO = 3.0
"""... lying further beyond the rest of the image than this many times the rest's range:
above every image of the public example sets (docs/refusals.md "Scan content")."""


def extremes(array: np.ndarray) -> tuple[float, float, float, float, int]:
    """``(min, lo, hi, max, k)``: ``lo``/``hi`` bound the image without its ``k`` lowest and
    ``k`` highest voxels."""
    flat = np.ravel(array)
    n = flat.size
    k = max(1, int(n * SPIKE_SHARE))
    if n <= 2 * k + 1:
        low, high = float(flat.min()), float(flat.max())
        return low, low, high, high, k
    part = np.partition(flat, (k, n - k - 1))
    return (float(part[:k].min()), float(part[k]), float(part[n - k - 1]),
            float(part[n - k:].max()), k)


def spike_range(array: np.ndarray) -> tuple[float, float] | None:
    """The intensity range of ``array`` without its spikes, or None where it has none.

    Spikes: at most :data:`SPIKE_SHARE` of the voxels, beyond the rest by more than
    :data:`SPIKE_RATIO` times the rest's range, above or below it.
    """
    low, lo, hi, high, _ = extremes(array)
    span = hi - lo
    if span <= 0:
        return None
    up, down = high - hi > SPIKE_RATIO * span, lo - low > SPIKE_RATIO * span
    if not (up or down):
        return None
    return (lo if down else low), (hi if up else high)


def check_scan_content(array: np.ndarray, path: Path) -> None:
    """Refuse an image too narrow or too uniform to be a scan; say its spikes.

    ``array``: an image's voxels, ``(X, Y)`` or ``(X, Y, Z)``, finite. Raises
    :class:`DataError` naming ``path``; warns :class:`DataWarning` for spikes.
    """
    sides = sorted(array.shape)
    if min(sides if array.ndim == 2 else sides[1:]) < MIN_SIDE:
        raise DataError(f"an image of {'×'.join(map(str, array.shape))} voxels is no scan: "
                        f"fewer than {MIN_SIDE} along an in-plane axis", path)
    low, lo, hi, high, k = extremes(array)
    if lo == hi:
        rest = "" if low == high else f" but for at most {k} voxel(s)"
        raise DataError(f"the image holds one value ({lo:g}) everywhere{rest}: nothing to "
                        "segment or classify", path)
    rest_range = spike_range(array)
    if rest_range is None:
        return
    n = int(np.count_nonzero((array < rest_range[0]) | (array > rest_range[1])))
    where = " and ".join(side for side, beyond in (("above", rest_range[1] < high),
                                                   ("below", rest_range[0] > low)) if beyond)
    warnings.warn(DataWarning(
        f"{n} voxel(s) lie far {where} the rest of the image ({lo:g} to {hi:g}; they reach "
        f"{low:g} to {high:g}): the network's intensity scaling clips them to the rest's "
        "range, so that they do not squeeze the image's contrast", path), stacklevel=3)
