"""Run a saved model on new scans: class probabilities, or label maps in the source geometry.

A model file (``segfew.modelfile``) carries its pre-processing, so prediction repeats
training's resampling and intensity normalisation exactly (SPEC §5). :meth:`Predictor.open`
reads a model file and returns the predictor of its kind, each in its own module:

- :class:`segfew.inference.classify.ImageClassifier` — a classifier on images (frameworks
  manual / threshold / scratch / vgg);
- :class:`segfew.inference.classify.MeasuresClassifier` — a classifier on measurements of
  label maps (framework measures: its own segmentation, or another tool's ``--masks``);
- :class:`segfew.inference.classify.NnUNetClassifier` — the head on a trained nnU-Net's
  statistics of each case (framework manual with an nnU-Net results folder);
- :class:`segfew.inference.segment.Segmenter` — a segmentation network, whose label maps are
  written back on the input image's grid and geometry (they overlay the scan in ITK-SNAP or
  3D Slicer).

Every kind answers the same small interface (:class:`Predictor`); a method of another kind
is refused with a one-line DataError. A batch of files and folders goes through
:func:`segfew.inference.paths.predict_paths`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from segfew.errors import DataError, SpecError
from segfew.inference.batch import Advance, PredictionRow
from segfew.inference.run import default_workers, network_dim
from segfew.modelfile import load_model
from segfew.preprocess.cache import load_case
from segfew.runtime import describe, resolve_device, resolve_plan

if TYPE_CHECKING:
    from segfew.data import Case
    from segfew.inference.measure import Measurer
    from segfew.io import Image
    from segfew.modelfile import ModelMeta
    from segfew.preprocess.cache import PreprocessCache

__all__ = ["PredictionRow", "Predictor", "model_kind", "refuse_unread_options"]

#: the predictor class of each kind of model file (:func:`model_kind`), filled as they are
#: defined (``class Segmenter(Predictor, kind="segmentation")``)
KINDS: dict[str, type[Predictor]] = {}

NOT_CLASSIFIER = "this is a classifier; it predicts classes, not label maps"
NOT_SEGMENTER = "this is a segmentation model; it writes label maps, not classes"


#: the options of predict and evaluate that one kind of model alone reads: (the kind,
#: what the option does); given with the other kind they are refused, not ignored
ONE_KIND_OPTIONS = {
    "probabilities": ("segmentation", "writes a segmentation model's probability maps"),
    "tta": ("segmentation", "averages a segmentation model's shifted copies"),
    "labels": ("segmentation", "holds the label maps a segmentation model is scored against "
               "(a classifier's truth is --table or class sub-folders)"),
    "label_map": ("segmentation", "remaps the label maps a segmentation model is scored against"),
    "min_confidence": ("classifier", "flags a classifier's uncertain cases"),
    "explain": ("classifier", "draws a classifier's evidence"),
    "bootstrap": ("classifier", "draws a classifier's intervals; Dice has none here"),
    "label_column": ("classifier", "names the table's class column; a segmentation model's "
                     "truth is its label maps (--labels), the table only selects the cases"),
}


def refuse_unread_options(kind: str, model: Path, **given: object) -> None:
    """Raise :class:`SpecError` for an option of :data:`ONE_KIND_OPTIONS` given (neither
    None nor False) to a model of the other ``kind`` (``meta.kind``)."""
    for option, value in given.items():
        reader, what = ONE_KIND_OPTIONS[option]
        if value is not None and value is not False and reader != kind:
            this = "a classifier" if kind == "classifier" else "a segmentation model"
            raise SpecError(f"--{option.replace('_', '-')} {what}; this is {this}", model)


def model_kind(meta: ModelMeta) -> str:
    """``"segmentation"``, ``"measures classifier"``, ``"nnunet classifier"`` or
    ``"image classifier"``."""
    if meta.kind != "classifier":
        return "segmentation"
    if meta.architecture.name == "measurement_classifier":
        return "measures classifier"
    if meta.architecture.name == "stats_head":
        return "nnunet classifier"
    return "image classifier"


class Predictor:
    """A loaded model with its pre-processing; :meth:`open` gives the one of a model file.

    ``model_path``, ``model`` (eval mode, on ``device``), ``meta`` (its
    :class:`segfew.modelfile.ModelMeta`), ``device`` and ``plan`` (how the network runs:
    :func:`segfew.runtime.resolve_plan` of ``precision``) are public. ``cache`` is an optional
    :class:`segfew.preprocess.cache.PreprocessCache` shared with other runs. ``workers``
    processes read and pre-process cases ahead of the network (None:
    :func:`segfew.inference.run.default_workers`; 0: none). ``tta``: test-time augmentation
    of a segmentation (a measures classifier measures as its file records).
    """

    masks: Path | None = None  # another tool's label maps, for a measures classifier

    def __init_subclass__(cls, kind: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if kind is not None:
            KINDS[kind] = cls

    @classmethod
    def open(cls, model_path: str | Path, device: str = "auto", **options: Any) -> Predictor:
        """The predictor of the model file at ``model_path``, by its kind (:func:`model_kind`).

        ``options`` are the constructor's (``batch_size``, ``cache``, ``precision``,
        ``workers``, ``tta``; a measures classifier also takes ``measurer``). Raises
        ModelFileError for a file that is not a readable segfew model.
        """
        resolved = resolve_device(device)
        model, meta = load_model(model_path, resolved)
        return KINDS[model_kind(meta)](Path(model_path), model, meta, resolved, **options)

    def __init__(self, model_path: Path, model: Any, meta: ModelMeta, device: Any,
                 batch_size: int = 8, cache: PreprocessCache | None = None,
                 precision: str = "auto", workers: int | None = None,
                 tta: bool = False) -> None:
        self.model_path, self.model, self.meta, self.device = model_path, model, meta, device
        self.preprocessing = meta.preprocess.plain()  # how every image reaches the grid
        self.batch_size = max(1, int(batch_size))
        self.cache = cache
        self.plan = resolve_plan(self.device, precision)
        self.workers = default_workers() if workers is None else max(0, int(workers))
        self.plan.prepare_model(self.model)
        self.tta = tta

    def runtime(self) -> dict[str, Any]:
        """How the network runs, for run.json (:func:`segfew.runtime.describe`)."""
        return describe(str(self.device), self.plan.precision, self.plan.channels_last)

    # -- what the model expects

    @property
    def kind(self) -> str:
        """``"classifier"`` or ``"segmentation"``, as the model file says."""
        return self.meta.kind

    @property
    def dim(self) -> int:
        """The network's dimensionality: 2 or 3."""
        args = self.meta.architecture.args
        if args.get("dim") is not None:
            return int(args["dim"])
        if args.get("input_size") is not None:
            return len(args["input_size"])

        return network_dim(self.model)

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
        if x.ndim - 1 < self.dim:
            raise DataError(f"the model takes {self.dim}D images, this image is {x.ndim - 1}D",
                            case.images[0])

    def split_channels(self, cases: Sequence[Case]) -> list[Case]:
        """The cases as the model takes them (a one-channel segmentation network: one case
        per channel, :meth:`segfew.inference.segment.Segmenter.split_channels`)."""
        return list(cases)

    def load(self, case: Case) -> np.ndarray:
        """Pre-processed image ``(C, *grid)`` float32 of a case, checked against the model."""
        x, _ = load_case(case, self.preprocessing, self.cache)
        x = np.asarray(x, dtype=np.float32)
        self.check_input(case, x)
        return x

    # -- the interface of every kind; another kind's method is refused in one line

    def classify(self, cases: Sequence[Case], progress: Advance | None = None
                 ) -> list[PredictionRow]:
        """One row per case, in order (:class:`segfew.inference.classify.Classifier`)."""
        raise DataError(NOT_SEGMENTER, self.model_path)

    @property
    def measurer(self) -> Measurer | None:
        """What segments and measures a case, for a measures classifier (else None)."""
        return None

    def measurements(self, case: Case) -> dict[str, float]:
        """The named measurements of a case (framework measures); DataError otherwise."""
        raise DataError("only a measures classifier measures cases", self.model_path)

    def write_measurements(self, path: Path, cases: Sequence[Case],
                           rows: Sequence[PredictionRow]) -> Path | None:
        """Framework measures: every case's measurements in ``path``; others: None."""
        return None

    def read_images(self, case: Case) -> tuple[list[Image], np.ndarray]:
        """A case's channel images and their pre-processed stack
        (:class:`segfew.inference.segment.Segmenter`)."""
        raise DataError(NOT_CLASSIFIER, self.model_path)

    def segment_images(self, case: Case, images: Sequence[Image]
                       ) -> tuple[np.ndarray, np.ndarray, Image]:
        """Label map, probabilities and reference image of a case
        (:class:`segfew.inference.segment.Segmenter`)."""
        raise DataError(NOT_CLASSIFIER, self.model_path)

    def segment_case(self, case: Case) -> tuple[np.ndarray, np.ndarray, Image]:
        """:meth:`segment_images` of a case read from its files."""
        raise DataError(NOT_CLASSIFIER, self.model_path)

    def segment(self, case: Case, out_dir: str | Path, probabilities: bool = False,
                read: tuple[list[Image], np.ndarray] | None = None) -> list[Path]:
        """Write a case's label map (:class:`segfew.inference.segment.Segmenter`)."""
        raise DataError(NOT_CLASSIFIER, self.model_path)
