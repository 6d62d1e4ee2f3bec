"""One run spec per command: what ``label``, ``pretrain``, ``train-classifier``, ``split``,
``inspect``, ``evaluate``, ``predict`` and ``experiment`` take, validated as a whole."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from segfew.choices import Framework, Intensity, LabelMethod, Precision
from segfew.frameworks import NEEDS, framework, help_list
from segfew.spec.parts import (
    Bootstrap,
    Channels,
    ClassifierTrainConfig,
    DataSource,
    Device,
    HeadConfig,
    MNetConfig,
    PreprocessConfig,
    PretrainData,
    Seed,
    Settings,
    Threads,
    TrainConfig,
)

K_MEANS_LABELS = (
    "number of clusters k (paper: 5 brain MR, 10 cardiac CT): labels 1..k, darkest first, and "
    "0 for the background (k + 1 labels); with no background, labels 0..k-1 (k labels)"
)
"""What ``--k`` means: the one statement of it, shown in help and docs."""


#: the LabelSpec settings that only k-means reads
KMEANS_ONLY = frozenset({"k", "keep_background", "background_threshold", "centres", "intensity",
                         "sample_per_image", "seed"})


class LabelSpec(Settings):
    """``segfew label``: labels without an expert — k-means pseudo-labels (the paper's
    THRESHOLD framework, SPEC §5) or the cavities of cine cardiac MRI."""

    images: Path
    out: Path
    method: LabelMethod = Field(
        default="kmeans", description="kmeans: intensity clusters (any image); cavities: RV, "
        "myocardium and LV of cine cardiac MRI (two or more phases as channels, ED first)")
    table: Path | None = Field(default=None, description="only the cases of this table")
    id_column: str | None = None
    label_column: str | None = Field(default=None, description="the table's class column "
                                     "(none is needed)")
    channels: Channels = None
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
    seed: Seed = 0
    threads: Threads = None

    @model_validator(mode="after")
    def _cavities_need_phases(self) -> LabelSpec:
        if self.method == "cavities":
            if self.channels is None or len(self.channels) < 2:
                raise ValueError("method cavities finds the heart by its motion: give two or "
                                 "more cine phases as channels, ED first (e.g. frame01,frame02)")
            kmeans_only = sorted(KMEANS_ONLY & self.model_fields_set)
            if kmeans_only:
                flags = ", ".join(f"--{k.replace('_', '-')} ({k})" for k in kmeans_only)
                raise ValueError(f"{flags}: for method kmeans only, not cavities")
        return self


class PretrainSpec(Settings):
    data: PretrainData
    out: Path
    network: MNetConfig = MNetConfig()
    preprocess: PreprocessConfig = PreprocessConfig()
    train: TrainConfig = TrainConfig()
    label_names: list[str] | None = None


#: the frameworks an nnU-Net results folder feeds: its label maps measured, its maps
#: summarised for the paper's head
NNUNET_FRAMEWORKS = ("measures", "manual")


def _nnunet_folder(features: Path | None, frameworks: Sequence[str], head: HeadConfig,
                   finetune: bool = False) -> HeadConfig:
    """The head settings with an nnU-Net results folder as ``features`` (others: ``head``
    as given): it feeds frameworks measures and manual; manual reads one vector per case
    (``pooling = "stats"``, the default there) from a frozen network."""
    if features is None or not features.is_dir():
        return head
    others = [f for f in frameworks if f not in NNUNET_FRAMEWORKS]
    if others:
        raise ValueError(f"--features {features} is a folder (an nnU-Net results folder): it "
                         f"feeds framework measures or manual; {others[0]} needs a "
                         "segmentation model file from segfew pretrain")
    if "manual" not in frameworks:
        return head
    if finetune:
        raise ValueError("--finetune: an nnU-Net results folder stays frozen (its statistics "
                         "are computed once per case); drop --finetune")
    if head.pooling != "stats" and "pooling" in head.model_fields_set:
        raise ValueError(f'head.pooling = "{head.pooling}" with an nnU-Net results folder: '
                         "nnU-Net works at each case's own spacing, so its maps differ in "
                         'size between cases; pooling = "stats" (each channel\'s mean and '
                         "std) gives the head one vector per case")
    return head if head.pooling == "stats" else head.model_copy(update={"pooling": "stats"})


class ClassifierSpec(Settings):
    data: DataSource
    out: Path
    framework: Framework = "manual"
    features: Path | None = Field(
        default=None, description="segmentation model file (manual/threshold/measures), or "
        "a trained nnU-Net v2 results folder (measures, manual)")
    vgg_weights: Path | None = None
    finetune: bool = False
    classes: int | None = Field(default=None, ge=2)
    tta: bool = Field(default=False, description="measures: segment with test-time "
                      "augmentation (5 shifted copies averaged; predict repeats it)")
    masks: Path | None = Field(default=None, description="measures: folder of label maps "
                               "from another tool, matched to images by id (no network)")
    label_names: list[str] | None = Field(
        default=None, description="masks: names of label values 0, 1, …, background first "
        "(else label_names.json in the masks folder)")
    head: HeadConfig = HeadConfig()
    preprocess: PreprocessConfig = PreprocessConfig()
    train: ClassifierTrainConfig = ClassifierTrainConfig()

    @model_validator(mode="after")
    def _framework_inputs(self) -> ClassifierSpec:
        _refuse_consecutive(self.data, self.masks)
        if self.masks is not None:
            if self.framework != "measures":
                raise ValueError("--masks (masks) is for framework measures")
            if self.features is not None:
                raise ValueError("give --masks or --features, not both: the measurements "
                                 "come from one segmentation")
            return self
        head = _nnunet_folder(self.features, [self.framework], self.head, self.finetune)
        if head is not self.head:
            self.head = head
        for need in framework(self.framework).needs:
            field, _, words = NEEDS[need]
            if getattr(self, field) is None:
                never = "; segfew never downloads" if need == "vgg_weights" else ""
                raise ValueError(
                    f"framework {self.framework} needs --{field.replace('_', '-')} ({words}{never})"
                )
        return self


def _refuse_consecutive(data: DataSource, masks: Path | None) -> None:
    """``--label-map consecutive`` numbers the values of every map in order, which only
    ``pretrain`` and ``inspect`` see; a classifier's maps need the pairs themselves."""
    if data.label_map == "consecutive":
        raise ValueError(f"--label-map consecutive (data.label_map) is taken by pretrain and "
                         f"inspect, which see every label map: give OLD:NEW pairs here (segfew "
                         f"inspect --images {data.images} --labels {masks or 'MASKS'} "
                         f"--label-map consecutive prints them)")


