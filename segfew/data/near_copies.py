"""Scans that look like one scan re-exported: a cheap check by tiny thumbnails.

:func:`segfew.data.splits.group_identical_images` joins copies with the same file bytes or
the same voxels. A re-export with another intensity scale, slight noise, a one-pixel shift,
a crop of a pixel or two, a mirror (3D: left-right or back-front, as read in RAS) or (2D) a
rotation has neither, yet it is the same scan: a split that puts it on the other side of
its original leaks. A shift or crop of several pixels, a gamma or window change and a
dropped end slice correlate less: they are missed. Here every image gets a thumbnail
(:func:`thumbnail`: averaged down to a fixed small grid, z-scored), and two images of
different groups whose thumbnails correlate at :data:`NEAR_COPY_CORRELATION` or more are
said in one :class:`~segfew.errors.DataWarning` (:func:`warn_near_copies`). Nothing is
joined or refused: two patients' scans may look alike, so the user decides.

The thresholds were chosen on the public ACDC, LGG, Cheng brain-tumour and BreastMNIST data:
every pair of different patients' scans there, against the re-exports listed above
(``bench/near_copy_margins.py``; its figures in docs/trust.md).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segfew.errors import DataWarning

#: the thumbnail grid of a 2D picture (rows, columns) and of a 3D scan (each axis)
GRID_2D = (32, 32)
GRID_3D = (8, 16, 16)
#: thumbnails of two images of different groups correlating at least this much are
#: said as one scan re-exported (Pearson correlation of the z-scored thumbnails): 3D
#: scans, and 2D pictures (whose different patients' slices look more alike)
NEAR_COPY_CORRELATION = 0.97
NEAR_COPY_CORRELATION_2D = 0.99
#: images of one kind (2D, 3D) compared at most (the pairs are a matrix product, in blocks
#: of :data:`BLOCK` rows): beyond it no near copies are looked for, and a warning says so
MOST_COMPARED = 12000
BLOCK = 512
#: the pairs a warning names before it counts the rest
NAMED_PAIRS = 3


def _shrink(array: np.ndarray, axis: int, size: int) -> np.ndarray:
    """``array`` averaged (or, where shorter, repeated) along ``axis`` to ``size``."""
    n = array.shape[axis]
    if n >= size:
        edges = np.round(np.linspace(0, n, size + 1)).astype(int)
        sums = np.add.reduceat(array, edges[:-1], axis=axis)
        counts = np.diff(edges).reshape([-1 if a == axis else 1 for a in range(array.ndim)])
        return sums / counts
    index = np.minimum(((np.arange(size) + 0.5) * n / size).astype(int), n - 1)
    return np.take(array, index, axis=axis)


def thumbnail(array: np.ndarray) -> np.ndarray | None:
    """The image's thumbnail: ``array`` (2D: rows × columns; 3D: any axis order, as read)
    averaged over blocks down to :data:`GRID_2D` or :data:`GRID_3D`, then z-scored and
    divided by its length, so the dot product of two thumbnails is their correlation; a
    flat vector of float32. None for a blank image, non-finite values only, another
    number of dimensions, or an image smaller than its grid in its first two axes (there a
    one-pixel shift is no slight change: no near copy is looked for)."""
    a = np.asarray(array)
    if a.ndim not in (2, 3) or a.size == 0:
        return None
    grid = GRID_2D if a.ndim == 2 else GRID_3D
    if any(n < g for n, g in zip(a.shape[:2], grid[-2:], strict=True)):
        return None  # smaller than its thumbnail: a pixel's shift is no slight change
    a = np.nan_to_num(a.astype(np.float64, copy=False), nan=0.0, posinf=0.0, neginf=0.0)
    for axis, size in enumerate(grid):
        a = _shrink(a, axis, size)
    flat = a.ravel() - a.mean()
    norm = float(np.sqrt((flat ** 2).sum()))
    if not np.isfinite(norm) or norm <= 1e-12 * max(float(np.abs(a).max()), 1.0):
        return None
    return (flat / norm).astype(np.float32)


def _orientations(thumb: np.ndarray) -> list[np.ndarray]:
    """A 2D thumbnail's 8 rotations and mirrors (a picture states no orientation, as
    :func:`segfew.identity.voxel_digest` treats it); a 3D one (read in RAS: its first two
    axes left-right and back-front) as it is and mirrored along either or both of them.
    The set holds the inverse of each, so two thumbnails' best correlation is symmetric."""
    grid = GRID_2D if thumb.size == GRID_2D[0] * GRID_2D[1] else GRID_3D
    t = thumb.reshape(grid)
    if len(grid) == 3:
        return [np.ascontiguousarray(t[::a, ::b]).ravel() for a in (1, -1) for b in (1, -1)]
    return [np.ascontiguousarray(np.rot90(b, k)).ravel() for b in (t, t[::-1]) for k in range(4)]


