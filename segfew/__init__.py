"""segfew: medical image classifiers from very few labels, using frozen features of a
segmentation network (Wong, Syeda-Mahmood and Moradi, Medical Image Analysis 2018).

The library is usable without the CLI. Its public API is re-exported here and imported on
first use, so ``import segfew`` stays cheap (no torch)::

    import segfew
    image = segfew.read_image("scan.nii.gz")
    net = segfew.MNet(dim=2, in_channels=1, num_labels=4, n_s=16)
"""

from __future__ import annotations

import importlib
from typing import Any

from segfew.errors import DataError, DataWarning, ModelFileError, SegfewError, SpecError

__version__ = "0.2.0"

#: public name → the module that defines it (imported when the name is first used)
_PUBLIC = {
    "Image": "segfew.io", "read_image": "segfew.io", "write_image": "segfew.io",
    "Case": "segfew.data", "read_case": "segfew.data.read",
    "Preprocessing": "segfew.preprocess.grid", "PreprocessCache": "segfew.preprocess.cache",
    "MNet": "segfew.models", "FeatureClassifier": "segfew.models",
    "VGGClassifier": "segfew.models", "build_model": "segfew.models",
    "FRAMEWORKS": "segfew.frameworks",
    "fit": "segfew.train", "TrainOptions": "segfew.train", "Augmentation": "segfew.train",
    "load_model": "segfew.modelfile", "save_model": "segfew.modelfile",
    "PretrainSpec": "segfew.spec", "ClassifierSpec": "segfew.spec",
    "ExperimentSpec": "segfew.spec", "resolve_spec": "segfew.spec",
    "pretrain": "segfew.jobs.pretrain", "train_classifier": "segfew.jobs.train_classifier",
    "label_images": "segfew.jobs.label",
    "Predictor": "segfew.inference.predictor", "predict_paths": "segfew.inference.paths",
}

__all__ = ["DataError", "DataWarning", "ModelFileError", "SegfewError", "SpecError",
           "__version__", *sorted(_PUBLIC)]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'segfew' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
