"""``segfew train-classifier``: a classifier from few image-level labels."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from segfew.cli.common import (
    BatchSizeOpt,
    ChannelsOpt,
    DeviceOpt,
    EpochsOpt,
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
    split_list,
    train_overrides,
)


@handle_errors
def train_classifier(
    table: Annotated[
        Path | None, typer.Option(help="CSV/TSV of id (or path) and class; optional group.")
    ] = None,
    images: Annotated[
        Path | None, typer.Option(help="Folder of images (or of class sub-folders).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Model file to write, e.g. clf.pt.")] = None,
    framework: Annotated[
        str | None, typer.Option(help="manual, threshold, scratch, vgg or measures.")
    ] = None,
    features: Annotated[
        Path | None, typer.Option(help="Segmentation model file (manual/threshold).")
    ] = None,
    vgg_weights: Annotated[
        Path | None, typer.Option(help="Local torchvision VGG-16 weights (vgg).")
    ] = None,
    channels: ChannelsOpt = None,
    id_column: Annotated[str | None, typer.Option()] = None,
    label_column: Annotated[str | None, typer.Option()] = None,
    group_column: Annotated[
        str | None, typer.Option(help="Kept on one side of every split.")
    ] = None,
    classes: Annotated[
        int | None, typer.Option(help="Check that the table has this many classes.")
    ] = None,
    finetune: Annotated[
        bool | None, typer.Option("--finetune/--frozen", help="Unfreeze the segmentation network.")
    ] = None,
    preset: PresetOpt = None,
    size: Annotated[
        str | None, typer.Option(help="Grid size, one value or one per axis: 64,64,16.")
    ] = None,
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
    """Train a classifier on a frozen segmentation network's features, or a baseline.

    Example: segfew train-classifier --table labels.csv --images images --framework manual
    --features seg.pt --out clf.pt
    """
    from segfew.config import ClassifierSpec, resolve_spec
    from segfew.config import preset as preset_values
    from segfew.pipeline import train_classifier as run_train
    from segfew.preprocess import PreprocessCache
    from segfew.train.distributed import is_main

    overrides = {
        "data": {
            "images": images,
            "table": table,
            "channels": split_list(channels),
            "id_column": id_column,
            "label_column": label_column,
            "group_column": group_column,
        },
        "out": out,
        "framework": framework,
        "features": features,
        "vgg_weights": vgg_weights,
        "classes": classes,
        "finetune": finetune,
        "preprocess": {"size": int_list(size)},
        "train": train_overrides(epochs, batch_size, lr, seed, device, progress, precision),
    }
    fw = framework
    if fw is None and spec is not None:
        from segfew.config import read_spec_file

        fw = read_spec_file(spec).get("framework")
    resolved = resolve_spec(
        ClassifierSpec, overrides, spec, preset_values(preset, "classifier", fw)
    )
    result = run_train(
        resolved, resume=resume, console=console, cache=PreprocessCache(enabled=not no_cache)
    )
    if is_main():
        last = result.history[-1] if result.history else {}
        figures = ", ".join(
            f"{k} {v:.3f}" for k, v in last.items() if isinstance(v, float) and k != "seconds"
        )
        console.print(f"classes: {', '.join(result.classes)}")
        console.print(f"last epoch: {figures}")
        console.print(
            f"model: {result.model_path}  run folder: {result.run_dir}  "
            f"({result.stopped}, {result.seconds:.0f} s)"
        )