class SplitSpec(Settings):
    """``segfew split``: a table split into train and test tables, by class and group, or
    N groups per class drawn from it (the learning-curve unit)."""

    table: Path
    out: Path = Field(description="folder for train.tsv, test.tsv (or rest.tsv) and run.json")
    test_per_class: int | None = Field(default=None, ge=1, description="test groups per class")
    test_fraction: float | None = Field(
        default=None, gt=0, lt=1, description="fraction of each class's groups for testing"
    )
    train_per_class: int | None = Field(
        default=None, ge=1, description="groups per class drawn into train.tsv (the others: "
        "rest.tsv); with one seed, a smaller draw is part of a larger one")
    seed: Seed = 0
    images: Path | None = Field(
        default=None, description="where the table's images are (default: the split's that "
        "wrote the table, else the table's folder), to keep copies of one scan (the same file "
        "bytes or the same voxels) on one side")
    id_column: str | None = None
    label_column: str | None = None
    group_column: str | None = None

    @model_validator(mode="after")
    def _one_size(self) -> SplitSpec:
        given = [self.test_per_class, self.test_fraction, self.train_per_class]
        if sum(v is not None for v in given) != 1:
            raise ValueError("give one of --test-per-class, --test-fraction and "
                             "--train-per-class (test_per_class, test_fraction, "
                             "train_per_class)")
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

    model: list[Path] = Field(min_length=1, description="model file(s); several classifiers "
                              "with the same classes are scored as one ensemble")
    out: Path
    device: Device = "auto"
    threads: Threads = None
    batch_size: int = Field(default=8, ge=1)
    bootstrap: Bootstrap = Field(default=1000, description="resamples for the 95% intervals")
    seed: Seed = Field(default=0, description="seed of the bootstrap")
    allow_leakage: bool = Field(
        default=False, description="score cases a model was trained on, with a warning")

    @field_validator("model", mode="before")
    @classmethod
    def _one_or_more(cls, v: Any) -> Any:
        return [v] if isinstance(v, (str, Path)) else v
    masks: Path | None = Field(default=None, description="a measures classifier fitted on "
                               "label maps from another tool: their folder for these cases")
    explain: Path | None = Field(default=None, description="classifier: a folder for one "
                                 "evidence sheet per case and index.html")


