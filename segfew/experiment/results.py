"""An experiment's results: finished tasks collected from RUN_DIRs, their status, the curves.

Reads what :func:`segfew.experiment.protocol.run_experiment` wrote (``results/<key>.json``); shards
written into several RUN_DIRs of one spec are merged. :func:`summarise` gives the points of
the learning curves (SPEC §6; Wong et al. 2018, Fig. 5 and 8).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segfew.errors import DataError, SpecError
from segfew.experiment.pooling import result_rows
from segfew.experiment.protocol import load_spec, plan_tasks, spec_digest
from segfew.frameworks import framework_rank
from segfew.metrics import classification_metrics

__all__ = ["TaskStatus", "collect_results", "summarise", "summarise_selection", "task_status"]


def _spec_digest_of(run_dir: Path) -> str:
    return spec_digest(load_spec(run_dir).model_dump(mode="json"))


def _check_same_digest(run_dirs: Sequence[Path]) -> None:
    digests = {Path(d): _spec_digest_of(Path(d)) for d in run_dirs}
    if len(set(digests.values())) > 1:
        raise SpecError("these RUN_DIRs hold experiments with different settings and cannot be "
                        "merged: " + ", ".join(str(d) for d in digests))


#: what every task's result file holds (:func:`segfew.experiment.protocol.run_experiment`)
RESULT_KEYS = ("repetition", "size", "framework", "metrics")


def collect_results(run_dir: Path | Sequence[Path]) -> list[dict[str, Any]]:
    """Every finished task's result from one RUN_DIR or several (shards), sorted by task.

    Several RUN_DIRs must hold the same spec; a task found twice is taken once.
    """
    dirs = [Path(run_dir)] if isinstance(run_dir, str | Path) else [Path(d) for d in run_dir]
    if len(dirs) > 1:
        _check_same_digest(dirs)
    found: dict[str, dict[str, Any]] = {}
    for d in dirs:
        for path in sorted((d / "results").glob("*.json")):
            if path.name.endswith(".error.json"):
                continue
            try:
                result = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as e:
                raise DataError(f"unreadable result file ({e})", path) from None
            lacking = [k for k in RESULT_KEYS if not isinstance(result, dict) or k not in result]
            if lacking:
                raise DataError(f"result file without {', '.join(lacking)}: not as segfew "
                                "experiment writes it; remove it and rerun the experiment to "
                                "redo its task", path)
            _check_metrics(result["metrics"], result, path)
            found.setdefault(result.get("key", path.stem), result)
    return sorted(found.values(), key=lambda r: (r["repetition"], r["size"],
                                                 framework_rank(r["framework"])))


#: the point metrics of a result that its predictions decide
_COUNTED = ("accuracy", "balanced_accuracy", "macro_f1", "kappa")


def _check_metrics(metrics: Any, result: dict[str, Any], path: Path) -> None:
    """DataError where a result's metrics are not those of its own predictions (its confusion
    matrix, accuracy, balanced accuracy, macro F1, kappa; a result of an older segfew, which
    keeps no patients with its predictions: its accuracy against its confusion matrix): the
    file was edited or damaged, and its row of the report would disagree with the pooled
    accuracy, which is counted from the predictions."""
    if not isinstance(metrics, dict) or not metrics.get("confusion_matrix"):
        return
    classes = list(metrics.get("per_class") or [])
    rows = result_rows(result, classes) if classes else None
    if rows is not None and rows[0]:
        again = classification_metrics(rows[0], rows[1], None, classes, bootstrap=0)
        counted = {"confusion matrix": again["confusion_matrix"],
                   **{k.replace("_", " "): again.get(k) for k in _COUNTED}}
    else:
        counts = np.asarray(metrics["confusion_matrix"], dtype=float)
        counted = {"accuracy": float(np.trace(counts) / counts.sum()) if counts.sum() else None}
    stored = {"confusion matrix": metrics.get("confusion_matrix"),
              **{k.replace("_", " "): metrics.get(k) for k in _COUNTED}}
    for name, value in counted.items():
        if not _same(stored.get(name), value):
            raise DataError(f"its {name} ({_shown(stored.get(name))}) is not that of its own "
                            f"predictions ({_shown(value)}): the file was edited or damaged; "
                            "remove it and rerun the experiment to redo its task", path)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, int | float) and isinstance(b, int | float):
        return abs(float(a) - float(b)) <= 1e-6
    return bool(np.array_equal(np.asarray(a, dtype=object), np.asarray(b, dtype=object))) \
        if isinstance(a, list) or isinstance(b, list) else a == b


def _shown(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


@dataclass
class TaskStatus:
    """Keys of the planned tasks that finished, failed (and were not redone) or are missing."""

    finished: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # key -> error message
    missing: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.finished) + len(self.failed) + len(self.missing)


def task_status(run_dirs: Path | Sequence[Path]) -> TaskStatus:
    """Which of the spec's planned tasks are finished, failed or missing across RUN_DIRs."""
    dirs = [Path(run_dirs)] if isinstance(run_dirs, str | Path) else [Path(d) for d in run_dirs]
    _check_same_digest(dirs)
    spec = load_spec(dirs[0])
    status = TaskStatus()
    for task in plan_tasks(spec):
        if any((d / "results" / f"{task.key}.json").is_file() for d in dirs):
            status.finished.append(task.key)
            continue
        errors = [d / "results" / f"{task.key}.error.json" for d in dirs]
        error = next((p for p in errors if p.is_file()), None)
        if error is None:
            status.missing.append(task.key)
            continue
        try:
            saved = json.loads(error.read_text(encoding="utf-8"))
            status.failed[task.key] = str(saved.get("error", "failed"))
        except (OSError, json.JSONDecodeError):
            status.failed[task.key] = "failed (unreadable error file)"
    return status


