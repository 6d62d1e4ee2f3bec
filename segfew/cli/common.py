"""What every command shares: error handling, the console, common option types."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from segfew.choices import Precision

console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(fn: F) -> F:
    """Turn a SegfewError into one red line on stderr and exit code 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from segfew.errors import SegfewError

        try:
            return fn(*args, **kwargs)
        except SegfewError as e:
            console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def split_list(value: str | None) -> list[str] | None:
    """``"a,b"`` → ``["a", "b"]``; None stays None."""
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


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
