"""What the image shows inside each structure: intensity, surroundings, texture, location.

Beside the shape measurements of :mod:`segfew.inference.measure`, a structure that is graded
by its look (a glioma on FLAIR MRI, a lesion on CT) is described by the intensities inside
it, how they compare with what surrounds it, their texture, and where it lies. The
definitions follow the Image Biomarker Standardisation Initiative (IBSI; Zwanenburg et al.,
Radiology 2020, "IBSI reference manual" v11 §3): the grey-level co-occurrence matrix and its
features come from scikit-image (``graycomatrix`` / ``graycoprops``), connected zones from
``skimage.measure.label``, moments from numpy; run lengths and the normalisations IBSI
prescribes are the few lines here. Every feature is NaN when its structure is absent.

Per structure ``S`` and channel ``c`` (names ``S_<family>_<feature>_c``; docs/measurements.md
lists them with units):

- ``intensity_*`` (IBSI 3.3 intensity statistics, 3.4 histogram): mean, sd, median, p10, p90,
  iqr in the image's own unit (HU for CT, arbitrary for MRI); skewness, kurtosis (excess),
  entropy_bits and uniformity of the histogram of ``LEVELS`` bins between the structure's
  minimum and maximum (IBSI's fixed bin number), unitless.
- ``surround_*``: the structure against a ring ``RING_MM`` wide around it (outside every
  structure, inside the body) and against the body: ``ring_contrast`` and ``body_contrast``
  = (mean inside − mean outside) / SD outside; ``ring_ratio`` = mean inside / mean of the
  ring; ``body_percentile`` = share of body voxels below the structure's median. Unitless,
  so they compare MRI scans whose intensity scale differs.
- ``texture_*`` on the structure's bounding box quantised to ``LEVELS`` grey levels (fixed bin
  number): co-occurrence (GLCM, IBSI 3.6; distance 1, the 4 in-plane directions of every
  slice merged: IBSI's 2.5D "merged"), run length (GLRLM, IBSI 3.7; same directions, merged)
  and size zone (GLSZM, IBSI 3.8; 3D, 26-connected).
- ``location_*``: the structure's centroid relative to the imaged body's (the voxels above
  Otsu's threshold plus the structures, largest component, holes filled): ``right``,
  ``anterior``, ``superior`` offsets (RAS axes; 2D: the first two) as a fraction of the
  body's extent along that axis, and ``distance_mm`` / ``distance_fraction`` (over the
  body's equivalent-sphere radius).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy.ndimage import binary_fill_holes, distance_transform_edt
from skimage.feature import graycomatrix, graycoprops
from skimage.filters import threshold_otsu
from skimage.measure import label

__all__ = ["FAMILIES", "LEVELS", "RING_MM", "body_mask", "cooccurrence", "first_order",
           "image_measurements", "location", "quantise", "run_length", "size_zone",
           "structure_image_measurements", "surround"]

NAN = float("nan")
#: grey levels of the histogram and the texture matrices (IBSI fixed bin number)
LEVELS = 32
#: width of the ring around a structure (mm; a file without spacing: voxels)
RING_MM = 5.0
#: the measurement families this module adds, in name order (``S_<family>_…``)
FAMILIES = ("intensity", "surround", "texture", "location")
_AXES = ("right", "anterior", "superior")


def quantise(values: np.ndarray, levels: int = LEVELS) -> np.ndarray:
    """Grey levels 1 … ``levels`` of ``values`` by IBSI's fixed bin number (IBSI 2.7.1):
    ⌊levels (x − min) / (max − min)⌋ + 1, the maximum in the last bin; a constant gives 1."""
    v = np.asarray(values, dtype=np.float64)
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        return np.ones(v.shape, dtype=np.int64)
    q = np.floor(levels * (v - lo) / (hi - lo)).astype(np.int64) + 1
    return np.minimum(q, levels)


def first_order(values: np.ndarray, levels: int = LEVELS) -> dict[str, float]:
    """IBSI intensity statistics and histogram features of the voxel ``values`` (1D).

    ``sd`` is the population SD; skewness and (excess) kurtosis are 0 for a constant (IBSI
    3.3.3–4); entropy (bits) and uniformity of the ``levels``-bin histogram (IBSI 3.4.18–19).
    """
    keys = ("mean", "sd", "median", "p10", "p90", "iqr", "skewness", "kurtosis",
            "entropy_bits", "uniformity")
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        return dict.fromkeys(keys, NAN)
    mean, sd = float(v.mean()), float(v.std())
    p10, p25, median, p75, p90 = (float(p) for p in np.percentile(v, [10, 25, 50, 75, 90]))
    d = v - mean
    m2 = float(np.mean(d**2))
    skew = float(np.mean(d**3)) / m2**1.5 if m2 > 0 else 0.0
    kurt = float(np.mean(d**4)) / m2**2 - 3.0 if m2 > 0 else 0.0
    p = np.bincount(quantise(v, levels))[1:] / v.size
    p = p[p > 0]
    return {"mean": mean, "sd": sd, "median": median, "p10": p10, "p90": p90,
            "iqr": p75 - p25, "skewness": skew, "kurtosis": kurt,
            "entropy_bits": float(-(p * np.log2(p)).sum()) + 0.0,
            "uniformity": float((p**2).sum())}


def _planes(q: np.ndarray, slice_axis: int) -> list[np.ndarray]:
    """The 2D slices of a quantised volume across ``slice_axis`` (a 2D image: itself)."""
    return [q] if q.ndim == 2 else list(np.moveaxis(q, slice_axis, 0))


def cooccurrence(q: np.ndarray, levels: int = LEVELS, slice_axis: int = -1
                 ) -> dict[str, float]:
    """GLCM features of grey levels ``q`` (0 outside the structure, 1 … ``levels`` inside).

    One symmetric matrix at distance 1 merged over the 4 in-plane directions of every slice
    (IBSI 2.5D merged), by ``skimage.feature.graycomatrix`` with level 0 dropped (pairs with
    a voxel outside do not count). Contrast, dissimilarity, inverse difference moment
    (scikit-image's homogeneity), angular second moment, correlation (scikit-image's: 1 for a
    constant) and joint entropy in bits (IBSI 3.6).
    """
    keys = ("contrast", "dissimilarity", "inverse_difference_moment",
            "angular_second_moment", "correlation", "joint_entropy_bits")
    angles = [0, np.pi / 4, np.pi / 2, 3 * np.pi / 4]
    total = np.zeros((levels, levels))
    for plane in _planes(q, slice_axis):
        if plane.any():
            m = graycomatrix(plane.astype(np.uint8), [1], angles, levels=levels + 1,
                             symmetric=True)
            total += m[1:, 1:, 0, :].sum(axis=-1)
    if total.sum() == 0:
        return dict.fromkeys(keys, NAN)
    p = total / total.sum()
    out = {k: float(graycoprops(p[:, :, None, None], prop)[0, 0]) for k, prop in (
        ("contrast", "contrast"), ("dissimilarity", "dissimilarity"),
        ("inverse_difference_moment", "homogeneity"), ("angular_second_moment", "ASM"),
        ("correlation", "correlation"))}
    nz = p[p > 0]
    out["joint_entropy_bits"] = float(-(nz * np.log2(nz)).sum()) + 0.0
    return out


def _lines(plane: np.ndarray) -> np.ndarray:
    """Every line of a 2D array in the 4 directions (rows, columns, both diagonals), joined
    end to end with a 0 between, so runs never cross from one line to the next."""
    h, w = plane.shape
    flipped = plane[:, ::-1]
    parts = [*plane, *plane.T, *(np.diagonal(plane, k) for k in range(-h + 1, w)),
             *(np.diagonal(flipped, k) for k in range(-h + 1, w))]
    out: list[np.ndarray] = []
    for part in parts:
        out += [part, np.zeros(1, plane.dtype)]
    return np.concatenate(out)


def run_length(q: np.ndarray, levels: int = LEVELS, slice_axis: int = -1) -> dict[str, float]:
    """GLRLM features of grey levels ``q`` (0 outside), runs along the 4 in-plane directions
    of every slice, merged (IBSI 3.7, 2.5D merged): short and long runs emphasis, grey level
    and run length non-uniformity normalised by the number of runs, run percentage (runs
    over voxels × directions)."""
    keys = ("short_run_emphasis", "long_run_emphasis", "grey_level_nonuniformity",
            "run_length_nonuniformity", "run_percentage")
    counts: dict[tuple[int, int], int] = {}
    voxels = 0
    for plane in _planes(q, slice_axis):
        if not plane.any():
            continue
        voxels += int((plane > 0).sum())
        line = _lines(plane)
        edges = np.flatnonzero(np.diff(line) != 0) + 1
        starts = np.concatenate([[0], edges])
        lengths = np.diff(np.concatenate([starts, [line.size]]))
        grey = line[starts]
        for g, n in zip(grey[grey > 0].tolist(), lengths[grey > 0].tolist(), strict=True):
            counts[(g, n)] = counts.get((g, n), 0) + 1
    if not counts:
        return dict.fromkeys(keys, NAN)
    g = np.array([k[0] for k in counts])
    n = np.array([k[1] for k in counts], dtype=np.float64)
    r = np.array(list(counts.values()), dtype=np.float64)
    total = r.sum()
    by_grey = np.bincount(g, weights=r)
    by_length = np.bincount(n.astype(np.int64), weights=r)
    return {"short_run_emphasis": float((r / n**2).sum() / total),
            "long_run_emphasis": float((r * n**2).sum() / total),
            "grey_level_nonuniformity": float((by_grey**2).sum() / total**2),
            "run_length_nonuniformity": float((by_length**2).sum() / total**2),
            "run_percentage": float(total / (4 * voxels))}


def size_zone(q: np.ndarray, levels: int = LEVELS) -> dict[str, float]:
    """GLSZM features of grey levels ``q`` (0 outside): zones are the connected components
    of each grey level (26-connected in 3D, 8 in 2D; ``skimage.measure.label``); small and
    large zone emphasis, grey level and zone size non-uniformity normalised by the number
    of zones, zone percentage (zones over voxels) (IBSI 3.8)."""
    keys = ("small_zone_emphasis", "large_zone_emphasis", "grey_level_nonuniformity",
            "zone_size_nonuniformity", "zone_percentage")
    sizes, greys = [], []
    for level in range(1, levels + 1):
        mask = q == level
        if not mask.any():
            continue
        zones = np.bincount(label(mask, connectivity=q.ndim).ravel())[1:]
        sizes.append(zones)
        greys.append(np.full(zones.size, level))
    if not sizes:
        return dict.fromkeys(keys, NAN)
    s = np.concatenate(sizes).astype(np.float64)
    g = np.concatenate(greys)
    total = float(s.size)
    by_size = np.bincount(s.astype(np.int64))
    return {"small_zone_emphasis": float((1 / s**2).sum() / total),
            "large_zone_emphasis": float((s**2).sum() / total),
            "grey_level_nonuniformity": float((np.bincount(g) ** 2).sum() / total**2),
            "zone_size_nonuniformity": float((by_size**2).sum() / total**2),
            "zone_percentage": total / float((q > 0).sum())}


def body_mask(image: np.ndarray, foreground: np.ndarray) -> np.ndarray:
    """The imaged body: voxels above Otsu's threshold, with the structures
    (``foreground``), its largest connected component, holes filled (slice by slice
    along the last axis of a volume as well)."""
    image = np.asarray(image, dtype=np.float64)
    body = np.asarray(foreground, dtype=bool).copy()
    if image.max() > image.min():
        body |= image > threshold_otsu(image.ravel())
    if not body.any():
        return body
    parts = label(body, connectivity=1)
    sizes = np.bincount(parts.ravel())
    sizes[0] = 0
    body = parts == int(sizes.argmax())
    body = binary_fill_holes(body)
    if body.ndim == 3:
        body = np.stack([binary_fill_holes(body[..., k]) for k in range(body.shape[-1])], -1)
    return np.asarray(body, dtype=bool)


def surround(image: np.ndarray, mask: np.ndarray, others: np.ndarray, body: np.ndarray,
             spacing: Sequence[float], ring_mm: float = RING_MM) -> dict[str, float]:
    """The structure ``mask`` against a ring ``ring_mm`` wide around it (outside ``others``,
    every structure, and inside ``body``) and against the body outside the structures.
    See the module docstring; NaN where a side is empty or has SD 0."""
    out = dict.fromkeys(("ring_contrast", "ring_ratio", "body_contrast", "body_percentile"),
                        NAN)
    if not mask.any():
        return out
    inside = image[mask].astype(np.float64)
    mean_in = float(inside.mean())
    # the distance to the structure, on its bounding box grown by the ring
    pad = [math.ceil(ring_mm / s) + 1 for s in spacing]
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(0) - pad, 0)
    hi = np.minimum(idx.max(0) + np.array(pad) + 1, mask.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    dist = distance_transform_edt(~mask[box], sampling=spacing)
    ring = (dist > 0) & (dist <= ring_mm) & ~others[box] & body[box]
    if ring.any():
        outside = image[box][ring].astype(np.float64)
        sd = float(outside.std())
        out["ring_contrast"] = (mean_in - float(outside.mean())) / sd if sd > 0 else NAN
        out["ring_ratio"] = mean_in / float(outside.mean()) if outside.mean() != 0 else NAN
    rest = body & ~others
    if rest.any():
        outside = image[rest].astype(np.float64)
        sd = float(outside.std())
        out["body_contrast"] = (mean_in - float(outside.mean())) / sd if sd > 0 else NAN
        out["body_percentile"] = float((outside < np.median(inside)).mean())
    return out


def location(mask: np.ndarray, body: np.ndarray, spacing: Sequence[float]) -> dict[str, float]:
    """Centroid of ``mask`` relative to that of ``body`` (see the module docstring)."""
    axes = _AXES[: mask.ndim]
    keys = (*(f"{a}_fraction" for a in axes), "distance_mm", "distance_fraction")
    if not mask.any() or not body.any():
        return dict.fromkeys(keys, NAN)
    step = np.asarray(spacing, dtype=np.float64)
    offset = (np.argwhere(mask).mean(0) - np.argwhere(body).mean(0)) * step
    b = np.argwhere(body)
    extent = (b.max(0) - b.min(0) + 1) * step
    out = {f"{a}_fraction": float(o / e) for a, o, e in zip(axes, offset, extent, strict=True)}
    size = body.sum() * float(np.prod(step))
    radius = (3 * size / (4 * math.pi)) ** (1 / 3) if mask.ndim == 3 else math.sqrt(size / math.pi)
    out["distance_mm"] = float(np.linalg.norm(offset))
    out["distance_fraction"] = out["distance_mm"] / float(radius)
    return out


def structure_image_measurements(image: np.ndarray, mask: np.ndarray, others: np.ndarray,
                                 body: np.ndarray, spacing: Sequence[float],
                                 slice_axis: int = -1, levels: int = LEVELS
                                 ) -> dict[str, float]:
    """Every family for one structure ``mask`` in one channel ``image`` (same shape):
    ``<family>_<feature>`` → value. ``others``: every structure's voxels (the ring avoids
    them); ``body``: :func:`body_mask`. Texture is computed on the bounding box only."""
    mask = np.asarray(mask, dtype=bool)
    out = {f"intensity_{k}": v for k, v in first_order(image[mask], levels).items()}
    out |= {f"surround_{k}": v for k, v in surround(image, mask, others, body, spacing).items()}
    if mask.any():
        idx = np.argwhere(mask)
        box = tuple(slice(a, b + 1) for a, b in zip(idx.min(0), idx.max(0), strict=True))
        q = np.zeros(mask[box].shape, dtype=np.int64)
        q[mask[box]] = quantise(image[box][mask[box]], levels)
    else:
        q = np.zeros((1,) * mask.ndim, dtype=np.int64)
    for family, values in (("cooccurrence", cooccurrence(q, levels, slice_axis)),
                           ("runlength", run_length(q, levels, slice_axis)),
                           ("sizezone", size_zone(q, levels))):
        out |= {f"texture_{family}_{k}": v for k, v in values.items()}
    out |= {f"location_{k}": v for k, v in location(mask, body, spacing).items()}
    return out


def image_measurements(images: Sequence[np.ndarray], channels: Sequence[str],
                       label_maps: Sequence[np.ndarray], spacing: Sequence[float] | None,
                       structures: Mapping[int, str], slice_axis: int = -1
                       ) -> dict[str, float]:
    """``S_<family>_<feature>_<channel>`` for every structure and channel of one case.

    ``images[i]`` is channel ``channels[i]`` (2D or 3D arrays of one grid, voxel ``spacing`` in
    mm; None for a file without a real voxel size: distances are then in voxels, named ``_vox``
    / ``_px``); ``label_maps`` holds one map for the case or one per channel (cine MRI: each
    phase its own); ``structures`` maps label values to names. The names depend only on the
    structures, channels and dimensionality. Raises ValueError on mismatched lengths.
    """
    if len(images) != len(channels) or len(label_maps) not in (1, len(images)):
        raise ValueError(f"{len(images)} images, {len(channels)} channel names and "
                         f"{len(label_maps)} label maps")
    out: dict[str, float] = {}
    unit = "mm" if spacing is not None else ("px" if np.ndim(images[0]) == 2 else "vox")
    step = spacing if spacing is not None else (1.0,) * np.ndim(images[0])
    for i, (image, channel) in enumerate(zip(images, channels, strict=True)):
        labels = np.asarray(label_maps[i if len(label_maps) > 1 else 0])
        image = np.asarray(image, dtype=np.float64)
        if labels.shape != image.shape:
            raise ValueError(f"label map {labels.shape} and image {image.shape} differ")
        others = np.isin(labels, list(structures))
        body = body_mask(image, others)
        for value, name in structures.items():
            values = structure_image_measurements(image, labels == value, others, body,
                                                  step, slice_axis)
            out |= {f"{name}_{k.replace('_mm', '_' + unit)}_{channel}": v
                    for k, v in values.items()}
    return out