@dataclass(frozen=True)
class NearCopy:
    """Two images of different groups whose thumbnails correlate ``correlation``."""

    first: Path
    second: Path
    correlation: float


def _kind(size: int) -> str:
    """What images a thumbnail of ``size`` values is taken of."""
    return "2D pictures" if size == GRID_2D[0] * GRID_2D[1] else "3D scans"


@dataclass(frozen=True)
class NearCopies:
    """What :func:`find_near_copies` found: ``pairs`` (highest correlation first), and
    ``not_compared``: the number of images of each kind (``"2D pictures"``, ``"3D scans"``)
    that were more than :data:`MOST_COMPARED`, whose near copies were not looked for."""

    pairs: list[NearCopy] = field(default_factory=list)
    not_compared: dict[str, int] = field(default_factory=dict)

    def unlooked(self) -> list[str]:
        """Each kind not compared, in words (``"6002 2D pictures, more than 6000"``)."""
        return [f"{n} {kind}, more than {MOST_COMPARED}"
                for kind, n in sorted(self.not_compared.items())]

    def record(self) -> dict[str, Any]:
        """Every pair (paths, correlation to 4 places) and what was not compared, as a run
        record keeps them."""
        return {"compared_by": COMPARED_BY, "pairs": [
            {"first": str(c.first), "second": str(c.second),
             "correlation": round(c.correlation, 4)} for c in self.pairs],
            "not_looked_for": self.unlooked()}


#: how :func:`find_near_copies` compares, as a run record says it
COMPARED_BY = (f"correlation of thumbnails (3D {GRID_3D[0]}x{GRID_3D[1]}x{GRID_3D[2]}, mirrored "
               f"left-right and back-front, at {NEAR_COPY_CORRELATION} or more; 2D "
               f"{GRID_2D[0]}x{GRID_2D[1]} in 8 rotations and mirrors, at "
               f"{NEAR_COPY_CORRELATION_2D} or more)")


