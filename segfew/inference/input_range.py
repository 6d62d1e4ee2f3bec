"""What measurements in arbitrary units depend on: the training images' grid and stored values.

A file without a real voxel size (a PNG, a JPEG, an identity-affine NIfTI) is measured in
pixels or voxels (:mod:`segfew.inference.measure`): a structure's area in pixels compares
only between images of one grid — the same scans exported at half the pixels give a quarter
of the area — and so do its texture's run lengths and zone sizes. Intensity statistics
(``S_intensity_mean_c``, …) are in the stored values' own unit: a 16-bit re-export of 8-bit
pixels multiplies them by 257. Neither gives an error: the classifier answers, confidently,
on values it never saw.

So a measures classifier that *uses* such measurements (importance above 0) records, when
fitted, what its training images covered (:func:`fitted_range`, kept in the model file's
metrics under :data:`KEY`):

- ``grid`` (px or voxel sizes used): per channel, the smallest and the largest in-plane
  grid (the two largest axes of the array as read; compared by their geometric mean, the
  "linear size" in pixels);
- ``values`` (stored-scale intensities used): per channel, the range over the training
  images of each image's 1st and 99th percentile of stored values and of their spread
  (99th − 1st), and which of ``scale`` (spread) and ``offset`` (level) the used measurements
  depend on.

:func:`outside_range` then says, for a case at ``predict`` or ``evaluate``, what lies outside
in one :class:`segfew.errors.DataWarning` naming its file; the caller flags its row
``low_confidence``. Tolerances: a linear size more than :data:`GRID_TOLERANCE` times outside
the training range; a spread more than :data:`SCALE_TOLERANCE` times outside it; a 1st
percentile off the training range by more than :data:`OFFSET_SHARE` of the widest training
spread. A model file without the record (older, or using none of these measurements) is not
checked.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from segfew.errors import DataWarning
from segfew.io import read_image

if TYPE_CHECKING:
    from segfew.data import Case

__all__ = ["GRID_TOLERANCE", "KEY", "OFFSET_SHARE", "SCALE_TOLERANCE", "fitted_range",
           "image_facts", "outside_range"]

#: the model file's metrics key of the record
KEY = "measures_input_range"
#: how far (a factor) a case's linear grid size may lie outside the training range: the
#: patients of one data set differ by up to a third (ACDC's in-plane grids), a re-export at
#: half the pixels by 2
GRID_TOLERANCE = 1.3
#: how far (a factor) a case's spread of stored values may lie outside the training range:
#: the patients of one data set differ several-fold (ACDC scales each volume), a change of
#: bit depth by 16 (8 to 12 bits) or 257 (8 to 16 bits)
SCALE_TOLERANCE = 8.0
#: how far a case's 1st percentile may lie outside the training range, in widest spreads
OFFSET_SHARE = 0.25
#: at most this many values of an image go into its percentiles (an even subsample)
_SAMPLE = 1_000_000

_GRID = re.compile(r"_(px|vox)_")  # a size in pixels or voxels
_SCALE = re.compile(r"_intensity_(mean|sd|median|p10|p90|iqr)_")  # in the stored unit
_OFFSET = re.compile(r"_intensity_(mean|median|p10|p90)_|_surround_ring_ratio_")  # level
_FLAGGED = "(a prediction on such a case is flagged low_confidence)"


def _channels(names: Sequence[str], channels: Sequence[str]) -> list[str]:
    """The channels that measurements ``names`` are taken on: each name's last word where it
    is a channel, every channel for a map of them all (``…_all``)."""
    out: set[str] = set()
    for name in names:
        last = name.rpartition("_")[2]
        out |= {last} if last in channels else set(channels)
    return [c for c in channels if c in out]


def image_facts(array: np.ndarray) -> dict[str, Any]:
    """What an image's measurements in arbitrary units depend on: ``grid``, its in-plane
    size (the two largest axes, in array order; a 2D image's both), and ``p1``, ``p99``, the
    1st and 99th percentiles of its finite stored values (an even subsample of at most
    ``_SAMPLE``)."""
    shape = array.shape
    axes = sorted(sorted(range(len(shape)), key=lambda a: -shape[a])[:2])
    flat = array.ravel()
    sample = flat[:: max(1, flat.size // _SAMPLE)].astype(np.float64)
    sample = sample[np.isfinite(sample)]
    p1, p99 = (float(v) for v in np.percentile(sample, [1, 99])) if sample.size else (0.0, 0.0)
    return {"grid": [int(shape[a]) for a in axes], "p1": p1, "p99": p99}


def _linear(grid: Sequence[int]) -> float:
    return math.sqrt(float(np.prod(grid)))


def _read(case: Case, channels: Sequence[str]) -> dict[str, tuple[Path, dict[str, Any]]]:
    """:func:`image_facts` of ``case``'s images of ``channels``, with their files."""
    paths = dict(zip(case.channel_names, case.images, strict=True))
    return {c: (paths[c], image_facts(read_image(paths[c]).array))
            for c in channels if c in paths}


def fitted_range(cases: Sequence[Case], used: Sequence[str], names: Sequence[str]
                 ) -> dict[str, Any] | None:
    """The record of what the training ``cases`` covered, for the measurements ``used`` by
    the fitted classifier (module docstring); None when none of them depends on the grid or
    the stored values. ``names``: every measurement the model was fitted on (its sizes are
    in pixels or voxels when any of them is). Re-reads the training images: DataError
    (one line, naming the file) when one cannot be read."""
    channels = list(cases[0].channel_names)
    in_pixels = any(_GRID.search(n) for n in names)
    grid = [n for n in used if _GRID.search(n) or (in_pixels and "_texture_" in n)]
    scale = [n for n in used if _SCALE.search(n)]
    offset = [n for n in used if _OFFSET.search(n)]
    if not (grid or scale or offset):
        return None
    wanted = _channels([*grid, *scale, *offset], channels)
    facts = [_read(case, wanted) for case in cases]
    record: dict[str, Any] = {}
    if grid:
        unit = "voxels" if any("_vox_" in n for n in names) else "pixels"
        by: dict[str, Any] = {}
        for c in _channels(grid, channels):
            grids = sorted((f[c][1]["grid"] for f in facts), key=_linear)
            by[c] = {"smallest": grids[0], "largest": grids[-1]}
        record["grid"] = {"unit": unit, "channels": by}
    if scale or offset:
        by = {}
        for c in _channels([*scale, *offset], channels):
            p1 = [f[c][1]["p1"] for f in facts]
            p99 = [f[c][1]["p99"] for f in facts]
            spread = [b - a for a, b in zip(p1, p99, strict=True)]
            by[c] = {"p1": [min(p1), max(p1)], "p99": [min(p99), max(p99)],
                     "spread": [min(spread), max(spread)]}
        record["values"] = {"scale": bool(scale), "offset": bool(offset), "channels": by}
    return record


def _shown(grid: Sequence[int]) -> str:
    return " × ".join(str(int(v)) for v in grid)


def _grid_problem(facts: Mapping[str, Any], fitted: Mapping[str, Any], unit: str) -> str | None:
    small, large = fitted["smallest"], fitted["largest"]
    size = _linear(facts["grid"])
    if _linear(small) / GRID_TOLERANCE <= size <= _linear(large) * GRID_TOLERANCE:
        return None
    slices = "" if unit == "pixels" else "'s slices"
    trained = (f"{_shown(small)}" if list(small) == list(large)
               else f"{_shown(small)} to {_shown(large)}")
    return (f"sizes are in {unit} and this image{slices} {'is' if not slices else 'are'} "
            f"{_shown(facts['grid'])} where the model was fitted on {trained} "
            f"{'images' if not slices else 'slices'}: its sizes are not comparable — re-export "
            "at the training grid or give real voxel sizes")


def _number(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}"


def _value_problem(facts: Mapping[str, Any], fitted: Mapping[str, Any], scale: bool,
                   offset: bool) -> str | None:
    spread, (lo, hi) = facts["p99"] - facts["p1"], fitted["spread"]
    if scale and (spread > hi * SCALE_TOLERANCE or spread * SCALE_TOLERANCE < lo):
        wider = spread > hi
        times = spread / hi if wider else lo / max(spread, 1e-12)
        return (f"the model reads intensities as stored, and this image's values span "
                f"{_number(facts['p1'])} to {_number(facts['p99'])} (outliers aside), "
                f"{times:.3g} times {'wider' if wider else 'narrower'} than the training "
                f"images' ({_number(lo)} to {_number(hi)} wide): stored at another bit depth "
                "or scale — export as the training images were, or retrain on such images")
    first, (low, high) = facts["p1"], fitted["p1"]
    margin = OFFSET_SHARE * hi
    if offset and not low - margin <= first <= high + margin:
        return (f"the model reads intensities as stored, and this image's values start at "
                f"{_number(first)} (outliers aside) where the training images' started at "
                f"{_number(low)} to {_number(high)}: shifted by an offset (another intercept "
                "or signedness) — export as the training images were, or retrain on such "
                "images")
    return None


def outside_range(case: Case, record: Mapping[str, Any] | None) -> DataWarning | None:
    """The warning of a ``case`` outside what the model's ``record`` (:func:`fitted_range`)
    says its training images covered, naming the file of the first channel outside; None
    when all lie inside, or there is no record (an older model file). Re-reads the case's
    images of the recorded channels: DataError (one line, naming the file) when one cannot
    be read."""
    if not record:
        return None
    grid, values = record.get("grid"), record.get("values")
    wanted = [*(grid or {}).get("channels", {}), *(values or {}).get("channels", {})]
    facts = _read(case, list(dict.fromkeys(wanted)))
    problems: list[str] = []
    where: Path | None = None
    for channel, (path, fact) in facts.items():
        said: list[str | None] = []
        if grid and channel in grid["channels"]:
            said.append(_grid_problem(fact, grid["channels"][channel], grid["unit"]))
        if values and channel in values["channels"]:
            said.append(_value_problem(fact, values["channels"][channel],
                                       bool(values.get("scale")), bool(values.get("offset"))))
        new = [s for s in said if s and s not in problems]
        if new and where is None:
            where = path
        problems += new
    if where is None:
        return None
    return DataWarning(f"{'; and '.join(problems)} {_FLAGGED}", where)