class PredictSpec(Settings):
    """``segfew predict``: a model file (or an ensemble of classifier files) over new scans."""

    model: list[Path] = Field(min_length=1, description="model file(s); several classifiers "
                              "with the same classes predict as one (mean probabilities)")
    inputs: list[Path] = Field(min_length=1, description="image files or folders")
    out: Path
    recursive: bool = False
    channels: Channels = None
    device: Device = "auto"
    threads: Threads = None
    precision: Precision = "auto"
    batch_size: int = Field(default=8, ge=1)
    workers: int | None = Field(
        default=None, ge=0, description="reading processes (None: one per core beyond the first, "
                                        "at most 4; none on 2 cores)"
    )
    probabilities: bool = Field(
        default=False, description="segmentation: also write <id>_prob.nii.gz"
    )
    min_confidence: float | None = Field(
        default=None, ge=0, le=1,
        description="classifier: low_confidence = yes below this top class probability "
        "(None: halfway from a uniform guess to certainty, (1 + 1/K) / 2 for K classes)")
    tta: bool = Field(
        default=False, description="segmentation: test-time augmentation (shifted copies)")
    masks: Path | None = Field(default=None, description="a measures classifier fitted on "
                               "label maps from another tool: their folder for these scans")
    explain: Path | None = Field(default=None, description="classifier: a folder for one "
                                 "evidence sheet per case and index.html")

    @field_validator("model", mode="before")
    @classmethod
    def _one_or_more(cls, v: Any) -> Any:
        return [v] if isinstance(v, (str, Path)) else v


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
    seed: Seed = 0
    bootstrap: Bootstrap = Field(default=1000, description="resamples for each task's CIs")
    features: Path | None = Field(
        default=None, description="segmentation model file (manual, measures), or a trained "
        "nnU-Net v2 results folder (measures, manual)")
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
    masks: Path | None = Field(default=None, description="measures: label maps from another "
                               "tool, matched to the images by id, instead of a network's")
    label_names: list[str] | None = Field(
        default=None, description="masks: names of label values 0, 1, …, background first "
        "(else label_names.json in the masks folder)")
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
        if not v:
            raise ValueError(
                f"give at least one framework ({help_list()})"
            )
        if len(set(v)) != len(v):
            raise ValueError(f"frameworks repeat: {v}")
        return v

    @model_validator(mode="after")
    def _inputs(self) -> ExperimentSpec:
        _refuse_consecutive(self.data, self.masks)
        if self.test == "fixed" and self.test_table is None:
            raise ValueError("test = fixed needs test_table (a table of the test cases)")
        if self.test == "random" and self.test_table is not None:
            raise ValueError("test_table is only used with test = fixed")
        if self.test == "fixed" and self.test_per_class is not None:
            raise ValueError("test_per_class is only used with test = random")

        readers = [f for f in self.frameworks if "segmentation" in framework(f).needs]
        head = _nnunet_folder(self.features, readers, self.head)
        if head is not self.head:
            self.head = head
        if self.pretrain is not None and self.data.labels is None:
            raise ValueError("pretrain needs data.labels (the voxel labels to pre-train on)")
        for fw in self.frameworks:
            for need in framework(fw).needs:
                if need == "segmentation" and self.pretrain is not None:
                    continue  # pre-trained per repetition
                if fw == "measures" and self.masks is not None:
                    continue  # measures the given masks
                _, field, words = NEEDS[need]
                if getattr(self, field) is None:
                    raise ValueError(f"framework {fw} needs {field} ({words})")
        return self
