"""``segfew pretrain``: train the segmentation network that later serves as a feature source."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from rich.table import Table

from segfew.choices import Intensity, Precision
from segfew.cli.common import (
    GROUP_COLUMN_HELP,
    ID_COLUMN_HELP,
    ChannelsOpt,
    LabelMapOpt,
    NoCacheOpt,
    OverwriteOpt,
    PresetOpt,
    ProgressOpt,
    ResumeOpt,
    SpecOpt,
    ThreadsOpt,
    console,
    handle_errors,
    int_list,
    parse_label_map,
    resolve,
    setting,
    split_list,
    train_overrides,
)
from segfew.cli.render import ProgressView
from segfew.spec import PretrainSpec
from segfew.spec import preset as preset_values

P = PretrainSpec


@handle_errors
def pretrain(
    images: Annotated[Path | None, setting(
        P, "data.images", "Folder of images (or of class sub-folders).")] = None,
    labels: Annotated[Path | None, setting(
        P, "data.labels", "Folder of voxel label maps, matched by case id (expert masks, or "
        "the output of segfew label).")] = None,
    out: Annotated[Path | None, setting(P, "out", "Model file to write, e.g. seg.pt.")] = None,
    table: Annotated[Path | None, setting(
        P, "data.table", "CSV/TSV of the cases to use (id or path column); optional.")] = None,
    recursive: Annotated[bool | None, setting(
        P, "data.recursive", "Look for images in sub-folders too.")] = None,
    id_column: Annotated[str | None, setting(P, "data.id_column", ID_COLUMN_HELP)] = None,
    label_column: Annotated[str | None, setting(
        P, "data.label_column", "Table column of classes (none is needed).")] = None,
    group_column: Annotated[str | None, setting(
        P, "data.group_column", GROUP_COLUMN_HELP + " The model file records them: evaluate "
        "refuses other cases of these patients.")] = None,
    dim: Annotated[Literal[2, 3] | None, setting(
        P, "network.dim", "Network dimension: 2 (slices) or 3 (volumes).")] = None,
    channels: ChannelsOpt = None,
    label_map: LabelMapOpt = None,
    preset: PresetOpt = None,
    n_s: Annotated[int | None, setting(P, "network.n_s", "Base width n_s of the M-Net.",
                                       "--n-s")] = None,
    size: Annotated[str | None, setting(
        P, "preprocess.size", "Grid size, one value or one per axis: 128 or 128,128.")] = None,
    intensity: Annotated[Intensity | None, setting(
        P, "preprocess.intensity", "Intensity normalisation.")] = None,
    epochs: Annotated[int | None, setting(P, "train.epochs", "Training epochs.")] = None,
    batch_size: Annotated[int | None, setting(P, "train.batch_size", "Global batch size.")
                          ] = None,
    lr: Annotated[float | None, setting(P, "train.lr", "Adam learning rate.")] = None,
    seed: Annotated[int | None, setting(P, "train.seed", "Seed of every random number.")] = None,
    device: Annotated[str | None, setting(P, "train.device", "auto, cpu, cuda, cuda:1 …")] = None,
    threads: ThreadsOpt = None,
    precision: Annotated[Precision | None, setting(P, "train.precision")] = None,
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
    no_cache: NoCacheOpt = False,
    spec: SpecOpt = None,
    progress: ProgressOpt = True,
) -> None:
    """Train the modified M-Net on images with voxel labels (expert or k-means).

    Example: segfew pretrain --images data/images --labels data/labels --dim 2 --out seg.pt
    """
    from segfew.jobs.pretrain import pretrain as run_pretrain
    from segfew.preprocess.cache import PreprocessCache
    from segfew.train.distributed import is_main

    overrides = {
        "data": {"images": images, "labels": labels, "table": table, "recursive": recursive,
                 "id_column": id_column, "label_column": label_column,
                 "group_column": group_column, "channels": split_list(channels),
                 "label_map": parse_label_map(label_map)},
        "out": out,
        "network": {"dim": dim, "n_s": n_s},
        "preprocess": {"size": int_list(size), "intensity": intensity},
        "train": train_overrides(epochs, batch_size, lr, seed, device, progress, threads,
                                 precision),
    }
    resolved = resolve(PretrainSpec, overrides, spec, preset_values(preset, "pretrain"))
    with ProgressView(resolved.train.progress and is_main()) as view:
        result = run_pretrain(resolved, resume=resume, overwrite=overwrite, progress=view,
                              cache=PreprocessCache(enabled=not no_cache))
    if not is_main():
        return
    table_out = Table(title="Validation Dice (network grid)")
    table_out.add_column("label")
    table_out.add_column("Dice", justify="right")
    for name, value in result.dice.items():
        table_out.add_row(name, "—" if value is None else f"{value:.3f}")
    if result.mean_dice is not None:
        table_out.add_row("[bold]mean", f"[bold]{result.mean_dice:.3f}")
    if any(v is not None for v in result.dice.values()):
        console.print(table_out)
    else:
        console.print("no validation cases: Dice not measured", highlight=False)
    console.print(f"model: {result.model_path}  run folder: {result.run_dir}  ({result.stopped})",
                  highlight=False)
