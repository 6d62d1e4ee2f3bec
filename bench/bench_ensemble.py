"""Does averaging two frameworks' probabilities beat each alone with a handful of cases?

A development study on the repetitions of a leak-free experiment run (``segfew experiment``
with ``pretrain = …``: ``RUN/pretrain/repNN/seg.pt`` and ``RUN/results/*.json``), as
``bench/bench_selection.py`` draws them: for every repetition and draw, ``k`` cases per
class from the repetition's training side. Each spec given (e.g. ``best.toml`` and
``classifier.toml``) is trained on them with the repetition's network, and the models are
scored alone and as one ensemble (``segfew predict --model A --model B``: the mean of
their class probabilities, :func:`segfew.inference.ensemble.average_rows`):

- ``--protocol dev`` on the rest of the training side: the test set is never read, so a
  choice made on these figures is made blind;
- ``--protocol outer`` on the repetition's test set (once, for the procedure chosen).

Prints, per model and for the ensemble, the mean accuracy, the SD over draws and the
worst draw.

    python bench/bench_ensemble.py runs/acdc-curve $ACDC examples/acdc/best.toml \\
        examples/acdc/classifier.toml --protocol dev --size 4 --draws 5
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from bench_selection import draw_training, test_ids

from segfew.data import class_names, find_classification_cases
from segfew.inference.ensemble import average_rows
from segfew.inference.predictor import Predictor
from segfew.jobs.train_classifier import train_classifier
from segfew.spec import ClassifierSpec, resolve_spec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a leak-free experiment's output folder")
    ap.add_argument("data", type=Path, help="folder with images/ and labels.csv")
    ap.add_argument("specs", type=Path, nargs="+", help="train-classifier specs to combine")
    ap.add_argument("--protocol", choices=("dev", "outer"), default="dev")
    ap.add_argument("--size", type=int, default=4, help="labelled cases per class")
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--repetitions", type=int, default=3)
    args = ap.parse_args()

    given = {"data": {"table": args.data / "labels.csv", "images": args.data / "images"},
             "out": "model.pt", "features": args.run / "pretrain" / "rep01" / "seg.pt",
             "train": {"progress": False}}  # features: each repetition's network, below
    specs = [resolve_spec(ClassifierSpec, given, path) for path in args.specs]
    cases = find_classification_cases(args.data / "images", args.data / "labels.csv",
                                      channels=specs[0].data.channels)
    classes = class_names(cases)
    y = np.array([classes.index(str(c.target)) for c in cases])
    names = [p.stem for p in args.specs] + ["ensemble"]
    scores: dict[str, list[float]] = {n: [] for n in names}
    for rep in range(1, args.repetitions + 1):
        network = args.run / "pretrain" / f"rep{rep:02d}" / "seg.pt"
        held = test_ids(args.run, rep)
        side = np.array([c.id not in held for c in cases])
        for draw in range(args.draws):
            train = draw_training(side, y, args.size, 1000 * rep + 10 * args.size + draw)
            test = side & ~train if args.protocol == "dev" else ~side
            scored = [cases[i] for i in np.flatnonzero(test)]
            with tempfile.TemporaryDirectory() as tmp:
                rows = []
                for i, spec in enumerate(specs):
                    out = Path(tmp) / f"m{i}.pt"
                    fitted = spec.model_copy(update={
                        "features": network, "out": out,
                        "train": spec.train.model_copy(update={"seed": draw})})
                    train_classifier(fitted, cases=[cases[j] for j in np.flatnonzero(train)],
                                     val_cases=[], write_info=False)
                    rows.append(Predictor.open(out, device="cpu").classify(scored))
                rows.append(average_rows(rows, classes))
            truth = [str(c.target) for c in scored]
            for name, got in zip(names, rows, strict=True):
                scores[name].append(float(np.mean([r.predicted == t
                                                   for r, t in zip(got, truth, strict=True)])))
            print(f"rep {rep} draw {draw}: " + ", ".join(
                f"{n} {scores[n][-1]:.2f}" for n in names), flush=True)
    for name in names:
        acc = np.array(scores[name])
        print(f"{args.protocol} {name:12s} {args.size} per class: accuracy {acc.mean():.3f}, "
              f"SD over draws {acc.std():.3f}, worst {acc.min():.2f}")


if __name__ == "__main__":
    main()
