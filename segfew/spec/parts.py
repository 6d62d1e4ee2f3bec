"""The parts run specs are built of: pre-processing, augmentation, training, networks, data.

Each part checks its values on construction (unknown keys are errors); ``.plain()`` gives
the plain settings the library takes (:class:`segfew.preprocess.grid.Preprocessing`,
:class:`segfew.train.Augmentation`, :class:`segfew.train.TrainOptions`). Model files store
:class:`PreprocessConfig` as JSON so prediction repeats training exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    ValidationInfo,
    field_validator,
)

from segfew.choices import Intensity, LrSchedule, Precision, SegLoss
from segfew.errors import SpecError

if TYPE_CHECKING:
    from segfew.data.read import LabelRules
    from segfew.preprocess.grid import Preprocessing
    from segfew.train.augment import Augmentation
    from segfew.train.options import TrainOptions


MAX_SIZE = 1024
"""Largest grid size per axis (a 1024² slice; the paper's grids are 128–224)."""


class Settings(BaseModel):
    """Base of every settings model: unknown keys are errors, values are checked on set, and
    a true/false where a number belongs is refused (pydantic would read ``lr = true`` as 1.0)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        if isinstance(value, bool) and field is not None and _is_number(field.annotation):
            raise ValueError(f"expected a number, got {str(value).lower()}")
        return value


def _is_number(annotation: Any) -> bool:
    """``int``, ``float``, or either with ``None``."""
    kinds = [a for a in get_args(annotation) or (annotation,) if a is not type(None)]
    return bool(kinds) and all(a in (int, float) for a in kinds)


class PreprocessConfig(Settings):
    """How an image is brought onto the network grid (SPEC §5). Stored in every model file."""

    size: tuple[int, ...] = Field(
        default=(128,), description="grid size per axis (one value = every axis); multiples of 16"
    )
    intensity: Intensity = "clahe"
    window: tuple[float, float] | None = Field(
        default=None, description="CT window (low, high) in HU, applied before scaling"
    )
    clahe_clip: float = Field(default=0.01, gt=0, le=1)
    keep_aspect: bool = Field(
        default=False, description="crop/pad to a square field of view before resizing"
    )
    slice_axis: int | Literal["auto"] = Field(
        default="auto", description="axis of a 3D volume that a 2D network slices along; "
        "auto: per image, a stack's slice axis (spaced ≥ 2× wider than the others, or with "
        "≤ 1/4 of their voxels when the spacing is equal), else 2"
    )

    @field_validator("window")
    @classmethod
    def _window_low_high(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and not (all(map(math.isfinite, v)) and v[0] < v[1]):
            raise ValueError(f"give two finite numbers (low, high), low below high, got "
                             f"{list(v)}")
        return v

    @field_validator("slice_axis", mode="before")
    @classmethod
    def _slice_axis(cls, v: Any) -> Any:
        if v == "auto" or (type(v) is int and 0 <= v <= 2):
            return v
        raise ValueError(f'give 0, 1, 2 or "auto", not {v!r}')

    @field_validator("size", mode="before")
    @classmethod
    def _size_tuple(cls, v: Any) -> Any:
        return (v,) if isinstance(v, int) else v

    @field_validator("size")
    @classmethod
    def _size_multiple_of_16(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not 1 <= len(v) <= 3:
            raise ValueError("give one size, or one per axis (2 or 3 values)")
        # In-plane axes are pooled four times by the M-Net. A third value may be any size:
        # it is the slice axis of a 2D network run slice by slice (cine MRI has 6–18);
        # a 3D network checks its own grid.
        bad = [s for s in v[:2] if s < 16 or s % 16]
        if bad or min(v) < 1:
            raise ValueError(f"in-plane sizes must be positive multiples of 16, got {list(v)}")
        if max(v) > MAX_SIZE:
            raise ValueError(f"sizes are at most {MAX_SIZE} voxels per axis, got {list(v)}")
        return v

    def plain(self) -> Preprocessing:
        """These settings as :mod:`segfew.preprocess.grid` takes them."""
        from segfew.preprocess.grid import Preprocessing

        return Preprocessing(**self.model_dump())

    def grid(self, dim: int) -> tuple[int, ...]:
        """The grid for a ``dim``-dimensional image."""
        if len(self.size) == 1:
            return self.size * dim
        if len(self.size) != dim:
            raise SpecError(f"size {list(self.size)} has {len(self.size)} axes, images have {dim}")
        return self.size


class AugmentConfig(Settings):
    """Rigid augmentation (SPEC §4): each image transformed with probability ``p``."""

    enabled: bool = True
    p: float = Field(default=0.6, ge=0, le=1)
    rotation_deg: float = Field(default=10.0, ge=0, le=180)
    shift: float = Field(default=0.1, ge=0, le=0.5, description="fraction of the field of view")
    zoom: float = Field(default=0.1, ge=0, lt=1, description="scale in [1-zoom, 1+zoom]")
    flip: bool = Field(default=False, description="only where the anatomy is symmetric")
    flip_axis: int = Field(
        default=-1, ge=-3, le=2, description="spatial axis mirrored when flip is on (-1 = last)"
    )

    def plain(self) -> Augmentation:
        """These settings as :mod:`segfew.train.augment` takes them."""
        from segfew.train.augment import Augmentation

        return Augmentation(**self.model_dump())


#: fewest cases per class (segmentation: cases) for the default validation split
MIN_CASES_FOR_VALIDATION = 10
#: the default validation fraction where there are enough cases
DEFAULT_VAL_FRACTION = 0.2
#: fewest validation cases on which a classifier's best epoch is picked by default: on
#: fewer, one case moves the accuracy by more than 1/20 and the "best" epoch is mostly
#: the luckiest (the binomial standard error of an accuracy of 0.7 on 6 cases is 0.19)
MIN_CASES_TO_PICK_EPOCH = 20

Device = Annotated[str, Field(pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$")]
"""``auto`` (CUDA if available, else CPU), ``cpu``, ``mps``, ``cuda`` or ``cuda:N``."""
#: fewest bootstrap resamples for a 95% interval: from fewer, its ends are a few draws' luck
#: (2 draws gave "0.750 [0.818, 0.849]", an interval missing its own estimate)
MIN_BOOTSTRAP = 200


def _enough_resamples(value: int) -> int:
    if 0 < value < MIN_BOOTSTRAP:
        raise ValueError(f"{value} resamples are too few for a 95% interval: give at least "
                         f"{MIN_BOOTSTRAP}, or 0 for no intervals (and no check against chance)")
    return value


Bootstrap = Annotated[int, Field(ge=0), AfterValidator(_enough_resamples)]


def label_map_pairs(text: str) -> dict[int, int] | str:
    """``"255:1,128:2"`` → ``{255: 1, 128: 2}`` (``--label-map``, or the same text in a spec);
    ``"consecutive"`` stays. ValueError for anything else, or an OLD value given twice
    (``3:1,3:2``: one of its pairs would silently go)."""
    if text.strip().lower() == "consecutive":
        return "consecutive"
    try:
        pairs = [(int(a), int(b)) for a, b in (v.split(":") for v in text.split(",")
                                               if v.strip())]
    except ValueError:
        raise ValueError(f"expected OLD:NEW integer pairs, e.g. 255:1, got {text!r}") from None
    olds = [a for a, _ in pairs]
    twice = sorted({a for a in olds if olds.count(a) > 1})
    if twice:
        raise ValueError(f"label value {twice[0]} is mapped twice in {text!r}: give each OLD "
                         "value once")
    return dict(pairs)


def _distinct(names: list[str] | None) -> list[str] | None:
    if names is not None:
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"channel {', '.join(twice)} is named twice: give each channel "
                             "once, in the model's order")
    return names


Channels = Annotated[list[str] | None, AfterValidator(_distinct)]
"""Channel names (``--channels frame01,frame02``), each once."""
"""Bootstrap resamples for the 95% intervals: 0 (none) or at least :data:`MIN_BOOTSTRAP`."""
Threads = Annotated[int | None, Field(ge=1)]
#: a random seed: 0 to 2^31 - 1, so that the seeds derived from it (``seed + epoch``, ``seed
#: + repetition``) stay within what numpy, scikit-learn and torch take (below 2^32)
Seed = Annotated[int, Field(ge=0, le=2**31 - 1)]
"""CPU threads for torch and the BLAS/OpenMP pools; None: ``OMP_NUM_THREADS`` when set, else
the idle cores by the load average (:func:`segfew.runtime.default_threads`)."""


class TrainConfig(Settings):
    """Optimisation and bookkeeping of segmentation pre-training (Wong et al. 2018, §3.1:
    Adam at 1e-3). Classifiers use :class:`ClassifierTrainConfig`."""

    epochs: int = Field(default=20, ge=1)
    batch_size: int = Field(
        default=4, ge=1, description="global batch; split evenly over torchrun processes"
    )
    lr: float = Field(default=1e-3, gt=0, description="Adam learning rate")
    lr_schedule: LrSchedule = Field(
        default="constant", description="constant, or poly: lr × (1 − epoch/epochs)^0.9")
    weight_decay: float = Field(default=0.0, ge=0)
    loss: SegLoss = Field(
        default="weighted_ce", description="segmentation: weighted_ce (the paper's), or "
        "dice_ce (that plus the soft Dice of the foreground labels over the batch, nnU-Net's)")
    val_fraction: float | None = Field(
        default=None,
        ge=0,
        lt=1,
        description=f"held out for validation; default {DEFAULT_VAL_FRACTION} with at least "
        f"{MIN_CASES_FOR_VALIDATION} cases per class, else none (the epoch of lowest "
        "training loss is kept)",
    )
    select_epoch: Literal["auto", "best", "last"] = Field(
        default="auto", description="the epoch a classifier keeps: best (on validation), "
        f"last, or auto: best with {MIN_CASES_TO_PICK_EPOCH} or more validation cases, else "
        "last (picking on a few cases is noise); segmentation keeps its best")
    early_stopping: int | None = Field(default=None, ge=1, description="patience in epochs")
    time_budget_s: float | None = Field(default=None, gt=0)
    patch_size: list[PositiveInt] | None = Field(
        default=None, min_length=1, max_length=3, description="pre-training only: each step "
        "sees a random patch of this size of the grid (nnU-Net's patch training), a multiple "
        "of 16 per axis; prediction sees the whole grid. None: the whole grid")
    checkpoint_interval_s: float = Field(
        default=60.0, ge=0, description="seconds between writes of last.pt (0: every epoch); "
        "the last finished epoch is also written at the end, on Ctrl-C and on an error")
    seed: Seed = Field(default=0, description="seed of every random number")
    device: Device = "auto"
    threads: Threads = None
    precision: Precision = Field(
        default="auto", description="auto (bf16 where the hardware has it, fp16 on older GPUs, "
        "else fp32), fp32, bf16 or fp16"
    )
    channels_last: bool | None = Field(
        default=None, description="channels-last memory format (None: where it pays)"
    )
    num_workers: int = Field(default=0, ge=0)
    progress: bool = True
    sync_bn: bool = Field(
        default=True, description="SyncBatchNorm across GPUs under torchrun (CPU keeps per-rank BN)"
    )
    cache_features: bool = Field(
        default=True, description="compute frozen features once per image when not augmenting"
    )
    cache_max_gb: float = Field(
        default=4.0, gt=0, description="largest feature cache kept in memory"
    )
    augment: AugmentConfig = AugmentConfig()

    def validation_fraction(self, smallest_class: int) -> float:
        """The fraction to hold out, given the cases of the smallest class (or all cases)."""
        if self.val_fraction is not None:
            return self.val_fraction
        return DEFAULT_VAL_FRACTION if smallest_class >= MIN_CASES_FOR_VALIDATION else 0.0

    def plain(self) -> TrainOptions:
        """The settings of :func:`segfew.train.fit` (the validation split and threads are
        the jobs' own)."""
        from segfew.train.options import TrainOptions

        own = {f.name for f in fields(TrainOptions)} - {"augment", "patch_size"}
        patch = tuple(self.patch_size) if self.patch_size else None
        return TrainOptions(**{k: getattr(self, k) for k in own}, patch_size=patch,
                            augment=self.augment.plain())


class ClassifierTrainConfig(TrainConfig):
    """Classifier training (Wong et al. 2018, §4.1: Adam at 1e-4, 50 epochs), also for
    every task of ``experiment``. A partial ``[train]`` table keeps these defaults."""

    epochs: int = Field(default=50, ge=1)
    lr: float = Field(default=1e-4, gt=0, description="Adam learning rate")
    loss: SegLoss = Field(default="weighted_ce", description="the weighted cross entropy")

    @field_validator("loss")
    @classmethod
    def _no_dice_for_classes(cls, value: str) -> str:
        if value != "weighted_ce":
            raise ValueError(f"loss = {value!r} is for pre-training a segmentation; a "
                             "classifier trains with the weighted cross entropy (weighted_ce)")
        return value

    @field_validator("patch_size")
    @classmethod
    def _no_patches_for_classes(cls, value: list[int] | None) -> list[int] | None:
        if value is not None:
            raise ValueError("patch_size is for pre-training a segmentation; a classifier "
                             "sees each whole image")
        return value


class MNetConfig(Settings):
    """Modified M-Net (SPEC §2)."""

    dim: Literal[2, 3] = 2
    n_s: int = Field(default=16, ge=1)
    dropout: float = Field(default=0.5, ge=0, lt=1)


class HeadConfig(Settings):
    """Classifier head (SPEC §3): ``r`` conv+pool repetitions of ``n_c·2^j`` channels, two FC.

    ``source`` and ``pooling`` are the compact options of frameworks manual and threshold
    (SPEC §7; :class:`segfew.models.FeatureClassifier`).
    """

    n_c: int = Field(default=16, ge=1)
    n_fc: int = Field(default=100, ge=1)
    r: int = Field(default=3, ge=0, le=6)
    dropout: float = Field(default=0.5, ge=0, lt=1)
    source: Literal["features", "softmax"] = Field(
        default="features", description="what the head reads: the right-leg features (the "
        "paper) or the segmentation's softmax maps")
    pooling: Literal["volume", "slices", "stats"] = Field(
        default="volume", description="how a volume reaches the head: the stacked slices (3D "
        "head), each short-axis slice (2D head, averaged), or each channel's mean and std")


class DataSource(Settings):
    """Where cases are: a folder of images (or of class sub-folders), optionally a table."""

    images: Path
    labels: Path | None = None
    table: Path | None = None
    channels: Channels = None
    id_column: str | None = None
    label_column: str | None = None
    group_column: str | None = None
    label_map: dict[int, int] | Literal["consecutive"] | None = Field(
        default=None, description="label values remapped before any check, e.g. {255: 1} "
        '(or "255:1" as on the command line); "consecutive": the values found become 0, 1, '
        "2, … in order (pretrain prints the table)")

    @field_validator("label_map", mode="before")
    @classmethod
    def _pairs_as_written(cls, v: Any) -> Any:
        return label_map_pairs(v) if isinstance(v, str) else v

    def label_rules(self, values: Sequence[int] | None = None) -> LabelRules:
        """The door's label rules (:class:`segfew.data.read.LabelRules`) for this data
        (``label_map = "consecutive"`` must be resolved first, see
        :func:`segfew.data.read.consecutive_label_map`)."""
        from segfew.data.read import LabelRules

        if self.label_map == "consecutive":
            raise SpecError('label_map "consecutive" is resolved by pretrain only')
        return LabelRules(None if values is None else frozenset(values), self.label_map)


class PretrainData(DataSource):
    """Pre-training data: label maps in ``labels`` (expert or from ``segfew label``)."""

    recursive: bool = Field(default=False, description="look for images in sub-folders too")
