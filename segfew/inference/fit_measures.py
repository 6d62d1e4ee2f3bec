"""Fitting the ``measures`` classifier on measured training cases, where its label maps come
from (:func:`open_measurer`), and its selection in words (every candidate the inner
cross-validation tried, the one chosen, the nested estimate of the whole procedure)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from segfew.errors import SpecError, map_all
from segfew.inference.input_range import KEY as INPUT_RANGE
from segfew.inference.input_range import fitted_range
from segfew.inference.masks import MaskMeasurer, mask_label_names
from segfew.inference.measure import NAN, Measurer
from segfew.inference.measure_names import fitted_names
from segfew.inference.nnunet import NnUNetMeasurer, is_nnunet_folder
from segfew.metrics import below_chance
from segfew.modelfile import load_model
from segfew.models.measures import MeasurementClassifier
from segfew.models.measures_selection import nested_estimate, select_classifier

if TYPE_CHECKING:
    from segfew.data import Case
    from segfew.inference.masks import LabelMapMeasurer
    from segfew.inference.measure import Measurer

__all__ = ["describe_selection", "estimate_caveat", "fit_measurement_classifier",
           "open_measurer"]

NO_ESTIMATE = ("no estimate of accuracy is possible: a class has fewer than 2 cases (patients, "
               "where a patient has several), so none can be held out to test the model on")


def open_measurer(features: Path | None, masks: Path | None, label_names: Sequence[str] | None,
                  device: Any = "cpu", tta: bool = False) -> Measurer | LabelMapMeasurer:
    """What segments and measures the training cases of a measures classifier: another
    tool's label maps in ``masks`` (named by ``label_names`` or the folder's
    ``label_names.json``), a trained nnU-Net when ``features`` is its results folder, or
    else the segfew segmentation model file ``features`` (``tta``: test-time augmentation).
    Raises DataError, SpecError or ModelFileError (one line, naming the file)."""
    if masks is not None:
        return MaskMeasurer(masks, mask_label_names(masks, label_names))
    assert features is not None
    if is_nnunet_folder(features):
        return NnUNetMeasurer(Path(features), device=device)
    net, meta = load_model(features, device)
    if meta.kind != "segmentation":  # e.g. a classifier file: it has no label maps to give
        raise SpecError("--features must be a segmentation model (from segfew pretrain)",
                        features)
    return Measurer(net, meta.preprocess.plain(), meta.classes, device, tta=tta)


def fit_measurement_classifier(measurer: Measurer | LabelMapMeasurer, cases: Sequence[Case],
                               targets: Sequence[int], num_classes: int, seed: int = 0
                               ) -> tuple[Any, dict[str, Any]]:
    """Measure the training ``cases`` and fit the classifier (framework MEASURES).

    Each case's patient is its ``unit`` (the table's group column, else its id): where a
    patient has several cases (slices, visits), every fold of the selection and of the
    nested estimate keeps them on one side, and classes are counted in patients.

    Every case must give the first case's measurements (a set mixing files with and without
    a real spacing is a DataError, not NaN). The model is chosen by cross-validation
    inside these cases only
    (:func:`segfew.models.measures_selection.select_classifier`). Returns the
    :class:`segfew.models.measures.MeasurementClassifier` and what the model file records:
    its constructor arguments (``args``) and ``metrics`` (chosen model, every candidate's
    inner balanced accuracy with its 95% interval — ``measures_selection`` —, the nested
    estimate of the whole selection — ``measures_nested``, None with under 2 cases in a
    class —, temperature, and the ten measurements it leans on most with the training
    cases' values per class, ``by_class``: what a case is shown against). Where the model
    uses sizes in pixels or voxels or intensities as stored, ``metrics`` also records the
    training images' grid and range of values (:data:`segfew.inference.input_range.KEY`:
    :func:`segfew.inference.input_range.fitted_range`), so ``predict`` warns of a case
    exported otherwise.
    """
    rows = map_all(measurer, cases, "training cases cannot be measured")
    names = list(rows[0])
    for case, row in zip(cases, rows, strict=True):  # e.g. one case in mL, another in voxels
        fitted_names(names, row, case)
    x = np.array([[row.get(n, NAN) for n in names] for row in rows], dtype=np.float64)
    groups = [c.unit for c in cases]
    choice = select_classifier(x, np.asarray(targets), names, num_classes, seed=seed,
                               groups=groups)
    args: dict[str, Any] = {"feature_names": names, "num_classes": num_classes,
                            **choice.shape_args, "in_channels": len(cases[0].images),
                            "tta": measurer.tta}
    model = MeasurementClassifier(measurer.model, **args)
    model.load_choice(choice)
    importance = choice.importance if choice.importance is not None else np.zeros(len(names))
    y = np.asarray(targets)
    top = [{"measurement": names[i], "importance": float(importance[i]),
            "by_class": [[None if math.isnan(v) else float(f"{v:.4g}") for v in x[y == k, i]]
                         for k in range(num_classes)]}
           for i in np.argsort(-importance)[:10] if importance[i] > 0]
    selection = [{"candidate": label, **score, "chosen": label == choice.candidate.label}
                 for label, score in choice.cv_summary.items()]
    metrics = {"measures_model": choice.candidate.label, "measures_chosen_by": choice.chosen_by,
               "measures_cv_accuracy": choice.cv_scores,
               "measures_selection": selection,
               "measures_nested": nested_estimate(x, np.asarray(targets), names, num_classes,
                                                  seed=seed, groups=groups),
               "measures_temperature": choice.temperature, "top_measurements": top}
    covered = fitted_range(cases, [n for n, v in zip(names, importance, strict=True) if v > 0],
                           names)
    if covered is not None:  # what its sizes in px or its stored intensities depend on
        metrics[INPUT_RANGE] = covered
    return model, {"args": args, "metrics": metrics}


def _chance_verdict(nested: Mapping[str, Any]) -> str | None:
    """A nested estimate against chance: "below" (its interval wholly under the chance
    rate), "not distinguishable" (the interval holds it, or none is known), or None (above
    chance)."""
    if below_chance((nested.get("ci") or [None, None])[1], nested.get("chance_rate")):
        return "below"
    return None if nested.get("distinguishable_from_chance") is True else "not distinguishable"


def _inner_chance(entry: Mapping[str, Any], rate: float | None) -> str:
    """``", not distinguishable from chance (0.50)"`` (or ``below chance``) for an inner score
    whose interval holds (or lies under) the chance ``rate`` (1 / classes); "" otherwise or
    where unknown. An older model file's entry lacks its rate: ``rate`` (the nested
    estimate's) stands in."""
    ci, rate = entry.get("ci"), entry.get("chance_rate", rate)
    if not ci or rate is None:
        return ""
    if below_chance(ci[1], rate):
        return f", below chance ({rate:.2f})"
    return f", not distinguishable from chance ({rate:.2f})" if ci[0] <= rate <= ci[1] else ""


