"""The one door through which every case reaches segfew: read all its files, check them all.

Every command — inspect, label, pretrain, train-classifier, evaluate, predict, experiment —
reads a :class:`~segfew.data.Case` with :func:`read_case` (pre-processing and its cache go
through it too, :func:`segfew.preprocess.cache.load_case`), so a case that one command refuses,
every command refuses, with the same one-line :class:`~segfew.errors.DataError`. What the door
changes and goes on with is a :class:`~segfew.errors.DataWarning` naming the file, which
``segfew inspect`` lists too.

The checks, in order:

1. Each file is read within :class:`segfew.io.ReadLimits` (its header is checked before
   any voxel is read); DICOM series must be evenly spaced and untilted.
2. Every channel and label map shares the first channel's shape and geometry: the
   affines agree to ``GEOMETRY_ATOL`` mm (and 1e-5 relative).
3. Images: NaN and ±inf voxels are replaced by the image's finite minimum, with a warning
   that gives their count (no scanner value means "missing"; one NaN would otherwise
   spread through every resize). An image without one finite voxel is an error.
4. Label maps (:func:`check_label_values`): not colour; ``label_map`` remaps values
   first; integers (a float map within ``ROUNDING_TOL`` of integers is rounded, with a
   warning); no negative values; a binary mask stored as 0/255 is an error that names
   ``--label-map 255:1``; values within the declared set, when one is given.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from segfew.data import Case
from segfew.errors import DataError, DataWarning
from segfew.io import Image, ReadLimits, read_image

__all__ = [
    "GEOMETRY_ATOL",
    "ROUNDING_TOL",
    "LabelRules",
    "check_label_values",
    "check_lossless",
    "check_same_grid",
    "consecutive_label_map",
    "read_case",
    "replace_non_finite",
]

GEOMETRY_ATOL = 1e-3
"""mm: how far the affines of one case's files may differ (rtol 1e-5 on top)."""
ROUNDING_TOL = 1e-3
"""A float label map this close to integers is rounded (with a warning), else refused."""


@dataclass(frozen=True)
class LabelRules:
    """What a label map must satisfy beyond being integer and non-negative.

    ``values``: the declared label set (None: any). ``remap``: values replaced before any
    check, e.g. ``{255: 1}`` for a 0/255 mask (``--label-map 255:1``).
    """

    values: frozenset[int] | None = None
    remap: Mapping[int, int] | None = None

    def key(self) -> str:
        """A stable text of the rules, for cache keys."""
        values = None if self.values is None else sorted(self.values)
        remap = None if not self.remap else sorted(self.remap.items())
        return f"values={values};remap={remap}"


def read_case(case: Case, rules: LabelRules | None = None, limits: ReadLimits | None = None
              ) -> tuple[list[Image], list[Image]]:
    """Read and check every file of ``case``: ``(channel images, label maps)``.

    Images keep their stored dtype (non-finite voxels replaced); label maps are returned
    with small unsigned integer arrays. Raises :class:`DataError` (one line, naming the
    file) on the first problem; warns :class:`DataWarning` on what it changed.
    """
    if case.problem is not None:
        raise DataError(case.problem)
    for path in case.labels:
        check_lossless(path)
    rules = rules or LabelRules()
    limits = limits if limits is not None else ReadLimits.from_env()
    images: list[Image] = []
    for path in case.images:
        img = read_image(path, limits)
        if images:
            check_same_grid(img, images[0])
        images.append(replace(img, array=replace_non_finite(img.array, path)))
    labels: list[Image] = []
    for path in case.labels:
        lab = read_image(path, limits)
        check_same_grid(lab, images[0])
        arr = check_label_values(lab.array, rules.values, path, rules.remap, colour=lab.colour)
        labels.append(replace(lab, array=arr))
    return images, labels


def source_shape(img: Image) -> tuple[int, ...]:
    """The shape in the file's own axis order, without trailing singleton axes."""
    shape = img.source_shape
    while len(shape) > img.dim and shape[-1] == 1:
        shape = shape[:-1]
    return shape


def check_same_grid(img: Image, first: Image) -> None:
    """Raise when ``img`` is not on ``first``'s grid (shape, then affine within tolerance)."""
    assert img.path is not None
    if img.shape != first.shape:
        raise DataError(f"shape {source_shape(img)} differs from {first.path} "
                        f"{source_shape(first)}", img.path)
    if not np.allclose(img.source_affine, first.source_affine, rtol=1e-5, atol=GEOMETRY_ATOL):
        raise DataError("geometry (affine/spacing/origin/direction) differs from "
                        f"{first.path} by more than {GEOMETRY_ATOL:g} mm", img.path)


def replace_non_finite(array: np.ndarray, path: Path) -> np.ndarray:
    """``array`` with NaN/±inf replaced by its finite minimum; warns with their count."""
    if array.dtype.kind not in "fc":
        return array
    finite = np.isfinite(array)
    if finite.all():
        return array
    if not finite.any():
        raise DataError("image has no finite voxel (all NaN or infinite)", path)
    low = array[finite].min()
    n = int(array.size - np.count_nonzero(finite))
    warnings.warn(DataWarning(f"{n} NaN/infinite voxel(s) of {array.size} replaced by the "
                              f"image's finite minimum ({float(low):g})", path), stacklevel=3)
    return np.where(finite, array, low).astype(array.dtype, copy=False)


SPARSE_MIN_TOP = 16
"""A label map whose largest value is at least this, and more than ``SPARSE_RATIO`` times
the number of values present, is a code book (FreeSurfer's 0, 2, 41, 1035, 2035), not
consecutive labels: a network would get an output per unused code."""
SPARSE_RATIO = 4


