"""The truth label maps of a segmentation model's evaluation: their codes remapped to the
model's numbering (as it was pre-trained, or as ``--label-map`` says) and checked against
the model's outputs (SPEC §6)."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segfew.data import Case
from segfew.data.read import label_values
from segfew.errors import DataError, DataWarning, SpecError

log = logging.getLogger(__name__)

__all__ = ["check_truth_values", "truth_remap"]


def check_truth_values(truth: np.ndarray, names: Sequence[str], path: Path) -> None:
    """A truth value the model has no output for would score as a structure missed: its
    case is refused (an error row), naming the values and the model's labels."""
    extra = sorted(int(v) for v in np.unique(truth) if v >= len(names))
    if extra:
        labels = ", ".join(f"{i} {n}" for i, n in enumerate(names))
        raise DataError(f"label value{'s' if len(extra) > 1 else ''} "
                        f"{', '.join(map(str, extra))} {'are' if len(extra) > 1 else 'is'} not "
                        f"among the model's labels ({labels}): remap the truth with "
                        "--label-map OLD:NEW pairs", path)


def truth_remap(given: Mapping[int, int] | str | None, spec: Mapping[str, Any],
                 cases: Sequence[Case], num_labels: int, model: Path
                 ) -> Mapping[int, int] | None:
    """The remap of the truth maps of ``cases`` for a model of ``num_labels`` outputs and
    pre-training ``spec``. Pairs are used as given (warned where they map a code of the
    table ``data.label_map`` otherwise). Else, and for ``consecutive`` (that table, not a
    numbering afresh: a map missing a code would shift the rest), the table is applied to
    truths in its codes, nothing to truths in the model's own numbering; values that could
    be either: DataError. SpecError: ``consecutive`` without a table."""
    recorded = (spec.get("data") or {}).get("label_map")
    trained = ({int(k): int(v) for k, v in recorded.items()} if isinstance(recorded, dict)
               else {})
    table = ",".join(f"{k}:{v}" for k, v in sorted(trained.items()))
    if isinstance(given, str) and not trained:
        raise SpecError("--label-map consecutive: the model records no label table of its "
                        "pre-training; give OLD:NEW pairs (e.g. 2:1,41:2)", model)
    if given is not None and not isinstance(given, str):
        if any(k in trained and v != trained[k] for k, v in given.items()):
            warnings.warn(DataWarning(f"--label-map maps codes otherwise than the table the "
                                      f"model was pre-trained with ({table})", model),
                          stacklevel=3)
        return given
    codes = {k for k, v in trained.items() if k != v}
    if not codes:
        return None
    found: set[int] = set()
    for path in (p for c in cases for p in c.labels):
        with contextlib.suppress(DataError):  # an unreadable map: its case's error row
            found |= label_values([path])
    source, own = found <= {0, *trained}, found <= set(range(num_labels))
    if own and not (source and found & codes):
        return None
    if not own and (source or found & {k for k in codes if k >= num_labels}):
        log.info("truth label values remapped as the model was pre-trained: %s", table)
        return trained
    if own:  # every value could be a code of the table or an output
        raise DataError(f"the truth maps hold {', '.join(map(str, sorted(found & codes)))}: "
                        f"codes of the table the model was pre-trained with ({table}) and "
                        "also its own outputs; say which with --label-map: that table, or "
                        "N:N pairs for the model's own numbering", model)
    return None  # neither: each case's values are said in its row
