"""Choosing the ``measures`` classifier by cross-validation inside the training cases only:
the candidates (a class-balanced logistic regression or random forest on a subset or family
of the measurements), their inner scores with intervals, the calibration temperature, and a
nested estimate of the whole selection. :class:`segfew.models.measures.MeasurementClassifier`
holds the result as tensors."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import torch
from sklearn.ensemble import RandomForestClassifier
from sklearn.feature_selection import f_classif
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from torch import Tensor

from segfew.metrics import chance_fields, classification_metrics

__all__ = [
    "CANDIDATES",
    "FAMILIES",
    "Candidate",
    "Choice",
    "family_of",
    "forest_proba",
    "kind_of",
    "nested_estimate",
    "predict_proba",
    "select_classifier",
    "subset_mask",
    "transform",
]

#: measurement kinds whose logarithm the linear model sees (sizes are log-normal)
LOG_KINDS = ("volume_ml", "surface_mm2", "area_mm2", "perimeter_mm")
#: measurement subsets the selection may choose from, by the kinds they keep
SUBSETS: dict[str, tuple[str, ...] | None] = {
    "volumes": ("volume_ml", "area_mm2", "ejection_fraction", "volume_change", "volume_ratio"),
    "volumes+thickness": ("volume_ml", "area_mm2", "ejection_fraction", "volume_change",
                          "volume_ratio", "thickness_mean_mm", "thickness_max_mm"),
    "all": None,
    # families of segfew.inference.radiomics, one or two at a time: 8 cases meet a few dozen
    # columns
    "intensity": ("intensity",),
    "intensity+surround": ("intensity", "surround"),
    "texture": ("texture",),
    "location": ("location",),
    "shape+location": ("shape", "location"),
    "top": None,  # narrowed inside each fit (SELECT)
}
#: kinds measured in voxels (a file without real spacing) → the physical kind they stand for
VOXEL_KINDS = {f"{base}_{unit}": physical for unit in ("vox", "px") for base, physical in (
    ("volume", "volume_ml"), ("surface", "surface_mm2"), ("area", "area_mm2"),
    ("perimeter", "perimeter_mm"), ("major_axis", "major_axis_mm"),
    ("minor_axis", "minor_axis_mm"), ("thickness_mean", "thickness_mean_mm"),
    ("thickness_max", "thickness_max_mm"))}
#: subsets whose columns are chosen inside each fit: the ``SELECT_K`` of largest ANOVA F
#: on that fit's rows only (an inner fold's training rows), so no held-out case picks them
SELECT = ("top",)
SELECT_K = 8
#: measurement families: shape (segfew.inference.measure), then those of segfew.inference.radiomics
FAMILIES = ("shape", "intensity", "surround", "texture", "location")
FOREST_TREES = 200
#: cases (patients, where a patient has several) in the smallest class from which the inner
#: CV chooses among the candidates (each of its 5 folds then holds 2 per class); below, the
#: first candidate is fitted as it is: the winner among many scores of a few held-out cases
#: is mostly noise (examples/acdc/README.md)
SELECT_FROM = 10
NESTED_TREES = 25  # forests of the nested estimate's refits (time, see nested_estimate)
CI_RESAMPLES = 500  # bootstrap resamples of the inner scores' intervals
FLOOR = 1e-6  # smallest probability, so log-probabilities stay finite


def kind_of(name: str) -> str:
    """The measurement kind inside a name: ``LV_volume_ml_frame01`` → ``volume_ml``; one in
    voxels gives the kind it stands for (``LV_volume_vox_frame01`` → ``volume_ml``)."""
    for kind in (*LOG_KINDS, "ejection_fraction", "volume_change", "volume_ratio", "sphericity",
                 "major_axis_mm", "minor_axis_mm", "solidity", "extent", "thickness_mean_mm",
                 "thickness_max_mm", *VOXEL_KINDS):
        if f"_{kind}" in name:
            return VOXEL_KINDS.get(kind, kind)
    return name


def family_of(name: str) -> str:
    """A measurement's family: ``tumour_texture_…_flair`` → ``texture`` (the families of
    ``segfew.inference.radiomics``), else ``shape`` (``segfew.inference.measure``)."""
    return next((f for f in FAMILIES[1:] if f"_{f}_" in name), "shape")


def subset_mask(names: Sequence[str], subset: str) -> np.ndarray:
    """Boolean mask over ``names`` of the measurements that ``subset`` keeps: by kind for
    the shape subsets, by family for the others; ``top`` keeps all, narrowed in each fit."""
    kinds = SUBSETS.get(subset)
    if kinds is None:
        return np.ones(len(names), dtype=bool)
    by = family_of if set(kinds) & set(FAMILIES) else kind_of
    return np.array([by(n) in kinds for n in names], dtype=bool)


def _top_k(z: np.ndarray, y: np.ndarray, mask: np.ndarray, k: int | None = None
           ) -> np.ndarray:
    """``mask`` narrowed to the ``k`` (default ``SELECT_K``) columns of largest ANOVA F on
    these rows (standardised ``z``); constant columns never count."""
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore")
        f, _ = f_classif(z, y)
    f = np.where(np.isfinite(f) & mask & (z.std(0) > 0), f, -1.0)
    out = np.zeros_like(mask)
    out[np.argsort(-f, kind="stable")[:SELECT_K if k is None else k]] = True
    return out & (f >= 0)


def transform(x: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """Log of sizes (``LOG_KINDS``), other measurements unchanged; NaN stays NaN, and an
    infinite value (a ratio or shape measure of a degenerate structure) becomes NaN too, so
    it is imputed like a missing one."""
    x = np.array(x, dtype=np.float64)
    x[np.isinf(x)] = np.nan
    logs = np.array([kind_of(n) in LOG_KINDS for n in names], dtype=bool)
    with np.errstate(invalid="ignore", divide="ignore"):
        x[:, logs] = np.log(np.maximum(x[:, logs], 0) + 1e-3)
    return x


@dataclass(frozen=True)
class Candidate:
    """One model the selection may choose: ``model`` ∈ {logistic, forest} on ``subset``."""

    model: str
    subset: str
    c: float = 1.0  # inverse L2 strength of the logistic regression

    @property
    def label(self) -> str:
        detail = f", C={self.c:g}" if self.model == "logistic" else ""
        return f"{self.model} on {self.subset}{detail}"


#: in order of preference: a tie in cross-validated accuracy goes to the earlier one
CANDIDATES = (
    Candidate("forest", "volumes"),
    Candidate("logistic", "volumes", 0.1),
    Candidate("logistic", "volumes", 1.0),
    Candidate("forest", "volumes+thickness"),
    Candidate("logistic", "volumes+thickness", 0.1),
    Candidate("forest", "all"),
    Candidate("logistic", "all", 0.1),
    Candidate("logistic", "intensity", 0.1),
    Candidate("forest", "intensity+surround"),
    Candidate("logistic", "intensity+surround", 0.1),
    Candidate("logistic", "texture", 0.1),
    Candidate("forest", "texture"),
    Candidate("logistic", "location", 0.1),
    Candidate("logistic", "shape+location", 0.1),
    Candidate("logistic", "top", 0.1),
    Candidate("forest", "top"),
)


@dataclass
class Choice:
    """The fitted result of :func:`select_classifier` (numpy arrays, ready for tensors)."""

    candidate: Candidate
    mask: np.ndarray  # (F,) measurements used
    median: np.ndarray  # (F,) imputation of NaN
    mean: np.ndarray  # (F,) standardisation
    std: np.ndarray
    present: np.ndarray  # class indices seen in training
    linear: tuple[np.ndarray, np.ndarray] | None = None  # weight (K, F), bias (K,)
    forest: dict[str, np.ndarray] | None = None  # node arrays (T, M); value (T, M, K)
    temperature: float = 1.0
    cv_scores: dict[str, float] = field(default_factory=dict)  # candidate label → accuracy
    #: every candidate's inner score: label → {balanced_accuracy, ci, accuracy}
    cv_summary: dict[str, dict[str, Any]] = field(default_factory=dict)
    importance: np.ndarray | None = None  # (F,) what the model leans on (sums to 1)
    #: "inner cross-validation", or why the first candidate was fitted as it is
    chosen_by: str = "inner cross-validation"

    @property
    def shape_args(self) -> dict[str, int]:
        """Constructor sizes of the :class:`MeasurementClassifier` that holds this choice."""
        if self.forest is None:
            return {"n_trees": 0, "max_nodes": 0}
        t, m = self.forest["feature"].shape
        return {"n_trees": int(t), "max_nodes": int(m)}


def _standardise(x: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, ...]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column
        median = np.nanmedian(x, axis=0)
    median = np.where(np.isfinite(median), median, 0.0)
    filled = np.where(np.isnan(x), median, x)
    mean, std = filled.mean(axis=0), filled.std(axis=0)
    std = np.where(std > 1e-9, std, 1.0)
    return median, mean, std, ((filled - mean) / std) * mask


def _sk_model(candidate: Candidate, seed: int, trees: int = FOREST_TREES) -> Any:
    if candidate.model == "forest":
        return RandomForestClassifier(trees, class_weight="balanced", random_state=seed,
                                      n_jobs=1)
    return LogisticRegression(C=candidate.c, class_weight="balanced", max_iter=5000)


def _fit(candidate: Candidate, x: np.ndarray, y: np.ndarray, names: Sequence[str],
         num_classes: int, seed: int, trees: int = FOREST_TREES) -> Choice:
    """Fit one candidate on (already transformed) ``x`` (N, F) and class indices ``y``."""
    mask = subset_mask(names, candidate.subset)
    median, mean, std, z = _standardise(x, mask)
    if candidate.subset in SELECT and len(np.unique(y)) > 1:
        mask = _top_k(z, y, mask)
        z = z * mask
    present = np.unique(y)
    choice = Choice(candidate, mask, median, mean, std, present)
    f = x.shape[1]
    if len(present) == 1 or not mask.any():  # nothing to learn from: the class frequencies
        prior = np.bincount(y, minlength=num_classes) / len(y)
        choice.linear = (np.zeros((num_classes, f)), np.log(np.maximum(prior, FLOOR)))
        choice.importance = np.zeros(f)
        return choice
    model = _sk_model(candidate, seed, trees).fit(z[:, mask], y)
    if candidate.model == "logistic":
        coef, intercept = model.coef_, model.intercept_
        if len(present) == 2:  # scikit-learn's binary form: logit of the second class
            coef = np.vstack([-coef[0] / 2, coef[0] / 2])
            intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
        weight = np.zeros((num_classes, f))
        bias = np.full(num_classes, -1e4)  # a class absent from training is never chosen
        weight[np.ix_(present, np.flatnonzero(mask))] = coef
        bias[present] = intercept
        choice.linear = (weight, bias)
        imp = np.zeros(f)
        imp[mask] = np.abs(coef).sum(axis=0)
    else:
        choice.forest = _export_forest(model, np.flatnonzero(mask), present, num_classes)
        imp = np.zeros(f)
        imp[mask] = model.feature_importances_
    choice.importance = imp / imp.sum() if imp.sum() > 0 else imp
    return choice


def _export_forest(model: Any, columns: np.ndarray, present: np.ndarray, num_classes: int
                   ) -> dict[str, np.ndarray]:
    """A fitted RandomForestClassifier as padded node arrays (leaves: left = right = -1)."""
    trees = [est.tree_ for est in model.estimators_]
    m = max(t.node_count for t in trees)
    out = {"feature": np.zeros((len(trees), m), np.int64),
           "threshold": np.zeros((len(trees), m)),
           "left": np.full((len(trees), m), -1, np.int64),
           "right": np.full((len(trees), m), -1, np.int64),
           "value": np.zeros((len(trees), m, num_classes))}
    for i, t in enumerate(trees):
        n = t.node_count
        leaf = t.children_left[:n] < 0
        out["feature"][i, :n] = np.where(leaf, 0, columns[np.maximum(t.feature[:n], 0)])
        out["threshold"][i, :n] = t.threshold[:n]
        out["left"][i, :n] = t.children_left[:n]
        out["right"][i, :n] = t.children_right[:n]
        value = t.value[:n, 0, :]
        out["value"][i, :n][:, present] = value / np.maximum(value.sum(1, keepdims=True), 1e-12)
    return out


def _patients(groups: Sequence[Hashable] | None, n: int) -> np.ndarray | None:
    """``groups`` (n,) as an array where some patient holds several cases; None where each
    case is its own (then every split and count is by case, as without groups)."""
    g = None if groups is None else np.array([str(v) for v in groups])
    if g is not None and len(g) != n:
        raise ValueError(f"{len(g)} groups for {n} cases")
    return g if g is not None and len(set(g.tolist())) < n else None


def _smallest(y: np.ndarray, groups: np.ndarray | None) -> int:
    """Cases (patients, with ``groups``) in the smallest class present in ``y``."""
    if groups is None:
        return int(np.bincount(y)[np.unique(y)].min())
    return min(len(set(groups[y == c].tolist())) for c in np.unique(y))


def _folds(y: np.ndarray, groups: np.ndarray | None, k: int, seed: int
           ) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` stratified folds (train, held-out indices); with ``groups``, a patient's cases
    on one side of each (k ≤ the smallest class's patients)."""
    if groups is None:
        return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(y, y))
    split = StratifiedGroupKFold(k, shuffle=True, random_state=seed).split(y, y, groups)
    return [(train, held) for train, held in split if len(held)]


