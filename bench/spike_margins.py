"""How wide the gaps of values at the ends of real images are: the margin under
:data:`segfew.data.content.SPIKE_GAP` (docs/refusals.md "Scan content")::

    python bench/spike_margins.py ../shared/data/acdc/images ../shared/data/lgg/images
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

from segfew.data import collect_cases
from segfew.data.content import SPIKE_GAP, widest_gap
from segfew.io import read_image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    args = parser.parse_args()
    print("| folder | images | widest gap, in ranges of the middle 98 % (file) | threshold |\n"
          "|---|---|---|---|")
    for folder in args.folders:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            paths = [p for case in collect_cases([folder], recursive=True) for p in case.images]
            gaps = sorted((widest_gap(read_image(p).array), p.name) for p in paths)
        top, name = gaps[-1]
        print(f"| {folder} | {len(gaps)} | {top:.2f} ({name}) | {SPIKE_GAP:g} |")


if __name__ == "__main__":
    main()
