"""``segfew train-classifier``: a classifier from few image-level labels."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

from segfew.choices import Framework, Precision
from segfew.cli.common import (
    GROUP_COLUMN_HELP,
    ID_COLUMN_HELP,
    LABEL_COLUMN_HELP,
    ChannelsOpt,
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
    warn_unused,
)
from segfew.cli.render import ProgressView
from segfew.spec import ClassifierSpec, given_keys, read_spec_file
from segfew.spec import preset as preset_values

C = ClassifierSpec


@handle_errors
def train_classifier(
    table: Annotated[Path | None, setting(
        C, "data.table", "CSV/TSV of id (or path) and class; optional group.")] = None,
    images: Annotated[Path | None, setting(
        C, "data.images", "Folder of images (or of class sub-folders).")] = None,
    out: Annotated[Path | None, setting(C, "out", "Model file to write, e.g. clf.pt.")] = None,
    framework: Annotated[Framework | None, setting(
        C, "framework", "What the classifier learns from (see the README's table).")] = None,
    features: Annotated[Path | None, setting(
        C, "features", "Segmentation model file (manual, threshold, measures), or a trained "
        "nnU-Net v2 results folder (measures, manual; pip install 'segfew\\[nnunet]').")] = None,
    masks: Annotated[Path | None, setting(
        C, "masks", "measures: folder of label maps from another tool, matched to the "
        "images by id (instead of --features).")] = None,
    label_names: Annotated[str | None, setting(
        C, "label_names", "measures --masks: names of label values 0, 1, …, background first "
        "(default: label_names.json in the masks folder).")] = None,
    label_map: Annotated[str | None, setting(
        C, "data.label_map", "measures --masks: remap their label values first, e.g. 255:1 for "
        "0/255 masks (the model records it; predict and evaluate remap alike).")] = None,
    vgg_weights: Annotated[Path | None, setting(
        C, "vgg_weights", "Local torchvision VGG-16 weights (vgg).")] = None,
    channels: ChannelsOpt = None,
    id_column: Annotated[str | None, setting(C, "data.id_column", ID_COLUMN_HELP)] = None,
    label_column: Annotated[str | None, setting(
        C, "data.label_column", LABEL_COLUMN_HELP)] = None,
    group_column: Annotated[str | None, setting(
        C, "data.group_column", GROUP_COLUMN_HELP)] = None,
    classes: Annotated[int | None, setting(
        C, "classes", "Check that the table has this many classes.")] = None,
    finetune: Annotated[bool | None, setting(
        C, "finetune", "Unfreeze the segmentation network.", "--finetune/--frozen")] = None,
    tta: Annotated[bool | None, setting(
        C, "tta", "measures: segment with test-time augmentation (5 shifted copies).")] = None,
    preset: PresetOpt = None,
    size: Annotated[str | None, setting(
        C, "preprocess.size", "Grid size, one value or one per axis: 64,64,16.")] = None,
    epochs: Annotated[int | None, setting(C, "train.epochs", "Training epochs.")] = None,
    batch_size: Annotated[int | None, setting(C, "train.batch_size", "Global batch size.")
                          ] = None,
    lr: Annotated[float | None, setting(C, "train.lr", "Adam learning rate.")] = None,
    seed: Annotated[int | None, setting(C, "train.seed", "Seed of every random number.")] = None,
    device: Annotated[str | None, setting(C, "train.device", "auto, cpu, cuda, cuda:1 …")] = None,
    threads: ThreadsOpt = None,
    precision: Annotated[Precision | None, setting(C, "train.precision")] = None,
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
    no_cache: NoCacheOpt = False,
    spec: SpecOpt = None,
    progress: ProgressOpt = True,
) -> None:
    """Train a classifier on a frozen segmentation network's features, or a baseline.

    Example: segfew train-classifier --table labels.csv --images images --framework manual
    --features seg.pt --out clf.pt
    """
    from segfew.jobs.train_classifier import train_classifier as run_train
    from segfew.preprocess.cache import PreprocessCache
    from segfew.train.distributed import is_main

    overrides = {
        "data": {
            "images": images,
            "table": table,
            "channels": split_list(channels),
            "id_column": id_column,
            "label_column": label_column,
            "group_column": group_column,
            "label_map": parse_label_map(label_map),
        },
        "out": out,
        "framework": framework,
        "features": features,
        "masks": masks,
        "label_names": split_list(label_names),
        "vgg_weights": vgg_weights,
        "classes": classes,
        "finetune": finetune,
        "tta": tta,
        "preprocess": {"size": int_list(size)},
        "train": train_overrides(epochs, batch_size, lr, seed, device, progress, threads,
                                 precision),
    }
    fw = framework
    if fw is None and spec is not None:
        fw = read_spec_file(spec).get("framework")
    resolved = resolve(ClassifierSpec, overrides, spec, preset_values(preset, "classifier", fw))
    warn_unused(resolved, given_keys(overrides, spec), overrides)
    with ProgressView(resolved.train.progress and is_main()) as view:
        result = run_train(resolved, resume=resume, overwrite=overwrite, progress=view,
                           cache=PreprocessCache(enabled=not no_cache))
    if is_main():
        last = result.history[-1] if result.history else {}
        figures = ", ".join(
            f"{k} {v:.4g}" for k, v in last.items()
            if isinstance(v, float) and k not in ("seconds", "epoch") and not math.isnan(v)
        )
        console.print(f"classes: {', '.join(result.classes)}", highlight=False)
        if figures:
            console.print(f"last epoch: {figures}", highlight=False)
        console.print(
            f"model: {result.model_path}  run folder: {result.run_dir}  "
            f"({result.stopped}, {result.seconds:.0f} s)", highlight=False
        )
        for line in trust_lines(result.metrics):
            console.print(line, highlight=False, markup=False)


def trust_lines(metrics: dict[str, Any]) -> list[str]:
    """The validation accuracy with its interval and chance (fitted networks; that there is
    no estimate when no case was held out), or what the inner cross-validation of framework
    measures tried, chose and honestly estimates."""
    from segfew.inference.fit_measures import describe_selection
    from segfew.metrics import chance_words

    lines = describe_selection(metrics)
    val = metrics.get("validation_accuracy")
    if val and val.get("accuracy") is not None:
        ci = val.get("ci")
        text = (f"validation accuracy (kept epoch): {val['accuracy']:.2f}"
                + (f" [95% CI {ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")
                + f" on {val['n']} cases")
        words = chance_words(val)
        lines.append(text + (f" — {words}" if words else ""))
    elif not lines:  # a fitted network with no validation cases
        lines.append("no estimate of accuracy: no cases were held out for validation — score "
                     "the model with `segfew evaluate` on cases it never saw, or draw a "
                     "learning curve with `segfew experiment`")
    return lines