def select_classifier(x: np.ndarray, y: np.ndarray, names: Sequence[str], num_classes: int,
                      seed: int = 0, candidates: Sequence[Candidate] = CANDIDATES,
                      fit: Callable[..., Choice] | None = None, choose: bool | None = None,
                      groups: Sequence[Hashable] | None = None) -> Choice:
    """Choose, fit and calibrate a measurement classifier on the training set ``(x, y)``.

    ``x`` (N, F) raw measurements named ``names`` (NaN allowed), ``y`` (N,) class indices,
    ``groups`` (N,) each case's patient (None: each case its own). Each candidate is scored
    by stratified k-fold cross-validation **within** ``x`` (k = min(5, smallest class
    count); with groups, a patient's cases on one side of every fold, and every count below
    in patients); the best balanced accuracy wins (ties: the earlier
    candidate), is refitted on all of ``x``, and its temperature is fitted on the
    out-of-fold probabilities (minimal log-loss). ``cv_summary`` keeps every candidate's
    score with its 95% bootstrap interval (:func:`segfew.metrics.classification_metrics`).
    With fewer than ``SELECT_FROM`` cases in some class nothing is chosen: the first
    candidate is fitted (scored by the inner CV all the same, for its temperature and its
    ``cv_summary`` entry), since the winner among many noisy scores of a handful of
    held-out cases is mostly the luckiest (Cawley & Talbot 2010, JMLR 11); with fewer than
    2 there is no cross-validation, temperature 1. ``choose`` overrides that rule (True:
    choose among ``candidates`` whatever the class counts; :func:`nested_estimate` repeats
    the whole training set's decision in its smaller folds). ``fit`` is the fitting
    function (a test seam; default :func:`_fit`). Raises ValueError on mismatched shapes.
    """
    fit = fit or _fit
    x = transform(x, names)
    y = np.asarray(y, dtype=np.int64)
    if x.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[1] != len(names):
        raise ValueError(f"measurements {x.shape} do not fit {y.shape[0]} targets and "
                         f"{len(names)} names")
    g = _patients(groups, len(y))
    smallest = _smallest(y, g)
    k = min(5, smallest)
    if len(np.unique(y)) < 2 or k < 2:
        choice = fit(candidates[0], x, y, names, num_classes, seed)
        choice.chosen_by = "the default: too few cases for a cross-validation"
        return choice
    default = smallest < SELECT_FROM if choose is None else not choose
    if default:
        candidates = candidates[:1]
    folds, units = _folds(y, g, k, seed), None if g is None else g.tolist()
    scores, oof, summary = {}, {}, {}
    for cand in candidates:
        proba = np.zeros((len(y), num_classes))
        for train, held in folds:
            proba[held] = predict_proba(fit(cand, x[train], y[train], names, num_classes, seed),
                                        x[held])
        m = classification_metrics(y, proba.argmax(1), None, [str(i) for i in range(num_classes)],
                                   bootstrap=CI_RESAMPLES, seed=seed, groups=units)
        scores[cand] = (m["balanced_accuracy"] or 0.0, m["accuracy"] or 0.0)
        ci = m["ci"].get("balanced_accuracy")
        summary[cand.label] = {"balanced_accuracy": m["balanced_accuracy"], "ci": ci,
                               "accuracy": m["accuracy"], **chance_fields(ci, y, balanced=True)}
        oof[cand] = proba
    best = max(candidates, key=lambda c: (scores[c][0], -candidates.index(c)))
    choice = fit(best, x, y, names, num_classes, seed)
    choice.temperature = _temperature(oof[best], y)
    choice.cv_scores = {c.label: s[1] for c, s in scores.items()}
    choice.cv_summary = summary
    if default and choose is None:
        unit = "case(s)" if g is None else "patient(s)"
        choice.chosen_by = (f"the default: {smallest} {unit} in a class, fewer than the "
                            f"{SELECT_FROM} a choice among candidates needs")
    elif default:
        choice.chosen_by = "the default"
    return choice


