"""``segfew label``: labels without an expert (k-means or cine cavities) for pre-training."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from segfew.choices import Intensity, LabelMethod
from segfew.cli.common import (
    ID_COLUMN_HELP,
    ChannelsOpt,
    ProgressOpt,
    SpecOpt,
    ThreadsOpt,
    console,
    handle_errors,
    resolve,
    setting,
    split_list,
)
from segfew.cli.render import ProgressView
from segfew.data.label_names import CENTRES_FILE
from segfew.spec import LabelSpec

L = LabelSpec


@handle_errors
def label(
    images: Annotated[Path | None, setting(
        L, "images", "Folder of images (or of class sub-folders) to label.")] = None,
    out: Annotated[Path | None, setting(
        L, "out", "Folder for <id>_seg.nii.gz, label_names.json, preview/, run.json "
        "(kmeans: centres.json).")] = None,
    table: Annotated[Path | None, setting(
        L, "table", "CSV/TSV of the cases to label (id or path column); optional.")] = None,
    id_column: Annotated[str | None, setting(L, "id_column", ID_COLUMN_HELP)] = None,
    label_column: Annotated[str | None, setting(
        L, "label_column", "Table column of classes (none is needed).")] = None,
    recursive: Annotated[bool | None, setting(
        L, "recursive", "Look for images in sub-folders too.")] = None,
    channels: ChannelsOpt = None,
    method: Annotated[LabelMethod | None, setting(
        L, "method", "kmeans: intensity clusters; cavities: RV, myocardium and LV of cine MRI "
        "(--channels: two or more phases, ED first).")] = None,
    k: Annotated[int | None, setting(L, "k")] = None,
    keep_background: Annotated[bool | None, setting(
        L, "keep_background", "kmeans: keep the background (at or below the threshold) as "
        "label 0.",
        "--keep-background/--no-keep-background")] = None,
    background_threshold: Annotated[float | None, setting(
        L, "background_threshold", "kmeans: background threshold after "
        "normalisation (default: each image's minimum).")] = None,
    centres: Annotated[Path | None, setting(
        L, "centres", "kmeans: centres.json of an earlier run: label with those "
        "centres (they fix --k, --intensity and the background; another value is "
        "refused).")] = None,
    intensity: Annotated[Intensity | None, setting(
        L, "intensity", "kmeans: normalisation before clustering.")] = None,
    seed: Annotated[int | None, setting(L, "seed", "kmeans: seed of the fit.")] = None,
    threads: ThreadsOpt = None,
    spec: SpecOpt = None,
    overwrite: Annotated[bool, typer.Option(
        help="Replace files in --out that segfew did not write (by default refused).",
        show_default="off")] = False,
    progress: ProgressOpt = True,
) -> None:
    """Label images without an expert and write one label map per image.

    kmeans (the default): intensities pooled over all images are clustered; label 1 is the
    darkest cluster in every image, k the brightest; 0 is background. cavities: cine
    cardiac MRI, each case's RV (1), myocardium (2) and LV (3) found by their motion and
    brightness. The labels folder can be given as is to segfew pretrain --labels (no label
    names needed).

    An image that cannot be read or labelled is skipped with a warning naming it (and left
    out of the k-means fit); the others are labelled, run.json lists the skipped, and the
    exit code is 1.

    Example: segfew label --images data/images --out data/kmeans --k 4
    Example: segfew label --method cavities --channels frame01,frame02 --images acdc --out cav
    """
    from segfew.jobs.label import label_failures, label_images
    from segfew.labelling.kmeans import KMeansLabeller

    overrides = {"images": images, "out": out, "table": table, "id_column": id_column,
                 "label_column": label_column,
                 "recursive": recursive, "channels": split_list(channels), "method": method,
                 "k": k,
                 "keep_background": keep_background,
                 "background_threshold": background_threshold, "centres": centres,
                 "intensity": intensity, "seed": seed, "threads": threads}
    resolved = resolve(LabelSpec, overrides, spec)
    with ProgressView(progress) as view:
        written = label_images(resolved, progress=view.cases(), overwrite=overwrite)
    failed = label_failures(resolved.out)
    skipped = (f"; {len(failed)} image(s) skipped (listed in {resolved.out / 'run.json'})"
               if failed else "")
    if resolved.method == "cavities":
        console.print(f"{len(written)} label maps written to {resolved.out} (cine cavities: "
                      f"1 RV, 2 myocardium, 3 LV){skipped}", highlight=False)
        if failed:
            raise typer.Exit(1)
        return
    labeller = KMeansLabeller.from_file(resolved.out / CENTRES_FILE)
    table_out = Table(title="k-means labels", caption=f"centres in {labeller.intensity} units")
    table_out.add_column("label", justify="right")
    table_out.add_column("centre", justify="right")
    if labeller.keep_background:
        table_out.add_row("0", "background")
    offset = 1 if labeller.keep_background else 0
    for i, c in enumerate(labeller.centres):
        table_out.add_row(str(i + offset), f"{c:.4g}")
    console.print(table_out)
    source = f"centres from {resolved.centres}" if resolved.centres else "centres fitted"
    console.print(f"{len(written)} label maps written to {resolved.out} ({source}); "
                  f"{labeller.num_labels} labels{skipped}", highlight=False)
    if failed:
        raise typer.Exit(1)

