"""``segfew predict``: run a model file over new scans."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from segfew.cli.common import (
    ChannelsOpt,
    PrecisionOpt,
    ProgressOpt,
    SpecOpt,
    console,
    handle_errors,
    split_list,
)


class CaseProgress:
    """A ``progress(done, total)`` callback drawing a rich bar on stderr (or nothing)."""

    def __init__(self, description: str, enabled: bool) -> None:
        self.description = description
        self.enabled = enabled
        self.total = 0
        self.done = 0
        self._bar: object | None = None
        self._task: object | None = None

    def __call__(self, done: int, total: int) -> None:
        self.done, self.total = done, total
        if self._bar is None:
            return
        from rich.progress import Progress, TaskID

        assert isinstance(self._bar, Progress) and isinstance(self._task, int)
        self._bar.update(TaskID(self._task), completed=done, total=total)

    @contextlib.contextmanager
    def show(self) -> Iterator[CaseProgress]:
        if not self.enabled:
            yield self
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeRemainingColumn(), console=console, transient=True) as bar:
            self._bar, self._task = bar, int(bar.add_task(self.description, total=None))
            try:
                yield self
            finally:
                self._bar = self._task = None


@handle_errors
def predict(
    model: Annotated[Path | None, typer.Option(
        help="Model file (segfew pretrain or train-classifier).")] = None,
    input: Annotated[list[Path] | None, typer.Option(
        "--input", "-i", metavar="PATH",
        help="Image file or folder; repeat for more (spec key: inputs).")] = None,
    out: Annotated[Path | None, typer.Option(
        help="Classifier: the CSV to write. Segmentation model: the folder for label maps.")
    ] = None,
    recursive: Annotated[bool | None, typer.Option(help="Look into sub-folders too.")] = None,
    channels: ChannelsOpt = None,
    probabilities: Annotated[bool | None, typer.Option(
        help="Segmentation: also write <id>_prob.nii.gz (one channel per label).")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:1 …")] = None,
    precision: PrecisionOpt = None,
    batch_size: Annotated[int | None, typer.Option(
        min=1, help="Images (or slices) per forward pass.")] = None,
    spec: SpecOpt = None,
    progress: ProgressOpt = True,
) -> None:
    """Predict a class (or a label map) for every scan; a bad file gets an error row.

    Example: segfew predict --model clf.pt --input scans/ --out predictions.csv

    Classifier: one CSV row per case (id, path, predicted, p_<class>…, status, error).

    Segmentation model: a folder (--out) of <id>_seg.nii.gz in each scan's own geometry.

    Beside them goes the run record: <out stem>.run.json next to the CSV, or DIR/run.json.

    The exit code is 1 when any case failed, after every row is written.
    """
    from segfew.config import PredictSpec, resolve_spec
    from segfew.predict import predict_paths

    overrides = {
        "model": model,
        "inputs": input or None,
        "out": out,
        "recursive": recursive,
        "channels": split_list(channels),
        "device": device,
        "precision": precision,
        "batch_size": batch_size,
        "probabilities": probabilities,
    }
    resolved = resolve_spec(PredictSpec, overrides, spec)
    with CaseProgress("predicting", progress).show() as bar:
        path, failed = predict_paths(
            resolved.model, resolved.inputs, resolved.out, recursive=resolved.recursive,
            channels=resolved.channels, device=resolved.device,
            precision=resolved.precision, batch_size=resolved.batch_size, progress=bar,
            probabilities=resolved.probabilities, run_spec=resolved)
    style = "bold red" if failed else "green"
    where = path if path.suffix else path / "predictions.csv"
    hint = f" (errors in {where})" if failed else ""
    console.print(f"[{style}]{bar.total} cases, {failed} failed[/] → {path}{hint}",
                  highlight=False)
    if failed:
        raise typer.Exit(1)
