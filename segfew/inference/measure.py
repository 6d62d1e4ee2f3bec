"""Named measurements of a label map on its source grid, in physical units.

Beyond Wong et al. 2018 (SPEC §7 motivates it): with 10–20 labelled cases, a few dozen
measurements of the structures a segmentation network finds carry what a clinician reads —
volumes, wall thickness and, across cine phases, ejection fractions. They are taken on the
label map **mapped back to the source grid** and scaled by the voxel spacing, so they do
not depend on the network's grid (whose scale differs per patient after resizing).

Units: mL, mm² and mm from the image's spacing. A file whose spacing is a placeholder
(:func:`segfew.io.placeholder_spacing`: an identity affine, as in the public ACDC copy, a
voxel size 1 with no unit, a PNG or JPEG) has no physical size: its measurements are in
voxels of the source grid and say so — ``_vox`` (3D: voxels, voxel faces, voxel edges) or
``_px`` (2D: pixels, pixel edges) in place of ``_ml``, ``_mm2`` and ``_mm``. Ratios and
shape measures are unit-free and keep their names.

Per structure ``S`` and channel ``c`` (e.g. ``LV`` at ``frame01``; 3D images):

- ``S_volume_ml_c``, ``S_surface_mm2_c`` (marching cubes of the mask smoothed by its
  finest voxel size, in mm),
  ``S_sphericity_c`` (π^⅓ (6V)^⅔ / A: 1 for a ball),
- ``S_major_axis_mm_c``, ``S_minor_axis_mm_c``, ``S_solidity_c``, ``S_extent_c``
  (scikit-image ``regionprops`` with the spacing),
- ``S_thickness_mean_mm_c``, ``S_thickness_max_mm_c``: width of the structure in each slice
  across ``slice_axis`` — twice the distance transform on its skeleton — the wall
  thickness of a ring (myocardium), the diameter of a blob;

across channels ``a`` (the first) and each later ``b``: 1 − V_b / V_a, named
``S_ejection_fraction_a_b`` for a cavity (:func:`is_cavity`: for cine MRI with ED first,
each cavity's ejection fraction) and ``S_volume_change_a_b`` for any other structure (a
wall's or a tumour's "ejection fraction" has no clinical meaning); between
structures ``S`` and ``T`` per channel: ``S_to_T_volume_ratio_c`` (e.g. RV/LV,
myocardium/LV). A value that is undefined (an absent structure) is NaN; 2D images give
``S_area_mm2_c`` and ``S_perimeter_mm_c`` instead of volume and surface. Beside these
shape measurements, :mod:`segfew.inference.radiomics` adds what the image shows inside and around
each structure (intensity, surroundings, texture, location).
"""

from __future__ import annotations

import csv
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.ndimage import distance_transform_edt, gaussian_filter
from skimage.measure import label as connected
from skimage.measure import marching_cubes, mesh_surface_area, perimeter, regionprops
from skimage.morphology import skeletonize
from skimage.transform import resize

from segfew.data.read import read_case
from segfew.errors import DataError
from segfew.files import atomic_path
from segfew.inference.measure_names import check_spacing_expected, impossible_warning
from segfew.inference.radiomics import image_measurements
from segfew.inference.run import check_source_memory, segment_on_source
from segfew.preprocess.grid import preprocess_image, slice_axis_for

if TYPE_CHECKING:
    from segfew.data import Case
    from segfew.preprocess.grid import Preprocessing
    from segfew.runtime import Plan

__all__ = [
    "Measurer",
    "case_label_maps",
    "case_measurements",
    "channel_measurements",
    "is_cavity",
    "keep_largest_component",
    "measure_case",
    "measure_images",
    "structure_measurements",
    "write_measurements_csv",
]

NAN = float("nan")
#: words of a structure name that make it a cavity (blood pool), whose emptying between
#: phases is an ejection fraction; any other structure's is a volume change
CAVITY_WORDS = ("lv", "rv", "la", "ra", "cavity", "ventricle", "atrium", "blood")
_WALL_WORDS = ("myocard", "wall", "muscle")


def is_cavity(name: str) -> bool:
    """Whether a structure named ``name`` is a cavity (``LV``, ``RV cavity``, ``left
    ventricle``…) rather than a wall (``myocardium``, ``LV wall``) or anything else."""
    low = name.lower()
    if any(w in low for w in _WALL_WORDS):
        return False
    words = re.split(r"[^a-z]+", low)
    return any(w in CAVITY_WORDS for w in words) or any(
        w in low for w in CAVITY_WORDS if len(w) > 2)


