"""Per-case evidence for ``predict --explain`` and ``evaluate --explain``: sheets and an index.

For every case of a batch, after it is classified, :class:`Explainer` gathers what a
clinician asks next — what the network segmented, where the classifier looked
(:func:`segfew.inference.saliency.grad_cam`), which measurements drove a ``measures`` classifier
(:func:`segfew.models.measures.contributions`) against the training cases per class — and
writes one PNG sheet (:func:`segfew.inference.sheet.write_sheet`) before the next case is read, so
memory stays that of one case. Each case leaves a small record (id, class, confidence,
sheet or error); :meth:`Explainer.write_index` turns them into one HTML page, lowest
confidence first. A case whose prediction failed, or whose sheet could not be drawn, gets
its error in the index and no sheet (sheets are written atomically).

Example::

    explainer = Explainer(predictor, Path("explain"))
    for case, row in zip(cases, rows):
        explainer.add(case, row)
    explainer.write_index("predictions")    # explain/index.html, explain/sheets/<id>.png
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from segfew.errors import DataError
from segfew.files import check_output, check_replace, is_recorded, outputs_record, write_json
from segfew.inference.batch import CASE_ERRORS, one_line
from segfew.inference.ensemble import default_min_confidence
from segfew.inference.fit_measures import estimate_caveat
from segfew.inference.measure_names import cine_channel_words, describe, structure_names
from segfew.inference.predictor import model_kind
from segfew.inference.run import segment_probabilities
from segfew.inference.saliency import grad_cam
from segfew.inference.sheet import SHOWN_BARS, Evidence, Measured, write_index, write_sheet
from segfew.models.measures import contributions

if TYPE_CHECKING:
    from segfew.data import Case
    from segfew.inference.batch import PredictionRow
    from segfew.inference.predictor import Predictor

__all__ = ["INDEX", "RECORD", "Explainer", "check_explain", "explain_batch", "sheet_name"]

INDEX = "index.html"
SHEETS = "sheets"
#: the run record of an explain folder: the files it wrote (its own name, so that the folder
#: may be an evaluation's, whose ``run.json`` is that run's)
RECORD = "index.run.json"
SHOWN_MEASUREMENTS = 8  # of the model's top ten


class Explainer:
    """Writes one sheet per case of a classifier's batch into ``out_dir`` and its index.

    ``predictor`` is the loaded classifier (:class:`segfew.inference.predictor.Predictor`);
    ``min_confidence`` is the threshold below which a case is flagged (as in the
    predictions table). An earlier batch's sheets are removed where the run record
    ``record`` (default ``<out_dir>/index.run.json``) lists them, unchanged, as segfew's;
    other files are left alone. Raises DataError for a segmentation model.
    """

    def __init__(self, predictor: Predictor, out_dir: Path, min_confidence: float | None = None,
                 record: Path | None = None) -> None:
        if predictor.kind != "classifier":
            raise DataError("--explain draws a classifier's evidence; this is a segmentation "
                            "model", predictor.model_path)
        self.predictor, self.out_dir = predictor, Path(out_dir)
        meta = predictor.meta
        self.min_confidence = (default_min_confidence(len(meta.classes))
                               if min_confidence is None else float(min_confidence))
        self.classes = list(meta.classes)
        names = list((meta.feature_source or {}).get("classes") or [])
        self.structures = structure_names(names)
        # every channel is said by name (so measurements read as words), cine phases as ED/ES
        self.channel_words = {c: c for c in meta.channels or []} | cine_channel_words(
            meta.channels or [], names)
        self.caveat = estimate_caveat(meta.metrics or {}) or ""  # on every sheet, and the index
        self.records: list[dict[str, Any]] = []
        self._names: set[str] = set()
        self.record = Path(record) if record is not None else self.out_dir / RECORD
        for old in (self.out_dir / SHEETS).glob("*.png"):  # an earlier batch's sheets would
            name = old.relative_to(self.record.parent).as_posix()  # stand beside an index
            if is_recorded(self.record, name):  # that no longer lists them: only segfew's
                old.unlink(missing_ok=True)

    def add(self, case: Case, row: PredictionRow, target: str | None = None) -> dict[str, Any]:
        """Write ``case``'s sheet (unless its row failed); returns and keeps its record."""
        record: dict[str, Any] = {"id": row.id, "predicted": row.predicted, "target": target,
                                  "confidence": row.confidence, "low_confidence":
                                  row.low_confidence, "sheet": None, "error": row.error,
                                  "runner_up": _runner_up(row.probabilities)}
        if row.status == "ok":
            name = sheet_name(row.id)
            if name in self._names:  # two ids that read the same as file names
                name = f"{name}_{len(self.records)}"
            self._names.add(name)
            path = self.out_dir / SHEETS / f"{name}.png"
            try:
                write_sheet(self.evidence(case, row, target), path)
                record["sheet"] = f"{SHEETS}/{path.name}"
            except CASE_ERRORS as e:
                record["error"] = f"no sheet: {one_line(e)}"
        self.records.append(record)
        return record

    def write_index(self, title: str) -> Path:
        """``<out_dir>/index.html`` of every record so far
        (:func:`segfew.inference.sheet.write_index`), and the run record listing it and the
        sheets (:func:`segfew.files.outputs_record`)."""
        index = write_index(self.records, self.out_dir / INDEX, title, self.min_confidence,
                            self.caveat)
        written = [INDEX, *(str(r["sheet"]) for r in self.records if r["sheet"])]
        write_json(self.out_dir / RECORD, {"task": "explain",
                                           "model": str(self.predictor.model_path),
                                           "caveat": self.caveat or None,
                                           **outputs_record(self.out_dir / RECORD, written)})
        return index

    # -- evidence

    def evidence(self, case: Case, row: PredictionRow, target: str | None = None) -> Evidence:
        """What ``case``'s sheet shows, given its (ok) prediction row."""
        p = self.predictor
        k = self.classes.index(row.predicted)
        channels = [self.channel_words.get(c, c) for c in (case.channel_names
                                                            if len(case.images) > 1 else
                                                            ["scan"])]
        confidence = row.confidence if row.confidence is not None else max(
            row.probabilities.values())
        ev = Evidence(row.id, row.predicted, dict(row.probabilities), confidence,
                      self.min_confidence, channels, [], structures=self.structures,
                      target=target, caveat=self.caveat)
        if p.measurer is not None:
            self._measures(case, k, ev)
        else:
            self._network(case, k, ev)
        return ev

    def _network(self, case: Case, k: int, ev: Evidence) -> None:
        p = self.predictor
        x = p.load(case)  # (C, *grid), as the classifier saw it
        cam = grad_cam(p.model, x, k, p.device)
        ev.images = list(x)
        ev.saliency = [cam] * len(x)
        ev.saliency_method = ("Grad-CAM of the predicted class on the maps the classifier "
                              "reads (captum LayerGradCam)")
        net = getattr(p.model, "feature_net", None)
        if net is None:
            ev.structures = {}
            return
        groups = [x[c:c + 1] for c in range(len(x))] if net.in_channels == 1 else [x]
        maps = [np.argmax(segment_probabilities(net, g, p.device, p.batch_size, p.plan), 0)
                for g in groups]
        ev.labels = maps if len(maps) == len(x) else maps * len(x)

    def _measures(self, case: Case, k: int, ev: Evidence) -> None:
        p = self.predictor
        m = p.measurer
        assert m is not None
        images, maps = m.label_maps(case)  # segmented, or another tool's (--masks)
        ev.images = [im.array for im in images]
        ev.labels = maps if len(maps) == len(images) else maps * len(images)
        values = p.measurements(case)
        names = list(p.meta.architecture.args["feature_names"])
        x = np.array([values.get(n, np.nan) for n in names], dtype=np.float64)
        share, base, score, method = contributions(p.model, x, k)
        kind = "probability" if "tree" in method else "logit"
        ev.decision = (f"{method}; {round(base, 2) + 0.0:+.2f} + contributions = {kind} "
                       f"{score:.2f} before calibration (the confidence above is after)")
        top = p.meta.metrics.get("top_measurements") or []
        chosen = [t["measurement"] for t in top if t["measurement"] in names]
        if not chosen:  # an older model file: the largest contributions
            chosen = [names[i] for i in np.argsort(-np.abs(share))]
        by_name = {t["measurement"]: t.get("by_class") or [] for t in top}
        shown = []
        for name in chosen[:SHOWN_MEASUREMENTS]:
            d = describe(name, self.channel_words, self.structures)
            per_class = by_name.get(name, [])
            shown.append(Measured(
                d.label, values.get(name, math.nan) * d.factor,
                {c: [v * d.factor for v in vs if v is not None]
                 for c, vs in zip(self.classes, per_class, strict=False)},
                float(share[names.index(name)]), d.unit,
                d.label.removesuffix(f" ({d.unit})") if d.unit else d.label))
        ev.measured = shown
        ev.n_measurements = len(names)
        shown_bars = sorted(shown, key=lambda m: -abs(m.contribution))[:SHOWN_BARS]
        ev.rest = float(share.sum() - sum(m.contribution for m in shown_bars))


