"""Do the radiomics families cost the shape measurements anything?

Framework measures on a data set's own label maps (``--masks``), two ways on the same
leak-free draws: **shape** — the shape measurements and the 7 candidates segfew had before
the radiomics families — and **all** — every family and every candidate of
``segfew.models.measures_selection.CANDIDATES``. Each case is measured once; for every size and
repetition, ``size`` patients per class are drawn (one case per patient) and the rest are
the test set. Prints one Markdown row per size: test accuracy mean ± SD for both.

    python bench/bench_families.py $ACDC --channels frame01,frame02 \\
        --label-names background,RV,myocardium,LV --sizes 4,8 --repetitions 3
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path
from typing import Any

import numpy as np


def main() -> None:
    from segfew.data import find_classification_cases
    from segfew.inference.masks import MaskMeasurer, mask_label_names
    from segfew.models.measures_selection import (
        CANDIDATES,
        family_of,
        predict_proba,
        select_classifier,
        transform,
    )

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path, help="folder with images/, labels/ and labels.csv")
    ap.add_argument("--channels", default=None, help="channel suffixes, e.g. frame01,frame02")
    ap.add_argument("--label-names", default=None, help="background first")
    ap.add_argument("--label-column", default=None)
    ap.add_argument("--sizes", default="4,8")
    ap.add_argument("--repetitions", type=int, default=3)
    args = ap.parse_args()
    channels = args.channels.split(",") if args.channels else None
    cases = find_classification_cases(args.data / "images", args.data / "labels.csv",
                                      channels=channels, label_column=args.label_column)
    names_given = args.label_names.split(",") if args.label_names else None
    measurer = MaskMeasurer(args.data / "labels",
                            mask_label_names(args.data / "labels", names_given))
    start = time.perf_counter()
    rows = {c.id: measurer(c) for c in cases}
    print(f"measured {len(rows)} cases in {time.perf_counter() - start:.0f} s")
    names = list(next(iter(rows.values())))
    ways = {"shape": ([n for n in names if family_of(n) == "shape"], CANDIDATES[:7]),
            "all": (names, CANDIDATES)}
    classes = sorted({str(c.target) for c in cases})
    print("| per class | shape (before) | all families |\n|---|---|---|")
    for size in (int(s) for s in args.sizes.split(",")):
        scores: dict[str, list[float]] = {k: [] for k in ways}
        for rep in range(args.repetitions):
            rng = random.Random(100 + rep)
            train = [c for k in classes
                     for c in rng.sample([c for c in cases if c.target == k], size)]
            chosen = {c.id for c in train}
            test = [c for c in cases if c.id not in chosen]
            for way, (cols, candidates) in ways.items():
                def table(cs: list[Any], cols: list[str] = cols) -> np.ndarray:
                    return np.array([[rows[c.id][n] for n in cols] for c in cs])

                def target(cs: list[Any]) -> np.ndarray:
                    return np.array([classes.index(str(c.target)) for c in cs])

                choice = select_classifier(table(train), target(train), cols, len(classes),
                                           seed=rep, candidates=candidates)
                p = predict_proba(choice, transform(table(test), cols))
                scores[way].append(float((p.argmax(1) == target(test)).mean()))
        cells = [f"{np.mean(v):.3f} ± {np.std(v, ddof=1):.3f}" for v in scores.values()]
        print(f"| {size} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
