"""Every setting of segfew, as pydantic models, and the run-spec loader.

This is the one place where user input (flags and ``--spec`` files, TOML or YAML) becomes
validated settings. Library functions take these models (or plain values taken from them);
model files store them as JSON so prediction repeats training exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import tomllib
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from segfew.choices import Framework, Intensity, Precision
from segfew.errors import SpecError

if TYPE_CHECKING:
    from segfew.cases import LabelRules
    from segfew.preprocess import Preprocessing
    from segfew.train.augment import Augmentation
    from segfew.train.options import TrainOptions

MAX_SIZE = 1024
"""Largest grid size per axis (a 1024² slice; the paper's grids are 128–224)."""


class Settings(BaseModel):
    """Base of every settings model: unknown keys are errors, values are checked on set."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


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
    slice_axis: int = Field(
        default=2, ge=0, le=2, description="axis of a 3D volume that a 2D network slices along"
    )

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
        """These settings as :mod:`segfew.preprocess` takes them."""
        from segfew.preprocess import Preprocessing

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

Device = Annotated[str, Field(pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$")]
"""``auto`` (CUDA if available, else CPU), ``cpu``, ``mps``, ``cuda`` or ``cuda:N``."""
Threads = Annotated[int | None, Field(ge=1)]
"""CPU threads for torch and the BLAS/OpenMP pools; None: what torch would use
(``OMP_NUM_THREADS`` when set)."""


class TrainConfig(Settings):
    """Optimisation and bookkeeping of segmentation pre-training (Wong et al. 2018, §3.1:
    Adam at 1e-3). Classifiers use :class:`ClassifierTrainConfig`."""

    epochs: int = Field(default=20, ge=1)
    batch_size: int = Field(
        default=4, ge=1, description="global batch; split evenly over torchrun processes"
    )
    lr: float = Field(default=1e-3, gt=0, description="Adam learning rate")
    weight_decay: float = Field(default=0.0, ge=0)
    val_fraction: float | None = Field(
        default=None,
        ge=0,
        lt=1,
        description=f"held out for validation; default {DEFAULT_VAL_FRACTION} with at least "
        f"{MIN_CASES_FOR_VALIDATION} cases per class, else none (the last epoch is kept)",
    )
    early_stopping: int | None = Field(default=None, ge=1, description="patience in epochs")
    time_budget_s: float | None = Field(default=None, gt=0)
    seed: int = Field(default=0, description="seed of every random number")
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
        from dataclasses import fields

        from segfew.train.options import TrainOptions

        own = {f.name for f in fields(TrainOptions)} - {"augment"}
        return TrainOptions(**{k: getattr(self, k) for k in own}, augment=self.augment.plain())


class ClassifierTrainConfig(TrainConfig):
    """Classifier training (Wong et al. 2018, §4.1: Adam at 1e-4, 50 epochs), also for
    every task of ``experiment``. A partial ``[train]`` table keeps these defaults."""

    epochs: int = Field(default=50, ge=1)
    lr: float = Field(default=1e-4, gt=0, description="Adam learning rate")


class MNetConfig(Settings):
    """Modified M-Net (SPEC §2)."""

    dim: Literal[2, 3] = 2
    n_s: int = Field(default=16, ge=1)
    dropout: float = Field(default=0.5, ge=0, lt=1)


class HeadConfig(Settings):
    """Classifier head (SPEC §3): ``r`` conv+pool repetitions of ``n_c·2^j`` channels, two FC."""

    n_c: int = Field(default=16, ge=1)
    n_fc: int = Field(default=100, ge=1)
    r: int = Field(default=3, ge=0, le=6)
    dropout: float = Field(default=0.5, ge=0, lt=1)


# ---------------------------------------------------------------- command specs


class DataSource(Settings):
    """Where cases are: a folder of images (or of class sub-folders), optionally a table."""

    images: Path
    labels: Path | None = None
    table: Path | None = None
    channels: list[str] | None = None
    id_column: str | None = None
    label_column: str | None = None
    group_column: str | None = None
    label_map: dict[int, int] | None = Field(
        default=None, description="label values remapped before any check, e.g. {255: 1}"
    )

    def label_rules(self, values: Sequence[int] | None = None) -> LabelRules:
        """The door's label rules (:class:`segfew.cases.LabelRules`) for this data."""
        from segfew.cases import LabelRules

        return LabelRules(None if values is None else frozenset(values), self.label_map)


class PretrainData(DataSource):
    """Pre-training data: label maps in ``labels`` (expert or from ``segfew label``)."""

    recursive: bool = Field(default=False, description="look for images in sub-folders too")


K_MEANS_LABELS = (
    "number of clusters k (paper: 5 brain MR, 10 cardiac CT): labels 1..k, darkest first, and "
    "0 for the background (k + 1 labels); with no background, labels 0..k-1 (k labels)"
)
"""What ``--k`` means: the one statement of it, shown in help and docs."""


class LabelSpec(Settings):
    """``segfew label``: k-means pseudo-labels (the paper's THRESHOLD framework, SPEC §5)."""

    images: Path
    out: Path
    table: Path | None = Field(default=None, description="only the cases of this table")
    id_column: str | None = None
    channels: list[str] | None = None
    recursive: bool = Field(default=False, description="look for images in sub-folders too")
    k: int = Field(default=5, ge=2, le=64, description=K_MEANS_LABELS)
    keep_background: bool = Field(
        default=True, description="voxels at or below the background threshold are label 0"
    )
    background_threshold: float | None = Field(
        default=None, description="in normalised units; default: each image's minimum"
    )
    centres: Path | None = Field(default=None, description="centres.json of an earlier run")
    intensity: Intensity = Field(default="minmax", description="normalisation before clustering")
    sample_per_image: int = Field(default=20000, ge=100)
    seed: int = 0
    threads: Threads = None


class PretrainSpec(Settings):
    data: PretrainData
    out: Path
    network: MNetConfig = MNetConfig()
    preprocess: PreprocessConfig = PreprocessConfig()
    train: TrainConfig = TrainConfig()
    label_names: list[str] | None = None


class ClassifierSpec(Settings):
    data: DataSource
    out: Path
    framework: Framework = "manual"
    features: Path | None = Field(
        default=None, description="segmentation model file (manual/threshold)"
    )
    vgg_weights: Path | None = None
    finetune: bool = False
    classes: int | None = Field(default=None, ge=2)
    head: HeadConfig = HeadConfig()
    preprocess: PreprocessConfig = PreprocessConfig()
    train: ClassifierTrainConfig = ClassifierTrainConfig()

    @model_validator(mode="after")
    def _framework_inputs(self) -> ClassifierSpec:
        from segfew.frameworks import NEEDS, framework

        for need in framework(self.framework).needs:
            field, _, words = NEEDS[need]
            if getattr(self, field) is None:
                never = "; segfew never downloads" if need == "vgg_weights" else ""
                raise ValueError(
                    f"framework {self.framework} needs --{field.replace('_', '-')} ({words}{never})"
                )
        return self


class SplitSpec(Settings):
    """``segfew split``: a table split into train and test tables, by class and group."""

    table: Path
    out: Path = Field(description="folder for train.tsv, test.tsv and run.json")
    test_per_class: int | None = Field(default=None, ge=1, description="test groups per class")
    test_fraction: float | None = Field(
        default=None, gt=0, lt=1, description="fraction of each class's groups for testing"
    )
    seed: int = 0
    id_column: str | None = None
    label_column: str | None = None
    group_column: str | None = None

    @model_validator(mode="after")
    def _one_size(self) -> SplitSpec:
        if (self.test_per_class is None) == (self.test_fraction is None):
            raise ValueError("give one of --test-per-class and --test-fraction "
                             "(test_per_class, test_fraction)")
        return self


class InspectSpec(DataSource):
    """``segfew inspect``: the dataset to check (nothing is written)."""

    label_values: list[int] | None = Field(
        default=None, description="allowed label values (default: any)"
    )
    all_cases: bool = Field(default=False, description="list every case and every problem")


class EvaluateSpec(DataSource):
    """``segfew evaluate``: a model file scored on labelled cases (``table`` for a
    classifier, ``labels`` for a segmentation model)."""

    model: Path
    out: Path
    device: Device = "auto"
    threads: Threads = None
    batch_size: int = Field(default=8, ge=1)
    bootstrap: int = Field(default=1000, ge=0, description="resamples for the 95% intervals")
    seed: int = Field(default=0, description="seed of the bootstrap")


class PredictSpec(Settings):
    """``segfew predict``: a model file run over new scans."""

    model: Path
    inputs: list[Path] = Field(min_length=1, description="image files or folders")
    out: Path
    recursive: bool = False
    channels: list[str] | None = None
    device: Device = "auto"
    threads: Threads = None
    precision: Precision = "auto"
    batch_size: int = Field(default=8, ge=1)
    workers: int | None = Field(
        default=None, ge=0, description="reading processes (None: one per spare core, at most 4)"
    )
    probabilities: bool = Field(
        default=False, description="segmentation: also write <id>_prob.nii.gz"
    )


class ExperimentSpec(Settings):
    """``segfew experiment``: the paper's learning-curve protocol (SPEC §6, Fig. 5 and 8).

    For every training size (labelled patients — groups — per class) and repetition, one
    stratified, group-aware split is drawn and every framework is trained on it. The test
    set is either drawn at random per repetition (``test = "random"``; ``test_per_class``
    groups per class, default all that no training set of the repetition uses) or fixed
    (``test = "fixed"``: the cases of ``test_table``, images in ``test_images`` or else
    ``data.images``).
    """

    data: DataSource
    sizes: list[int] = Field(
        default=[2, 4, 8], description="labelled training patients (groups) per class"
    )
    repetitions: int = Field(default=5, ge=1, description="random splits per size (paper: 5)")
    frameworks: list[Framework] = Field(default=["manual", "scratch"])
    test: Literal["random", "fixed"] = "random"
    test_table: Path | None = Field(default=None, description="fixed test set (test = fixed)")
    test_images: Path | None = Field(default=None, description="its images; default data.images")
    test_per_class: int | None = Field(
        default=None, ge=1, description="random test groups per class; default all remaining"
    )
    seed: int = 0
    bootstrap: int = Field(default=1000, ge=0, description="resamples for each task's CIs")
    features: Path | None = Field(default=None, description="segmentation model file (manual)")
    threshold_features: Path | None = Field(
        default=None, description="segmentation model trained on k-means labels (threshold)"
    )
    vgg_weights: Path | None = Field(default=None, description="local VGG-16 weights (vgg)")
    pretrain: Path | None = Field(
        default=None,
        description="pretrain spec: pre-train the segmentation network of every repetition on "
        "its training side only (voxel labels from data.labels), instead of features",
    )
    allow_leakage: bool = Field(
        default=False,
        description="a feature network trained on test cases is a loud warning, not an error",
    )
    head: HeadConfig = HeadConfig()
    preprocess: PreprocessConfig = PreprocessConfig()
    train: ClassifierTrainConfig = ClassifierTrainConfig()

    @model_validator(mode="before")
    @classmethod
    def _table_means_fixed(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("test_table") is not None and "test" not in data:
            data = {**data, "test": "fixed"}
        return data

    @field_validator("sizes")
    @classmethod
    def _sizes_ascending(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("give at least one training size")
        if any(s < 1 for s in v):
            raise ValueError(f"sizes must be positive, got {v}")
        if sorted(set(v)) != v:
            raise ValueError(f"sizes must be ascending without repeats, got {v}")
        return v

    @field_validator("frameworks")
    @classmethod
    def _frameworks_unique(cls, v: list[str]) -> list[str]:
        from segfew.frameworks import help_list

        if not v:
            raise ValueError(
                f"give at least one framework ({help_list()})"
            )
        if len(set(v)) != len(v):
            raise ValueError(f"frameworks repeat: {v}")
        return v

    @model_validator(mode="after")
    def _inputs(self) -> ExperimentSpec:
        if self.test == "fixed" and self.test_table is None:
            raise ValueError("test = fixed needs test_table (a table of the test cases)")
        if self.test == "random" and self.test_table is not None:
            raise ValueError("test_table is only used with test = fixed")
        if self.test == "fixed" and self.test_per_class is not None:
            raise ValueError("test_per_class is only used with test = random")
        from segfew.frameworks import NEEDS, framework

        if self.pretrain is not None and self.data.labels is None:
            raise ValueError("pretrain needs data.labels (the voxel labels to pre-train on)")
        for fw in self.frameworks:
            for need in framework(fw).needs:
                if need == "segmentation" and self.pretrain is not None:
                    continue  # pre-trained per repetition
                _, field, words = NEEDS[need]
                if getattr(self, field) is None:
                    raise ValueError(f"framework {fw} needs {field} ({words})")
        return self


# ---------------------------------------------------------------- loading

S = TypeVar("S", bound=BaseModel)


def read_spec_file(path: Path) -> dict[str, Any]:
    """Read a TOML (``.toml``) or YAML (``.yaml``/``.yml``) spec file into a dict.

    Paths inside it are taken as they are (relative to the working directory), like flags.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise SpecError(f"cannot read spec file ({e.strerror})", path) from None
    try:
        data = tomllib.loads(text) if Path(path).suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as e:
        raise SpecError(
            f"not valid {'TOML' if Path(path).suffix == '.toml' else 'YAML'}: "
            f"{str(e).splitlines()[0]}",
            path,
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SpecError("a spec file must hold a table of settings", path)
    return dict(data)


def merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``overrides`` into ``base``; ``None`` in overrides means 'not given'."""
    out: dict[str, Any] = dict(base)
    for key, value in overrides.items():
        if value is None:
            continue
        if isinstance(value, Mapping):
            inner = out.get(key)
            out[key] = merge(inner if isinstance(inner, Mapping) else {}, value)
        else:
            out[key] = value
    return out


def resolve_spec(
    model: type[S],
    overrides: Mapping[str, Any],
    spec_file: Path | None = None,
    defaults: Mapping[str, Any] | None = None,
    flags: Mapping[str, str] | None = None,
) -> S:
    """Validate ``defaults`` < spec file < flags into ``model``; errors become one-line SpecErrors.

    ``defaults`` are preset values (e.g. the paper's hyper-parameters); the spec file
    overrides them and flags override both. ``flags`` maps spec keys (``train.epochs``) to
    the command-line flag that sets them, so an error names both.
    """
    data = merge(defaults or {}, read_spec_file(spec_file) if spec_file else {})
    data = merge(data, overrides)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        given = _given(overrides)
        from_flags = all(_setting(err["loc"], given) for err in e.errors())
        raise SpecError(describe_validation_error(e, flags, model),
                        None if from_flags else spec_file) from None


def _given(overrides: Mapping[str, Any], prefix: str = "") -> set[str]:
    """The dotted keys a command's flags set (not None): their errors are not the file's."""
    keys: set[str] = set()
    for k, v in overrides.items():
        if isinstance(v, Mapping) and all(isinstance(x, str) for x in v):
            keys |= _given(v, f"{prefix}{k}.")
        elif v is not None:
            keys.add(f"{prefix}{k}")
    return keys


def _setting(loc: Sequence[int | str], keys: Mapping[str, Any] | set[str]) -> str | None:
    """The key of ``keys`` that error location ``loc`` lies in (``frameworks.0`` →
    ``frameworks``), or None."""
    parts = [str(p) for p in loc]
    while parts:
        if (key := ".".join(parts)) in keys:
            return key
        parts.pop()
    return None


def _near(model: type[BaseModel] | None, loc: Sequence[int | str]) -> str:
    """`` (did you mean 'x'?)`` for an unknown key close to a known one at its level."""
    import difflib

    for part in loc[:-1]:
        field = model.model_fields.get(str(part)) if model is not None else None
        annotation = field.annotation if field is not None else None
        model = annotation if isinstance(annotation, type) and issubclass(
            annotation, BaseModel) else None
    if model is None:
        return ""
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def describe_validation_error(e: ValidationError, flags: Mapping[str, str] | None = None,
                              model: type[BaseModel] | None = None) -> str:
    """One line naming each offending key (and its flag, where one sets it) and the problem;
    an unknown key close to one of ``model``'s gets "did you mean"."""
    parts = []
    for err in e.errors():
        where = ".".join(str(p) for p in err["loc"])
        msg = ("unknown setting" + _near(model, err["loc"]) if err["type"] == "extra_forbidden"
               else err["msg"])
        msg = msg.removeprefix("Value error, ")
        key = _setting(err["loc"], flags or {})
        flag = (flags or {}).get(key) if key else None
        if flag and err["type"] == "missing":
            parts.append(f"{flag} is required (spec key {where})")
        elif flag:
            parts.append(f"{flag} (spec key {where}): {msg}")
        elif err["type"] == "missing":
            parts.append(f"spec key {where} is required")
        else:
            parts.append(f"{where}: {msg}" if where else msg)
    return "invalid settings: " + "; ".join(parts)


# ---------------------------------------------------------------- presets

# The paper's hyper-parameters (Wong et al. 2018, sections 3.1 and 4.1), as spec defaults.
# Flags and spec files override them; nothing else in segfew hard-codes these values.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "brain-mr-3d": {
        "pretrain": {
            "network": {"dim": 3, "n_s": 12},
            "preprocess": {"size": [128, 128, 128], "intensity": "clahe"},
            "train": {"batch_size": 1, "lr": 1e-3, "epochs": 100},
        },
        "classifier": {
            "head": {"n_c": 32, "n_fc": 200, "r": 4},
            "preprocess": {"size": [128, 128, 128], "intensity": "clahe"},
            "train": {"batch_size": 4, "lr": 1e-4, "epochs": 50},
        },
        "scratch": {"head": {"n_c": 16, "n_fc": 200}},
    },
    "cardiac-ct-2d": {
        "pretrain": {
            "network": {"dim": 2, "n_s": 16},
            "preprocess": {"size": [128, 128], "intensity": "ct"},
            "train": {"batch_size": 5, "lr": 1e-3, "epochs": 20},
        },
        "classifier": {
            "head": {"n_c": 16, "n_fc": 100, "r": 3},
            "preprocess": {"size": [128, 128], "intensity": "ct"},
            "train": {"batch_size": 64, "lr": 5e-4, "epochs": 300},
        },
        "scratch": {"head": {"n_c": 16, "n_fc": 100}},
    },
}


def preset(
    name: str | None, part: Literal["pretrain", "classifier"], framework: str | None = None
) -> dict[str, Any]:
    """Spec defaults of a named preset (empty without one); unknown names are SpecErrors."""
    if name is None:
        return {}
    if name not in PRESETS:
        raise SpecError(f"unknown preset {name!r}; choose one of {', '.join(sorted(PRESETS))}")
    values = PRESETS[name][part]
    if part == "classifier" and framework in ("scratch", "vgg"):
        values = merge(values, PRESETS[name]["scratch"])
    return values
