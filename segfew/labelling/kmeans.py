"""k-means pseudo-labels: the paper's THRESHOLD framework (Wong et al. 2018, §2.3; SPEC §5).

Where no expert segmentation exists, the segmentation network is pre-trained on intensity
clusters instead. The clusters are fitted once on intensities pooled over all training
images (not per image) and numbered in order of their centre intensity, so label 1 is the
darkest tissue class in every image and the network learns one consistent labelling.

``--k K`` (:data:`segfew.spec.K_MEANS_LABELS`, the one statement of it) fits K clusters:
with ``keep_background`` (the default) labels 1..K plus 0 for the background, K + 1 labels;
without it labels 0..K-1. ``segfew pretrain`` reads ``centres.json`` beside the label maps
and names the labels itself, so k-means labels need no ``label_names``.

Each image is normalised first (``minmax`` by default), so images of different intensity
scales share the centres. With ``keep_background`` the voxels at or below a background
threshold are label 0 and take no part in the fit; the other voxels get labels 1..k. The
default threshold is each image's own minimum after normalisation: it removes exactly the
zero-filled background of skull-stripped or masked scans and never eats tissue, whereas an
Otsu threshold in MR often cuts through dark tissue (lungs, bone) — with k clusters the
darkest cluster already collects whatever dark background is left. Give a threshold to
move it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.cluster import KMeans

from segfew.data.label_names import PREVIEW_DIR, kmeans_label_names
from segfew.errors import DataError
from segfew.files import write_json
from segfew.preprocess.grid import Preprocessing, normalise

__all__ = ["KMeansLabeller", "fit_kmeans"]

FORMAT = "segfew-kmeans"
PREVIEW_FILE = Path(PREVIEW_DIR) / "kmeans_preview.png"
#: above this many distinct values an image is sampled instead of weighted exactly
_EXACT_MAX_DISTINCT = 4096
INTENSITIES = ("clahe", "ct", "minmax", "zscore")


@dataclass
class KMeansLabeller:
    """Maps intensities to k-means labels with fixed centres (sorted ascending).

    Centre ``i`` is label ``i + 1`` with ``keep_background`` (0 is background), else ``i``.
    """

    centres: np.ndarray
    keep_background: bool = True
    background_threshold: float | None = None
    intensity: str = "minmax"

    def __post_init__(self) -> None:
        self.centres = np.sort(np.asarray(self.centres, dtype=np.float64).ravel())

    @property
    def k(self) -> int:
        return int(self.centres.size)

    @property
    def num_labels(self) -> int:
        """Labels in a map: k, plus the background with ``keep_background``."""
        return self.k + int(self.keep_background)

    def label_names(self) -> list[str]:
        """``background`` (with ``keep_background``), then ``k1`` (darkest) … ``k<k>``."""
        return kmeans_label_names(self.k, self.keep_background)

    def normalise(self, array: np.ndarray) -> np.ndarray:
        return _normalise(array, self.intensity)

    def threshold(self, normalised: np.ndarray) -> float:
        """The background threshold of one (normalised) image."""
        if self.background_threshold is not None:
            return float(self.background_threshold)
        return float(normalised.min())

    def label(self, array: np.ndarray) -> np.ndarray:
        """uint8 label map of ``array`` (same shape): nearest centre, background 0."""
        x = self.normalise(array)
        # Nearest of sorted 1D centres = which interval between midpoints x falls in.
        labels = np.searchsorted((self.centres[1:] + self.centres[:-1]) / 2, x, side="left")
        if not self.keep_background:
            return labels.astype(np.uint8)
        out = (labels + 1).astype(np.uint8)
        out[x <= self.threshold(x)] = 0
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": 1,
            "k": self.k,
            "centres": [float(c) for c in self.centres],
            "keep_background": self.keep_background,
            "background_threshold": self.background_threshold,
            "intensity": self.intensity,
        }

    def save(self, path: Path) -> None:
        """Write the centres and settings as JSON (atomically), for ``--centres`` reuse."""
        write_json(path, self.to_dict())

    @classmethod
    def from_file(cls, path: Path) -> KMeansLabeller:
        """Read a file written by :meth:`save`; DataError naming the file if it is not one."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as e:
            raise DataError(f"cannot read k-means centres ({e.strerror})", path) from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(f"not a k-means centres file: invalid JSON ({e})", path) from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise DataError("not a k-means centres file (written by `segfew label`)", path)
        try:
            centres = np.asarray(data["centres"], dtype=np.float64)
            keep = data["keep_background"]
            thr = data["background_threshold"]
            intensity = data["intensity"]
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"k-means centres file is missing or has a bad entry: {e}",
                            path) from None
        if centres.ndim != 1 or centres.size < 1 or not np.all(np.isfinite(centres)):
            raise DataError("k-means centres must be a non-empty list of numbers", path)
        if (not isinstance(keep, bool) or intensity not in INTENSITIES
                or not (thr is None or isinstance(thr, int | float))):
            raise DataError("k-means centres file has invalid settings "
                            "(keep_background, background_threshold or intensity)", path)
        return cls(centres, keep_background=keep,
                   background_threshold=None if thr is None else float(thr),
                   intensity=intensity)


