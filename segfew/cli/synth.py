"""``segfew synth``: write the synthetic phantom dataset used by the demo and tests."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from segfew.cli.common import SpecOpt, console, handle_errors, resolve, setting
from segfew.synth import CLASSES, write_phantoms
from segfew.synth import SynthSpec as Y


@handle_errors
def synth(
    out: Annotated[Path | None, setting(
        Y, "out", "Folder to write images/, labels/, labels.csv into.")] = None,
    dim: Annotated[int | None, setting(Y, "dim", "2 (images) or 3 (volumes).")] = None,
    n_per_class: Annotated[int | None, setting(Y, "n_per_class", "Cases per class.")] = None,
    size: Annotated[int | None, setting(
        Y, "size", "Voxels per axis.", show_default="64 in 2D, 32 in 3D")] = None,
    classes: Annotated[int | None, setting(Y, "classes", "Number of classes, 2–8.")] = None,
    channels: Annotated[int | None, setting(
        Y, "channels", "2 writes two phases per case, <id>_ch1 and <id>_ch2.")] = None,
    seed: Annotated[int | None, setting(Y, "seed", "Seed of the phantoms' shapes.")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Write into a non-empty --out, replacing the phantoms segfew wrote "
        "there.")] = False,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="With --force: replace files there that segfew did not write "
        "too.")] = False,
    spec: SpecOpt = None,
) -> None:
    """Write phantom images whose classes differ in the shape and arrangement of structures.

    Labels: 1 wall (ring), 2 cavity, 3 blob. Classes: normal, oval, shifted, thick, ...

    Example: segfew synth --out demo/data --dim 2 --n-per-class 8
    """
    overrides = {"out": out, "dim": dim, "n_per_class": n_per_class, "size": size,
                 "classes": classes, "channels": channels, "seed": seed,
                 "force": force or None}
    resolved = resolve(Y, overrides, spec)
    table = write_phantoms(resolved, overwrite=overwrite)
    names = ", ".join(c.name for c in CLASSES[: resolved.classes])
    console.print(
        f"{resolved.classes * resolved.n_per_class} {resolved.dim}D cases "
        f"({resolved.n_per_class} per class: {names}; {resolved.channels} channel(s)) "
        f"written to {resolved.out}; table {table}"
    )
