"""``segfew predict``: run a model file over new scans."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path
from typing import Annotated

import typer

from segfew.choices import Precision
from segfew.cli.common import (
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
from segfew.errors import DataWarning
from segfew.spec import PredictSpec, given_keys

P = PredictSpec


@handle_errors
def predict(
    model: Annotated[list[Path] | None, setting(
        P, "model", "Model file (segfew pretrain or train-classifier); repeat for an ensemble "
        "of classifiers with the same classes (their probabilities averaged).",
        "--model", "-m", metavar="<path>")] = None,
    input: Annotated[list[Path] | None, setting(
        P, "inputs", "Image file or folder; repeat for more (spec key: inputs).",
        "--input", "-i", metavar="<path>")] = None,
    out: Annotated[Path | None, setting(
        P, "out", "Classifier: the CSV to write. Segmentation model: the folder for label maps."
    )] = None,
    recursive: Annotated[bool | None, setting(P, "recursive", "Look into sub-folders too.")
                         ] = None,
    channels: ChannelsOpt = None,
    probabilities: Annotated[bool | None, setting(
        P, "probabilities", "Segmentation: also write <id>_prob.nii.gz, one channel per label."
    )] = None,
    min_confidence: Annotated[float | None, setting(
        P, "min_confidence", "Classifier: flag a case low_confidence when its top class "
        "probability is below this (default: halfway from a uniform guess to certainty, "
        "(1 + 1/K) / 2 for K classes: 0.75 for 2, 0.6 for 5).", min=0.0, max=1.0)] = None,
    tta: Annotated[bool | None, setting(
        P, "tta", "Segmentation: test-time augmentation, the mean of 5 shifted copies "
        "(5× the time).")] = None,
    masks: Annotated[Path | None, setting(
        P, "masks", "Classifier trained with --masks: the folder of these scans' label maps.")
    ] = None,
    device: Annotated[str | None, setting(P, "device", "auto, cpu, cuda, cuda:1 …")] = None,
    threads: ThreadsOpt = None,
    precision: Annotated[Precision | None, setting(
        P, "precision", "auto (bf16 where the hardware has it, fp16 on older GPUs, else fp32), "
        "fp32, bf16 or fp16.")] = None,
    batch_size: Annotated[int | None, setting(
        P, "batch_size", "Images (or slices) per forward pass.", min=1)] = None,
    workers: Annotated[int | None, setting(
        P, "workers", "Processes reading scans ahead of the network (default: one per core beyond "
        "the first, at most 4; none on 2 cores).",
        min=0)] = None,
    explain: Annotated[Path | None, setting(
        P, "explain", "Classifier: a folder for one evidence sheet per case (segmentation, "
        "where the classifier looked or which measurements drove it, probabilities) and "
        "index.html, lowest confidence first.", metavar="<dir>")] = None,
    spec: SpecOpt = None,
    overwrite: Annotated[bool, typer.Option(
        help="Replace files at --out that segfew did not write (by default refused).",
        show_default="off")] = False,
    progress: ProgressOpt = True,
) -> None:
    """Predict a class (or a label map) for every scan; a bad file gets an error row.

    Example: segfew predict --model clf.pt --input scans/ --out predictions.csv

    Classifier: one CSV row per case (id, path, predicted, p_<class>…, confidence,
    low_confidence, status, error); several --model files predict as one ensemble.

    Segmentation model: a folder (--out) of <id>_seg.nii.gz in each scan's own geometry.

    Beside them goes the run record: <out stem>.run.json next to the CSV, or DIR/run.json.
    A file at --out that segfew did not write is never replaced without --overwrite.

    The exit code is 1 when any case failed, after every row is written.
    """
    from segfew.inference.paths import predict_paths
    from segfew.runtime import set_threads

    overrides = {
        "model": model,
        "inputs": input or None,
        "out": out,
        "recursive": recursive,
        "channels": split_list(channels),
        "device": device,
        "threads": threads,
        "precision": precision,
        "batch_size": batch_size,
        "workers": workers,
        "probabilities": probabilities,
        "min_confidence": min_confidence,
        "tta": tta,
        "masks": masks,
        "explain": explain,
    }
    resolved = resolve(PredictSpec, overrides, spec, rename={"inputs": "--input"})
    set_threads(resolved.threads)
    with ProgressView(progress) as bar:
        path, failed, count = predict_paths(
            resolved.model, resolved.inputs, resolved.out, recursive=resolved.recursive,
            channels=resolved.channels, device=resolved.device,
            precision=resolved.precision, batch_size=resolved.batch_size,
            workers=resolved.workers, progress=bar.cases("cases"),
            probabilities=resolved.probabilities,
            min_confidence=resolved.min_confidence,
            tta=resolved.tta, run_spec=resolved, masks=resolved.masks,
            explain=resolved.explain, overwrite=overwrite)
    idle = [f"--{k.replace('_', '-')}" for k in ("device", "batch_size", "precision")
            if k in given_keys(overrides, spec)]
    if idle and resolved.masks is not None:  # the model took the label maps: no network ran
        warnings.warn(DataWarning(f"{', '.join(idle)} not used: with --masks no network runs, "
                                  "the label maps are given", resolved.masks), stacklevel=1)
    style = "bold red" if failed else "green"
    where = path if path.suffix else path / "predictions.csv"
    hint = f" (errors in {where})" if failed else ""
    doubtful = _low_confidence(path) if path.suffix else 0
    flagged = f", {doubtful} low_confidence" if doubtful else ""
    console.print(f"[{style}]{count} cases, {failed} failed{flagged}[/] → {path}{hint}",
                  highlight=False)
    if resolved.explain is not None:
        console.print(f"evidence sheets → {resolved.explain / 'index.html'}", highlight=False)
    if failed:
        raise typer.Exit(1)


def _low_confidence(table: Path) -> int:
    """How many rows of a classifier's table are flagged ``low_confidence``."""
    with table.open(newline="", encoding="utf-8") as f:
        dialect = "excel-tab" if table.suffix.lower() == ".tsv" else "excel"
        return sum(row.get("low_confidence") == "yes" for row in csv.DictReader(f, dialect=dialect))