def unit_name(key: str, unit: str | None) -> str:
    """``key`` (e.g. ``volume_ml``) with its physical unit replaced by ``unit`` (``vox`` or
    ``px``); ``unit`` None keeps it."""
    if unit is None:
        return key
    for suffix in ("_ml", "_mm2", "_mm"):
        if key.endswith(suffix):
            return key[: -len(suffix)] + f"_{unit}"
    return key


_UPSAMPLE_CAP = 8  # the most a 2D mask's coarse pixel axis is subdivided (_square)


def _square(mask: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, float]:
    """A 2D ``mask`` on square pixels, and their size in mm: itself on square pixels; else
    on pixels of its finest size, at most ``_UPSAMPLE_CAP`` to a coarse pixel (memory stays
    bounded), by shape-based interpolation — the signed distance to the edge resampled
    linearly, smoothed by half a source pixel, kept where above 0 (where that leaves nothing,
    a sliver: where any in) — so the edge runs smoothly between the coarse pixels' centres
    and a structure a few coarse pixels wide is kept. Pixel-grid measures (perimeter,
    skeleton, distance) then read a shape alike in every direction."""
    low, high = min(spacing), max(spacing)
    if high - low <= 1e-6 * high:
        return mask, float(np.mean(spacing))
    step = max(low, high / _UPSAMPLE_CAP)
    shape = tuple(max(1, round(n * s / step)) for n, s in zip(mask.shape, spacing, strict=True))
    inside, outside = (distance_transform_edt(np.pad(m, 1, constant_values=c), sampling=spacing
                                              )[1:-1, 1:-1] for m, c in ((mask, 0), (~mask, 1)))
    signed = np.where(mask, inside, -outside).astype(np.float32)  # mm, > 0 inside
    cover = gaussian_filter(resize(signed, shape, order=1, anti_aliasing=False, mode="edge"),
                            [s / step / 2 for s in spacing])
    if not (cover > 0).any():
        cover = resize(mask.astype(np.float32), shape, order=1, anti_aliasing=False)
    return cover > 0, float(step)


def _thickness(mask: np.ndarray, spacing: Sequence[float], slice_axis: int
               ) -> tuple[float, float]:
    """(mean, max) width in mm of a 3D mask, slice by slice across ``slice_axis``."""
    if mask.ndim == 2:
        in_plane, slices = list(spacing), [mask]
    else:
        in_plane = [s for i, s in enumerate(spacing) if i != slice_axis % 3]
        slices = list(np.moveaxis(mask, slice_axis, 0))
    widths = []
    for sl in slices:
        if not sl.any():
            continue
        # On square pixels (_square: the skeleton of a disc on non-square ones is a line
        # along the long pixel axis), the distance from each pixel centre to the nearest
        # background centre in mm: on the skeleton, half the local width (a ring of centres
        # 10–16 mm from its axis reads 6 mm within a quarter pixel).
        square, step = _square(sl, in_plane)
        dist = distance_transform_edt(np.pad(square, 1), sampling=step)[1:-1, 1:-1]
        widths.append(2 * dist[skeletonize(square)])
    if not widths:
        return NAN, NAN
    w = np.concatenate(widths)
    return float(w.mean()), float(w.max())


def _solidity(props: Any, mask: np.ndarray) -> float:
    """Area (volume) over that of the convex hull; NaN for a region with no hull — one
    lying in a single slice of a volume, or on a line — which Qhull refuses (with a
    kilobyte-long warning)."""
    lo, hi = np.asarray(props.bbox[: mask.ndim]), np.asarray(props.bbox[mask.ndim:])
    if np.any(hi - lo < 2):
        return NAN
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Qhull's precision complaints on degenerate hulls
        try:
            value = float(props.solidity)
        except Exception:  # scipy's Qhull refuses some near-flat regions
            return NAN
    return value if math.isfinite(value) else NAN


def structure_measurements(mask: np.ndarray, spacing: Sequence[float] | None,
                           slice_axis: int = -1) -> dict[str, float]:
    """Measurements of one binary ``mask`` (2D or 3D) with voxel ``spacing`` in mm.

    Keys as in the module docstring without the structure and channel parts
    (``volume_ml``, ``surface_mm2``, …). An empty mask gives volume 0 and NaN elsewhere.
    ``spacing`` None: no real spacing; sizes in voxels (``volume_vox``: a voxel count,
    ``area_px``, ``major_axis_vox``…).
    """
    if spacing is None:
        unit = "vox" if np.ndim(mask) == 3 else "px"
        out = _structure_measurements(mask, (1.0,) * np.ndim(mask), slice_axis)
        if "volume_ml" in out:
            out["volume_ml"] *= 1000.0  # a voxel count
        return {unit_name(k, unit): v for k, v in out.items()}
    return _structure_measurements(mask, spacing, slice_axis)


