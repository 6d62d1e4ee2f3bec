"""The paper's settings as named presets (Wong et al. 2018, sections 3.1 and 4.1)."""

from __future__ import annotations

from typing import Any, Literal

from segfew.errors import SpecError
from segfew.frameworks import FRAMEWORKS
from segfew.spec.loading import merge

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
    info = FRAMEWORKS.get(framework or "")
    if part == "classifier" and info is not None and not info.uses_segmentation:
        values = merge(values, PRESETS[name]["scratch"])
    return values
