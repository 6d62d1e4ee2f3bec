"""What an image must hold to be a scan: checked at the door (:func:`segfew.data.read.read_case`).

Whatever it holds, an image is resized onto the network's grid and given a class. One of a
single value everywhere (a blank export), or a strip a few pixels wide, would be answered
as confidently as a scan; so both are refused (a blank slice beside its empty label map is
kept: a segmentation network learns from it). A few voxels separated from the rest of the
image by a wide gap of values — a hot or dead pixel, a burnt-in marker at the top of the
bit depth — would squeeze the image's contrast in every min–max scaling (CLAHE's included)
and change its class: they are said, and :func:`segfew.preprocess.grid.normalise` clips them
to the nearest value of the rest (:func:`spike_range`). The measurements of ``measures``
read the values as stored.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from segfew.errors import DataError, DataWarning

__all__ = ["BLANK_RTOL", "BLANK_SHARE", "MIN_SIDE", "SPIKE_GAP", "SPIKE_SHARE",
           "check_scan_content", "spike_range", "widest_gap"]

MIN_SIDE = 4
"""Voxels an image needs along each in-plane axis (every axis of a 2D image; the two
longest of a 3D one, whose shortest may be a stack of few slices)."""
SPIKE_SHARE = 0.01
"""Spikes are at most this share of an image's voxels at either end (and at least one) ..."""
SPIKE_GAP = 1.5
"""... cut off from the rest by a gap of values wider than this many times the range of the
middle 98 % (1 - 2 × SPIKE_SHARE) of the voxels: the min–max range is then at least 2.5
times that of the image's content. Above every image of the public example sets
(docs/refusals.md "Scan content")."""
BLANK_SHARE = 1e-4
"""An image is blank when all its voxels but this share (at either end) hold one value ...
"""
BLANK_RTOL = 1e-4
"""... or differ by less than this fraction of their level (float noise around a constant)."""


_Split = tuple[np.ndarray, int, int]


def _split(array: np.ndarray) -> _Split:
    """``array`` flattened and partitioned at the blank and spike shares; ``(part, k, m)``:
    ``part[k]``/``part[n-k-1]`` bound all but the blank share, ``part[m]``/``part[n-m-1]``
    the middle of the spike rule."""
    flat = np.ravel(array)
    n = flat.size
    k, m = max(1, int(n * BLANK_SHARE)), max(1, int(n * SPIKE_SHARE))
    if n <= 2 * m + 1:
        return np.sort(flat), min(k, (n - 1) // 2), min(m, (n - 1) // 2)
    return np.partition(flat, sorted({k, m, n - m - 1, n - k - 1})), k, m


def _blank(split: _Split) -> float | None:
    """The one value an image holds everywhere (but for :data:`BLANK_SHARE` of its voxels,
    within :data:`BLANK_RTOL`), or None."""
    part, k, _ = split
    lo, hi = float(part[k]), float(part[part.size - k - 1])
    return lo if hi - lo <= BLANK_RTOL * max(abs(lo), abs(hi)) else None


def _ends(split: _Split) -> tuple[np.ndarray, np.ndarray, float] | None:
    """The lowest and highest :data:`SPIKE_SHARE` of the voxels with the middle's bounds,
    sorted (float64), and the middle's range; None where the middle holds one value."""
    part, _, m = split
    n = part.size
    span = float(part[n - m - 1]) - float(part[m])
    if span <= 0 or n * SPIKE_SHARE < 1:  # too few voxels to tell a spike from the rest
        return None
    return (np.sort(part[:m + 1]).astype(np.float64), np.sort(part[n - m - 1:]).astype(np.float64),
            span)


def widest_gap(array: np.ndarray) -> float:
    """The widest gap of values among the ends of ``array``, in ranges of its middle: what
    :data:`SPIKE_GAP` is compared with (0 where the middle holds one value)."""
    ends = _ends(_split(array))
    if ends is None:
        return 0.0
    bottom, top, span = ends
    return float(max(np.diff(bottom).max(initial=0), np.diff(top).max(initial=0))) / span


def spike_range(array: np.ndarray) -> tuple[float, float] | None:
    """The range of ``array`` without its spikes, or None where it has none.

    Spikes: at most :data:`SPIKE_SHARE` of the voxels at either end, beyond a gap of values
    wider than :data:`SPIKE_GAP` times the range of the middle; the bound is the nearest
    value on the near side of the gap, so no voxel of the rest is clipped.
    """
    return _spikes(_split(array))


def _spikes(split: _Split) -> tuple[float, float] | None:
    ends = _ends(split)
    if ends is None:
        return None
    bottom, top, span = ends
    up = np.flatnonzero(np.diff(top) > SPIKE_GAP * span)
    down = np.flatnonzero(np.diff(bottom) > SPIKE_GAP * span)
    if not (up.size or down.size):
        return None
    return (float(bottom[down[-1] + 1]) if down.size else float(bottom[0]),
            float(top[up[0]]) if up.size else float(top[-1]))


def check_scan_content(array: np.ndarray, path: Path, labelled: bool = False) -> bool:
    """Refuse an image too narrow or too uniform to be a scan; say its spikes.

    ``array``: an image's voxels, ``(X, Y)`` or ``(X, Y, Z)``, finite. ``labelled``: the case
    has label maps, beside which a blank image is kept: returns True for it, so that
    :func:`segfew.data.read.read_case` checks that they are empty. Raises
    :class:`DataError` naming ``path``; warns :class:`DataWarning` for spikes.
    """
    sides = sorted(array.shape)
    if min(sides if array.ndim == 2 else sides[1:]) < MIN_SIDE:
        raise DataError(f"an image of {'×'.join(map(str, array.shape))} voxels is no scan: "
                        f"fewer than {MIN_SIDE} along an in-plane axis", path)
    split = _split(array)  # one partition for both rules
    value = _blank(split)
    if value is not None:
        if labelled:
            return True
        raise DataError(f"the image holds one value ({value:g}) everywhere (but for at most "
                        f"{BLANK_SHARE:.2%} of its voxels): nothing to segment or classify",
                        path)
    rest = _spikes(split)
    if rest is None:
        return False
    said = []
    for side, beyond, bound in (("below", array < rest[0], rest[0]),
                                ("above", array > rest[1], rest[1])):
        n = int(np.count_nonzero(beyond))
        if n:
            far = float(array.min() if side == "below" else array.max())
            said.append(f"{n} voxel(s) lie far {side} the rest of the image, which ends at "
                        f"{bound:g} (they reach {far:g})")
    warnings.warn(DataWarning(
        f"{'; '.join(said)}: the network's intensity scaling clips them to the rest, so that "
        "they do not squeeze the image's contrast", path), stacklevel=3)
    return False