def _structure_measurements(mask: np.ndarray, spacing: Sequence[float], slice_axis: int
                            ) -> dict[str, float]:
    mask = np.asarray(mask, dtype=bool)
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != mask.ndim:
        raise ValueError(f"spacing {spacing} has {len(spacing)} axes, the mask has {mask.ndim}")
    count = int(mask.sum())
    size = "volume_ml" if mask.ndim == 3 else "area_mm2"
    skin = "surface_mm2" if mask.ndim == 3 else "perimeter_mm"
    keys = (size, skin, "sphericity", "major_axis_mm", "minor_axis_mm", "solidity", "extent",
            "thickness_mean_mm", "thickness_max_mm")
    out = dict.fromkeys(keys, NAN)
    out[size] = count * math.prod(spacing) / (1000.0 if mask.ndim == 3 else 1.0)
    if count == 0:
        return out
    if mask.ndim == 3:
        # Marching cubes on the mask smoothed by its finest voxel size in mm on every axis
        # (never across a thick slice); sphericity from the volume that surface encloses, so
        # at most 1 (docs/measurements.md: how far each shape measure reads off).
        sigma = [min(spacing) / s for s in spacing]
        smooth = gaussian_filter(np.pad(mask, 2).astype(np.float32), sigma)
        if smooth.max() <= 0.5:  # a structure of a few voxels vanishes when smoothed
            smooth = np.pad(mask, 2).astype(np.float32)
        verts, faces, _, _ = marching_cubes(smooth, 0.5, spacing=spacing)
        area = float(mesh_surface_area(verts, faces))
        a, b, c = (verts[faces[:, k]] for k in range(3))
        enclosed = abs(float(np.einsum("ij,ij->", a, np.cross(b, c)))) / 6.0  # divergence
        out[skin], out["sphericity"] = area, math.pi ** (1 / 3) * (6 * enclosed) ** (2 / 3) / area
    else:
        # scikit-image's perimeter (pixel edges of a square grid) on the mask brought to
        # square pixels (_square), so a disc reads alike whatever the pixels' aspect.
        square, step = _square(mask, spacing)
        length = float(perimeter(square)) * step
        out[skin] = length
        area = float(square.sum()) * step**2  # the area the perimeter bounds
        out["sphericity"] = 4 * math.pi * area / length**2 if length else NAN
    props = regionprops(mask.astype(np.uint8), spacing=spacing)[0]
    out["major_axis_mm"] = float(props.axis_major_length)
    out["minor_axis_mm"] = float(props.axis_minor_length)
    out["extent"] = float(props.extent)
    out["solidity"] = _solidity(props, mask)
    out["thickness_mean_mm"], out["thickness_max_mm"] = _thickness(mask, spacing, slice_axis)
    return out


def channel_measurements(label_map: np.ndarray, spacing: Sequence[float] | None,
                         structures: Mapping[int, str], channel: str, slice_axis: int = -1
                         ) -> dict[str, float]:
    """``S_<measure>_<channel>`` for every structure (label value → name) of one label map;
    ``spacing`` None: in voxels (:func:`structure_measurements`)."""
    out: dict[str, float] = {}
    for value, name in structures.items():
        for key, v in structure_measurements(label_map == value, spacing, slice_axis).items():
            out[f"{name}_{key}_{channel}"] = v
    return out


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 and not math.isnan(a) else NAN


