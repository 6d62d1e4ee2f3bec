"""Binary masks stored another way than 0/1: the label-value refusals that name them.

Two ways a two-valued mask reaches segfew looking like something else:

* stored as 0/255 (or 0/1/255, VOC's void border): :class:`BinaryMaskError`, whose
  ``values`` let a command that cannot remap (``predict``, ``evaluate`` of a classifier)
  give its own advice;
* resized or anti-aliased (bilinear, Lanczos, a blur): 0, a maximum, and grey levels that
  lie at the edge of the maximum's region only (:func:`check_interpolated`). Its levels are
  no labels: numbered consecutively they would give a network one output per grey level.
  A map of real labels with sparse codes (FreeSurfer's 0, 2, 41, 1035, 2035) has its values
  in regions of their own, most of them far from both 0 and the largest code.
"""

from __future__ import annotations

import math
from collections.abc import Set
from pathlib import Path

import numpy as np

from segfew.errors import DataError

__all__ = ["EDGE_REACH", "EDGE_SHARE", "BinaryMaskError", "InterpolatedMaskError",
           "check_binary_255", "check_interpolated"]

EDGE_REACH = 8
"""Voxels (chessboard distance): how far from the maximum's region the grey levels of a
resized or anti-aliased mask lie (a bilinear edge is 1 to 3 voxels wide, an 8× upscale's 8)."""
EDGE_SHARE = 0.9
"""The share of the grey-level voxels that must lie that near for a map to be called an
interpolated binary mask."""
GRADED_SHARE = 0.75
"""... and the share of them that must lie on a slope: a neighbour above and one below (a
label's region has an inside, whose neighbours are all itself; Lanczos rings a little)."""
HARD_EDGE_SHARE = 0.75
"""At most this share of an integer map's maximum's edge voxels may touch 0 head-on: an
anti-aliased edge passes through grey levels, labels laid side by side meet 0 directly."""
MIN_INT_TOP = 16
"""An integer map is looked at only when its maximum is at least this (0/255, 0/65535,
0/100 …) and it has at least ``MIN_INT_LEVELS`` values between: a 0–3 map is labels."""
MIN_INT_LEVELS = 2
MIN_EDGE_VOXELS = 8
"""Fewer grey-level voxels than this are too few to show an edge."""
FLOAT_TOL = 1e-3
"""A float map's 0 and maximum are taken within this (as the rounding tolerance)."""


class BinaryMaskError(DataError):
    """A binary mask stored as 0/255 (or 0/1/255): ``values`` holds the values found."""

    values: tuple[int, ...] = ()


class InterpolatedMaskError(DataError):
    """A binary mask resized or anti-aliased: grey levels at the edge of its structure."""


def check_binary_255(present: Set[int], allowed: Set[int] | None, path: Path) -> None:
    """Raise :class:`BinaryMaskError` for a map whose values are 0/255 or 0/1/255, unless
    255 is declared (``allowed``), naming ``--label-map 255:1`` (and ``255:0`` for a
    VOC-style void border)."""
    if 255 not in present or not present <= {0, 1, 255} or (allowed and 255 in allowed):
        return
    void = (" — or 255:0 where 255 marks a border to ignore (VOC-style masks), not the "
            "structure" if 1 in present else "")
    err = BinaryMaskError(f"binary mask stored as {'/'.join(str(v) for v in sorted(present))}: "
                          f"remap it with --label-map 255:1{void} (spec key label_map; "
                          "data.label_map in a pretrain, train-classifier or experiment spec)",
                          path)
    err.values = tuple(sorted(present))
    raise err


