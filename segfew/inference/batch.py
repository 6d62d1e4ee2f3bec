"""What a batch over cases shares: one row per case, and a bad case never stops the batch.

``predict`` and ``evaluate`` run a model over many cases; a case that cannot be read,
pre-processed or run becomes an error row (``status`` ``error`` and a one-line reason)
and the others go on. Here: the row, the errors that make one, the predictions table and
the progress count.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from segfew.errors import SegfewError
from segfew.files import write_rows_csv
from segfew.typing import Progress

if TYPE_CHECKING:
    from segfew.data import Case

__all__ = [
    "CASE_ERRORS",
    "Advance",
    "PredictionRow",
    "case_path",
    "leaked_cell",
    "one_line",
    "progress_counter",
    "write_predictions_csv",
]

Advance = Callable[[int], None]
"""Called with the number of cases just finished (an increment): how a model's batch loop
counts, turned into a :data:`segfew.typing.Progress` report by :func:`progress_counter`."""


#: What makes one case of a batch an error row (the batch goes on): a user-facing error, a
#: file that cannot be read, a library's ValueError/RuntimeError, running out of memory.
CASE_ERRORS = (SegfewError, OSError, ValueError, RuntimeError, MemoryError)


@dataclass
class PredictionRow:
    """One case's prediction; ``status`` is ``"ok"`` or ``"error"`` (then ``error`` says why)."""

    id: str
    path: str
    predicted: str = ""
    probabilities: dict[str, float] = field(default_factory=dict)
    status: str = "ok"
    error: str = ""
    confidence: float | None = None  # top probability (segfew.inference.ensemble.flag_confidence)
    low_confidence: bool = False


def case_path(case: Case) -> str:
    """The first channel's path, or every channel's joined by ``;``."""
    return ";".join(str(p) for p in case.images)


def one_line(err: BaseException) -> str:
    """A one-line message for an error row."""
    if isinstance(err, SegfewError):
        return str(err)
    if isinstance(err, MemoryError):
        return "not enough memory to process this case"
    text = " ".join(str(err).split()) or type(err).__name__
    return text[:300]


def write_predictions_csv(path: Path, rows: Sequence[PredictionRow], classes: Sequence[str],
                          targets: Sequence[str | None] | None = None,
                          leaked: Collection[str] | None = None, checked: bool = True) -> Path:
    """``id, path, [target,] predicted, p_<class>..., confidence, low_confidence, [leaked,]
    status, error`` — one line per row (confidence cells empty where not flagged or failed);
    ``leaked`` (``evaluate``): the ids of cases the model was trained on, a yes/no column —
    "not checked" for the others when the model records no training data (``checked``)."""
    header = ["id", "path", *(["target"] if targets is not None else []), "predicted",
              *(f"p_{c}" for c in classes), "confidence", "low_confidence",
              *(["leaked"] if leaked is not None else []), "status", "error"]
    lines = []
    for i, row in enumerate(rows):
        probs = [f"{row.probabilities[c]:.6f}" if c in row.probabilities else ""
                 for c in classes]
        target = [targets[i] or ""] if targets is not None else []
        sure = (["", ""] if row.confidence is None else
                [f"{row.confidence:.6f}", "yes" if row.low_confidence else "no"])
        leak = [] if leaked is None else [leaked_cell(row.id in leaked, checked)]
        lines.append([row.id, row.path, *target, row.predicted, *probs, *sure, *leak,
                      row.status, row.error])
    return write_rows_csv(path, header, lines)


def leaked_cell(leaked: bool, checked: bool) -> str:
    """A ``leaked`` cell: "yes", "no", or "not checked" when no training record was found."""
    return "yes" if leaked else "no" if checked else "not checked"


def progress_counter(progress: Progress | None, total: int) -> Advance:
    """Turn ``progress(done, total, "")`` into an increment callback; announces the total now."""
    done = 0
    if progress is not None:
        progress(0, total, "")

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total, "")

    return advance
