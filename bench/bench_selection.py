"""How should ``measures`` choose its classifier with a handful of cases per class?

A nested study on the repetitions of a leak-free experiment run (``segfew experiment`` with
``pretrain = …``: ``RUN/pretrain/repNN/seg.pt`` and ``RUN/results/*.json``). Every case is
measured once by each repetition's network (kept in ``--cache``). Then, for every
repetition, size ``k`` and draw, ``k`` cases per class are drawn from the repetition's
training side and each procedure is fitted on them:

- ``--protocol dev`` scores them on the rest of the training side: the test set is never
  read, so a procedure chosen on these figures is chosen blind;
- ``--protocol outer`` scores them on the repetition's test set (do this once, for the
  procedure chosen);
- ``--protocol unseen``: ``RUN`` holds ``splitNN/`` folders instead, each a network
  (``seg.pt``) pre-trained on the patients of ``train.csv`` only; ``k`` per class are drawn
  from those and scored on ``held.csv``'s, patients the network never saw, as a team's
  new patients are (on the rest of a training side the network segments patients it
  learnt from, which flatters every measurement).

Procedures: ``default`` (the first candidate, fitted as it is), ``select`` (the inner CV
chooses among every candidate at any size — segfew before ``SELECT_FROM``), ``shipped``
(what :func:`segfew.models.measures_selection.select_classifier` does now), or one candidate
fitted as it is, named ``model/subset[/c]`` (``forest/volumes+thickness``; ``--subset
NAME=KIND,…`` adds a subset by measurement kinds, e.g. ``ratios=ejection_fraction,
volume_change,volume_ratio``, for ``forest/ratios``). Prints one line
per procedure and size: mean accuracy, the SD over all draws and the mean SD over the draws
of one repetition (the same network and test set, only the labelled patients drawn
differ), each repetition's mean, the worst draw.

    python bench/bench_selection.py runs/acdc-curve $ACDC --channels frame01,frame02 \\
        --protocol dev --sizes 2,4,6 --draws 5 --cache runs/acdc-measurements
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from segfew.data import class_names, find_classification_cases
from segfew.inference.measure import Measurer, write_measurements_csv
from segfew.modelfile import load_model
from segfew.models import measures_selection as ms


def measurements(network: Path, cases: list, path: Path, needed: np.ndarray
                 ) -> tuple[list[str], np.ndarray]:
    """The ``needed`` cases measured by ``network`` (kept in the CSV ``path``): names and
    (N, F), NaN rows for the others."""
    if not path.is_file():
        net, meta = load_model(network, "cpu")
        measure = Measurer(net, meta.preprocess.plain(), meta.classes, "cpu")
        path.parent.mkdir(parents=True, exist_ok=True)
        write_measurements_csv(path, [(cases[i].id, measure(cases[i]))
                                      for i in np.flatnonzero(needed)])
    rows = list(csv.reader(path.open(encoding="utf-8")))
    by_id = {r[0]: [float(v) if v else np.nan for v in r[1:]] for r in rows[1:]}
    absent = [c.id for c, n in zip(cases, needed, strict=True) if n and c.id not in by_id]
    if absent:
        raise SystemExit(f"{path}: no measurements of {', '.join(absent[:3])}; remove it")
    missing = [np.nan] * (len(rows[0]) - 1)
    return rows[0][1:], np.array([by_id.get(c.id, missing) for c in cases])


def test_ids(run: Path, rep: int) -> set[str]:
    for path in sorted((run / "results").glob(f"size*_rep{rep:02d}_*.json")):
        return set(json.loads(path.read_text(encoding="utf-8"))["test_ids"])
    raise SystemExit(f"{run}: no results of repetition {rep}")


def ids_in(table: Path) -> set[str]:
    """The first column of a CSV table: its case ids."""
    return {row[0] for row in list(csv.reader(table.open(encoding="utf-8")))[1:]}


def sides(run: Path, protocol: str, repetitions: int, cases: list
          ) -> list[tuple[str, Path, np.ndarray, np.ndarray]]:
    """``(name, network, training side, scored cases)`` masks of each repetition or split:
    dev scores the rest of the side (the draw is taken out in ``main``), outer the test set,
    unseen ``held.csv``'s cases."""
    ids = np.array([c.id for c in cases])
    if protocol == "unseen":
        splits = sorted(p for p in run.glob("split*") if (p / "seg.pt").is_file())
        if not splits:
            raise SystemExit(f"{run}: no splitNN/seg.pt")
        return [(p.name, p / "seg.pt", np.isin(ids, list(ids_in(p / "train.csv"))),
                 np.isin(ids, list(ids_in(p / "held.csv")))) for p in splits]
    out = []
    for rep in range(1, repetitions + 1):
        side = ~np.isin(ids, list(test_ids(run, rep)))
        out.append((f"rep{rep:02d}", run / "pretrain" / f"rep{rep:02d}" / "seg.pt", side,
                    side if protocol == "dev" else ~side))
    return out