def check_lossless(label: Path) -> None:
    """Raise :class:`DataError` for a label map stored as JPEG, whose lossy compression
    changes label values: said from the name, before any file is read."""
    if Path(label).name.lower().endswith((".jpg", ".jpeg")):
        raise DataError("label map stored as JPEG, whose lossy compression changes label "
                        "values: masks must be stored losslessly: PNG, NIfTI, NRRD", label)


def check_label_values(label: np.ndarray, allowed: set[int] | frozenset[int] | None,
                       path: Path, remap: Mapping[int, int] | None = None,
                       colour: bool = False) -> np.ndarray:
    """Return ``label`` as an unsigned integer array, or raise :class:`DataError`.

    ``allowed`` is the declared label set (None: any non-negative integer); ``remap``
    replaces values before the checks; ``colour`` says the file held RGB pixels.
    """
    if colour:
        raise DataError("colour label map: give one integer label per pixel", path)
    check_lossless(path)
    arr = np.asarray(label)
    if arr.dtype.kind == "b":
        arr = arr.astype(np.uint8)
    elif arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise DataError("label map has NaN or infinite values", path)
        rounded = np.rint(arr)
        off = float(np.max(np.abs(arr - rounded))) if arr.size else 0.0
        if off > ROUNDING_TOL:
            worst = float(arr.flat[int(np.argmax(np.abs(arr - rounded)))])
            raise DataError(f"label map has non-integer values (e.g. {worst:g}); give one "
                            "integer label per voxel", path)
        if off > 0:
            warnings.warn(DataWarning(f"label map values rounded to integers (off by up to "
                                      f"{off:.2g})", path), stacklevel=3)
        arr = rounded.astype(np.int64)
    elif arr.dtype.kind not in "iu":
        raise DataError(f"label map has unsupported type {arr.dtype}", path)
    if remap:
        arr = _remap(arr, remap)
    values = np.unique(arr)
    if values.size and values[0] < 0:
        raise DataError(f"label map has negative values ({int(values[0])}); labels are 0 "
                        "(background), 1, 2, …", path)
    present = {int(v) for v in values}
    if 255 in present and present <= {0, 1, 255} and not (allowed and 255 in allowed):
        raise DataError(f"binary mask stored as {'/'.join(str(v) for v in sorted(present))}: "
                        "remap it with --label-map 255:1 (spec key label_map; data.label_map "
                        "in a pretrain spec)", path)
    if allowed is not None:
        bad = sorted(v for v in present if v not in allowed)
        if bad:
            raise DataError(f"label values {bad} outside the declared set {sorted(allowed)}", path)
    top = int(values[-1]) if values.size else 0
    if allowed is None and top >= SPARSE_MIN_TOP and top + 1 > SPARSE_RATIO * len(present):
        shown = sorted(present)
        remap_hint = ",".join(f"{v}:{i}" for i, v in enumerate(shown) if v != i)
        listed = ", ".join(str(v) for v in shown[:8]) + (", …" if len(shown) > 8 else "")
        raise DataError(f"label values {listed} are far sparser than their range 0..{top} "
                        f"({len(shown)} values, {top + 1} network outputs): remap them with "
                        f"--label-map {remap_hint if len(remap_hint) < 80 else 'OLD:NEW,…'}",
                        path)
    dtype = np.uint8 if top < 256 else np.uint16 if top < 65536 else np.int32
    return arr if arr.dtype == dtype else arr.astype(dtype)


def consecutive_label_map(paths: Iterable[Path], limits: ReadLimits | None = None
                          ) -> dict[int, int]:
    """``{value: index}`` over every value the label maps at ``paths`` hold, in order, so
    that sparse codes (FreeSurfer's 0, 2, 41, 1035, 2035) become 0, 1, 2, … (``label_map =
    "consecutive"``). Background 0, when present, stays 0. Raises :class:`DataError` for a
    map that cannot be read."""
    found: set[int] = set()
    for path in sorted(set(paths)):
        arr = read_image(path, limits).array
        values = np.unique(arr)
        if values.dtype.kind == "f":
            values = np.unique(np.rint(values[np.isfinite(values)]))
        found.update(int(v) for v in values)
    return {v: i for i, v in enumerate(sorted(found)) if v != i}


def _remap(arr: np.ndarray, remap: Mapping[int, int]) -> np.ndarray:
    out = arr.astype(np.int64, copy=True)
    for old, new in remap.items():
        out[arr == old] = new
    return out


def warn_placeholder_spacing(cases: Sequence[Case]) -> str | None:
    """Read the first case's first image; where its voxel size is a placeholder
    (:func:`segfew.io.placeholder_spacing`), say so in a :class:`DataWarning` — sizes and
    measurements are then in voxels (``vox``/``px``), not mm — and return why (else None).

    One file stands for the data set (its files come from one source); ``inspect`` checks
    every case. A file that cannot be read is left to the door that reads it next.
    """
    first = next((c for c in cases if c.images), None)
    if first is None:
        return None
    try:
        image = read_image(first.images[0])
    except DataError:
        return None
    why = image.spacing_placeholder
    if why is not None:
        unit = "voxels (vox)" if image.dim == 3 else "pixels (px)"
        warnings.warn(DataWarning(
            f"no real voxel size ({why}): sizes are in {unit}, not mm; measurements say "
            f"{'vox' if image.dim == 3 else 'px'} instead of ml/mm", first.images[0]),
            stacklevel=2)
    return why
