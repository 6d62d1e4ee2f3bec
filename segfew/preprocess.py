"""Bring images and label maps onto the network grid, and back (SPEC §5).

Training and prediction both go through :func:`preprocess_image` / :func:`preprocess_label`
with the same :class:`~segfew.config.PreprocessConfig`, which every model file stores, so an
image is normalised and resized identically in both. :func:`restore` is the exact inverse
geometry, so predicted label and probability maps can be written back in the source grid.

Geometry, in order (``restore`` undoes it in reverse):

1. 3D only: the slice axis (``cfg.slice_axis``) is moved last — the layout a 2D network
   trained on slices uses (it slices along the last axis).
2. ``keep_aspect``: the field of view is padded (never cropped, so no anatomy is lost)
   around the centre to the grid's aspect ratio — square for a square grid.
3. Resize: linear for images (Gaussian anti-aliasing when shrinking, as scikit-image does),
   nearest for labels. ``scipy.ndimage.zoom`` with ``grid_mode=True`` is used: it is what
   ``skimage.transform.resize`` calls internally, minus a float64 copy (256×256×10 →
   128³: 0.13 s vs 0.14 s), and nearest resizing with it is exactly invertible whenever the
   grid is at least as large as the source.

The intensity is normalised on the source array, before any resampling, so CLAHE sees the
image at its own resolution.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import EllipsisType
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from segfew.atomic import atomic_path, write_json
from segfew.config import PreprocessConfig
from segfew.errors import DataError, DataWarning, SpecError
from segfew.runinfo import file_digest

if TYPE_CHECKING:
    from segfew.cases import LabelRules
    from segfew.data import Case

__all__ = [
    "PreprocessCache",
    "grid_shape",
    "load_case",
    "normalise",
    "preprocess_image",
    "preprocess_label",
    "restore",
]

CACHE_ENV = "SEGFEW_CACHE"
DEFAULT_CACHE = ".segfew-cache"
_CACHE_FORMAT = 2  # bump when the meaning of a cached array changes


# ---------------------------------------------------------------- intensity


def normalise(array: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """Normalise intensities as ``cfg.intensity`` says; float32, same shape.

    - ``clahe``: rescale to [0, 1], CLAHE (2D or 3D), then 0–255 (the paper's MR setting).
    - ``ct``: Hounsfield units kept.
    - ``minmax``: [0, 1] over the image.
    - ``zscore``: mean 0, standard deviation 1 over the image.

    ``cfg.window`` (low, high), when given, clips the intensities first, in every mode.

    Non-finite voxels (NaN, ±inf) become the image's finite minimum, since no scanner
    value means "missing" and one NaN would otherwise spread through every resize.
    """
    a = np.asarray(array, dtype=np.float32)
    if not np.all(np.isfinite(a)):
        finite = a[np.isfinite(a)]
        a = np.where(np.isfinite(a), a, finite.min() if finite.size else 0.0).astype(np.float32)
    if cfg.window is not None:  # a CT window is applied before any scaling
        a = np.clip(a, *cfg.window)
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
    """CLAHE of a [0, 1] image, [0, 1] out; 3D volumes are always treated as volumes."""
    from skimage.exposure import equalize_adapthist

    # scikit-image treats a 3D array whose last axis has 3 or 4 entries as RGB(A); a volume
    # with 3 or 4 slices is not a colour image, so the undecorated function is called.
    clahe = getattr(equalize_adapthist, "__wrapped__", equalize_adapthist)
    if float(unit.max()) <= 0:
        return unit
    return np.asarray(clahe(unit, clip_limit=clip), dtype=np.float32)


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


def _plan(spatial_shape: tuple[int, ...], cfg: PreprocessConfig) -> _Plan:
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
        s = cfg.slice_axis
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


def grid_shape(spatial_shape: tuple[int, ...], cfg: PreprocessConfig) -> tuple[int, ...]:
    """The network-grid shape of an image with this spatial shape.

    One size value: that size on every axis. Two values on a 3D image: the in-plane axes
    get them and the slice axis keeps its native count, moved last (a 2D network's
    layout). Three values: a full 3D grid, in grid order (slice axis last).
    """
    return _plan(spatial_shape, cfg).grid


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


def preprocess_image(array: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """Normalise, then resize linearly onto the grid; float32 of shape ``grid_shape``.

    Padding (``keep_aspect``) uses the normalised image's minimum, i.e. its background.
    """
    plan = _plan(array.shape, cfg)
    a = normalise(array, cfg)
    out = _to_grid(a, plan, order=1, fill=float(a.min()), anti_alias=True)
    return out.astype(np.float32, copy=False)


def preprocess_label(array: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """Resize a label map onto the grid by nearest neighbour; int64 (padding is label 0)."""
    plan = _plan(array.shape, cfg)
    a = np.asarray(array)
    a = (np.rint(a) if a.dtype.kind == "f" else a).astype(np.int64)
    return _to_grid(a, plan, order=0, fill=0, anti_alias=False)


def restore(array: np.ndarray, source_shape: tuple[int, ...], cfg: PreprocessConfig,
            order: int) -> np.ndarray:
    """Map an array on the grid back to ``source_shape``: the inverse of the geometry above.

    ``order`` 0 for label maps, 1 for probabilities. Leading axes beyond the grid's (e.g.
    the class axis of ``(C, *grid)`` probabilities) are kept. A nearest round trip of a
    label map is exact when the grid is at least as large as the source on every axis;
    when it is smaller, boundaries move by at most about one source voxel per axis.
    """
    plan = _plan(tuple(source_shape), cfg)
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


# ---------------------------------------------------------------- cache


class PreprocessCache:
    """Pre-processed arrays on disk, so epochs and repeated runs skip reading and CLAHE.

    Keyed by the file's content (SHA-256), the settings (their JSON), the kind (image or
    label) and, for labels, the label rules, so a changed file or setting is a miss, never
    a stale hit. Arrays are ``.npy`` files opened memory-mapped and read-only; each has a
    ``.json`` record of its own SHA-256 and the settings that made it, checked on every
    read: an entry that does not match is recomputed and replaced, with a
    :class:`~segfew.errors.DataWarning`. A case is cached only after it passed the door
    (:func:`segfew.cases.read_case`); a ``case-*.json`` record keeps the door's warnings,
    said again on every hit. Entries are written to a temporary file and renamed, so
    concurrent processes at worst compute the same entry twice.

    ``root`` defaults to ``$SEGFEW_CACHE`` or ``./.segfew-cache``; ``PreprocessCache(None)``
    or ``enabled=False`` computes every time and writes nothing.
    """

    def __init__(self, root: Path | str | EllipsisType | None = ..., enabled: bool = True
                 ) -> None:
        if isinstance(root, EllipsisType):
            root = os.environ.get(CACHE_ENV) or Path.cwd() / DEFAULT_CACHE
        self.root = None if root is None else Path(root)
        self.enabled = enabled and self.root is not None
        self.hits = 0
        self.misses = 0
        # Hashing a file costs a full read; remember digests while the file is unchanged.
        self._digests: dict[tuple[str, int, int, int], str] = {}

    def __repr__(self) -> str:
        return f"PreprocessCache({str(self.root) if self.enabled else None!r})"

    def image(self, path: Path, cfg: PreprocessConfig) -> np.ndarray:
        """``preprocess_image`` of the image at ``path`` (float32 on the grid), cached."""
        from segfew.data import Case
        from segfew.io import case_id

        return self.arrays(Case(case_id(Path(path)), (Path(path),)), cfg)[0][0]

    def label(self, path: Path, cfg: PreprocessConfig, rules: LabelRules | None = None
              ) -> np.ndarray:
        """``preprocess_label`` of the label map at ``path`` (int64 on the grid), cached."""
        from segfew.cases import LabelRules, check_label_values
        from segfew.io import read_image

        rules = rules or LabelRules()

        def compute() -> np.ndarray:
            lab = read_image(path)
            arr = check_label_values(lab.array, rules.values, path, rules.remap, lab.colour)
            return preprocess_label(arr, cfg)

        return self._entry(self._key(Path(path), cfg, "label", rules), cfg, compute)

    def arrays(self, case: Case, cfg: PreprocessConfig, rules: LabelRules | None = None
               ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """A case's channels and label maps on the grid, read through the door once."""
        from segfew.cases import LabelRules, read_case

        rules = rules or LabelRules()
        if not self.enabled or self.root is None or case.problem is not None:
            self.misses += 1
            images, labels = read_case(case, rules)
            return ([preprocess_image(im.array, cfg) for im in images],
                    [preprocess_label(lab.array, cfg) for lab in labels])
        keys = ([self._key(p, cfg, "image", rules) for p in case.images],
                [self._key(p, cfg, "label", rules) for p in case.labels])
        record = self.root / f"case-{_hash([*keys[0], '|', *keys[1]])}.json"
        said = _read_record(record)
        ready: dict[str, np.ndarray] = {}

        def through_door() -> None:
            nonlocal said
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                images, labels = read_case(case, rules)
            said = [str(w.message) for w in caught]
            for w in caught:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
            ready.update({k: preprocess_image(im.array, cfg)
                          for k, im in zip(keys[0], images, strict=True)})
            ready.update({k: preprocess_label(lab.array, cfg)
                          for k, lab in zip(keys[1], labels, strict=True)})

        def compute(key: str) -> np.ndarray:
            if not ready:
                through_door()
            return ready[key]

        if said is None or not all(self._file(k).is_file() for k in (*keys[0], *keys[1])):
            through_door()
        else:
            for text in said:  # what the door said when it let this case in
                warnings.warn(DataWarning(text), stacklevel=2)
        out = ([self._entry(k, cfg, functools.partial(compute, k)) for k in keys[0]],
               [self._entry(k, cfg, functools.partial(compute, k)) for k in keys[1]])
        if ready:  # the door was passed in this call: record what it said
            with contextlib.suppress(OSError):
                write_json(record, said)
        return out

    def key(self, path: Path, cfg: PreprocessConfig, kind: str) -> str:
        return self._key(Path(path), cfg, kind, None)

    def _key(self, path: Path, cfg: PreprocessConfig, kind: str, rules: LabelRules | None
             ) -> str:
        from segfew.io import ReadLimits

        parts = [str(_CACHE_FORMAT), kind, self._digest(Path(path)), _settings(cfg),
                 repr(ReadLimits.from_env())]
        if kind == "label" and rules is not None:
            parts.append(rules.key())
        return f"{kind}-{_hash(parts)}"

    def _file(self, key: str) -> Path:
        assert self.root is not None
        return self.root / f"{key}.npy"

    def _digest(self, path: Path) -> str:
        try:
            st = path.stat()
        except OSError as e:
            raise DataError(f"cannot read image ({e.strerror})", path) from None
        memo = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
        if memo not in self._digests:
            if path.is_dir():  # a DICOM series: its files' digests
                files = sorted(p for p in path.iterdir() if p.is_file())
                self._digests[memo] = _hash([f"{p.name}:{file_digest(p)}" for p in files])
            else:
                self._digests[memo] = file_digest(path)
        return self._digests[memo]

    def _entry(self, key: str, cfg: PreprocessConfig, compute: Callable[[], np.ndarray]
               ) -> np.ndarray:
        """The verified array of ``key``, or ``compute()`` stored under it."""
        if not self.enabled or self.root is None:
            self.misses += 1
            return compute()
        file = self._file(key)
        sidecar = file.with_suffix(".json")
        if file.is_file():
            problem = _verify(file, sidecar, cfg)
            if problem is None:
                with contextlib.suppress(OSError, ValueError):
                    out = np.load(file, mmap_mode="r")
                    self.hits += 1
                    return out
                problem = "cannot be read"
            warnings.warn(DataWarning(f"cache entry {problem}; recomputed and replaced", file),
                          stacklevel=3)
        self.misses += 1
        out = compute()
        try:
            with atomic_path(file, suffix=".npy") as tmp:
                np.save(tmp, out)
                record = {"sha256": file_digest(tmp), "settings": _settings(cfg),
                          "format": _CACHE_FORMAT}
            write_json(sidecar, record)
        except OSError:  # a read-only or full cache disk must not stop training
            return out
        return np.load(file, mmap_mode="r")


