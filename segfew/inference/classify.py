"""Classifiers of saved model files: on images, and on measurements (framework measures).

Classification is batched; a case that cannot be read or pre-processed becomes an error row
and never stops the batch. :meth:`segfew.inference.predictor.Predictor.open` returns the
kind a model file holds.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from segfew.errors import DataError
from segfew.inference.batch import (
    CASE_ERRORS,
    Advance,
    PredictionRow,
    case_path,
    one_line,
)
from segfew.inference.input_range import KEY as INPUT_RANGE
from segfew.inference.input_range import outside_range
from segfew.inference.masks import MaskMeasurer
from segfew.inference.measure import Measurer, write_measurements_csv
from segfew.inference.measure_names import fitted_names, impossible, spacing_expected
from segfew.inference.nnunet import NnUNetMeasurer
from segfew.inference.nnunet_stats import NnUNetStats
from segfew.inference.predictor import Predictor
from segfew.inference.run import classify_probabilities, read_ahead

if TYPE_CHECKING:
    from segfew.data import Case

__all__ = ["Classifier", "ImageClassifier", "MeasuresClassifier", "NnUNetClassifier"]


class Classifier(Predictor):
    """Class probabilities of cases, in batches; :meth:`load` gives what the network reads."""

    def classify(self, cases: Sequence[Case], progress: Advance | None = None
                 ) -> list[PredictionRow]:
        """One row per case, in order; cases that fail become error rows.

        Cases are read and pre-processed by ``workers`` processes ahead of the network;
        every ``batch_size`` consecutive cases, those of equal grid shape go through the
        network together. If the network fails on a batch, its cases are retried one by
        one so only the offending case becomes an error row. A case whose input is doubtful
        whatever the answer (:meth:`read`) gets its row's ``low_confidence`` set.
        """
        classes = list(self.meta.classes)
        rows = [PredictionRow(id=c.id, path=case_path(c)) for c in cases]
        chunk: dict[tuple[int, ...], list[tuple[int, np.ndarray]]] = {}
        in_chunk = 0
        doubtful = []
        for i, item, error in read_ahead(cases, self.read, self.workers, one_line, CASE_ERRORS):
            if error:
                _fail(rows[i], error)
            else:
                x, doubt = item
                chunk.setdefault(x.shape, []).append((i, x))
                if doubt:
                    doubtful.append(i)
            in_chunk += 1
            if in_chunk == self.batch_size or i == len(cases) - 1:
                for group in chunk.values():
                    self._classify_group(group, rows, classes)
                if progress is not None:
                    progress(in_chunk)
                chunk, in_chunk = {}, 0
        for i in doubtful:
            rows[i].low_confidence = rows[i].status == "ok"
        return rows

    def read(self, case: Case) -> tuple[np.ndarray, bool]:
        """:meth:`load` of a case, and whether its answer is to be doubted however sure the
        model is (here never; a measures classifier's case with impossible measurements)."""
        return self.load(case), False

    def _classify_group(self, group: list[tuple[int, np.ndarray]], rows: list[PredictionRow],
                        classes: list[str]) -> None:
        try:
            proba = self._run_classifier(np.stack([x for _, x in group]))
            results: list[tuple[int, np.ndarray | BaseException]] = [
                (i, p) for (i, _), p in zip(group, proba, strict=True)]
        except (RuntimeError, MemoryError):
            results = []
            for i, x in group:
                try:
                    results.append((i, self._run_classifier(x[None])[0]))
                except (RuntimeError, MemoryError) as e:
                    results.append((i, DataError(
                        f"the model could not process this image ({one_line(e)[:200]})",
                        rows[i].path.split(";")[0])))
        for i, p in results:
            if isinstance(p, BaseException):
                _fail(rows[i], p)
                continue
            if p.shape[0] != len(classes):
                _fail(rows[i], DataError(f"the model gave {p.shape[0]} outputs for "
                                         f"{len(classes)} classes", self.model_path))
                continue
            rows[i].probabilities = {c: float(v) for c, v in zip(classes, p, strict=True)}
            rows[i].predicted = classes[int(np.argmax(p))]

    def _run_classifier(self, x: np.ndarray) -> np.ndarray:
        return classify_probabilities(self.model, x, self.device, self.batch_size, self.plan)


class ImageClassifier(Classifier, kind="image classifier"):
    """A classifier on images: the head on frozen segmentation features (frameworks manual,
    threshold), the VGG-16 from scratch or on ImageNet features; it reads images of exactly
    its dimensionality and, where its fully connected layers fix one, its grid."""

    @property
    def input_size(self) -> tuple[int, ...] | None:
        """The grid the classifier was built for (its fully connected layers fix it), if any."""
        size = self.meta.architecture.args.get("input_size")
        return tuple(int(s) for s in size) if size is not None else None

    def check_input(self, case: Case, x: np.ndarray) -> None:
        super().check_input(case, x)
        if x.ndim - 1 != self.dim:
            raise DataError(f"the model takes {self.dim}D images, this image is {x.ndim - 1}D",
                            case.images[0])
        size = self.input_size
        if size is not None and tuple(x.shape[1:]) != size:
            raise DataError(f"the image reaches the grid {list(x.shape[1:])}, the model was "
                            f"trained on {list(size)}", case.images[0])


class MeasuresClassifier(Classifier, kind="measures classifier"):
    """A classifier on named measurements of each case's label maps (framework measures):
    segmented by its frozen network or a trained nnU-Net, or another tool's (``masks``,
    matched by id).

    ``measurer``: a :class:`segfew.inference.measure.Measurer` already holding these cases'
    measurements (an experiment shares one per feature network); by default one is made.
    """

    def __init__(self, *args: Any, measurer: Measurer | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._measurer = measurer

    @property
    def measurer(self) -> Measurer:
        """What segments and measures a case: the model's frozen network, the nnU-Net
        folder it records (:class:`segfew.inference.nnunet.NnUNetMeasurer`), or the label
        maps in ``masks`` (:class:`segfew.inference.masks.MaskMeasurer`)."""
        source = self.meta.feature_source or {}
        if self._measurer is None and source.get("masks"):  # label maps from another tool
            self._measurer = MaskMeasurer.for_model(  # type: ignore[assignment]
                source, self.masks, self.model_path)
        if self._measurer is None and source.get("nnunet"):  # a trained nnU-Net's maps
            self._measurer = NnUNetMeasurer.for_model(  # type: ignore[assignment]
                source, self.model_path, self.device)
        if self._measurer is None:
            self._measurer = Measurer(self.model.feature_net, self.preprocessing,
                                      source.get("classes", []), self.device, self.batch_size,
                                      self.plan, bool(self.meta.architecture.args.get("tta")))
        # a case in voxels against a model in mm (or the reverse) is refused before the work
        self._measurer.expect_real = spacing_expected(
            self.meta.architecture.args.get("feature_names", []))
        return self._measurer

    def measurements(self, case: Case) -> dict[str, float]:
        """The named measurements of a case."""
        return self.measurer(case)

    def load(self, case: Case) -> np.ndarray:
        """The measurements of a case ``(F,)`` float64, in the order the model was fitted.
        A case found with a ``problem`` (a table row with no image) raises it as a
        DataError: its error row."""
        if case.problem is not None:
            raise DataError(case.problem)
        m = self.measurer(case)
        names = self.meta.architecture.args["feature_names"]
        if len(case.images) != self.in_channels:
            raise DataError(f"case {case.id!r} has {len(case.images)} channel(s), the model "
                            f"expects {self.in_channels}; use --channels", case.images[0])
        fitted = fitted_names(names, m, case, self.meta.channels)
        return np.array([m[n] for n in fitted], dtype=np.float64)

    def read(self, case: Case) -> tuple[np.ndarray, bool]:
        """:meth:`load`, and whether any of the case's measurements cannot be
        (:func:`segfew.inference.measure_names.impossible`: an ejection fraction below 0, as
        when ED and ES are swapped), used by the model or not. The classifier answers such
        a case, often at 0.99 — on values it never saw, from inputs no heart gives — so its
        row is flagged ``low_confidence`` (the measuring said why, in a warning). So is a
        case outside the grid or the range of stored values that the model's sizes in
        pixels or intensities as stored were fitted on, said in a DataWarning naming its
        file (:func:`segfew.inference.input_range.outside_range`); a model file without
        that record is not checked."""
        x, doubt = self.load(case), bool(impossible(self.measurer(case)))
        warning = outside_range(case, self.meta.metrics.get(INPUT_RANGE))
        if warning is not None:  # e.g. the same scans exported at half the pixels
            warnings.warn(warning, stacklevel=2)
        return x, doubt or warning is not None

    def write_measurements(self, path: Path, cases: Sequence[Case],
                           rows: Sequence[PredictionRow]) -> Path | None:
        """``path`` gets every case's measurements (``id, <name>...``; empty cells for a
        failed case); None, and no file, when every case failed (nothing was measured)."""
        if not any(row.status == "ok" for row in rows):
            return None
        return write_measurements_csv(path, [
            (case.id, self.measurements(case) if row.status == "ok" else None)
            for case, row in zip(cases, rows, strict=True)])


class NnUNetClassifier(Classifier, kind="nnunet classifier"):
    """The paper's head on a trained nnU-Net's statistics of each case (framework manual
    with an nnU-Net results folder): :class:`segfew.inference.nnunet_stats.NnUNetStats` of
    the folder its model file records, which must be unchanged.

    ``measurer``: an :class:`~segfew.inference.nnunet_stats.NnUNetStats` already holding
    these cases' statistics (an experiment shares one); by default one is made. nnU-Net
    runs in this process (not in reading processes: it holds the device).
    """

    def __init__(self, *args: Any, measurer: NnUNetStats | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stats = measurer
        self.workers = 0

    @property
    def measurer(self) -> NnUNetStats:  # type: ignore[override]
        """What computes a case's statistics; DataError naming the model file when its
        nnU-Net folder is gone or changed (checked once, before any case)."""
        if self._stats is None:
            self._stats = NnUNetStats.for_model(self.meta.feature_source or {},
                                                self.model_path, self.device)
        return self._stats

    def load(self, case: Case) -> np.ndarray:
        """The statistics of a case ``(2F,)`` float32, in the order the head was trained."""
        expected = self.in_channels
        if expected is not None and len(case.images) != expected:
            raise DataError(f"case {case.id!r} has {len(case.images)} channel(s), the model "
                            f"expects {expected}; use --channels", case.images[0])
        return self.measurer(case)


def _fail(row: PredictionRow, err: BaseException | str) -> None:
    row.status = "error"
    row.error = err if isinstance(err, str) else one_line(err)
    row.predicted = ""
    row.probabilities = {}
