"""``segfew label``: k-means pseudo-labels for pre-training without expert masks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from segfew.cli.common import ProgressOpt, SpecOpt, console, handle_errors


@handle_errors
def label(
    images: Annotated[Path | None, typer.Option(help="Folder of images to label.")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Folder for <id>_seg.nii.gz, centres.json, run.json.")
    ] = None,
    k: Annotated[
        int | None, typer.Option(help="Number of clusters (paper: 5 brain MR, 10 cardiac CT).")
    ] = None,
    keep_background: Annotated[
        bool | None,
        typer.Option("--keep-background/--no-keep-background",
                     help="Keep the background (at or below the threshold) as label 0."),
    ] = None,
    background_threshold: Annotated[
        float | None,
        typer.Option(help="Background threshold after normalisation "
                          "(default: each image's minimum)."),
    ] = None,
    centres: Annotated[
        Path | None, typer.Option(help="centres.json of an earlier run: label with those centres.")
    ] = None,
    intensity: Annotated[
        str | None,
        typer.Option(help="Normalisation before clustering: minmax (default), zscore, clahe, ct."),
    ] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    spec: SpecOpt = None,
    progress: ProgressOpt = True,
) -> None:
    """Cluster intensities pooled over all images (k-means) and write one label map per image.

    Label 1 is the darkest cluster in every image, k the brightest; 0 is background.

    Example: segfew label --images data/images --out data/kmeans --k 4
    """
    from rich.progress import Progress, TaskID
    from rich.table import Table

    from segfew.config import LabelSpec, resolve_spec
    from segfew.labels import KMeansLabeller, label_images

    overrides = {"images": images, "out": out, "k": k, "keep_background": keep_background,
                 "background_threshold": background_threshold, "centres": centres,
                 "intensity": intensity, "seed": seed}
    resolved = resolve_spec(LabelSpec, overrides, spec)
    with Progress(console=console, disable=not progress, transient=True) as bar:
        tasks: dict[str, TaskID] = {}

        def report(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done)

        written = label_images(resolved, progress=report)
    labeller = KMeansLabeller.from_file(resolved.out / "centres.json")
    table = Table(title="k-means labels", caption=f"centres in {labeller.intensity} units")
    table.add_column("label", justify="right")
    table.add_column("centre", justify="right")
    if labeller.keep_background:
        table.add_row("0", "background")
    offset = 1 if labeller.keep_background else 0
    for i, c in enumerate(labeller.centres):
        table.add_row(str(i + offset), f"{c:.4g}")
    console.print(table)
    source = f"centres from {resolved.centres}" if resolved.centres else "centres fitted"
    console.print(f"{len(written)} label maps written to {resolved.out} ({source})")
