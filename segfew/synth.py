"""A small synthetic phantom dataset, for the demo and for tests that need real files.

Each image shows three structures, loosely modelled on a short-axis cardiac slice:

- label 1 ``wall``: an elliptical ring (a shell in 3D), like the myocardium;
- label 2 ``cavity``: the bright inside of the ring, like a ventricle's blood pool;
- label 3 ``blob``: a round structure beside the ring.

Image-level classes differ only in the *shape, size or arrangement* of these structures
(an oval ring, the blob on the other side, a thick wall and small cavity, and with two
channels how much the cavity contracts between the phases), never in their intensity.
A random gain per image (×0.6–1.5), a smooth bias field, noise and jitter of position,
size and in-plane rotation make the mean intensity useless for telling the classes apart,
so a classifier has to know where the structures are: the situation the paper's
segmentation features are meant for (Wong et al. 2018).

Everything is deterministic given the seed; every case has its own random stream, so a
case does not change when others are added.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, ValidationError

from segfew.data.label_names import LABEL_NAMES_FILE
from segfew.errors import SpecError
from segfew.files import (
    RUN_RECORD,
    atomic_path,
    check_replace,
    is_recorded,
    outputs_record,
    write_json,
    write_text,
)
from segfew.spec import Settings, describe_validation_error
from segfew.spec.parts import Seed

__all__ = ["CLASSES", "LABELS", "SynthSpec", "make_phantoms", "write_phantoms"]

LABELS = {0: "background", 1: "wall", 2: "cavity", 3: "blob"}


@dataclass(frozen=True)
class PhantomClass:
    """The structural traits of one image-level class."""

    name: str
    oval: bool = False  # ring elongated along the first axis
    blob_right: bool = False  # blob on the other side of the ring
    thick: bool = False  # thick wall, small cavity
    weak: bool = False  # with two channels: the cavity barely contracts


CLASSES = (
    PhantomClass("normal"),
    PhantomClass("oval", oval=True, weak=True),
    PhantomClass("shifted", blob_right=True),
    PhantomClass("thick", thick=True, weak=True),
    PhantomClass("oval-shifted", oval=True, blob_right=True),
    PhantomClass("oval-thick", oval=True, thick=True),
    PhantomClass("shifted-thick", blob_right=True, thick=True, weak=True),
    PhantomClass("oval-shifted-thick", oval=True, blob_right=True, thick=True, weak=True),
)

SPACING_MM = 1.25


class SynthSpec(Settings):
    """``segfew synth``: the phantom dataset's settings."""

    out: Path
    dim: Literal[2, 3] = 2
    n_per_class: int = Field(default=12, ge=1, le=10_000)
    size: int | None = Field(default=None, ge=16, le=512,
                             description="voxels per axis (default 64 in 2D, 32 in 3D)")
    classes: int = Field(default=3, ge=2, le=len(CLASSES))
    channels: int = Field(default=1, ge=1, le=2, description="2: two phases, ch1 and ch2")
    seed: Seed = 0
    force: bool = Field(default=False, description="write into a non-empty out folder, "
                        "replacing the phantoms segfew wrote there")


def make_phantoms(out: Path, *, dim: int = 2, n_per_class: int = 12, size: int | None = None,
                  num_classes: int = 3, channels: int = 1, seed: int = 0) -> Path:
    """Write the phantom dataset under ``out``; returns the path of ``labels.csv``.

    Layout: ``images/<id>.nii.gz`` and ``labels/<id>_seg.nii.gz`` (with ``channels=2``:
    ``<id>_ch1``/``<id>_ch2`` and ``<id>_ch1_seg``/``<id>_ch2_seg``), ``labels.csv`` with
    columns ``id,label,group`` (each case its own group), and ``run.json``. Earlier
    phantom files in ``images/`` and ``labels/`` that this run does not write are removed,
    so a smaller rerun leaves no stale cases; other files are left alone.
    """
    try:
        spec = SynthSpec.model_validate(dict(out=out, dim=dim, n_per_class=n_per_class, size=size,
                                             classes=num_classes, channels=channels, seed=seed,
                                             force=True))
    except ValidationError as e:
        raise SpecError(describe_validation_error(e)) from None
    return write_phantoms(spec, overwrite=True)