def measure_case(label_maps: Sequence[np.ndarray],
                 spacings: Sequence[Sequence[float] | None],
                 structures: Mapping[int, str], channels: Sequence[str], slice_axis: int = -1
                 ) -> dict[str, float]:
    """Every measurement of one case: one label map per channel, each on its source grid.

    ``label_maps[i]`` (integer array, 2D or 3D) belongs to channel ``channels[i]`` with voxel
    size ``spacings[i]`` (mm; None where the file has none: then every size of the case is
    in voxels, ``_vox``/``_px``); ``structures`` maps label values to names (background
    left out). Returns an ordered dict of named floats (NaN where undefined); the names
    depend only on ``structures``, ``channels``, the dimensionality and whether the
    spacing is known, so every case of a consistent data set has the same columns.
    Raises ValueError when the lengths disagree.
    """
    if not len(label_maps) == len(spacings) == len(channels):
        raise ValueError(f"{len(label_maps)} label maps, {len(spacings)} spacings and "
                         f"{len(channels)} channel names")
    out: dict[str, float] = {}
    if any(s is None for s in spacings):  # one placeholder: the whole case in voxels
        spacings = [None] * len(spacings)
    for label_map, spacing, channel in zip(label_maps, spacings, channels, strict=True):
        out.update(channel_measurements(np.asarray(label_map), spacing, structures, channel,
                                        slice_axis))
    three_d = np.asarray(label_maps[0]).ndim == 3
    size = unit_name("volume_ml" if three_d else "area_mm2",
                     None if spacings[0] is not None else "vox" if three_d else "px")
    names = list(structures.values())
    first = channels[0]
    for name in names:
        change = "ejection_fraction" if is_cavity(name) else "volume_change"
        for later in channels[1:]:
            v_a, v_b = out[f"{name}_{size}_{first}"], out[f"{name}_{size}_{later}"]
            out[f"{name}_{change}_{first}_{later}"] = (
                1 - _ratio(v_b, v_a) if v_a > 0 else NAN)
    for channel in channels:
        for a, b in combinations(names, 2):
            out[f"{a}_to_{b}_volume_ratio_{channel}"] = _ratio(out[f"{a}_{size}_{channel}"],
                                                               out[f"{b}_{size}_{channel}"])
    return out


def keep_largest_component(labels: np.ndarray, values: Sequence[int]) -> np.ndarray:
    """``labels`` with every voxel of each value outside its largest connected component
    (full connectivity) set to 0 — stray islands of a segmentation. Returns a copy."""
    out = np.array(labels, copy=True)
    for value in values:
        mask = out == value
        if not mask.any():
            continue
        parts = connected(mask, connectivity=mask.ndim)
        sizes = np.bincount(parts.ravel())
        sizes[0] = 0
        out[mask & (parts != int(sizes.argmax()))] = 0
    return out


def case_measurements(model: Any, cfg: Preprocessing, label_names: Sequence[str],
                      case: Case, device: Any = "cpu", batch_size: int = 8,
                      largest_component: bool = True, plan: Plan | None = None,
                      tta: bool = False, expect_real: bool | None = None
                      ) -> dict[str, float]:
    """Segment a case with a segmentation network and measure it on the source grid.

    ``model`` is an M-Net with its pre-processing ``cfg`` and label names (background
    first). A one-channel network segments each channel of the case on its own (cine MRI:
    each phase), and the measurements are named by the case's channel names; a network
    taking every channel at once gives one label map, named ``all``. Each label map is
    brought back to the source grid (:func:`segfew.inference.run.segment_on_source`),
    optionally
    reduced to the largest connected component per structure, then measured with the
    image's voxel spacing (:func:`measure_case`) and on each channel's intensities
    (:func:`segfew.inference.radiomics.image_measurements`). ``tta``: test-time augmentation of the
    segmentation (:func:`segfew.inference.run.segment_probabilities`). Raises DataError for an
    unreadable case, and before any work for one whose voxel size is not what
    ``expect_real`` says the model was fitted on (:func:`check_spacing_expected`).
    """
    images, maps, names = case_label_maps(model, cfg, label_names, case, device, batch_size,
                                          largest_component, plan, tta, expect_real)
    structures = dict(enumerate(label_names))
    structures.pop(0, None)
    return measure_images(images, maps, structures, names, case.channel_names,
                          slice_axis_for(cfg, images[0].shape, images[0].spacing))


def measure_images(images: Sequence[Any], label_maps: Sequence[np.ndarray],
                   structures: Mapping[int, str], map_names: Sequence[str],
                   channel_names: Sequence[str], slice_axis: int) -> dict[str, float]:
    """Every measurement of one case's label maps on its channel images (``Image``, read
    through the door): shape (:func:`measure_case`, maps named ``map_names``) and intensity,
    surroundings, texture and location (:func:`segfew.inference.radiomics.image_measurements`).
    A file without a real voxel size is measured in voxels. DataError naming the image when
    a map holds no structure: a segmentation that found nothing has nothing to measure, and
    its zero volumes would give a confident answer about nothing. Measurements that cannot
    be (an ejection fraction below 0: phases in the wrong order) are said in one
    :class:`segfew.inference.measure_names.ImpossibleMeasurements` warning naming the first
    image; the values are kept as measured."""
    for i, (name, arr) in enumerate(zip(map_names, label_maps, strict=True)):
        if not np.any(np.isin(arr, list(structures))):
            where = images[min(len(images) - 1, i)]
            which = "" if len(label_maps) == 1 else f" of {name}"
            raise DataError(f"the segmentation{which} holds "
                            "no structure (all background): nothing to measure", where.path)
    spacing = images[0].spacing if images[0].spacing_known else None  # one grid per case
    out = measure_case(label_maps, [spacing] * len(label_maps), structures, map_names,
                       slice_axis)
    warning = impossible_warning(out, images[0].path, map_names, list(structures.values()))
    if warning is not None:  # e.g. ED and ES swapped: negative ejection fractions
        warnings.warn(warning, stacklevel=2)
    return out | image_measurements([im.array for im in images], channel_names, label_maps,
                                    spacing, structures, slice_axis)