def _mean_std(values: Sequence[float | None]) -> dict[str, float | int | None]:
    v = np.array([x for x in values if x is not None], dtype=np.float64)
    return {"mean": float(v.mean()) if v.size else None,
            "std": float(v.std(ddof=1)) if v.size > 1 else None,
            "n": int(v.size)}


def summarise(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean ± std over repetitions per (framework, size) — the points of the learning curves.

    One row per (framework, size), frameworks in the paper's order, sizes ascending::

        {"framework", "size", "repetitions",
         "accuracy" | "balanced_accuracy" | "kappa" | "macro_f1": {"mean", "std", "n"},
         "f1": {class: {"mean", "std", "n"}}}

    ``std`` is the sample standard deviation (ddof=1) over repetitions, None with fewer
    than two; undefined values (None) are left out, and ``n`` counts the values used.
    """
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["framework"], int(r["size"])), []).append(r)
    rows = []
    for (fw, size) in sorted(groups, key=lambda g: (framework_rank(g[0]), g[1])):
        rs = sorted(groups[(fw, size)], key=lambda r: r["repetition"])
        metrics = [r["metrics"] for r in rs]
        classes: list[str] = []
        for m in metrics:
            classes += [c for c in (m.get("per_class") or {}) if c not in classes]
        row: dict[str, Any] = {"framework": fw, "size": size, "repetitions": len(rs)}
        for name in ("accuracy", "balanced_accuracy", "kappa", "macro_f1"):
            row[name] = _mean_std([m.get(name) for m in metrics])
        row["f1"] = {c: _mean_std([(m.get("per_class") or {}).get(c, {}).get("f1")
                                   for m in metrics]) for c in classes}
        rows.append(row)
    return rows


def summarise_selection(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per training size, what framework measures' inner selection claimed against what it
    got: the mean inner balanced accuracy of the chosen model (biased upward: the best of
    several noisy scores), the mean nested estimate of the whole selection, the mean test
    balanced accuracy, and in how many tasks the nested estimate was not distinguishable
    from chance (its interval holds it).
    Rows ``{"size", "tasks", "inner", "nested", "test", "at_chance"}`` (None: unknown)."""
    def mean(values: Sequence[float | None]) -> float | None:
        known = [float(v) for v in values if v is not None]
        return float(np.mean(known)) if known else None

    by_size: dict[int, list[dict[str, Any]]] = {}
    for r in results:
        if r.get("measures_selection"):
            by_size.setdefault(int(r["size"]), []).append(r)
    rows = []
    for size, group in sorted(by_size.items()):
        nested = [r.get("measures_nested") or {} for r in group]
        rows.append({
            "size": size, "tasks": len(group),
            "inner": mean([next((e["balanced_accuracy"] for e in r["measures_selection"]
                                 if e.get("chosen")), None) for r in group]),
            "nested": mean([n.get("balanced_accuracy") for n in nested]),
            "test": mean([(r.get("metrics") or {}).get("balanced_accuracy") for r in group]),
            "at_chance": sum(n.get("distinguishable_from_chance") is not True for n in nested)})
    return rows