def draw_training(side: np.ndarray, y: np.ndarray, k: int, seed: int) -> np.ndarray:
    """A mask of ``k`` cases of each class drawn from the ``side`` mask (seeded)."""
    rng = np.random.default_rng(seed)
    train = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        train[rng.choice(np.flatnonzero(side & (y == c)), k, replace=False)] = True
    return train


def fit_and_predict(procedure: str, xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray,
                    names: list[str], classes: int, seed: int) -> np.ndarray:
    if procedure == "default":
        choice = ms.select_classifier(xtr, ytr, names, classes, seed, ms.CANDIDATES[:1])
    elif "/" in procedure:
        model, subset, *c = procedure.split("/")
        one = ms.Candidate(model, subset, *(float(v) for v in c))
        choice = ms.select_classifier(xtr, ytr, names, classes, seed, [one])
    else:
        kept = ms.SELECT_FROM
        ms.SELECT_FROM = 0 if procedure == "select" else kept
        try:
            choice = ms.select_classifier(xtr, ytr, names, classes, seed)
        finally:
            ms.SELECT_FROM = kept
    return ms.predict_proba(choice, ms.transform(xte, names)).argmax(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a leak-free experiment's output folder")
    ap.add_argument("data", type=Path, help="folder with images/ and labels.csv")
    ap.add_argument("--channels", default=None, help="channel suffixes, e.g. frame01,frame02")
    ap.add_argument("--label-column", default=None)
    ap.add_argument("--protocol", choices=("dev", "outer", "unseen"), default="dev")
    ap.add_argument("--procedures", default="default,select,shipped")
    ap.add_argument("--sizes", default="2,4,6")
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--repetitions", type=int, default=3)
    ap.add_argument("--cache", type=Path, required=True, help="folder for the measurements")
    ap.add_argument("--subset", action="append", default=[], metavar="NAME=KIND,…",
                    help="an extra measurement subset, by kinds (ms.kind_of), for model/NAME")
    args = ap.parse_args()
    for item in args.subset:
        name, _, kinds = item.partition("=")
        ms.SUBSETS[name] = tuple(k.strip() for k in kinds.split(",") if k.strip())

    cases = find_classification_cases(
        args.data / "images", args.data / "labels.csv", label_column=args.label_column,
        channels=args.channels.split(",") if args.channels else None)
    classes = class_names(cases)
    y = np.array([classes.index(str(c.target)) for c in cases])
    scores: dict[tuple[str, int], list[tuple[int, float]]] = {}
    parts = sides(args.run, args.protocol, args.repetitions, cases)
    for rep, (name, network, side, scored) in enumerate(parts, 1):
        names, x = measurements(network, cases, args.cache / f"{name}.measurements.csv",
                                side | scored)
        for k in (int(s) for s in args.sizes.split(",")):
            for draw in range(args.draws):
                train = draw_training(side, y, k, 1000 * rep + 10 * k + draw)
                test = scored & ~train
                for procedure in args.procedures.split(","):
                    pred = fit_and_predict(procedure, x[train], y[train], x[test], names,
                                           len(classes), seed=draw)
                    scores.setdefault((procedure, k), []).append(
                        (rep, float((pred == y[test]).mean())))
    part = "splits" if args.protocol == "unseen" else "repetitions"
    for (procedure, k), got in sorted(scores.items()):
        acc = np.array([a for _, a in got])
        by_part = [[a for r, a in got if r == rep] for rep in range(1, len(parts) + 1)]
        reps = " ".join(f"{np.mean(a):.3f}" for a in by_part)
        within = float(np.mean([np.std(a) for a in by_part]))
        print(f"{args.protocol} {procedure:8s} {k} per class: accuracy {acc.mean():.3f}, "
              f"SD over draws {acc.std():.3f} (within one of the {part} {within:.3f}), "
              f"{part} {reps}, worst {acc.min():.2f}")


if __name__ == "__main__":
    main()
