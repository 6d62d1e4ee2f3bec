"""``segfew synth``: write the synthetic phantom dataset used by the demo and tests."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from segfew.cli.common import SpecOpt, console, handle_errors, resolve


@handle_errors
def synth(
    out: Annotated[
        Path | None, typer.Option(help="Folder to write images/, labels/, labels.csv into.")
    ] = None,
    dim: Annotated[int | None, typer.Option(help="2 (images) or 3 (volumes).")] = None,
    n_per_class: Annotated[int | None, typer.Option(help="Cases per class (default 12).")] = None,
    size: Annotated[
        int | None, typer.Option(help="Voxels per axis (default 64 in 2D, 32 in 3D).")
    ] = None,
    classes: Annotated[int | None, typer.Option(help="Number of classes, 2–8 (default 3).")] = None,
    channels: Annotated[
        int | None, typer.Option(help="2 writes two phases per case, <id>_ch1 and <id>_ch2.")
    ] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Write into a non-empty --out, replacing its phantoms.")] = False,
    spec: SpecOpt = None,
) -> None:
    """Write phantom images whose classes differ in the shape and arrangement of structures.

    Labels: 1 wall (ring), 2 cavity, 3 blob. Classes: normal, oval, shifted, thick, ...

    Example: segfew synth --out demo/data --dim 2 --n-per-class 8
    """
    from segfew.synth import CLASSES, SynthSpec, write_phantoms

    overrides = {"out": out, "dim": dim, "n_per_class": n_per_class, "size": size,
                 "classes": classes, "channels": channels, "seed": seed,
                 "force": force or None}
    resolved = resolve(SynthSpec, overrides, spec)
    table = write_phantoms(resolved)
    names = ", ".join(c.name for c in CLASSES[: resolved.classes])
    console.print(
        f"{resolved.classes * resolved.n_per_class} {resolved.dim}D cases "
        f"({resolved.n_per_class} per class: {names}; {resolved.channels} channel(s)) "
        f"written to {resolved.out}; table {table}"
    )
