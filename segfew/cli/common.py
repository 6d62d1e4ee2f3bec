"""What every command shares: error handling, the consoles, option types built from the specs.

Option defaults are never written here: :func:`setting` reads them from the spec models in
``segfew.spec`` (the one source of defaults), so ``--help`` shows what the library uses.
"""

from __future__ import annotations

import functools
import logging
import signal
import sys
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from pydantic_core import PydanticUndefined
from rich.console import Console
from rich.markup import escape

from segfew.data.case import GROUP_COLUMNS, ID_COLUMNS, LABEL_COLUMNS
from segfew.errors import RepeatedWarnings, SegfewError
from segfew.spec import given_keys, resolve_spec, unused_settings
from segfew.spec.parts import label_map_pairs

if TYPE_CHECKING:
    from pydantic import BaseModel

    from segfew.spec import ClassifierSpec, ExperimentSpec

#: width of tables and lines when output goes to a file or a pipe (no cutting at 80 columns)
WIDE = 400


def make_console(stderr: bool) -> Console:
    """A console that draws for a terminal, and prints full-width plain text to a file."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else WIDE)


console = make_console(stderr=True)


#: notes said only once work is under way (the next line printed, or the end of the work),
#: so that a run refused before it starts prints its one error line and nothing else
HELD_BACK = frozenset({"segfew.runtime", "segfew.spec"})
held: list[logging.LogRecord] = []


def say_held_notes(drop: bool = False) -> None:
    """Print the notes held back (e.g. the CPU thread count), or forget them (``drop``:
    the command failed before it ran)."""
    records = list(held)
    held.clear()
    if not drop:
        for record in records:
            print_record(record)


def print_record(record: logging.LogRecord) -> None:
    """A library log record as one line: errors red, warnings yellow, notes plain."""
    style = "bold red" if record.levelno >= logging.ERROR else (
        "yellow" if record.levelno >= logging.WARNING else None)
    message = record.getMessage()
    if record.levelno == logging.WARNING:
        message = f"warning: {message}"
    if style:
        console.print(f"[{style}]{escape(message)}[/]", highlight=False, soft_wrap=True)
    else:
        console.print(message, highlight=False, markup=False, soft_wrap=True)


F = TypeVar("F", bound=Callable[..., Any])
S = TypeVar("S", bound="BaseModel")


#: the signal that stopped the command (SIGTERM: set by its handler), None for Ctrl-C
STOPPED_BY: list[int | None] = [None]


def handle_errors(fn: F) -> F:
    """One line on stderr per problem, and exit code 2 without a traceback.

    A SegfewError is printed as it is; an OSError the library did not foresee (a full disk,
    a folder that cannot be written) as ``<file>: <reason>``; a MemoryError as such;
    Ctrl-C as one line (how to resume, for training) and exit code 130.
    Warnings (e.g. :class:`segfew.errors.DataWarning`) are printed as ``warning: …`` lines.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            _repeats.counts()  # a command starts with none
            STOPPED_BY[0] = None
            try:
                result = fn(*args, **kwargs)
                say_held_notes()
                _say_repeats()
                return result
            except SegfewError as e:
                say_held_notes(drop=True)  # refused before it ran: the one error line
                _error(str(e))
            except OSError as e:
                where = f"{e.filename}: " if e.filename else ""
                _error(f"{where}{e.strerror or e}")
            except MemoryError:
                _error("not enough memory for this run (try a smaller --size or --batch-size)")
            except KeyboardInterrupt as e:  # Ctrl-C: one line, the shell's code for SIGINT
                console.print(str(e) or "interrupted", highlight=False, soft_wrap=True)
                raise typer.Exit(128 + (STOPPED_BY[0] or signal.SIGINT)) from None
            except typer.Exit:  # exit 1 (some cases failed): the counts are said first
                say_held_notes()
                _say_repeats()
                raise

    return wrapper  # type: ignore[return-value]


def _error(text: str) -> NoReturn:
    _say_repeats()
    console.print(f"[bold red]error:[/] {escape(' '.join(text.split()))}", highlight=False,
                  soft_wrap=True)
    raise typer.Exit(2) from None


#: a warning said of many files: printed for the first few, the others counted at the end
_repeats = RepeatedWarnings(shown=3)


def _show_warning(message: Warning | str, category: type[Warning], filename: str,
                  lineno: int, file: Any = None, line: str | None = None) -> None:
    if _repeats.admit(message):
        _warn_line(str(message))


def _warn_line(text: str) -> None:
    console.print(f"[yellow]warning:[/] {escape(' '.join(text.split()))}", highlight=False,
                  soft_wrap=True)


def _say_repeats() -> None:
    for text in _repeats.counts():
        _warn_line(text)


# ---------------------------------------------------------------- defaults from the specs


def _field(model: type[BaseModel], key: str) -> Any:
    """The pydantic field of dotted ``key`` ("train.epochs") in ``model``."""
    part, _, rest = key.partition(".")
    field = model.model_fields[part]
    if not rest:
        return field
    return _field(field.annotation, rest)  # type: ignore[arg-type]


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple | list):
        return ",".join(_show(v) for v in value)
    return str(value)


def setting(model: type[BaseModel], key: str, help: str = "", *decls: str, **kwargs: Any) -> Any:
    """A Typer option for spec key ``key`` of ``model``: its help shows the library default
    (or marks it required), and its own default stays None so a ``--spec`` file may set it.

    ``help`` defaults to the field's description.
    """
    field = _field(model, key)
    description = field.description or ""
    text = help or description[:1].upper() + description[1:]
    default = field.get_default(call_default_factory=True)
    if default is PydanticUndefined:
        text = f"{text} \\[required]".strip()
        show: bool | str = False
    elif default is None:
        show = False
    else:
        show = _show(default)
    show = kwargs.pop("show_default", show)  # a default said in words ("64 in 2D")
    return typer.Option(*decls, help=text, show_default=show, **kwargs)


