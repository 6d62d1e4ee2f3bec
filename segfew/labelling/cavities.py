"""Cardiac cavities without an expert: RV, myocardium and LV label maps of cine MRI.

The no-expert workflow's labeller for cine short-axis MRI, where k-means clusters are not
anatomy (the blood pool splits across clusters and shares one with fat; SPEC §5's THRESHOLD
framework stays as it is in :mod:`segfew.labelling.kmeans`). It uses what needs no expert: the heart
is what moves between the cine phases, and its cavities are the bright blood pools of a
balanced steady-state free precession (bSSFP) sequence. Per case (channels are phases, end-
diastole first; short-axis slices along the last axis):

1. **Where.** ``|ED − ES|``, smoothed and averaged over slices, weighted toward the image
   centre: its maximum is a point in the LV.
2. **A first LV.** In each ED slice, the Otsu-bright component nearest that point.
3. **The blood/myocardium threshold** half-way between the median intensity of that blood
   pool and of a band just outside it (the half-way threshold of cardiac MR analysis, which
   adapts to each scan's contrast).
4. **Per slice and phase.** LV: the bright component nearest the point (ED) or overlapping
   the previous phase's LV, holes filled and its convex hull taken (papillary muscles belong
   to the cavity, as in expert contours). RV: of the bright components beside the LV, the one
   with the most area that empties by a later phase (in later phases, the one overlapping
   the earlier RV): the RV ejects, a stomach or fat beside the heart stays bright. Both
   cavities grow by hysteresis through the less bright pixels next to them (partial volume,
   the RV's trabeculae). Myocardium: on rays from the LV's centre, from its border to the
   first blood-bright or lung-dark pixel; a ray that meets neither (liver and chest wall are
   as grey as the myocardium) takes the median of those that did, and the lengths are
   median-filtered around the circle (a wall is smooth).

The maps are coarse against expert masks, but their ED volumes follow the experts' closely
enough for measurements, and an M-Net pre-trained on them generalises the rules (Dice and
volume correlations on ACDC: docs/benchmarks.md). Distances are in
pixels of the in-plane grid, sized for cine MRI at 1.2–2 mm (``segfew label`` warns about
other pixel sizes); the slice axis is the one with the widest spacing, so the result does
not depend on how the file orders its axes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from skimage.draw import polygon
from skimage.filters import threshold_otsu
from skimage.morphology import convex_hull_image, disk

from segfew.preprocess.grid import stack_axis

__all__ = ["LABEL_NAMES", "cine_cavities", "slice_axis_of"]

#: label values 0..3, as in the ACDC expert masks (so the expert recipes apply unchanged)
LABEL_NAMES = ("background", "RV", "myocardium", "LV")
RV, MYOCARDIUM, LV = 1, 2, 3

SEARCH_RADIUS = 60  # px around the heart's point: where cavities may lie
LV_REACH = 25  # px: an LV component's centre lies at most this far from the point
WALL_MAX = 20  # px: the thickest wall a ray may measure
WALL_TYPICAL = 6  # px: the wall of a slice where too few rays stop (about 9 mm at 1.5 mm)
WALL_SPREAD = 1.5  # a ray is at most this many times the slice's typical wall
RAYS = 48
SMALLEST = 15  # px: smaller bright components are noise
DARK_FRACTION = 0.5  # lung: darker than this fraction of the myocardium's intensity
BLOOD_FRACTION = 0.5  # blood/myocardium threshold: half-way between their intensities
GROW_FRACTION = 0.3  # cavities grow through pixels this far from myocardium toward blood
LV_GROWTH, RV_GROWTH = 2, 8  # px: how far each cavity may grow through them


def _heart_point(ed: np.ndarray, es: np.ndarray) -> np.ndarray:
    """(row, col) of the strongest motion between the phases, toward the image centre."""
    motion = ndimage.gaussian_filter(np.abs(ed - es), (4, 4, 0)).mean(axis=2)
    motion = ndimage.gaussian_filter(motion, 6)
    rows, cols = np.indices(motion.shape)
    h, w = motion.shape
    motion *= np.exp(-(((rows - h / 2) / (0.3 * h)) ** 2 + ((cols - w / 2) / (0.3 * w)) ** 2) / 2)
    return np.array(np.unravel_index(int(motion.argmax()), motion.shape), dtype=float)


def _nearest_component(parts: np.ndarray, n: int, point: np.ndarray) -> int:
    """Label of the component (≥ SMALLEST px) whose centre is nearest ``point``, within
    LV_REACH; 0 if none. Vectorised over components, so a noisy slice stays cheap."""
    if n == 0:
        return 0
    index = np.arange(1, n + 1)
    sizes = np.bincount(parts.ravel(), minlength=n + 1)[1:]
    centres = np.array(ndimage.center_of_mass(np.ones_like(parts), parts, index)).reshape(n, 2)
    distance = np.hypot(*(centres - point).T)
    distance[sizes < SMALLEST] = np.inf
    best = int(distance.argmin())
    return int(index[best]) if distance[best] < LV_REACH else 0


def _cavity(mask: np.ndarray) -> np.ndarray:
    filled = ndimage.binary_fill_holes(mask)
    return convex_hull_image(filled) if filled.sum() >= 3 else filled


def _wall(lv: np.ndarray, stop: np.ndarray) -> np.ndarray:
    """The ring from the LV border out to the first ``stop`` pixel along each ray.

    A ray that meets no stop within WALL_MAX (the wall borders liver or chest wall, as grey
    as the myocardium) takes the slice's typical thickness: the median of the rays that
    did stop (at the RV's blood, lung or bright fat), and rays are capped at WALL_SPREAD
    times it. Without this the free walls ran out to WALL_MAX, twice the experts' thickness.
    """
    cy, cx = ndimage.center_of_mass(lv)
    h, w = lv.shape
    angles = np.linspace(0, 2 * np.pi, RAYS, endpoint=False)
    inner, width = np.zeros(RAYS), np.full(RAYS, np.nan)
    steps = np.arange(0, 4 * WALL_MAX, 0.5)
    for i, a in enumerate(angles):
        ys = np.rint(cy + np.sin(a) * steps).astype(int)
        xs = np.rint(cx + np.cos(a) * steps).astype(int)
        inside = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
        ys, xs, along = ys[inside], xs[inside], steps[inside]
        outside = np.flatnonzero(~lv[ys, xs])
        if outside.size == 0:
            continue
        inner[i] = along[outside[0]]
        ahead = (along > inner[i] + 1) & stop[ys, xs]
        if ahead.any() and along[ahead][0] - inner[i] < WALL_MAX:
            width[i] = along[ahead][0] - inner[i]
    stopped = np.isfinite(width)
    typical = float(np.median(width[stopped])) if stopped.sum() >= RAYS // 6 else WALL_TYPICAL
    width = np.where(stopped, np.minimum(width, WALL_SPREAD * typical), typical)
    width = ndimage.median_filter(width, size=7, mode="wrap")
    ring = np.zeros_like(lv)
    rr, cc = polygon(cy + np.sin(angles) * (inner + width), cx + np.cos(angles) * (inner + width),
                     lv.shape)
    ring[rr, cc] = True
    return ring & ~lv


def _second_cavity(parts: np.ndarray, n: int, lv_part: int, lv: np.ndarray,
                   earlier: np.ndarray | None, emptied: np.ndarray | None) -> np.ndarray | None:
    """The RV: the bright component beside the LV that empties most between the phases.

    At ED (``earlier`` None) a component scores the area of it that is no longer bright in
    some later phase (``emptied``): the RV ejects, while the stomach, fat or a vessel beside
    the heart stay bright and often are larger. The score falls with the gap to the LV (the
    RV lies across the septum). In a later phase, the component must overlap the earlier RV
    and the score is its area.
    """
    if n == 0:
        return None
    index = np.arange(1, n + 1)
    outside = np.where(lv, 0, parts)
    area = np.bincount(outside.ravel(), minlength=n + 1)[1:]
    gap = np.asarray(ndimage.minimum(ndimage.distance_transform_edt(~lv), outside, index))
    keep = (area >= 20) & (index != lv_part) & (gap <= WALL_MAX + 5)
    if earlier is not None:
        near = ndimage.binary_dilation(earlier, disk(3))
        keep &= np.bincount(outside[near].ravel(), minlength=n + 1)[1:] > 0
    size = area if emptied is None else np.bincount(outside[emptied].ravel(),
                                                    minlength=n + 1)[1:]
    if not keep.any():
        return None
    score = np.where(keep, size / (1 + gap / 5), -1.0)
    return outside == index[int(score.argmax())]


def _grown(seed: np.ndarray, allowed: np.ndarray, growth: int) -> np.ndarray:
    """``seed`` grown through the connected ``allowed`` pixels, at most ``growth`` px from it
    (hysteresis: the half-way threshold finds a cavity, a lower one finds its extent — the
    partial-volume border, and the RV's trabeculated, less bright parts)."""
    near = ndimage.distance_transform_edt(~seed) <= growth
    parts, _ = ndimage.label((allowed & near) | seed)
    return np.isin(parts, np.unique(parts[seed]))


def slice_axis_of(shape: Sequence[int], spacing: Sequence[float] | None = None) -> int:
    """The short-axis stack's slice axis: :func:`segfew.preprocess.grid.stack_axis` (by spacing,
    cine MRI's 5–10 mm slices against 1–2 mm pixels, or by the few slices when the spacing
    is lost), else the last — the axis a 2D network would slice the same file along."""
    axis = stack_axis(shape, spacing)
    return len(shape) - 1 if axis is None else axis


def cine_cavities(phases: Sequence[np.ndarray], spacing: Sequence[float] | None = None
                  ) -> list[np.ndarray]:
    """RV (1), myocardium (2) and LV (3) label maps of one cine MRI case, one per phase.

    ``phases``: two or more 3D arrays of one shape, end-diastole first (any intensity unit
    and offset: each case is scaled to its ED 0.5th–99.5th percentiles); ``spacing`` (mm
    per axis) picks the slice axis (:func:`slice_axis_of`), whatever the orientation the
    arrays are stored in.
    Returns uint8 arrays of the same shape (values :data:`LABEL_NAMES`); where no cavity is
    found (a slice beyond the heart, an image with no moving heart) the map is 0. Raises
    ValueError for fewer than two phases, arrays that are not 3D or that differ in shape —
    the heart is found by its motion between phases.
    """
    arrays = [np.asarray(p, dtype=np.float32) for p in phases]
    if len(arrays) < 2:
        raise ValueError("cavities need two or more cine phases (ED first) as channels")
    if any(a.ndim != 3 for a in arrays):
        raise ValueError(f"cavities need 3D phases (a stack of short-axis slices), got "
                         f"{len(arrays[0].shape)}D images")
    if any(a.shape != arrays[0].shape for a in arrays):
        raise ValueError(f"cavities need phases of one shape, got {[a.shape for a in arrays]}")
    axis = slice_axis_of(arrays[0].shape, spacing)
    stacked = [np.moveaxis(a, axis, -1) for a in arrays]
    return [np.moveaxis(m, -1, axis) for m in _cavities(stacked)]


def _cavities(arrays: list[np.ndarray]) -> list[np.ndarray]:
    """:func:`cine_cavities` of float arrays with the slices on the last axis."""
    # 0 = the darkest (air, lung), 1 = the brightest blood: the rules' fractions assume it,
    # whatever offset the file's intensities carry (z-scored or shifted images)
    low, high = (float(v) for v in np.percentile(arrays[0], (0.5, 99.5)))
    unit = [(a - low) / (high - low or 1.0) for a in arrays]
    smooth = [ndimage.gaussian_filter(a, (1, 1, 0)) for a in unit]
    point = _heart_point(unit[0], unit[1])
    rows, cols = np.indices(arrays[0].shape[:2])
    search = np.hypot(rows - point[0], cols - point[1]) < SEARCH_RADIUS
    maps = [np.zeros(arrays[0].shape, np.uint8) for _ in arrays]
    ed = smooth[0]
    if np.ptp(ed[search]) <= 0:
        return maps

    # 2–3: a first LV from an Otsu threshold, then the half-way threshold from it
    otsu = threshold_otsu(ed[search])
    first = np.zeros(ed.shape, bool)
    band = np.zeros(ed.shape, bool)
    for z in range(ed.shape[2]):
        parts, n = ndimage.label(ndimage.binary_opening((ed[..., z] > otsu) & search, disk(2)))
        best = _nearest_component(parts, n, point)
        if best:
            first[..., z] = ndimage.binary_fill_holes(parts == best)
            d = ndimage.distance_transform_edt(~first[..., z])
            band[..., z] = (d > 1) & (d <= 4)
    if not first.any():
        return maps
    core = np.stack([ndimage.binary_erosion(first[..., z], disk(2))
                     for z in range(ed.shape[2])], axis=2)
    blood = float(np.median(ed[core if core.any() else first]))
    myocardium = float(np.median(ed[band]))
    threshold = myocardium + BLOOD_FRACTION * (blood - myocardium)
    dark = DARK_FRACTION * myocardium
    low = myocardium + GROW_FRACTION * (blood - myocardium)

    # 4: per slice, phase after phase
    for z in range(ed.shape[2]):
        lv_before: np.ndarray | None = None
        rv_before: np.ndarray | None = None
        for k, image in enumerate(smooth):
            bright = image[..., z] > threshold
            parts, n = ndimage.label(ndimage.binary_opening(bright & search, disk(1)))
            if lv_before is None:
                if k > 0:
                    break
                best = _nearest_component(parts, n, point)
                if best == 0:
                    break
            else:
                overlap = np.bincount(parts[lv_before].ravel(), minlength=n + 1)
                overlap[0] = 0
                best = int(overlap.argmax())
                if overlap[best] == 0:
                    continue
                parts[(parts == best) & ~ndimage.binary_dilation(lv_before, disk(3))] = 0
            grey = (image[..., z] > low) & search
            lv = _cavity(_grown(_cavity(parts == best), grey, LV_GROWTH))
            emptied = None if k else np.any([later[..., z] <= threshold
                                             for later in smooth[1:]], axis=0)
            rv = _second_cavity(parts, n, best, lv, rv_before if k else None, emptied)
            out = maps[k][..., z]
            out[lv] = LV
            if rv is not None:
                rv = _grown(rv, grey & ~ndimage.binary_dilation(lv, disk(1)), RV_GROWTH)
                out[rv] = RV
            wall = _wall(lv, (bright & ~lv) | (image[..., z] < dark))
            out[wall & (out == 0)] = MYOCARDIUM
            lv_before, rv_before = lv, rv
    return maps