def write_phantoms(spec: SynthSpec, overwrite: bool = False) -> Path:
    """:func:`make_phantoms` from a validated spec (what ``segfew synth`` calls).

    A non-empty ``spec.out`` is refused (:class:`SpecError`) unless ``spec.force``: a
    dataset there would be replaced. Even then, a file this run would replace or remove
    that no segfew run recorded writing there (``run.json`` lists the phantoms) is refused
    (:class:`DataError`, :func:`segfew.files.check_replace`) unless ``overwrite``."""
    out = Path(spec.out)
    if not spec.force and out.is_dir() and any(out.iterdir()):
        raise SpecError("--out is not empty (it may hold a dataset that this would replace); "
                        "choose an empty folder, or give --force to replace the phantoms "
                        "segfew wrote there", out)
    planned = _planned(spec)
    stale = [p.relative_to(out).as_posix() for folder in ("images", "labels")
             for p in sorted((out / folder).glob("case*.nii.gz")) if _phantom_name(p.name)]
    check_replace(out / RUN_RECORD, [*planned, *stale, RUN_RECORD], overwrite)
    return _make(spec)


def _phantom_name(name: str) -> bool:
    return re.fullmatch(r"case\d+(_ch[12])?(_seg)?\.nii\.gz", name) is not None


def _planned(spec: SynthSpec) -> list[str]:
    """The files a run writes, relative to ``spec.out``."""
    suffixes = ["_ch1", "_ch2"] if spec.channels == 2 else [""]
    names = [f"{folder}/case{i:03d}{suffix}{tail}.nii.gz"
             for i in range(spec.classes * spec.n_per_class) for suffix in suffixes
             for folder, tail in (("images", ""), ("labels", "_seg"))]
    return [*names, "labels.csv", f"labels/{LABEL_NAMES_FILE}"]


def _make(spec: SynthSpec) -> Path:
    import nibabel as nib

    from segfew.runinfo import write_run_info

    out = Path(spec.out)
    n = spec.size or (64 if spec.dim == 2 else 32)
    affine = np.diag([SPACING_MM] * spec.dim + [1.0] * (4 - spec.dim))
    suffixes = ["_ch1", "_ch2"] if spec.channels == 2 else [""]
    rows, written = [], set()
    for c in range(spec.classes):
        for j in range(spec.n_per_class):
            case = f"case{c * spec.n_per_class + j:03d}"
            rng = np.random.default_rng([spec.seed, c, j])
            phases = _phantom(CLASSES[c], spec.dim, n, spec.channels, rng)
            for suffix, (image, label) in zip(suffixes, phases, strict=True):
                for folder, name, arr in (("images", f"{case}{suffix}", image),
                                          ("labels", f"{case}{suffix}_seg", label)):
                    path = out / folder / f"{name}.nii.gz"
                    with atomic_path(path) as tmp:
                        nib.save(nib.Nifti1Image(arr, affine), str(tmp))
                    written.add(path)
            rows.append((case, CLASSES[c].name, case))
    for folder in ("images", "labels"):  # an earlier run's phantoms: only those segfew wrote
        for old in (out / folder).glob("case*.nii.gz"):
            if old not in written and _phantom_name(old.name) and is_recorded(
                    out / RUN_RECORD, old.relative_to(out).as_posix()):
                old.unlink()
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(["id", "label", "group"])
    writer.writerows(rows)
    write_text(out / "labels.csv", table.getvalue())
    # the structures' names, as `segfew label` records them, so pre-training names them
    write_json(out / "labels" / LABEL_NAMES_FILE,
               {"method": "synth", "label_names": [LABELS[k] for k in sorted(LABELS)]})
    info = spec.model_dump(mode="json")
    info["labels"] = LABELS
    info["class_names"] = [k.name for k in CLASSES[: spec.classes]]
    written_names = [p.relative_to(out).as_posix() for p in written]
    write_run_info(out, info, spec.seed, extra=outputs_record(
        out / RUN_RECORD, [*written_names, "labels.csv", f"labels/{LABEL_NAMES_FILE}"]))
    return out / "labels.csv"


