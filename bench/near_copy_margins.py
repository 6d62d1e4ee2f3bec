"""How far apart different patients' scans are, and how close a re-export stays, in the
thumbnail correlation of :mod:`segfew.data.near_copies` (docs/trust.md "Near copies")::

    python bench/near_copy_margins.py ../shared/data

For each public data set found under the folder: the highest correlation between scans of
different patients (ACDC: the file's ``patientNNN``, 074 and 076 one; LGG: one volume per
patient; Cheng and BreastMNIST name no patients, so every pair counts), and the lowest
correlation of a scan with each of its re-exports (intensities ×4, a one-pixel shift, a
two-pixel crop, noise of SD 0.5, a mirror along the first or the second axis: left-right
and back-front in 3D) over 25 scans drawn with seed 0. The highest of different patients
is given in the orientations compared (2D: 8 rotations and mirrors; 3D: the mirrors along
the first two axes) and as the scans are (column "as is").
"""

from __future__ import annotations

import argparse
import csv
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from segfew.data import near_copies as nc
from segfew.io import read_image

Loader = Callable[[], np.ndarray]


def _read(path: Path) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(read_image(path).array, dtype=np.float32)


def _variants(a: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    crop = a[2:-2, 2:-2]
    return {"x4": a * 4, "shift 1 px": np.roll(a, 1, 0), "crop 2 px": crop,
            "noise SD 0.5": a + rng.normal(0, 0.5, a.shape).astype(np.float32),
            "mirror axis 0": a[::-1].copy(), "mirror axis 1": a[:, ::-1].copy(),
            "shift + crop + x4": np.roll(crop, 1, 0) * 4}


def _best(t: np.ndarray, u: np.ndarray | None) -> float:
    if u is None or u.size != t.size:
        return float("nan")
    return max(float(o @ u) for o in nc._orientations(t))


def margins(items: list[tuple[str, Loader]], rng: np.random.Generator, sample: int = 25
            ) -> tuple[float, float, int, dict[str, float]]:
    """``items``: (patient, loader). The highest correlation of different patients' scans
    (in the orientations compared, and unturned), the pairs compared, and the lowest
    correlation of each re-export with its scan."""
    picked = set(rng.choice(len(items), min(sample, len(items)), replace=False).tolist())
    thumbs, patients = [], []
    found: dict[str, list[float]] = {}
    for k, (patient, load) in enumerate(items):
        a = load()
        t = nc.thumbnail(a)
        if t is None:
            continue
        thumbs.append(t)
        patients.append(patient)
        if k in picked:
            for name, b in _variants(a, rng).items():
                found.setdefault(name, []).append(_best(t, nc.thumbnail(b)))
    if len(thumbs) < 2:
        return float("nan"), float("nan"), 0, {}  # smaller than the thumbnail grid: never compared
    m = np.stack(thumbs)
    turned = [np.stack(o) for o in zip(*(nc._orientations(t) for t in m), strict=True)]
    best = np.concatenate([np.max([m[s:s + nc.BLOCK] @ t.T for t in turned], axis=0)
                           for s in range(0, len(m), nc.BLOCK)])
    who = np.array(patients, dtype=object)
    upper = np.triu(who[:, None] != who[None, :], 1)
    plain = np.concatenate([m[s:s + nc.BLOCK] @ m.T for s in range(0, len(m), nc.BLOCK)])
    return (float(best[upper].max()), float(plain[upper].max()), int(upper.sum()),
            {name: float(np.nanmin(v)) for name, v in found.items()})


def data_sets(root: Path) -> dict[str, list[tuple[str, Loader]]]:
    """The public data sets under ``root`` that are there, as (patient, loader) items."""
    out: dict[str, list[tuple[str, Loader]]] = {}
    if (root / "acdc/images").is_dir():
        same = {"patient076": "patient074"}  # one scan under two ids (examples/acdc)
        out["ACDC (3D)"] = [(same.get(p.name[:10], p.name[:10]), partial(_read, p))
                            for p in sorted((root / "acdc/images").glob("*.nii.gz"))]
    if (root / "lgg/images").is_dir():
        out["LGG (3D)"] = [(p.name, partial(_read, p))
                           for p in sorted((root / "lgg/images").glob("*.nii.gz"))]
    cheng = root / "brain-tumor-cheng"
    if (cheng / "labels.csv").is_file():
        with (cheng / "labels.csv").open(newline="") as f:
            rows = list(csv.DictReader(f))
        out["Cheng (2D)"] = [(r["file"], partial(_read, cheng / r["file"])) for r in rows]
    if (root / "breastmnist/breastmnist.npz").is_file():
        z = np.load(root / "breastmnist/breastmnist.npz")
        images = np.concatenate([z[f"{s}_images"] for s in ("train", "val", "test")])
        out["BreastMNIST (2D, 28 px)"] = [(str(i), partial(np.asarray, a, np.float32))
                                          for i, a in enumerate(images)]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="the folder holding acdc/, lgg/, …")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    sets = data_sets(args.root)
    names = list(_variants(np.zeros((4, 4), np.float32), rng))
    print(f"thresholds: 3D {nc.NEAR_COPY_CORRELATION}, 2D {nc.NEAR_COPY_CORRELATION_2D}\n")
    print("| data set | pairs of different patients | highest of them | as is | "
          + " | ".join(f"lowest, {n}" for n in names) + " |")
    print("|---" * (4 + len(names)) + "|")
    for name, items in sets.items():
        top, plain, pairs, found = margins(items, rng)
        cells = " | ".join(f"{found.get(n, float('nan')):.3f}" for n in names)
        print(f"| {name} | {pairs} | {top:.3f} | {plain:.3f} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