def _settings(cfg: PreprocessConfig) -> str:
    return json.dumps(cfg.model_dump(mode="json"), sort_keys=True)


def _hash(parts: list[str]) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _verify(file: Path, sidecar: Path, cfg: PreprocessConfig) -> str | None:
    """None when ``file`` matches its record; else what is wrong with it."""
    try:
        record = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "has no readable checksum record"
    if not isinstance(record, dict) or record.get("settings") != _settings(cfg):
        return "was made with other settings"
    try:
        digest = file_digest(file)
    except OSError:
        return "cannot be read"
    return None if digest == record.get("sha256") else "does not match its checksum"


def _read_record(path: Path) -> list[str] | None:
    try:
        said = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return [str(s) for s in said] if isinstance(said, list) else None


def load_case(case: Case, cfg: PreprocessConfig, cache: PreprocessCache | None = None,
              rules: LabelRules | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """A case on the grid: ``(C, *grid)`` float32 images and its labels (int64) or None.

    The case is read through the door (:func:`segfew.cases.read_case`, every check, with
    ``rules`` for its label maps), then pre-processed, through ``cache`` when given. One
    label map gives ``grid``-shaped labels; one per channel gives ``(C, *grid)``.
    """
    cache = cache or PreprocessCache(None)
    images, labels = cache.arrays(case, cfg, rules)
    shapes = {a.shape for a in images + labels}
    if len(shapes) > 1:
        raise DataError(f"case {case.id}: channels and labels land on different grids "
                        f"{sorted(shapes)}; give the size of every axis", case.images[0])
    image = np.stack(images).astype(np.float32, copy=False)
    if not labels:
        return image, None
    if len(labels) == 1:
        return image, np.array(labels[0], dtype=np.int64)
    return image, np.stack(labels).astype(np.int64, copy=False)
