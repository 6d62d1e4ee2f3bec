"""All progress drawing of the CLI: the library reports through callbacks and ``logging``.

On a terminal progress is a rich bar per stage; in a log file or pipe (nohup, a cluster
job) it becomes plain lines as work advances — one per epoch, one per tenth of the cases —
so a log is never empty until the end.
"""

from __future__ import annotations

import logging
import math
import time
from types import TracebackType
from typing import Any

from rich.console import Console

from segfew.cli.common import HELD_BACK, console, held, print_record, say_held_notes
from segfew.typing import Progress

#: stages too fine for plain lines (one per batch)
_DETAIL = frozenset({"batches"})


class ProgressView:
    """``view(stage, done, total, info="")``: draws progress of named stages.

    Use as a context manager around the library call; pass the instance as training's
    ``progress`` (:data:`segfew.typing.TrainProgress`), or :meth:`cases` as any other
    (:data:`segfew.typing.Progress`).
    """

    def __init__(self, enabled: bool = True, out: Console | None = None,
                 plain: bool | None = None) -> None:
        self.out = out or console
        self.enabled = enabled
        self.plain = (not self.out.is_terminal) if plain is None else plain
        self.total = 0
        self.done = 0
        self._bar: Any = None
        self._tasks: dict[str, Any] = {}
        self._printed: dict[str, int] = {}
        self._start = time.monotonic()

    def __enter__(self) -> ProgressView:
        if self.enabled and not self.plain:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
                console=self.out, transient=True)
            self._bar.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        say_held_notes(drop=kind is not None and not issubclass(kind, KeyboardInterrupt))
        if self._bar is not None:
            self._bar.__exit__(kind, value, tb)
            self._bar = None

    def __call__(self, stage: str, done: int, total: int | None, info: str = "") -> None:
        self.done, self.total = done, total or 0
        if not self.enabled:
            return
        if self._bar is not None:
            if stage not in self._tasks:
                self._tasks[stage] = self._bar.add_task(stage, total=total, info=info)
            self._bar.update(self._tasks[stage], completed=done, total=total, info=info)
            return
        if stage in _DETAIL or not total or done == 0:
            return
        step = 1 if stage == "epochs" else max(1, math.ceil(total / 10))
        last = self._printed.get(stage, 0)
        if done == total or done - last >= step:
            self._printed[stage] = done
            elapsed = time.monotonic() - self._start
            text = f"{stage} {done}/{total}" + (f"  {info}" if info else "")
            say_held_notes()
            self.out.print(f"{text}  ({elapsed:.0f} s)", highlight=False, markup=False)

    def cases(self, stage: str | None = None) -> Progress:
        """A :data:`~segfew.typing.Progress` callback drawn as ``stage`` (None: its ``what``
        names the stage, as ``label``'s do)."""
        return lambda done, total, what: self(stage or what, done, total)


class _ConsoleHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        if record.name in HELD_BACK:
            held.append(record)
            return
        say_held_notes()
        print_record(record)


def show_library_messages() -> None:
    """Print the library's ``logging`` notes (the ``segfew`` logger) as plain lines on stderr."""
    logger = logging.getLogger("segfew")
    if not any(isinstance(h, _ConsoleHandler) for h in logger.handlers):
        logger.addHandler(_ConsoleHandler())
    logger.setLevel(logging.INFO)
    logger.propagate = False  # printed once, here