def sheet_name(case_id: str) -> str:
    """The file stem of a case's sheet: its id with characters unsafe in file names as
    ``_`` (a second id that reads the same gets ``_<position>``)."""
    return re.sub(r"[^\w.-]", "_", case_id) or "case"


def _runner_up(probabilities: dict[str, float]) -> str:
    ranked = sorted(probabilities.items(), key=lambda kv: -kv[1])
    return f"{ranked[1][0]} ({ranked[1][1]:.2f})" if len(ranked) > 1 else ""


def explain_batch(predictor: Predictor, cases: list[Case], rows: list[PredictionRow],
                  out_dir: Path, min_confidence: float | None = None,
                  targets: list[str | None] | None = None, title: str = "") -> Path:
    """A sheet per case of a classified batch, in order, then the index; returns its path."""
    explainer = Explainer(predictor, out_dir, min_confidence)
    for i, (case, row) in enumerate(zip(cases, rows, strict=True)):
        explainer.add(case, row, targets[i] if targets is not None else None)
    return explainer.write_index(title or f"{predictor.model_path.name}: {len(cases)} cases")


def check_explain(out_dir: str | Path, predictors: list[Predictor], inputs: list[Path],
                  ids: Sequence[str] | None = None, overwrite: bool = False) -> None:
    """Refuse ``--explain`` before any work where it cannot be done: a segmentation model,
    an ensemble (whose evidence is not one network's), a head on an nnU-Net's per-case
    statistics (neither a map on the image nor named measurements), a folder among the
    inputs, or a file there that the batch would replace and segfew did not write
    (``index.html``, a sheet of one of the cases ``ids``, or any sheet when ``ids`` is
    None), unless ``overwrite`` (:func:`segfew.files.check_replace`)."""
    if predictors[0].kind != "classifier":
        raise DataError("--explain draws a classifier's evidence; this is a segmentation "
                        "model", predictors[0].model_path)
    if model_kind(predictors[0].meta) == "nnunet classifier":
        raise DataError("--explain draws a map on the image or named measurements; this "
                        "classifier reads an nnU-Net's statistics of each case, which have "
                        "neither", predictors[0].model_path)
    if len(predictors) > 1:
        raise DataError("--explain draws one model's evidence; give one --model",
                        predictors[1].model_path)
    out = check_output(out_dir, inputs, "folder", "--explain")
    if ids is None:
        sheets = sorted(p.name for p in (out / SHEETS).glob("*.png"))
    else:  # a case's own name, or the name it gets beside another that reads the same
        sheets = sorted({f"{n}{tail}.png" for i, n in enumerate(map(sheet_name, ids))
                         for tail in ("", f"_{i}")})
    check_replace(out / RECORD, [INDEX, RECORD, *(f"{SHEETS}/{n}" for n in sheets)],
                  overwrite, "--explain")