def nested_estimate(x: np.ndarray, y: np.ndarray, names: Sequence[str], num_classes: int,
                    seed: int = 0, candidates: Sequence[Candidate] = CANDIDATES,
                    outer_folds: int = 3, trees: int = NESTED_TREES,
                    groups: Sequence[Hashable] | None = None) -> dict[str, Any] | None:
    """An honest estimate of :func:`select_classifier` as a whole: nested cross-validation.

    The winner's own inner score is biased upward (it is the maximum of several noisy
    scores; Cawley & Talbot 2010, JMLR 11). Here the whole selection runs again inside
    each of ``min(outer_folds, smallest class count)`` stratified outer folds of ``(x, y)``
    and its chosen model predicts the held-out fold; the pooled held-out predictions are
    scored. With ``groups`` (N,: each case's patient) where a patient holds several cases,
    every fold, inner or outer, keeps a patient's cases on one side, classes are counted in
    patients, the interval resamples patients and ``groups`` (their number) is returned.
    Each fold makes the decision the whole of ``(x, y)`` makes — to choose among the
    candidates (from :data:`SELECT_FROM` cases per class) or to fit the default —, though it
    holds fewer cases: an estimate of the procedure that made the model. Forests have
    ``trees`` trees here (fewer than the model file's, to bound the time: the estimate is,
    if anything, pessimistic). Returns ``{"balanced_accuracy", "ci", "accuracy", "folds",
    "n", "chance_rate", "distinguishable_from_chance"}`` (chance: 1 / classes present, the
    balanced accuracy of a constant answer), or None when a class has fewer than 2 cases.
    """
    y = np.asarray(y, dtype=np.int64)
    g = _patients(groups, len(y))
    k = min(outer_folds, 5, _smallest(y, g))
    if len(np.unique(y)) < 2 or k < 2:
        return None
    fit = partial(_fit, trees=trees)
    choose = _smallest(y, g) >= SELECT_FROM
    pred, units = np.zeros(len(y), dtype=np.int64), None if g is None else g.tolist()
    for train, held in _folds(y, g, k, seed + 1):
        choice = select_classifier(x[train], y[train], names, num_classes, seed, candidates, fit,
                                   choose, None if g is None else g[train])
        pred[held] = predict_proba(choice, transform(x[held], names)).argmax(1)
    m = classification_metrics(y, pred, None, [str(i) for i in range(num_classes)],
                               bootstrap=CI_RESAMPLES, seed=seed, groups=units)
    ci = m["ci"].get("balanced_accuracy")
    return {"balanced_accuracy": m["balanced_accuracy"], "ci": ci, "accuracy": m["accuracy"],
            "folds": k, "n": len(y), **({} if g is None else {"groups": m["n_groups"]}),
            **chance_fields(ci, y, balanced=True)}


