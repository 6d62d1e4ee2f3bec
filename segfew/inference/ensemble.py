"""Several classifiers as one, and how sure a prediction is (beyond Wong et al. 2018).

With 10–20 labelled cases one model's choice varies with its seed and its training cases;
averaging the class probabilities of several model files (seeds, folds, frameworks over the
same classes) steadies it. Every prediction carries its **confidence**, the largest
(averaged) class probability, and is flagged ``low_confidence`` below a threshold
(default :func:`default_min_confidence`), so a reader knows which cases to look at first. With
calibrated models (framework ``measures`` fits a temperature on out-of-fold predictions)
the confidence reads as a probability of being right.

Example::

    rows = average_rows([clf_a.classify(cases), clf_b.classify(cases)], classes)
    flag_confidence(rows)  # below halfway from a uniform guess to certainty
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from segfew.errors import DataError
from segfew.inference.batch import progress_counter
from segfew.inference.predictor import Predictor

if TYPE_CHECKING:
    from segfew.data import Case
    from segfew.inference.batch import PredictionRow
    from segfew.typing import Progress

__all__ = ["ModelPaths", "average_rows", "check_same_classes", "classify_all",
           "default_min_confidence", "flag_confidence", "model_paths", "open_models"]


def default_min_confidence(n_classes: int) -> float:
    """The default threshold of ``low_confidence`` for ``n_classes`` classes: halfway from a
    uniform guess (1/K) to certainty, (1 + 1/K) / 2 — 0.75 for 2 classes, 0.6 for 5. A
    fixed 0.5 ("under half the probability") can never flag a 2-class answer, whose top
    class always holds at least half."""
    return (1 + 1 / max(n_classes, 1)) / 2


ModelPaths = str | Path | Sequence[str | Path]
"""One model file, or several classifiers of the same classes (an ensemble)."""


def model_paths(model_path: ModelPaths) -> list[Path]:
    """The model file(s) of ``model_path`` as a list; DataError when it names none."""
    paths = ([Path(model_path)] if isinstance(model_path, (str, Path))
             else [Path(m) for m in model_path])
    if not paths:
        raise DataError("no model file given")
    return paths


def open_models(model_path: ModelPaths, **options: Any) -> tuple[list[Path], list[Predictor]]:
    """The model files and their :class:`segfew.inference.predictor.Predictor` (``options``);
    several files must be classifiers of the same classes (:func:`check_same_classes`)."""
    paths = model_paths(model_path)
    predictors = [Predictor.open(p, **options) for p in paths]
    if len(paths) > 1:
        check_same_classes(predictors, paths)
    return paths, predictors


def classify_all(predictors: Sequence[Predictor], cases: Sequence[Case],
                 progress: Progress | None = None,
                 min_confidence: float | None = None) -> list[PredictionRow]:
    """Every model's rows of ``cases``, averaged (:func:`average_rows`) and flagged
    (:func:`flag_confidence`); ``progress(done, total, what)`` counts cases × models."""
    report = progress_counter(progress, len(cases) * len(predictors))
    rows = average_rows([p.classify(cases, progress=report) for p in predictors],
                        predictors[0].meta.classes)
    flag_confidence(rows, min_confidence)
    return rows


def check_same_classes(predictors: Sequence[Predictor], paths: Sequence[Path]) -> list[str]:
    """The classes every model shares (in the first model's order); a DataError names the
    first model file that is not a classifier or has other classes."""
    first = list(predictors[0].meta.classes)
    for predictor, path in zip(predictors, paths, strict=True):
        if predictor.kind != "classifier":
            raise DataError("an ensemble takes classifiers only; this is a segmentation model",
                            path)
        if list(predictor.meta.classes) != first:
            raise DataError(f"its classes ({', '.join(predictor.meta.classes)}) differ from the "
                            f"first model's ({', '.join(first)})", path)
    return first


def average_rows(per_model: Sequence[Sequence[PredictionRow]], classes: Sequence[str]
                 ) -> list[PredictionRow]:
    """One row per case: the mean class probabilities of the models, arg-max predicted.

    ``per_model[m][i]`` is model ``m``'s row of case ``i`` (the same cases in the same order
    for every model). A case that failed in any model is an error row with that model's
    message; a row any model flagged ``low_confidence`` (:func:`flag_confidence`) stays
    flagged. One model: its rows, unchanged.
    """
    if len(per_model) == 1:
        return list(per_model[0])
    out = []
    for rows in zip(*per_model, strict=True):
        failed = next((r for r in rows if r.status != "ok"), None)
        if failed is not None:
            out.append(failed)
            continue
        p = np.mean([[r.probabilities[c] for c in classes] for r in rows], axis=0)
        row = type(rows[0])(id=rows[0].id, path=rows[0].path)
        row.probabilities = {c: float(v) for c, v in zip(classes, p, strict=True)}
        row.predicted = classes[int(np.argmax(p))]
        row.low_confidence = any(r.low_confidence for r in rows)  # a model doubted the input
        out.append(row)
    return out


def flag_confidence(rows: Sequence[PredictionRow], min_confidence: float | None = None
                    ) -> None:
    """Set each ok row's ``confidence`` (its top probability) and ``low_confidence``
    (confidence < ``min_confidence``; None: :func:`default_min_confidence` of the row's
    classes), in place; error rows keep none.

    A row its classifier flagged already stays flagged whatever its confidence: a measures
    classifier flags a case whose measurements cannot be (an ejection fraction below 0:
    ED and ES swapped, :meth:`segfew.inference.classify.MeasuresClassifier.read`), where
    a 0.99 answer is built on values no heart gives and is not a confident one.
    """
    if min_confidence is not None and not 0 <= min_confidence <= 1:
        raise ValueError(f"min_confidence must be within [0, 1], got {min_confidence}")
    for row in rows:
        if row.status == "ok" and row.probabilities:
            row.confidence = max(row.probabilities.values())
            least = (default_min_confidence(len(row.probabilities)) if min_confidence is None
                     else min_confidence)
            row.low_confidence = row.low_confidence or row.confidence < least
