"""The experiment report's gallery: evidence sheets of the best method's mistakes.

The report's confusion matrix says how often the best method (highest pooled accuracy at
the largest training size) confused two classes; the gallery shows the cases behind it —
each misclassified test case with the sheet that ``predict --explain`` draws
(:mod:`segfew.inference.explain`), by the task's own model file (``work/<task>/model.pt``), so a
reader sees what the network segmented, where it looked or which measurements misled it.
At most :data:`LIMIT` sheets, tasks in order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from segfew.errors import SegfewError
from segfew.experiment.protocol import load_cases
from segfew.inference.ensemble import flag_confidence
from segfew.inference.explain import Explainer
from segfew.inference.predictor import Predictor

__all__ = ["LIMIT", "best_method", "misclassified_sheets"]

LIMIT = 8  # sheets in the report (each is embedded in its HTML)


def best_method(points: Mapping[tuple[str, int], Mapping[str, Any]]) -> tuple[str, int] | None:
    """``(framework, size)`` of the highest pooled accuracy at the largest size, as the
    report's confusion matrix of the best method; None when nothing was scored."""
    if not points:
        return None
    largest = max(size for _, size in points)
    scored = [(fw, p["accuracy"]) for (fw, size), p in points.items()
              if size == largest and p.get("accuracy") is not None]
    return (max(scored, key=lambda item: item[1])[0], largest) if scored else None


def misclassified_sheets(run_dirs: Sequence[Path], results: Sequence[Mapping[str, Any]],
                         points: Mapping[tuple[str, int], Mapping[str, Any]], spec: Any,
                         out: Path, limit: int = LIMIT) -> list[tuple[str, Path]]:
    """Sheets of the best method's misclassified test cases: ``[(caption, png)]`` under
    ``out``. Tasks whose model file is gone, and cases that cannot be read here, are left
    out (the report still stands)."""
    best = best_method(points)
    if best is None:
        return []
    fw, size = best
    cases = None
    shown: list[tuple[str, Path]] = []
    for r in results:
        if r["framework"] != fw or int(r["size"]) != size or len(shown) >= limit:
            continue
        wrong = [p for p in r.get("predictions") or []
                 if p.get("status") == "ok" and p["predicted"] != p["target"]]
        model = next((d / "work" / r["key"] / "model.pt" for d in run_dirs
                      if (d / "work" / r["key"] / "model.pt").is_file()), None)
        if not wrong or model is None:
            continue
        try:
            if cases is None:
                cases = {c.id: c for c in load_cases(spec)}
            chosen = [cases[p["id"]] for p in wrong if p["id"] in cases][:limit - len(shown)]
            predictor = Predictor.open(model, device="cpu", workers=0)
            predictor.masks = getattr(spec, "masks", None)  # another tool's label maps
            rows = predictor.classify(chosen)
            flag_confidence(rows)
            explainer = Explainer(predictor, out / r["key"])
            for case, row in zip(chosen, rows, strict=True):
                record = explainer.add(case, row, None if case.target is None
                                       else str(case.target))
                if record["sheet"]:
                    shown.append((f"{case.id}: true {case.target}, predicted {row.predicted} "
                                  f"({fw}, repetition {r['repetition']})",
                                  out / r["key"] / record["sheet"]))
        except (SegfewError, OSError):
            continue
    return shown
