"""Every setting of segfew, as pydantic run specs: the one source of defaults.

User input (flags and ``--spec`` files, TOML or YAML) becomes validated settings here:
:mod:`~segfew.spec.parts` (the parts specs are built of), :mod:`~segfew.spec.commands`
(one spec per command), :mod:`~segfew.spec.loading` (defaults < file < flags, one-line
errors) and :mod:`~segfew.spec.presets` (the paper's settings). The jobs
(:mod:`segfew.jobs`) turn a spec into objects; below them the library takes plain values.
"""

from segfew.choices import Framework, Intensity, Precision
from segfew.spec.commands import (
    K_MEANS_LABELS,
    ClassifierSpec,
    EvaluateSpec,
    ExperimentSpec,
    InspectSpec,
    LabelSpec,
    PredictSpec,
    PretrainSpec,
    SplitSpec,
)
from segfew.spec.loading import (
    describe_validation_error,
    given_keys,
    merge,
    read_spec_file,
    resolve_spec,
)
from segfew.spec.parts import (
    DEFAULT_VAL_FRACTION,
    MAX_SIZE,
    MIN_CASES_FOR_VALIDATION,
    MIN_CASES_TO_PICK_EPOCH,
    AugmentConfig,
    ClassifierTrainConfig,
    DataSource,
    Device,
    HeadConfig,
    MNetConfig,
    PreprocessConfig,
    PretrainData,
    Settings,
    Threads,
    TrainConfig,
)
from segfew.spec.presets import PRESETS, preset
from segfew.spec.unused import unused_settings

__all__ = [
    "DEFAULT_VAL_FRACTION",
    "K_MEANS_LABELS",
    "MAX_SIZE",
    "MIN_CASES_FOR_VALIDATION",
    "MIN_CASES_TO_PICK_EPOCH",
    "PRESETS",
    "AugmentConfig",
    "ClassifierSpec",
    "ClassifierTrainConfig",
    "DataSource",
    "Device",
    "EvaluateSpec",
    "ExperimentSpec",
    "Framework",
    "HeadConfig",
    "InspectSpec",
    "Intensity",
    "LabelSpec",
    "MNetConfig",
    "Precision",
    "PredictSpec",
    "PreprocessConfig",
    "PretrainData",
    "PretrainSpec",
    "Settings",
    "SplitSpec",
    "Threads",
    "TrainConfig",
    "describe_validation_error",
    "given_keys",
    "merge",
    "preset",
    "read_spec_file",
    "resolve_spec",
    "unused_settings",
]