def _phantom(kind: PhantomClass, dim: int, n: int, channels: int, rng: np.random.Generator
             ) -> list[tuple[np.ndarray, np.ndarray]]:
    """One case: ``channels`` (image float32, label uint8) pairs of shape ``(n,) * dim``."""
    from scipy import ndimage

    # Normalised coordinates in [-1, 1], rotated in-plane about a jittered centre.
    u = [(np.arange(n) + 0.5) / n * 2 - 1 for _ in range(dim)]
    grid = np.meshgrid(*u, indexing="ij")
    centre = rng.uniform(-0.08, 0.08, dim)
    theta = rng.uniform(-0.3, 0.3)
    x = [g - c for g, c in zip(grid, centre, strict=True)]
    x[0], x[1] = (np.cos(theta) * x[0] + np.sin(theta) * x[1],
                  -np.sin(theta) * x[0] + np.cos(theta) * x[1])

    scale = rng.uniform(0.88, 1.12)
    outer = np.full(dim, 0.42 * scale)
    outer[:2] *= (1.35, 0.8) if kind.oval else rng.uniform(0.95, 1.05, 2)
    if dim == 3:
        outer[2] *= 0.9
    ratio = (0.45 if kind.thick else 0.7) + rng.uniform(-0.04, 0.04)
    blob_r = 0.13 * scale * rng.uniform(0.9, 1.1)
    side = 1.0 if kind.blob_right else -1.0
    blob_at = np.zeros(dim)
    blob_at[1] = side * (outer[1] + blob_r + 0.03)

    tones = {0: 0.05, 1: 0.3, 2: 0.85, 3: 0.6}
    tones = {k: v + rng.uniform(-0.04, 0.04) for k, v in tones.items()}
    gain = rng.uniform(0.6, 1.5)
    bias = (1 + sum(rng.uniform(-0.15, 0.15) * g for g in grid)
            + rng.uniform(-0.1, 0.1) * grid[0] * grid[1])
    noise = rng.normal(0.0, 0.03, (channels, *grid[0].shape))

    contraction = 0.9 if kind.weak else 0.62
    phases = []
    for ch in range(channels):
        squeeze = 1.0 if ch == 0 else contraction
        o = outer * (1 - (1 - squeeze) * 0.35)  # the wall thickens as the cavity shrinks
        r_out = _radius(x, 0, o)
        r_in = _radius(x, 0, outer * ratio * squeeze)
        r_blob = _radius(x, blob_at, np.full(dim, blob_r))
        label = np.zeros(grid[0].shape, np.uint8)
        label[r_out <= 1] = 1
        label[r_in <= 1] = 2
        label[r_blob <= 1] = 3
        image = np.choose(label, [tones[0], tones[1], tones[2], tones[3]])
        image = ndimage.gaussian_filter(image, 0.6) * bias + noise[ch]
        phases.append(((image * gain * 1000).astype(np.float32), label))
    return phases


def _radius(x: list[np.ndarray], centre: np.ndarray | float, radii: np.ndarray) -> np.ndarray:
    """Ellipsoidal radius: <= 1 inside the ellipsoid with these centre and semi-axes."""
    c = np.broadcast_to(np.asarray(centre, dtype=float), (len(x),))
    return np.sqrt(sum(((xi - ci) / ri) ** 2 for xi, ci, ri in zip(x, c, radii, strict=True)))