def _temperature(proba: np.ndarray, y: np.ndarray) -> float:
    """The T in p^(1/T)/Σ that minimises the log-loss of out-of-fold probabilities."""
    logp = np.log(np.maximum(proba, FLOOR))
    best, best_t = math.inf, 1.0
    for t in np.exp(np.linspace(math.log(0.25), math.log(8), 25)):
        z = logp / t
        z -= z.max(1, keepdims=True)
        nll = -(z[np.arange(len(y)), y] - np.log(np.exp(z).sum(1))).mean()
        if nll < best - 1e-12:
            best, best_t = nll, float(t)
    return best_t


def predict_proba(choice: Choice, x: np.ndarray) -> np.ndarray:
    """(N, K) probabilities of transformed measurements ``x`` (N, F), before calibration."""
    z = ((np.where(np.isnan(x), choice.median, x) - choice.mean) / choice.std) * choice.mask
    if choice.linear is not None:
        logits = z @ choice.linear[0].T + choice.linear[1]
        logits -= logits.max(1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(1, keepdims=True)
    assert choice.forest is not None
    return forest_proba(choice.forest, torch.from_numpy(z)).numpy()


def forest_proba(f: dict[str, Any], z: Tensor) -> Tensor:
    """Mean leaf class frequencies over trees; ``f`` holds arrays or tensors (T, M[, K])."""
    feature, threshold, left, right, value = (torch.as_tensor(f[k]) for k in (
        "feature", "threshold", "left", "right", "value"))
    t, _ = feature.shape
    node = torch.zeros(z.shape[0], t, dtype=torch.long)
    trees = torch.arange(t).expand(z.shape[0], t)
    for _ in range(feature.shape[1]):  # depth ≤ nodes; stops as soon as all sit in leaves
        lft = left[trees, node]
        inner = lft >= 0
        if not bool(inner.any()):
            break
        # scikit-learn compares float32 inputs with its thresholds
        x = z.gather(1, feature[trees, node]).to(torch.float32).to(threshold.dtype)
        go_left = x <= threshold[trees, node]
        node = torch.where(inner, torch.where(go_left, lft, right[trees, node]), node)
    return value[trees, node].mean(dim=1)
