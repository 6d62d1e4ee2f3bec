"""Peak memory of bringing one scan onto the network grid, per source voxel.

The figure behind :data:`segfew.preprocess.grid.PREPROCESS_BYTES_PER_VOXEL`
(docs/benchmarks.md "Memory of one case"). Each measurement runs in a fresh process, so
the peak resident size is that of one call beyond the source volume itself::

    python bench/preprocess_memory.py --side 160
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys

import numpy as np

CASES = {  # name: (kind, grid, intensity)
    "image, CLAHE, onto 32×32×16": ("image", (32, 32, 16), "clahe"),
    "image, z-score, onto 32×32×16": ("image", (32, 32, 16), "zscore"),
    "label map, up to 256³": ("label", (256, 256, 256), "clahe"),
}


def _one(side: int, name: str) -> float:
    from segfew.preprocess.grid import Preprocessing, preprocess_image, preprocess_label

    kind, grid, intensity = CASES[name]
    array = np.random.default_rng(0).integers(0, 1000, (side,) * 3).astype(np.int16)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cfg = Preprocessing(size=grid, intensity=intensity)  # type: ignore[arg-type]
    (preprocess_image if kind == "image" else preprocess_label)(array, cfg, (1.0, 1.0, 1.0))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (peak - before) * 1024 / side**3  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=160, help="source volume side, voxels")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(f"{_one(args.side, args.case):.1f}")
        return
    print(f"| {args.side}³ int16 source | bytes per source voxel |\n|---|---|")
    for name in CASES:
        out = subprocess.run([sys.executable, __file__, "--side", str(args.side), "--case", name],
                             check=True, capture_output=True, text=True).stdout.strip()
        print(f"| {name} | {out} |")


if __name__ == "__main__":
    main()
