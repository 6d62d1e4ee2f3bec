"""User-facing errors.

Every problem a user can cause (a bad file, a bad spec, a missing model) is raised as a
:class:`SegfewError`. Its message is one line that names the file and the problem, so the
CLI can print it as it is and exit non-zero, and a batch job can put it in an error row.
"""

from __future__ import annotations

import copy
import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

_Item = TypeVar("_Item")
_Out = TypeVar("_Out")


def _one_line(message: str, path: str | Path | None) -> tuple[str, Path | None]:
    """The message on one line, and the file it names (None: none)."""
    return " ".join(str(message).split()), None if path is None else Path(path)


def _rebuilt(kind: type[Exception], state: dict[str, Any]) -> Exception:
    """An error or warning unpickled (from a reading process) with all it held: its
    ``message``, ``path`` and whatever a subclass adds."""
    out = kind.__new__(kind)
    Exception.__init__(out, state.get("message", ""))
    vars(out).update(state)
    return out


def _located(message: str, path: Path | None) -> str:
    return f"{path}: {message}" if path is not None else message


def format_bytes(nbytes: int) -> str:
    """A byte count in words for error messages (``1.5 GiB``)."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} bytes"


class SegfewError(Exception):
    """A problem the user can fix; ``str(err)`` is one line: ``<path>: <problem>``."""

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.message, self.path = _one_line(message, path)
        super().__init__(self.message)

    def __str__(self) -> str:
        return _located(self.message, self.path)

    def __reduce__(self) -> tuple[Any, tuple[type, dict[str, Any]]]:
        return _rebuilt, (type(self), vars(self))  # the path survives a reading process


class DataError(SegfewError):
    """An input image, label map, table or folder is missing, unreadable or inconsistent."""


class SpecError(SegfewError):
    """A run spec (flags or spec file) is invalid."""


class ModelFileError(SegfewError):
    """A model file is missing, corrupt, or from an incompatible segfew version."""


def all_at_once(failed: Sequence[DataError], total: int, what: str) -> DataError:
    """One error for the cases of a set that failed a check, so that a user mends them all
    in one go, not one per run: the first error (of its own class, with all it holds), its
    words followed by a count of the rest (``what``: "training cases cannot be measured");
    the others are warned (:class:`DataWarning`), each in its own line (beyond a few of one
    kind, the CLI counts them: :class:`RepeatedWarnings`), unless every one of the ``total``
    cases failed with the same words, which are then said once. ``failed`` must not be
    empty."""
    first = failed[0]
    alike = len(failed) == total and all(e.message == first.message for e in failed)
    if not alike:
        for other in failed[1:]:
            warnings.warn(DataWarning(other.message, other.path), stacklevel=3)
    if len(failed) == 1:
        return first
    error = copy.copy(first)  # a subclass (a refusal with a hint to add) stays itself
    error.message = (f"{first.message} — and {len(failed) - 1} more of the {total} {what} "
                     f"({'the same' if alike else 'warned above'})")
    error.args = (error.message,)
    return error


def map_all(function: Callable[[_Item], _Out], items: Iterable[_Item], what: str
            ) -> list[_Out]:
    """``function`` of every item (a case read, measured, pre-processed); where some raise
    :class:`DataError`, every item is still tried and :func:`all_at_once` of their errors is
    raised (``what``: "training cases cannot be measured")."""
    done, failed = [], []
    for item in items:
        try:
            done.append(function(item))
        except DataError as error:
            failed.append(error)
    if failed:
        raise all_at_once(failed, len(done) + len(failed), what)
    return done


class Interrupted(KeyboardInterrupt):
    """Ctrl-C stopped a training run; ``str(err)`` says how to continue it (CLI exit 130)."""


class DataWarning(UserWarning):
    """Something segfew changed or noticed in an input, and went on: one line naming the file.

    Raised with :func:`warnings.warn`; the CLI prints it as ``warning: <path>: <problem>``
    and ``segfew inspect`` lists it among its notes. It reads like a :class:`SegfewError`.
    """

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.message, self.path = _one_line(message, path)
        super().__init__(self.message)

    def __str__(self) -> str:
        return _located(self.message, self.path)

    def __reduce__(self) -> tuple[Any, tuple[type, dict[str, Any]]]:
        return _rebuilt, (type(self), vars(self))  # the path survives a reading process


class Skipped(DataWarning):
    """A path a listing does not read as an image, and why: ``skipped: <what>``.

    ``reason``: what every path skipped alike shares (the text, less the count and names of
    a summary line); ``count``: the paths this one line stands for; ``label_maps``: they
    are label maps beside their images (where those are the ``--labels`` given, nothing
    needs saying).
    """

    def __init__(self, what: str, path: str | Path | None = None, *, count: int = 1,
                 reason: str | None = None, label_maps: bool = False) -> None:
        super().__init__(f"skipped: {what}", path)
        self.reason = " ".join((what if reason is None else reason).split())
        self.count, self.label_maps = count, label_maps


#: a number in a warning's text (a file's own values): set aside when warnings are compared
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*(?:e[-+]?\d+)?")


class RepeatedWarnings:
    """Says a warning of many files for the first few, and counts the rest in one line.

    An export of 7 800 RGB slices warns once per file; a user reads the first few lines and
    one count. Texts that differ only in their numbers (each file's hot-pixel values) are
    one warning; the count says it with "…" for them. Warnings naming no file are always
    said.
    """

    def __init__(self, shown: int = 3) -> None:
        self.shown = shown
        #: text, values aside → each (file, its text) said or counted
        self._files: dict[str, dict[tuple[Path, str], None]] = {}

    def admit(self, warning: Warning | str) -> bool:
        """Whether to say ``warning`` now: False for a text said of its file already, and
        beyond the first ``shown`` with the same text, values aside (those are counted). A
        file may be said of with other values (a table's rows, each its own line)."""
        path = getattr(warning, "path", None)
        if not isinstance(path, Path):
            return True
        text = str(getattr(warning, "message", warning))
        said = self._files.setdefault(_NUMBER.sub("…", text), {})  # its values aside
        if (path, text) in said:
            return False
        said[(path, text)] = None
        return len(said) <= self.shown

    def counts(self) -> list[str]:
        """One line for each text said more than ``shown`` times, and forget them all."""
        lines = []
        for key, said in self._files.items():
            more = list(said)[self.shown:]
            paths = list(dict.fromkeys(path for path, _ in more))
            text = more[0][1] if more and len({t for _, t in more}) == 1 else key
            if len(more) == 1:
                lines.append(_located(more[0][1], more[0][0]))
            elif more and len(paths) == 1:  # a file's rows: the first as it is, then a count
                lines.append(f"{_located(more[0][1], paths[0])} (and {len(more) - 1} more like "
                             "it in this file)")
            elif more:
                lines.append(f"{text}: also {len(more)} more files ({paths[0].name} … "
                             f"{paths[-1].name})")
        self._files.clear()
        return lines