def describe_selection(metrics: Mapping[str, Any]) -> list[str]:
    """What a measures model file's ``metrics`` say of its selection, one line each: every
    candidate with its inner balanced accuracy and 95% interval (the chosen one marked, and
    chance named where the interval holds or lies under it), then the nested estimate, of
    how many patients where they are fewer than the cases — with a warning when it is not
    distinguishable from chance, another when its interval lies wholly below chance —, or
    that no estimate is possible (a class with one case: none can be held out)."""
    def score(entry: Mapping[str, Any]) -> str:
        value, ci = entry.get("balanced_accuracy"), entry.get("ci")
        text = "—" if value is None else f"{value:.2f}"
        return text + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")

    nested = metrics.get("measures_nested")
    rate = (nested or {}).get("chance_rate")
    lines = [f"{'→' if e.get('chosen') else ' '} {e['candidate']}: inner balanced accuracy "
             f"{score(e)}{_inner_chance(e, rate)}" for e in metrics.get("measures_selection") or []]
    chosen_by = metrics.get("measures_chosen_by", "")
    default = chosen_by.startswith("the default")  # nothing chosen: too few cases per class
    if default:
        lines.insert(0, f"model: {metrics.get('measures_model')}, {chosen_by}")
    if not lines:
        return [f"chosen: {metrics.get('measures_model')} (too few cases per class for an "
                "inner cross-validation)", NO_ESTIMATE] if metrics.get("measures_model") else []
    if nested is None:
        return [*lines, NO_ESTIMATE]
    patients = f" of {nested['groups']} patients" if nested.get("groups") else ""
    lines.append(f"nested estimate of the whole selection ({nested['folds']} outer folds, "
                 f"{nested['n']} cases{patients}): balanced accuracy {score(nested)}"
                 + ("" if default else "; the chosen model's inner score above is optimistic"))
    if nested.get("rows_as_patients"):
        lines.append("WARNING: the table names no patients, so each row was taken as one: "
                     "where rows share patients (slices), the folds split them and the nested "
                     "estimate reads high; name the patient column with --group-column")
    verdict = _chance_verdict(nested)
    if verdict == "below":
        lines.append(f"WARNING: the nested estimate is below chance "
                     f"({nested['chance_rate']:.2f}): the chosen model answers worse than any "
                     "constant answer would")
    elif verdict == "not distinguishable":
        lines.append(f"WARNING: the nested estimate is not distinguishable from chance "
                     f"({nested['chance_rate']:.2f}, 1 / classes): its 95% interval holds it, so "
                     "these measurements may not tell the classes apart with this few cases")
    return lines


def estimate_caveat(metrics: Mapping[str, Any]) -> str | None:
    """What ``predict`` must say of a measures model whose own estimate gives its answers no
    weight: none recorded (a class had one training case), or a nested estimate whose
    interval holds or lies below chance; None for any other model."""
    if "measures_model" not in metrics:
        return None
    nested = metrics.get("measures_nested")
    if nested is None:
        return ("the model records no estimate of its accuracy (a class had fewer than 2 "
                "training cases): its confidences do not say how often it is right")
    verdict = _chance_verdict(nested)
    if verdict is None:
        return ("the model's own nested estimate took each training row as its own patient "
                "(the table named none): where rows share patients it reads high, so its "
                "confidences may say more than it knows") if nested.get("rows_as_patients") \
            else None
    ci = nested.get("ci") or [0.0, 0.0]
    words = "below chance" if verdict == "below" else "not distinguishable from chance"
    return (f"the model's own nested estimate, balanced accuracy "
            f"{nested['balanced_accuracy']:.2f} [{ci[0]:.2f}, {ci[1]:.2f}], is {words} "
            f"({nested['chance_rate']:.2f}): read its predictions as guesses")