def find_near_copies(thumbs: Sequence[tuple[Path, str, np.ndarray]]) -> NearCopies:
    """The pairs of ``thumbs`` (path, group, :func:`thumbnail`) of different groups whose
    thumbnails correlate at :data:`NEAR_COPY_CORRELATION` (2D:
    :data:`NEAR_COPY_CORRELATION_2D`) or more in some orientation (:func:`_orientations`),
    highest first. Thumbnails of one grid are compared with each other only; none where
    more than :data:`MOST_COMPARED` share a grid (counted in ``not_compared``). Memory
    stays bounded: :data:`BLOCK` × n correlations at a time, each pair computed once (the
    orientations hold each one's inverse, so turning either image of a pair is enough)."""
    found: list[NearCopy] = []
    skipped: dict[str, int] = {}
    for size in sorted({t.size for _, _, t in thumbs}):
        same = [(p, g, t) for p, g, t in thumbs if t.size == size]
        n = len(same)
        if n > MOST_COMPARED:
            skipped[_kind(size)] = n
        if n < 2 or n > MOST_COMPARED:
            continue
        matrix = np.stack([t for _, _, t in same])
        groups = np.array([g for _, g, _ in same], dtype=object)
        least = (NEAR_COPY_CORRELATION_2D if size == GRID_2D[0] * GRID_2D[1]
                 else NEAR_COPY_CORRELATION)
        for start in range(0, n, BLOCK):  # a block turned, against itself and later rows
            turned = zip(*(_orientations(t) for t in matrix[start:start + BLOCK]), strict=True)
            best = np.full((min(BLOCK, n - start), n - start), -np.inf, np.float32)
            for rows in turned:
                np.maximum(best, np.stack(rows) @ matrix[start:].T, out=best)
            for i, j in zip(*np.nonzero(best >= least), strict=True):
                a, b = start + int(i), start + int(j)
                if b > a and groups[a] != groups[b]:
                    found.append(NearCopy(same[a][0], same[b][0], float(best[i, j])))
    pairs = sorted(found, key=lambda c: (-c.correlation, str(c.first), str(c.second)))
    return NearCopies(pairs, skipped)


def warn_near_copies(thumbs: Sequence[tuple[Path, str, np.ndarray]],
                     where: str | Path | None) -> NearCopies:
    """Say the :func:`find_near_copies` of ``thumbs`` in one :class:`DataWarning` naming
    ``where`` (the table or folder): the groups linked by near copies, each set named by
    one file of each group (:data:`NAMED_PAIRS` sets, the rest counted). Images whose near
    copies were not looked for (more than :data:`MOST_COMPARED`) are said in another.
    Returns what was found (every pair, for a run record)."""
    found = find_near_copies(thumbs)
    if found.not_compared:
        warnings.warn(DataWarning(
            f"near copies not looked for: {'; '.join(found.unlooked())} (at most "
            f"{MOST_COMPARED} images are compared with each other); only copies with the "
            "same file bytes or the same voxels were looked for", where), stacklevel=3)
    parent: dict[str, str] = {}

    def root(g: str) -> str:
        while parent.get(g, g) != g:
            g = parent[g]
        return g

    group_of = {p: g for p, g, _ in thumbs}
    lowest: dict[str, float] = {}
    for c in found.pairs:
        a, b = root(group_of[c.first]), root(group_of[c.second])
        if a != b:
            parent[max(a, b)] = min(a, b)
    shown: dict[str, dict[str, Path]] = {}  # set → group → its first file in a pair
    for c in found.pairs:
        top = root(group_of[c.first])
        for path in (c.first, c.second):
            shown.setdefault(top, {}).setdefault(group_of[path], path)
        lowest[top] = min(lowest.get(top, 1.0), c.correlation)
    sets = [sorted(files.values(), key=str) for _, files in sorted(shown.items())]
    if sets:
        names = {p.name for files in sets for p in files}
        short = len(names) == sum(map(len, sets))  # file names alone tell them apart
        listed = "; ".join(
            " and ".join(p.name if short else str(p) for p in files)
            + f" (correlation {lowest[top]:.3f} or more)"
            for top, files in list(zip(sorted(shown), sets, strict=True))[:NAMED_PAIRS])
        rest = sets[NAMED_PAIRS:]
        more = (f"; and {len(rest)} more set{'s' if len(rest) > 1 else ''} of "
                f"{sum(map(len, rest))} files (a split's run.json lists every pair)"
                if rest else "")
        warnings.warn(DataWarning(
            "images of different patients look like one scan re-exported (another intensity "
            f"scale, slight noise, a one-pixel shift, a crop of a pixel or two, a mirror, a 2D "
            f"picture's rotation): "
            f"{listed}{more}; a split may put them on both sides: if they are one scan or one "
            "patient, give them one patient in the group column (or drop the copy); else "
            "check the export", where), stacklevel=3)
    return found