def case_label_maps(model: Any, cfg: Preprocessing, label_names: Sequence[str], case: Case,
                    device: Any = "cpu", batch_size: int = 8, largest_component: bool = True,
                    plan: Plan | None = None, tta: bool = False,
                    expect_real: bool | None = None
                    ) -> tuple[list[Any], list[np.ndarray], list[str]]:
    """The label maps :func:`case_measurements` measures: ``(images, maps, names)`` — the
    case's channel images as read, one int16 label map on the source grid per channel
    (one for every channel together, named ``all``, with a multi-channel network)."""
    images, _ = read_case(case)
    check_source_memory(images, case.images[0])
    check_spacing_expected(images, case.images[0], expect_real)
    structures = list(range(1, len(label_names)))
    groups = [[im] for im in images] if model.in_channels == 1 else [list(images)]
    names = case.channel_names if model.in_channels == 1 else ["all"]
    maps = []
    for group in groups:
        x = np.stack([preprocess_image(im.array, cfg, im.spacing, im.path) for im in group])
        labels, _ = segment_on_source(model, x, group[0].shape, cfg, device, batch_size, plan,
                                      tta, group[0].spacing)
        maps.append(keep_largest_component(labels, structures) if largest_component
                    else labels)
    return list(images), maps, list(names)


class Measurer:
    """:func:`case_measurements` of one segmentation network, each case measured once.

    ``model`` is the frozen M-Net, ``cfg`` and ``label_names`` come from its model file.
    Calling it on a case returns its measurements (cached by the case's image paths, so
    the sizes and repetitions of an experiment segment every scan once). ``tta``: segment
    with test-time augmentation (recorded in the classifier fitted on these measurements).
    """

    def __init__(self, model: Any, cfg: Preprocessing, label_names: Sequence[str],
                 device: Any = "cpu", batch_size: int = 8, plan: Plan | None = None,
                 tta: bool = False) -> None:
        self.model, self.cfg, self.label_names = model, cfg, list(label_names)
        self.device, self.batch_size, self.plan, self.tta = device, batch_size, plan, tta
        #: whether the classifier measuring with it was fitted on real sizes (mm, mL), on
        #: voxel counts (False), or nothing is known (None): :func:`check_spacing_expected`
        self.expect_real: bool | None = None
        self._done: dict[tuple[str, ...], dict[str, float]] = {}

    def __call__(self, case: Case) -> dict[str, float]:
        key = tuple(str(p) for p in case.images)
        if key not in self._done:
            self._done[key] = case_measurements(self.model, self.cfg, self.label_names, case,
                                                self.device, self.batch_size, plan=self.plan,
                                                tta=self.tta, expect_real=self.expect_real)
        return self._done[key]

    def names(self, case: Case) -> list[str]:
        """The measurement names of ``case`` (every case of a data set has the same)."""
        return list(self(case))

    def label_maps(self, case: Case) -> tuple[list[Any], list[np.ndarray]]:
        """The case's channel images as read and the label maps it is measured on."""
        images, maps, _ = case_label_maps(self.model, self.cfg, self.label_names, case,
                                          self.device, self.batch_size, plan=self.plan,
                                          tta=self.tta)
        return images, maps


def write_measurements_csv(path: Path, rows: Sequence[tuple[str, Mapping[str, float] | None]]
                           ) -> Path:
    """``id, <measurement>...`` — one line per case, named columns in a fixed order.

    ``rows`` are ``(case id, measurements)``; None (a case that failed) leaves its cells
    empty, as does NaN (undefined: an absent structure). Written atomically.
    """
    names: list[str] = []
    for _, m in rows:
        names += [n for n in (m or {}) if n not in names]
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", *names])
        for case_id, m in rows:
            values = [(m or {}).get(n, NAN) for n in names]
            writer.writerow([case_id, *("" if math.isnan(v) else f"{v:.6g}" for v in values)])
    return path