def spec_flags(overrides: Mapping[str, Any], rename: Mapping[str, str | None], prefix: str = ""
               ) -> dict[str, str]:
    """Spec key → flag, for the keys a command's flags set (``data.images`` → ``--images``)."""
    out: dict[str, str] = {}
    for key, value in overrides.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
            out.update(spec_flags(value, rename, f"{path}."))  # a section; else a value (a map)
        elif path in rename:
            flag = rename[path]
            if flag is not None:
                out[path] = flag
        else:
            out[path] = "--" + key.replace("_", "-")
    return out


def resolve(model: type[S], overrides: Mapping[str, Any], spec_file: Path | None,
            defaults: Mapping[str, Any] | None = None,
            rename: Mapping[str, str | None] | None = None) -> S:
    """Defaults < spec file < flags, validated; errors name the flag and the spec key.

    ``rename`` maps spec keys whose flag is not ``--<key>`` (None: set by no flag).
    """
    flags = spec_flags(overrides, rename or {})
    return resolve_spec(model, overrides, spec_file, defaults, flags=flags)


def warn_unused(spec: ClassifierSpec | ExperimentSpec, given: set[str],
                overrides: dict[str, Any]) -> None:
    """A setting the framework never reads, given by flag or spec file, is said in a warning
    naming it (:func:`segfew.spec.unused_settings`), not silently ignored. Not refused: one
    command line looped over frameworks is a common way to compare them. Said once the run
    is under way (a run refused first prints its one error line)."""
    unused = unused_settings(spec, given)
    if unused:
        flags = {k: f for k, f in spec_flags(overrides, {}).items() if k in given_keys(overrides)}
        said = [f"{flags.get(key, key)} ({why})" for key, why in sorted(unused.items())]
        logging.getLogger("segfew.spec").warning(
            "not used, and without effect on the model: " + "; ".join(said))


def split_list(value: str | None) -> list[str] | None:
    """``"a,b"`` → ``["a", "b"]``; None stays None."""
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def parse_label_map(value: str | None) -> dict[int, int] | str | None:
    """``"255:1,128:2"`` → ``{255: 1, 128: 2}``; ``"consecutive"`` stays; None stays None
    (:func:`segfew.spec.parts.label_map_pairs`, which a spec's text goes through too)."""
    if value is None:
        return None
    try:
        return label_map_pairs(value)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None


def int_list(value: str | None) -> list[int] | None:
    """``"64,64,16"`` → ``[64, 64, 16]``; None stays None."""
    if value is None:
        return None
    try:
        return [int(v) for v in value.split(",")]
    except ValueError:
        raise typer.BadParameter(f"expected integers separated by commas, got {value!r}") from None


#: help of the table's column options: what is found when none is named
ID_COLUMN_HELP = (f"Table column of ids or paths (default: the first column named "
                  f"{', '.join(ID_COLUMNS[:8])} …).")
LABEL_COLUMN_HELP = (f"Table column of classes (default: the one column named "
                     f"{', '.join(LABEL_COLUMNS)}).")
GROUP_COLUMN_HELP = (f"Table column of groups (patients), kept on one side of every split "
                     f"(default: a column named {', '.join(GROUP_COLUMNS[:4])} …, if any).")

SpecOpt = Annotated[
    Path | None, typer.Option("--spec", help="TOML or YAML run spec; flags override it.")
]
ChannelsOpt = Annotated[
    str | None,
    typer.Option(help="Comma-separated channel suffixes: case X is X_<c1>.*, X_<c2>.* stacked."),
]
LabelMapOpt = Annotated[
    str | None,
    typer.Option(help="Remap label values first: 255:1 (a 0/255 mask), or consecutive.",
                 show_default="none"),
]
ProgressOpt = Annotated[bool, typer.Option(
    "--progress/--no-progress",
    help="Show progress: bars on a terminal, plain lines in a log file or pipe.",
    show_default="on")]
ThreadsOpt = Annotated[int | None, typer.Option(
    min=1, show_default="OMP_NUM_THREADS when set, else the idle cores by the load average",
    help="CPU threads (torch, BLAS, OpenMP); the log and run.json say how many ran.")]
PresetOpt = Annotated[
    str | None, typer.Option(help="Paper settings: brain-mr-3d or cardiac-ct-2d.",
                             show_default="none: the defaults shown")
]
ResumeOpt = Annotated[bool, typer.Option(help="Continue a stopped run from its last checkpoint.",
                                         show_default="off")]
OverwriteOpt = Annotated[bool, typer.Option(
    help="Start afresh in a run folder that holds an unfinished run (its checkpoints go), or "
         "replace a model file at --out that segfew did not write.",
    show_default="off")]
NoCacheOpt = Annotated[bool, typer.Option("--no-cache", help="Do not cache pre-processed arrays.")]


def train_overrides(
    epochs: int | None,
    batch_size: int | None,
    lr: float | None,
    seed: int | None,
    device: str | None,
    progress: bool,
    threads: int | None = None,
    precision: str | None = None,
) -> dict[str, Any]:
    """The ``train`` part of a spec from the shared training flags (None = not given)."""
    return {
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "device": device,
        "threads": threads,
        "precision": precision,
        "progress": None if progress else False,
    }
