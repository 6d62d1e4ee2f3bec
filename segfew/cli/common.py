"""What every command shares: error handling, the console, common option types."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console

from segfew.choices import Precision

console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(fn: F) -> F:
    """One line on stderr per problem, and exit code 2 without a traceback.

    A SegfewError is printed as it is; an OSError the library did not foresee (a full disk,
    a folder that cannot be written) as ``<file>: <reason>``; a MemoryError as such.
    Warnings (e.g. :class:`segfew.errors.DataWarning`) are printed as ``warning: …`` lines.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from segfew.errors import SegfewError

        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            try:
                return fn(*args, **kwargs)
            except SegfewError as e:
                _error(str(e))
            except OSError as e:
                where = f"{e.filename}: " if e.filename else ""
                _error(f"{where}{e.strerror or e}")
            except MemoryError:
                _error("not enough memory for this run (try a smaller --size or --batch-size)")

    return wrapper  # type: ignore[return-value]


def _error(text: str) -> NoReturn:
    console.print(f"[bold red]error:[/] {' '.join(text.split())}", highlight=False,
                  soft_wrap=True)
    raise typer.Exit(2) from None


def _show_warning(message: Warning | str, category: type[Warning], filename: str,
                  lineno: int, file: Any = None, line: str | None = None) -> None:
    console.print(f"[yellow]warning:[/] {' '.join(str(message).split())}", highlight=False,
                  soft_wrap=True)


def split_list(value: str | None) -> list[str] | None:
    """``"a,b"`` → ``["a", "b"]``; None stays None."""
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def parse_label_map(value: str | None) -> dict[int, int] | None:
    """``"255:1,128:2"`` → ``{255: 1, 128: 2}``; None stays None."""
    if value is None:
        return None
    try:
        return {int(a): int(b) for a, b in (v.split(":") for v in value.split(",") if v.strip())}
    except ValueError:
        raise typer.BadParameter(f"expected OLD:NEW integer pairs, e.g. 255:1, got {value!r}"
                                 ) from None


def int_list(value: str | None) -> list[int] | None:
    """``"64,64,16"`` → ``[64, 64, 16]``; None stays None."""
    if value is None:
        return None
    try:
        return [int(v) for v in value.split(",")]
    except ValueError:
        raise typer.BadParameter(f"expected integers separated by commas, got {value!r}") from None


SpecOpt = Annotated[
    Path | None, typer.Option("--spec", help="TOML or YAML run spec; flags override it.")
]
ChannelsOpt = Annotated[
    str | None,
    typer.Option(help="Comma-separated channel suffixes: case X is X_<c1>.*, X_<c2>.* stacked."),
]
LabelMapOpt = Annotated[
    str | None,
    typer.Option(help="Remap label values before the checks, e.g. 255:1 for a 0/255 mask."),
]
ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")]

# Training options shared by `pretrain` and `train-classifier`.
EpochsOpt = Annotated[int | None, typer.Option(help="Training epochs.")]
BatchSizeOpt = Annotated[int | None, typer.Option(help="Global batch size.")]
LrOpt = Annotated[float | None, typer.Option(help="Adam learning rate.")]
SeedOpt = Annotated[int | None, typer.Option(help="Seed of every random number.")]
DeviceOpt = Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:1 …")]
PrecisionOpt = Annotated[Precision | None, typer.Option(
    help="auto (default: bf16 on CPUs and GPUs with native bf16, fp16 on older GPUs, "
         "else fp32), fp32, bf16 or fp16.")]
PresetOpt = Annotated[
    str | None, typer.Option(help="Paper settings: brain-mr-3d or cardiac-ct-2d.")
]
ResumeOpt = Annotated[bool, typer.Option(help="Continue a stopped run from its last checkpoint.")]
NoCacheOpt = Annotated[bool, typer.Option("--no-cache", help="Do not cache pre-processed arrays.")]


def train_overrides(
    epochs: int | None,
    batch_size: int | None,
    lr: float | None,
    seed: int | None,
    device: str | None,
    progress: bool,
    precision: str | None = None,
) -> dict[str, Any]:
    """The ``train`` part of a spec from the shared training flags (None = not given)."""
    return {
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "device": device,
        "precision": precision,
        "progress": None if progress else False,
    }
