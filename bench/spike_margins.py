"""How far the extreme voxels of real images lie beyond the rest: the margin under
:data:`segfew.data.content.SPIKE_RATIO` (docs/refusals.md "Scan content")::

    python bench/spike_margins.py ../shared/data/acdc/images ../shared/data/lgg/images
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

from segfew.data import collect_cases
from segfew.data.content import SPIKE_RATIO, extremes
from segfew.io import read_image


def margin(path: Path) -> float:
    """The largest multiple of the rest's range that the extreme voxels reach beyond it."""
    low, lo, hi, high, _ = extremes(read_image(path).array)
    span = hi - lo
    return max(high - hi, lo - low) / span if span > 0 else float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    args = parser.parse_args()
    print("| folder | images | largest multiple (file) | threshold |\n|---|---|---|---|")
    for folder in args.folders:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            paths = [p for case in collect_cases([folder], recursive=True) for p in case.images]
            margins = sorted((margin(p), p.name) for p in paths)
        top, name = margins[-1]
        print(f"| {folder} | {len(margins)} | {top:.2f} ({name}) | {SPIKE_RATIO:g} |")


if __name__ == "__main__":
    main()
