"""``segfew pretrain``: train the segmentation network that later serves as a feature source."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from segfew.cli.common import (
    BatchSizeOpt,
    ChannelsOpt,
    DeviceOpt,
    EpochsOpt,
    LabelMapOpt,
    LrOpt,
    NoCacheOpt,
    PrecisionOpt,
    PresetOpt,
    ProgressOpt,
    ResumeOpt,
    SeedOpt,
    SpecOpt,
    console,
    handle_errors,
    int_list,
    parse_label_map,
    split_list,
    train_overrides,
)


@handle_errors
def pretrain(
    images: Annotated[Path | None, typer.Option(help="Folder of images.")] = None,
    labels: Annotated[
        Path | None, typer.Option(help="Folder of voxel label maps (matched by case id).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Model file to write, e.g. seg.pt.")] = None,
    dim: Annotated[
        int | None, typer.Option(help="Network dimension: 2 (slices) or 3 (volumes).")
    ] = None,
    channels: ChannelsOpt = None,
    label_map: LabelMapOpt = None,
    preset: PresetOpt = None,
    n_s: Annotated[int | None, typer.Option("--n-s", help="Base width n_s of the M-Net.")] = None,
    size: Annotated[
        str | None, typer.Option(help="Grid size, one value or one per axis: 128 or 128,128.")
    ] = None,
    intensity: Annotated[str | None, typer.Option(help="clahe, ct, minmax or zscore.")] = None,
    epochs: EpochsOpt = None,
    batch_size: BatchSizeOpt = None,
    lr: LrOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
    resume: ResumeOpt = False,
    no_cache: NoCacheOpt = False,
    spec: SpecOpt = None,
    progress: ProgressOpt = True,
) -> None:
    """Train the modified M-Net on images with voxel labels (expert or k-means).

    Example: segfew pretrain --images data/images --labels data/labels --dim 2 --out seg.pt
    """
    from rich.table import Table

    from segfew.config import PretrainSpec, resolve_spec
    from segfew.config import preset as preset_values
    from segfew.pipeline import pretrain as run_pretrain
    from segfew.preprocess import PreprocessCache
    from segfew.train.distributed import is_main

    overrides = {
        "data": {"images": images, "labels": labels, "channels": split_list(channels),
                 "label_map": parse_label_map(label_map)},
        "out": out,
        "network": {"dim": dim, "n_s": n_s},
        "preprocess": {"size": int_list(size), "intensity": intensity},
        "train": train_overrides(epochs, batch_size, lr, seed, device, progress, precision),
    }
    resolved = resolve_spec(PretrainSpec, overrides, spec, preset_values(preset, "pretrain"))
    result = run_pretrain(
        resolved, resume=resume, console=console, cache=PreprocessCache(enabled=not no_cache)
    )
    if not is_main():
        return
    table = Table(title="Validation Dice (network grid)")
    table.add_column("label")
    table.add_column("Dice", justify="right")
    for name, value in result.dice.items():
        table.add_row(name, "—" if value is None else f"{value:.3f}")
    if result.mean_dice is not None:
        table.add_row("[bold]mean", f"[bold]{result.mean_dice:.3f}")
    console.print(table)
    console.print(f"model: {result.model_path}  run folder: {result.run_dir}  ({result.stopped})")
