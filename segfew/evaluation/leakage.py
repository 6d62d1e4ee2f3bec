"""No leakage (SPEC §6): has a test case trained the segmentation network?

A segmentation network pre-trained on a test patient's masks makes its features on that
patient unrealistically good (how much, on ACDC: docs/benchmarks.md). Every model file from
``pretrain`` records the SHA-256 of each file it was trained on (and its run folder's
``run.json`` holds the manifest), so an experiment or an evaluation can compare them with
its test cases' images.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from segfew.errors import DataError, ModelFileError

if TYPE_CHECKING:
    from segfew.data import Case

__all__ = ["check_leakage", "trained_digests"]


def trained_digests(model_path: Path) -> set[str] | None:
    """SHA-256 of every file a segmentation network was trained on (None: not recorded).

    Read from the model file (``metrics.training_data``) or else from the ``run.json``
    manifest in its run folder (``<stem>-run/``); None also for a file that is not a
    readable model file.
    """
    from segfew.modelfile import read_model_file

    try:
        meta, _ = read_model_file(model_path)
    except ModelFileError:  # not readable here: the training step names the problem
        return None
    recorded = meta.metrics.get("training_data")
    if isinstance(recorded, list):
        return {str(d) for d in recorded}
    run_json = model_path.parent / f"{model_path.name.split('.')[0]}-run" / "run.json"
    try:
        rows = json.loads(run_json.read_text(encoding="utf-8")).get("data") or []
        return {str(r["sha256"]) for r in rows}
    except (OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
        return None


def check_leakage(model_path: Path, test_cases: Iterable[Case], allow: bool = False
                  ) -> list[str]:
    """The test cases whose images (by SHA-256) trained the network at ``model_path``.

    SPEC §6: a test case's voxel labels must not reach training. An overlap is a one-line
    DataError naming the cases, or — with ``allow`` — a warning (the ids are returned so
    the run can record them). A network whose training data is not recorded is a warning:
    nothing can be checked.
    """
    from segfew.runinfo import file_digest

    digests = trained_digests(Path(model_path))
    if digests is None:
        warnings.warn(f"{model_path}: no record of the network's training data; cannot check "
                      "that no test case trained it", stacklevel=2)
        return []
    leaked = sorted({c.id for c in test_cases
                     if any(Path(p).is_file() and file_digest(Path(p)) in digests
                            for p in c.images)})
    if leaked:
        shown = ", ".join(leaked[:8]) + (f" and {len(leaked) - 8} more" if len(leaked) > 8 else "")
        message = (f"the segmentation network was trained on {len(leaked)} test case(s) "
                   f"({shown}); pre-train per repetition (pretrain = <spec>) or on a disjoint "
                   "pool, or set allow_leakage = true")
        if not allow:
            raise DataError(message, model_path)
        warnings.warn(f"{model_path}: LEAKAGE: {message}", stacklevel=2)
    return leaked