def check_interpolated(arr: np.ndarray, path: Path) -> None:
    """Raise :class:`InterpolatedMaskError` (one line, naming ``path``) when the label map
    ``arr`` (integer, or finite float; any shape) looks like a binary mask that was resized
    or anti-aliased: it holds 0 and a maximum, and the values between lie (nearly) only at
    the edge between the two — within ``EDGE_REACH`` voxels of the maximum, on a slope from
    0 up to it. Integer maps are looked at when their maximum is ``MIN_INT_TOP`` or more
    with ``MIN_INT_LEVELS`` values between (so 0–3 labels never), and where the maximum's
    region seldom meets 0 head-on along some axis (``HARD_EDGE_SHARE``)."""
    if arr.size == 0 or arr.ndim == 0:
        return
    floats = arr.dtype.kind == "f"
    top = float(arr.max())
    tol = FLOAT_TOL if floats else 0.0
    if float(arr.min()) < -tol or top <= tol:
        return
    lo, hi = np.abs(arr) <= tol, arr >= top - tol
    mid = ~(lo | hi)
    levels = np.unique(arr[mid])
    if np.count_nonzero(mid) < MIN_EDGE_VOXELS or not lo.any() or (
            not floats and (top < MIN_INT_TOP or levels.size < MIN_INT_LEVELS)):
        return
    box = _box(hi, 2 * EDGE_REACH)  # every grey level near the maximum lies in it
    near = mid[box] & _grown(hi[box], EDGE_REACH)
    if np.count_nonzero(near) < EDGE_SHARE * np.count_nonzero(mid):
        return
    values = arr[box]
    sloped = near & (_extreme(values, np.maximum) > values) & (_extreme(values, np.minimum)
                                                                < values)
    if np.count_nonzero(sloped) < GRADED_SHARE * np.count_nonzero(mid):
        return
    if not floats and _hard_edges(hi[box], lo[box]) > HARD_EDGE_SHARE:
        return
    cut = top / 2 if floats else math.ceil(top / 2)
    raise InterpolatedMaskError(
        f"it looks like a binary mask resized or anti-aliased ({levels.size} grey levels "
        f"between 0 and {top:g} at the edge of the {top:g} region): re-save it with "
        f"nearest-neighbour interpolation, or threshold it (values ≥ {cut:g} the structure, "
        "the rest 0)", path)


def _box(mask: np.ndarray, pad: int) -> tuple[slice, ...]:
    """The bounding box of ``mask``'s True voxels, ``pad`` voxels wider on every side."""
    box = []
    for axis in range(mask.ndim):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(max(int(hits[0]) - pad, 0), int(hits[-1]) + pad + 1))
    return tuple(box)


def _hard_edges(hi: np.ndarray, lo: np.ndarray) -> float:
    """The share of ``hi``'s edge voxels that touch ``lo`` head-on, along the axis where it
    is smallest (a 3D mask resized slice by slice keeps hard edges across its slices)."""
    shares = []
    for axis in range(hi.ndim):
        rim = hi & _extreme(~hi, np.logical_or, axes=(axis,))
        if rim.any():
            touching = np.count_nonzero(rim & _extreme(lo, np.logical_or, axes=(axis,)))
            shares.append(touching / np.count_nonzero(rim))
    return min(shares, default=0.0)


def _grown(mask: np.ndarray, reach: int) -> np.ndarray:
    """``mask`` dilated by ``reach`` voxels along every axis and diagonal (a cube)."""
    return _extreme(mask, np.logical_or, reach)


def _extreme(values: np.ndarray, pick: np.ufunc, reach: int = 1,
             axes: tuple[int, ...] | None = None) -> np.ndarray:
    """``pick`` (maximum, minimum, logical_or) of ``values`` over the cube of ``reach``
    voxels around each voxel (a line along ``axes``' only), one axis at a time."""
    for axis in range(values.ndim) if axes is None else axes:
        out = values.copy()
        for step in range(1, min(reach, values.shape[axis] - 1) + 1):
            ahead = [slice(None)] * values.ndim
            behind = list(ahead)
            ahead[axis], behind[axis] = slice(step, None), slice(None, -step)
            out[tuple(ahead)] = pick(out[tuple(ahead)], values[tuple(behind)])
            out[tuple(behind)] = pick(out[tuple(behind)], values[tuple(ahead)])
        values = out
    return values