def _normalise(array: np.ndarray, intensity: str) -> np.ndarray:
    return normalise(array, Preprocessing(intensity=intensity))  # type: ignore[arg-type]


def fit_kmeans(
    arrays: Iterable[np.ndarray],
    k: int,
    *,
    keep_background: bool = True,
    background_threshold: float | None = None,
    sample_per_image: int = 20000,
    seed: int = 0,
    intensity: str = "minmax",
) -> KMeansLabeller:
    """Fit k intensity clusters on voxels of all ``arrays`` together.

    Every image weighs as ``sample_per_image`` voxels (foreground only, with
    ``keep_background``) whatever its size. k-means runs on the distinct values with their
    counts as sample weights — the same objective as on every voxel, so exact: an image with
    at most a few thousand distinct values (8-bit PNG/JPEG, integer CT/MR) adds its values
    with weights ``count · sample_per_image / voxels``; a larger one adds a random sample of
    ``sample_per_image`` voxels. Raises DataError when there are fewer distinct intensities
    than clusters.
    """
    rng = np.random.default_rng(seed)
    probe = KMeansLabeller(np.zeros(1), keep_background, background_threshold, intensity)
    values, weights = [], []
    for array in arrays:
        x = probe.normalise(array).ravel()
        if keep_background:
            x = x[x > probe.threshold(x)]
        if x.size == 0:
            continue
        u, counts = np.unique(x, return_counts=True)
        if u.size > _EXACT_MAX_DISTINCT and x.size > sample_per_image:
            u, counts = np.unique(rng.choice(x, sample_per_image, replace=False),
                                  return_counts=True)
            scale = 1.0
        else:
            scale = min(1.0, sample_per_image / x.size)
        values.append(u)
        weights.append(counts * scale)
    pooled = np.concatenate(values) if values else np.zeros(0)
    pooled_weights = np.concatenate(weights) if weights else np.zeros(0)
    distinct, inverse = np.unique(pooled, return_inverse=True)
    if distinct.size < 2:  # k >= 2 (LabelSpec): no --k can split one value
        raise DataError(f"cannot fit {k} clusters: the images hold {distinct.size or 'no'} "
                        "foreground intensit" + ("y" if distinct.size else "ies") + ", so no "
                        "--k can split them (binary masks? give them to pretrain as --labels; "
                        "k-means labels grey-level scans)")
    if distinct.size < k:
        raise DataError(f"cannot fit {k} clusters: the images have only {distinct.size} "
                        f"distinct foreground intensities: give --k {distinct.size} or less")
    summed = np.bincount(inverse.ravel(), weights=pooled_weights, minlength=distinct.size)
    km = KMeans(n_clusters=k, random_state=seed, n_init=3)
    km.fit(distinct.reshape(-1, 1), sample_weight=summed)
    return KMeansLabeller(km.cluster_centers_.ravel(), keep_background, background_threshold,
                          intensity)
