"""Which epoch should a classifier keep when its validation set is a few cases?

On BreastMNIST (a real 2D set, 2 classes; the shared data's ``breastmnist.npz``) each
repetition draws ``--per-class`` training images per class, trains the scratch classifier
with the default validation hold-out (20 %: a few images pick the epoch), and scores on
the official 156-image test set both the weights of the best validation epoch (``best.pt``)
and those of the last epoch (``last.pt``). It prints one row per repetition, then the mean
and standard deviation of each choice's test balanced accuracy and of the difference.

Usage::

    python bench/epoch_choice.py --data ../shared/data/breastmnist/breastmnist.npz \\
        --out /tmp/epochs --repetitions 8

This is a script, not a test; the figures are quoted with their command in
docs/splits-and-units.md.
"""

from __future__ import annotations

import argparse
import csv
import statistics
from pathlib import Path

import numpy as np


def write_pngs(npz: Path, out: Path, part: str) -> Path:
    """``out/<part>/<i>.png`` and ``out/<part>.csv`` (``id,label``) of one official part."""
    import SimpleITK as sitk

    data = np.load(npz)
    folder = out / part
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (image, label) in enumerate(zip(data[f"{part}_images"], data[f"{part}_labels"],
                                           strict=True)):
        sitk.WriteImage(sitk.GetImageFromArray(image), str(folder / f"{part}{i:04d}.png"))
        rows.append((f"{part}{i:04d}", ("malignant", "benign")[int(np.ravel(label)[0])]))
    table = out / f"{part}.csv"
    with table.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([("id", "label"), *rows])
    return table


def balanced_accuracy(model_path: Path, test_images: Path, test_table: Path) -> float:
    from segfew.data import read_table
    from segfew.inference.predictor import Predictor
    from segfew.metrics import classification_metrics

    cases = read_table(test_table, test_images)
    predictor = Predictor.open(model_path, device="cpu")
    names = list(predictor.meta.classes)
    rows = predictor.classify(cases)
    metrics = classification_metrics([names.index(str(c.target)) for c in cases],
                                     [names.index(r.predicted) for r in rows], None, names,
                                     bootstrap=0)
    return float(metrics["balanced_accuracy"])


def main() -> None:
    import torch

    from segfew.data import read_table, stratified_split
    from segfew.jobs.train_classifier import train_classifier
    from segfew.modelfile import load_model, save_model
    from segfew.spec import ClassifierSpec

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--per-class", type=int, default=16)
    parser.add_argument("--repetitions", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=50)
    args = parser.parse_args()
    train_table = write_pngs(args.data, args.out, "train")
    test_table = write_pngs(args.data, args.out, "test")
    pool = read_table(train_table, args.out / "train")
    torch.set_num_threads(1)
    results = []
    for rep in range(args.repetitions):
        drawn = stratified_split(pool, per_class=args.per_class, seed=rep)[0]
        out = args.out / f"rep{rep}" / "best.pt"
        spec = ClassifierSpec.model_validate({
            "data": {"images": str(args.out / "train")}, "out": str(out),
            "framework": "scratch", "preprocess": {"size": [32], "intensity": "minmax"},
            "train": {"epochs": args.epochs, "seed": rep, "progress": False, "threads": 1,
                      "select_epoch": "best", "device": "cpu"}})
        result = train_classifier(spec, cases=drawn)
        model, meta = load_model(out)
        last = torch.load(result.run_dir / "last.pt", map_location="cpu", weights_only=True)
        model.load_state_dict(last["model"])
        save_model(out.with_name("last.pt"), model, meta)
        val = [row["val_metric"] for row in result.history]
        row = (balanced_accuracy(out, args.out / "test", test_table),
               balanced_accuracy(out.with_name("last.pt"), args.out / "test", test_table))
        results.append(row)
        print(f"rep {rep}: {len(meta.metrics['validation_cases'])} validation cases, validation "
              f"accuracy {min(val):.2f}–{max(val):.2f} over epochs, best epoch "
              f"{meta.metrics['best_epoch']}; test balanced accuracy best {row[0]:.3f}, "
              f"last {row[1]:.3f}", flush=True)
    for name, values in (("best", [r[0] for r in results]), ("last", [r[1] for r in results]),
                         ("last − best", [r[1] - r[0] for r in results])):
        print(f"{name}: mean {statistics.mean(values):.3f}, sd "
              f"{statistics.stdev(values) if len(values) > 1 else 0.0:.3f}")


if __name__ == "__main__":
    main()
