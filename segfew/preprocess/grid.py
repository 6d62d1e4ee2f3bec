"""Bring images and label maps onto the network grid, and back (SPEC §5).

Training and prediction both go through :func:`preprocess_image` / :func:`preprocess_label`
with the same :class:`Preprocessing`, which every model file stores, so an
image is normalised and resized identically in both. :func:`restore` is the exact inverse
geometry, so predicted label and probability maps can be written back in the source grid.

Geometry, in order (``restore`` undoes it in reverse):

1. 3D only: the slice axis (``cfg.slice_axis``; ``"auto"``: :func:`slice_axis_for`) is
   moved last — the layout a 2D network trained on slices uses (it slices along the last
   axis).
2. ``keep_aspect``: the field of view is padded (never cropped, so no anatomy is lost)
   around the centre to the grid's aspect ratio — square for a square grid.
3. Resize: linear for images (Gaussian anti-aliasing when shrinking, as scikit-image does),
   nearest for labels. ``scipy.ndimage.zoom`` with ``grid_mode=True`` is used: it is what
   ``skimage.transform.resize`` calls internally, minus a float64 copy, and nearest
   resizing with it is exactly invertible whenever the grid is at least as large as the
   source.

The intensity is normalised on the source array, before any resampling, so CLAHE sees the
image at its own resolution.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from scipy import ndimage

from segfew.choices import Intensity
from segfew.data.content import spike_range
from segfew.errors import DataError, DataWarning, SpecError
from segfew.preprocess.clahe import equalize_adapthist
from segfew.runtime import check_free_memory

__all__ = [
    "PREPROCESS_BYTES_PER_VOXEL",
    "Preprocessing",
    "check_memory",
    "grid_shape",
    "normalise",
    "preprocess_image",
    "preprocess_label",
    "restore",
    "slice_axis_for",
    "stack_axis",
]

#: peak bytes per voxel of a scan's own grid to bring it onto the network grid (CLAHE's
#: float64 tiles, the anti-aliasing filter, int64 label maps); docs/benchmarks.md "Memory
#: of one case"
PREPROCESS_BYTES_PER_VOXEL = 64

#: a 3D image is a stack of slices when one axis is spaced at least this many times wider
#: than each other (cine MRI: 5–10 mm slices, 1–2 mm pixels) ...
STACK_ANISOTROPY = 2.0
#: ... or, where the spacing is the same on every axis, holds at most this fraction of the
#: voxels of each other axis
STACK_FEW = 0.25


@dataclass(frozen=True)
class Preprocessing:
    """How an image is brought onto the network grid (SPEC §5).

    ``size``: grid size per axis (one value: every axis; see :func:`grid_shape`);
    ``intensity``: see :func:`normalise`; ``window``: CT window (low, high) in HU, applied
    before scaling; ``clahe_clip``: CLAHE clip limit; ``keep_aspect``: pad to the grid's
    aspect ratio before resizing; ``slice_axis``: the axis of a 3D volume that a 2D network
    slices along (``"auto"``: per image, :func:`slice_axis_for`). Run specs and model files
    hold it as :class:`segfew.spec.PreprocessConfig`, which checks the values and gives
    this (``.plain()``).
    """

    size: tuple[int, ...] = (128,)
    intensity: Intensity = "clahe"
    window: tuple[float, float] | None = None
    clahe_clip: float = 0.01
    keep_aspect: bool = False
    slice_axis: int | Literal["auto"] = "auto"


# ---------------------------------------------------------------- intensity


def normalise(array: np.ndarray, cfg: Preprocessing) -> np.ndarray:
    """Normalise intensities as ``cfg.intensity`` says; float32, same shape.

    - ``clahe``: rescale to [0, 1], CLAHE (2D or 3D), then 0–255 (the paper's MR setting).
    - ``ct``: Hounsfield units kept.
    - ``minmax``: [0, 1] over the image.
    - ``zscore``: mean 0, standard deviation 1 over the image.

    ``cfg.window`` (low, high), when given, clips the intensities first, in every mode;
    without one, spikes (:func:`segfew.data.content.spike_range`: a few voxels cut off from
    the rest by a wide gap of values) are clipped to the rest, in every mode.

    Non-finite voxels (NaN, ±inf) become the image's finite minimum, since no scanner
    value means "missing" and one NaN would otherwise spread through every resize.
    """
    a = np.asarray(array, dtype=np.float32)
    if not np.all(np.isfinite(a)):
        finite = a[np.isfinite(a)]
        a = np.where(np.isfinite(a), a, finite.min() if finite.size else 0.0).astype(np.float32)
    if cfg.window is not None:  # a CT window is applied before any scaling
        a = np.clip(a, *cfg.window)
    elif (rest := spike_range(a)) is not None:  # a dead pixel must not squeeze the rest
        a = np.clip(a, *rest)
    if cfg.intensity == "ct":
        return a.copy() if a is array else a
    if cfg.intensity == "zscore":
        std = float(a.std())
        return ((a - a.mean()) / (std if std > 0 else 1.0)).astype(np.float32)
    lo, hi = float(a.min()), float(a.max())
    unit = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    if cfg.intensity == "minmax":
        return unit.astype(np.float32)
    return (_clahe(unit, cfg.clahe_clip) * 255.0).astype(np.float32)


def _clahe(unit: np.ndarray, clip: float) -> np.ndarray:
    """CLAHE of a [0, 1] image, [0, 1] out: scikit-image's numbers (:mod:`segfew.preprocess.clahe`);
    3D volumes are always treated as volumes, whatever their last axis' length."""
    if float(unit.max()) <= 0:
        return unit
    return np.asarray(equalize_adapthist(unit, clip_limit=clip), dtype=np.float32)


# ---------------------------------------------------------------- geometry


@dataclass(frozen=True)
class _Plan:
    """How a source grid maps onto the network grid (all shapes in grid axis order)."""

    perm: tuple[int, ...]  # source axis of each grid axis
    moved: tuple[int, ...]  # source shape after the axis move
    fov: tuple[int, ...]  # shape after centred padding (== moved without keep_aspect)
    grid: tuple[int, ...]

    @property
    def pad(self) -> tuple[tuple[int, int], ...]:
        extra = (f - m for m, f in zip(self.moved, self.fov, strict=True))
        return tuple((e // 2, e - e // 2) for e in extra)


def stack_axis(shape: Sequence[int], spacing: Sequence[float] | None) -> int | None:
    """The slice axis of a 3D stack of slices, None for a volume (or a 2D image).

    By spacing (mm): the axis spaced STACK_ANISOTROPY times wider than each other. Where
    the spacing says nothing — equal on every axis, as in files written with an identity
    affine — by shape: an axis holding at most STACK_FEW times the voxels of each other
    (cine MRI: 6–18 slices of 200+ pixels).
    """
    if len(shape) != 3:
        return None
    if spacing is not None and len(set(round(float(v), 3) for v in spacing)) > 1:
        widest = max(range(3), key=lambda a: spacing[a])
        others = max(spacing[a] for a in range(3) if a != widest)
        return widest if spacing[widest] >= STACK_ANISOTROPY * others else None
    fewest = min(range(3), key=lambda a: (shape[a], -a))
    others = min(shape[a] for a in range(3) if a != fewest)
    return fewest if shape[fewest] <= STACK_FEW * others else None


def slice_axis_for(cfg: Preprocessing, shape: Sequence[int],
                   spacing: Sequence[float] | None) -> int:
    """The axis of a 3D image moved last: the one a 2D network slices along.

    ``cfg.slice_axis`` when it is a number; a DataWarning says so when the image is a stack
    whose slices lie along another axis (a model file from before ``"auto"`` meeting an
    oblique series). ``"auto"``: for a 2D network's grid (two sizes), the
    :func:`stack_axis` — a short-axis stack's slice axis, whichever axis of the RAS array
    an oblique acquisition lands on — else the last, axial in RAS. A 3D grid is never
    reordered: a 3D network sees every volume in RAS axis order.
    """
    axis = stack_axis(shape, spacing)
    if cfg.slice_axis != "auto":
        if axis is not None and axis != cfg.slice_axis and len(cfg.size) == 2:
            warnings.warn(DataWarning(  # one message per pair of axes: shown once
                f"a stack with its slices along axis {axis} is cut along axis "
                f"{cfg.slice_axis}, as slice_axis = {cfg.slice_axis} says: retrain with "
                'slice_axis = "auto", or reslice such series'), stacklevel=2)
        return cfg.slice_axis
    return axis if axis is not None and len(cfg.size) == 2 else 2


def _plan(spatial_shape: tuple[int, ...], cfg: Preprocessing,
          spacing: Sequence[float] | None = None) -> _Plan:
    shape = tuple(int(s) for s in spatial_shape)
    dim, size = len(shape), tuple(cfg.size)
    if dim not in (2, 3) or min(shape, default=0) < 1:
        raise DataError(f"expected a 2D or 3D image, got shape {shape}")
    if dim == 2:
        if len(size) == 3:
            raise SpecError(f"size {list(size)} has 3 axes, but the images are 2D")
        perm: tuple[int, ...] = (0, 1)
        moved = shape
        grid: tuple[int, ...] = size * 2 if len(size) == 1 else size
        resized: tuple[int, ...] = (0, 1)
    else:
        s = slice_axis_for(cfg, shape, spacing)
        perm = (*(a for a in range(3) if a != s), s)
        moved = tuple(shape[a] for a in perm)
        if len(size) == 2:  # a 2D network: in-plane resized, native slice count kept
            grid, resized = (*size, moved[2]), (0, 1)
        else:
            grid, resized = (size * 3 if len(size) == 1 else size), (0, 1, 2)
    fov = moved
    if cfg.keep_aspect:
        scale = max(moved[a] / grid[a] for a in resized)
        fov = tuple(
            max(m, int(np.ceil(scale * g - 1e-6))) if a in resized else m
            for a, (m, g) in enumerate(zip(moved, grid, strict=True))
        )
    return _Plan(perm=perm, moved=moved, fov=fov, grid=tuple(grid))


def grid_shape(spatial_shape: tuple[int, ...], cfg: Preprocessing,
               spacing: Sequence[float] | None = None) -> tuple[int, ...]:
    """The network-grid shape of an image with this spatial shape (and voxel ``spacing`` in
    mm, which ``slice_axis = "auto"`` reads; every function here takes it).

    One size value: that size on every axis. Two values on a 3D image: the in-plane axes
    get them and the slice axis keeps its native count, moved last (a 2D network's
    layout). Three values: a full 3D grid, in grid order (slice axis last).
    """
    return _plan(spatial_shape, cfg, spacing).grid


def _resize(a: np.ndarray, shape: tuple[int, ...], order: int, anti_alias: bool = False
            ) -> np.ndarray:
    if a.shape == shape:
        return a
    factors = np.array(shape, dtype=float) / np.array(a.shape, dtype=float)
    if anti_alias and np.any(factors < 1):
        sigma = np.maximum(0.0, (1.0 / factors - 1.0) / 2.0)
        a = ndimage.gaussian_filter(a, sigma, mode="nearest")
    out = ndimage.zoom(a, factors, order=order, mode="nearest", grid_mode=True)
    if out.shape != shape:  # zoom rounds the output shape; guard against float round-off
        raise AssertionError(f"resize produced {out.shape}, expected {shape}")
    return out


def _to_grid(a: np.ndarray, plan: _Plan, order: int, fill: float, anti_alias: bool
             ) -> np.ndarray:
    a = np.transpose(a, plan.perm)
    if plan.fov != plan.moved:
        a = np.pad(a, plan.pad, mode="constant", constant_values=fill)
    return np.ascontiguousarray(_resize(a, plan.grid, order, anti_alias))


def check_memory(arrays: Sequence[np.ndarray], path: str | Path | None = None) -> None:
    """Refuse, before any work, a scan whose own grid is too large to pre-process in the
    memory free (:data:`PREPROCESS_BYTES_PER_VOXEL` per voxel of its largest array).

    The reader bounds a file at 2³⁰ voxels; bringing one that size onto the grid would
    need 64 GiB. Raises :class:`DataError` naming ``path``.
    """
    shape = max((a.shape for a in arrays), key=lambda s: int(np.prod(s)), default=())
    check_free_memory(int(np.prod(shape)) * PREPROCESS_BYTES_PER_VOXEL,
                      f"bringing this scan ({'×'.join(map(str, shape))} voxels) onto the "
                      "network grid", path)


def preprocess_image(array: np.ndarray, cfg: Preprocessing,
                     spacing: Sequence[float] | None = None, path: Path | None = None
                     ) -> np.ndarray:
    """Normalise, then resize linearly onto the grid; float32 of shape ``grid_shape``.

    Padding (``keep_aspect``) uses the normalised image's minimum, i.e. its background.
    Raises :class:`DataError` naming ``path`` for an image whose values all lie outside
    ``cfg.window``: clipped, every voxel would be one value.
    """
    if cfg.window is not None:
        _check_window(array, cfg.window, path)
    plan = _plan(array.shape, cfg, spacing)
    a = normalise(array, cfg)
    out = _to_grid(a, plan, order=1, fill=float(a.min()), anti_alias=True)
    return out.astype(np.float32, copy=False)


def _check_window(array: np.ndarray, window: tuple[float, float], path: Path | None) -> None:
    finite = np.asarray(array)[np.isfinite(array)]
    if finite.size == 0 or (lo := float(finite.min())) == (hi := float(finite.max())):
        return  # a constant image is the door's to refuse
    if hi <= window[0] or lo >= window[1]:
        raise DataError(f"its values ({lo:g} to {hi:g}) all lie outside the intensity window "
                        f"[{window[0]:g}, {window[1]:g}]: every voxel would be one value; check "
                        "[preprocess] window (in the scan's own units, e.g. HU)", path)


def preprocess_label(array: np.ndarray, cfg: Preprocessing,
                     spacing: Sequence[float] | None = None) -> np.ndarray:
    """Resize a label map onto the grid by nearest neighbour; int64 (padding is label 0)."""
    plan = _plan(array.shape, cfg, spacing)
    a = np.asarray(array)
    a = (np.rint(a) if a.dtype.kind == "f" else a).astype(np.int64)
    return _to_grid(a, plan, order=0, fill=0, anti_alias=False)


def restore(array: np.ndarray, source_shape: tuple[int, ...], cfg: Preprocessing,
            order: int, spacing: Sequence[float] | None = None) -> np.ndarray:
    """Map an array on the grid back to ``source_shape``: the inverse of the geometry above.

    ``order`` 0 for label maps, 1 for probabilities. Leading axes beyond the grid's (e.g.
    the class axis of ``(C, *grid)`` probabilities) are kept. A nearest round trip of a
    label map is exact when the grid is at least as large as the source on every axis;
    when it is smaller, boundaries move by at most about one source voxel per axis.
    """
    plan = _plan(tuple(source_shape), cfg, spacing)
    n = len(plan.grid)
    a = np.asarray(array)
    if a.shape[a.ndim - n:] != plan.grid:
        raise ValueError(f"array of shape {a.shape} is not on the grid {plan.grid}")
    lead = a.shape[: a.ndim - n]
    flat = a.reshape((-1, *plan.grid))
    crop = tuple(slice(lo, lo + m) for (lo, _), m in zip(plan.pad, plan.moved, strict=True))
    inverse = tuple(int(i) for i in np.argsort(plan.perm))
    out = [np.transpose(_resize(x, plan.fov, order)[crop], inverse) for x in flat]
    return np.ascontiguousarray(np.stack(out).reshape((*lead, *source_shape)))
