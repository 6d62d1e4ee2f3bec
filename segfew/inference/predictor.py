"""Run a saved model on new scans: class probabilities, or label maps in the source geometry.

A model file (``segfew.modelfile``) carries its pre-processing, so prediction repeats
training's resampling and intensity normalisation exactly (SPEC §5). Classification is
batched; a case that cannot be read or pre-processed becomes an error row and never stops
the batch. A segmentation is written back on the input image's grid and geometry, so it
overlays the scan in ITK-SNAP or 3D Slicer.

A batch of files and folders goes through :func:`segfew.inference.paths.predict_paths`.
"""

from __future__ import annotations

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

if TYPE_CHECKING:

    from segfew.data import Case
    from segfew.inference.measure import Measurer
    from segfew.io import Image
    from segfew.preprocess.cache import PreprocessCache

__all__ = ["PredictionRow", "Predictor"]

# ----------------------------------------------------------------------------- predictor


class Predictor:
    """A loaded model with its pre-processing, ready to classify or segment cases.

    ``meta``, ``model`` (eval mode, on ``device``), ``device`` and ``plan`` (how the network
    runs: :func:`segfew.runtime.resolve_plan` of ``precision``) are public. ``cache`` is an
    optional :class:`segfew.preprocess.cache.PreprocessCache` shared with other runs. ``workers``
    processes read and pre-process cases ahead of the network (None:
    :func:`segfew.inference.run.default_workers`; 0: none).
    """

    def __init__(self, model_path: str | Path, device: str = "auto", batch_size: int = 8,
                 cache: PreprocessCache | None = None, precision: str = "auto",
                 workers: int | None = None, measurer: Measurer | None = None,
                 tta: bool = False) -> None:
        from segfew.inference.run import default_workers
        from segfew.modelfile import load_model
        from segfew.runtime import resolve_device, resolve_plan

        self.model_path = Path(model_path)
        self.device = resolve_device(device)
        self.model, self.meta = load_model(self.model_path, self.device)
        self.preprocessing = self.meta.preprocess.plain()  # how every image reaches the grid
        self.batch_size = max(1, int(batch_size))
        self.cache = cache
        self.plan = resolve_plan(self.device, precision)
        self.workers = default_workers() if workers is None else max(0, int(workers))
        self.plan.prepare_model(self.model)
        self._measurer = measurer
        self.tta = tta  # segmentation; a measures classifier measures as its file records
        self.masks: Path | None = None  # another tool's label maps (segfew.inference.masks)

    def runtime(self) -> dict[str, Any]:
        """How the network runs, for run.json (:func:`segfew.runtime.describe`)."""
        from segfew.runtime import describe

        return describe(str(self.device), self.plan.precision, self.plan.channels_last)

    @property
    def measurer(self) -> Measurer | None:
        """A measurement classifier's measurer: what segments and measures a case (None
        for other models)."""
        if self.meta.architecture.name != "measurement_classifier":
            return None
        if self._measurer is None and (self.meta.feature_source or {}).get("masks"):
            from segfew.inference.masks import MaskMeasurer  # label maps from another tool

            self._measurer = MaskMeasurer.for_model(  # type: ignore[assignment]
                self.meta.feature_source, self.masks, self.model_path)
        if self._measurer is None:
            from segfew.inference.measure import Measurer

            source = self.meta.feature_source or {}
            self._measurer = Measurer(self.model.feature_net, self.preprocessing,
                                      source.get("classes", []), self.device, self.batch_size,
                                      self.plan, bool(self.meta.architecture.args.get("tta")))
        return self._measurer

    def measurements(self, case: Case) -> dict[str, float]:
        """The named measurements of a case (framework measures); DataError otherwise."""
        if self.measurer is None:
            raise DataError("only a measures classifier measures cases", self.model_path)
        return self.measurer(case)

    # -- what the model expects

    @property
    def kind(self) -> str:
        return self.meta.kind

    @property
    def dim(self) -> int:
        """The network's dimensionality: 2 or 3."""
        args = self.meta.architecture.args
        if args.get("dim") is not None:
            return int(args["dim"])
        if args.get("input_size") is not None:
            return len(args["input_size"])
        from segfew.inference.run import network_dim

        return network_dim(self.model)

    @property
    def input_size(self) -> tuple[int, ...] | None:
        """The grid a classifier was built for (its fully connected layers fix it), if any."""
        size = self.meta.architecture.args.get("input_size")
        return tuple(int(s) for s in size) if size is not None else None

    @property
    def in_channels(self) -> int | None:
        """Channels the model takes, when known from its metadata."""
        if self.meta.channels:
            return len(self.meta.channels)
        arch = self.meta.architecture
        for args in (arch.args, arch.feature_net.args if arch.feature_net else {}):
            if args.get("in_channels") is not None:
                return int(args["in_channels"])
        return None

    def check_input(self, case: Case, x: np.ndarray) -> None:
        """Raise a DataError when a pre-processed case ``(C, *grid)`` does not fit the model."""
        expected = self.in_channels
        if expected is not None and x.shape[0] != expected:
            names = f" ({', '.join(self.meta.channels)})" if self.meta.channels else ""
            raise DataError(f"case {case.id!r} has {x.shape[0]} channel(s), the model expects "
                            f"{expected}{names}; use --channels", case.images[0])
        spatial = x.ndim - 1
        if spatial < self.dim or (self.kind == "classifier" and spatial != self.dim):
            raise DataError(f"the model takes {self.dim}D images, this image is {spatial}D",
                            case.images[0])
        size = self.input_size
        if self.kind == "classifier" and size is not None and tuple(x.shape[1:]) != size:
            raise DataError(f"the image reaches the grid {list(x.shape[1:])}, the model was "
                            f"trained on {list(size)}", case.images[0])

    def split_channels(self, cases: Sequence[Case]) -> list[Case]:
        """For a one-channel segmentation network, multi-channel cases become one case per
        channel (``<id>_<channel>``), as in pre-training (ACDC: ED and ES); else unchanged."""
        if self.kind != "segmentation" or self.in_channels != 1:
            return list(cases)
        return [c for case in cases for c in case.per_channel()]

    def load(self, case: Case) -> np.ndarray:
        """Pre-processed image ``(C, *grid)`` float32 of a case, checked against the model."""
        from segfew.preprocess.cache import load_case

        if self.measurer is not None:  # the measurements, in the order the model was fitted
            m = self.measurer(case)
            names = self.meta.architecture.args["feature_names"]
            if len(case.images) != self.in_channels:
                raise DataError(f"case {case.id!r} has {len(case.images)} channel(s), the model "
                                f"expects {self.in_channels}; use --channels", case.images[0])
            from segfew.inference.measure import fitted_names

            return np.array([m[n] for n in fitted_names(names, m, case)], dtype=np.float64)
        x, _ = load_case(case, self.preprocessing, self.cache)
        x = np.asarray(x, dtype=np.float32)
        self.check_input(case, x)
        return x

    def write_measurements(self, path: Path, cases: Sequence[Case],
                           rows: Sequence[PredictionRow]) -> Path | None:
        """Framework measures: ``path`` gets every case's measurements (``id, <name>...``;
        empty cells for a failed case). Other models: nothing, None."""
        if self.measurer is None:
            return None
        from segfew.inference.measure import write_measurements_csv

        return write_measurements_csv(path, [
            (case.id, self.measurements(case) if row.status == "ok" else None)
            for case, row in zip(cases, rows, strict=True)])

    # -- classification

    def classify(self, cases: Sequence[Case], progress: Advance | None = None
                 ) -> list[PredictionRow]:
        """One row per case, in order; cases that fail become error rows.

        Cases are read and pre-processed by ``workers`` processes ahead of the network;
        every ``batch_size`` consecutive cases, those of equal grid shape go through the
        network together. If the network fails on a batch, its cases are retried one by
        one so only the offending case becomes an error row.
        """
        if self.kind != "classifier":
            raise DataError("this is a segmentation model; it writes label maps, not classes",
                            self.model_path)
        from segfew.inference.run import read_ahead

        classes = list(self.meta.classes)
        rows = [PredictionRow(id=c.id, path=case_path(c)) for c in cases]
        chunk: dict[tuple[int, ...], list[tuple[int, np.ndarray]]] = {}
        in_chunk = 0
        for i, x, error in read_ahead(cases, self.load, self.workers, one_line, CASE_ERRORS):
            if error:
                _fail(rows[i], error)
            else:
                chunk.setdefault(x.shape, []).append((i, x))
            in_chunk += 1
            if in_chunk == self.batch_size or i == len(cases) - 1:
                for group in chunk.values():
                    self._classify_group(group, rows, classes)
                if progress is not None:
                    progress(in_chunk)
                chunk, in_chunk = {}, 0
        return rows

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
        from segfew.inference.run import classify_probabilities

        return classify_probabilities(self.model, x, self.device, self.batch_size, self.plan)

    # -- segmentation

    def segment_case(self, case: Case) -> tuple[np.ndarray, np.ndarray, Image]:
        """:meth:`segment_images` of a case read from its files."""
        return self._segment_prepared(*self.read_images(case))

    def read_images(self, case: Case) -> tuple[list[Image], np.ndarray]:
        """A case's channel images as read and their pre-processed stack ``(C, *grid)``."""
        from segfew.data.read import read_case

        images, _ = read_case(case)
        return list(images), self._prepare(case, images)

    def _prepare(self, case: Case, images: Sequence[Image]) -> np.ndarray:
        from segfew.preprocess.grid import preprocess_image

        if self.kind != "segmentation":
            raise DataError("this is a classifier; it predicts classes, not label maps",
                            self.model_path)
        x = np.stack([np.asarray(preprocess_image(im.array, self.preprocessing, im.spacing),
                                 dtype=np.float32) for im in images])
        self.check_input(case, x)
        return x

    def segment_images(self, case: Case, images: Sequence[Image]
                       ) -> tuple[np.ndarray, np.ndarray, Image]:
        """Label map and probabilities of a case on its source grid, from its channel images.

        Returns ``(labels, probabilities, reference)``: ``labels`` has the shape of the
        first channel's array (int16), ``probabilities`` is ``(L, *that shape)`` float32,
        and ``reference`` is that channel's :class:`segfew.io.Image`, for writing back.
        """
        return self._segment_prepared(images, self._prepare(case, images))

    def _segment_prepared(self, images: Sequence[Image], x: np.ndarray
                          ) -> tuple[np.ndarray, np.ndarray, Image]:
        from segfew.inference.run import segment_on_source

        labels, restored = segment_on_source(self.model, x, images[0].shape,
                                             self.preprocessing, self.device,
                                             self.batch_size, self.plan, self.tta,
                                             images[0].spacing)
        return labels, restored, images[0]

    def segment(self, case: Case, out_dir: str | Path, probabilities: bool = False,
                read: tuple[list[Image], np.ndarray] | None = None) -> list[Path]:
        """Write ``<out_dir>/<id>_seg.nii.gz`` (and ``<id>_prob.nii.gz``, labels last).

        Both are in the input image's geometry (its shape, affine and orientation).
        ``read`` is the case's :meth:`read_images`, when it was read ahead.
        """
        from segfew.io import write_image

        labels, proba, reference = (self._segment_prepared(*read) if read is not None
                                    else self.segment_case(case))
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        written = [write_image(labels, reference, out_dir / f"{case.id}_seg.nii.gz")]
        if probabilities:
            written.append(write_image(np.moveaxis(proba, 0, -1), reference,
                                       out_dir / f"{case.id}_prob.nii.gz"))
        return [Path(p) for p in written]


def _fail(row: PredictionRow, err: BaseException | str) -> None:
    row.status = "error"
    row.error = err if isinstance(err, str) else one_line(err)
    row.predicted = ""
    row.probabilities = {}
