"""The ``label`` job: labels without an expert for every image of a folder or table.

From a validated :class:`~segfew.spec.LabelSpec` to one label map per image, their names
(``label_names.json``, which ``pretrain`` reads), a preview and, for k-means, the centres
(the algorithms are :mod:`segfew.labelling.kmeans` and :mod:`segfew.labelling.cavities`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from segfew.data import find_cases
from segfew.data.label_names import CENTRES_FILE, LABEL_NAMES_FILE
from segfew.data.read import read_case
from segfew.errors import DataError, DataWarning, SegfewError
from segfew.evaluation.figures import plot_label_preview
from segfew.files import (
    RUN_RECORD,
    check_output,
    check_replace,
    is_recorded,
    output_lock,
    outputs_record,
    write_json,
)
from segfew.inference.batch import CASE_ERRORS, one_line
from segfew.inference.paths import SEGMENTATION_TABLE
from segfew.inference.run import check_source_memory
from segfew.io import case_id, write_image
from segfew.labelling.cavities import LABEL_NAMES, LV, cine_cavities, slice_axis_of
from segfew.labelling.kmeans import (
    PREVIEW_FILE,
    KMeansLabeller,
    fit_kmeans,
)
from segfew.runinfo import write_run_info
from segfew.runtime import set_threads
from segfew.spec import LabelSpec

if TYPE_CHECKING:
    from segfew.data import Case
    from segfew.io import Image
    from segfew.typing import Progress

#: how many images the preview shows beside their labels
PREVIEW_IMAGES = 4


def label_images(spec: LabelSpec, progress: Progress | None = None, overwrite: bool = False
                 ) -> list[Path]:
    """``segfew label``: write one label map per image, by k-means or cine cavities.

    Images are found as ``train-classifier`` finds them (``spec.table``, class sub-folders,
    ``spec.recursive``). Writes ``<out>/<id>_seg.nii.gz`` in each image's source geometry,
    ``<out>/label_names.json``, ``<out>/preview/kmeans_preview.png`` (a few images beside
    their labels) and ``<out>/run.json``; method ``kmeans`` fits (or loads) the centres and
    writes ``<out>/centres.json``; method ``cavities`` labels each case from all its phases
    at once (:func:`segfew.labelling.cavities.cine_cavities`).

    A case that cannot be read or labelled is skipped with a DataWarning naming its file (and
    left out of a k-means fit); the others are labelled, and ``run.json`` lists the skipped
    (``failed``: path and reason; :func:`label_failures`). A DataError when no case is left.
    Label maps are moved into ``out`` only when all of them are done, so a run stopped
    part-way leaves no partial output. Before any work, a file this run would replace that
    no earlier segfew run recorded writing there is refused unless ``overwrite``
    (:func:`segfew.files.check_replace`). A second run into ``spec.out`` at the same time
    is refused (:func:`segfew.files.output_lock`).
    """
    with output_lock(spec.out):
        return _label_images(spec, progress, overwrite)


def _label_images(spec: LabelSpec, progress: Progress | None, overwrite: bool) -> list[Path]:
    report = progress or (lambda done, total, what: None)
    cases = find_cases(spec.images, spec.table, spec.channels, spec.id_column, spec.recursive,
                       spec.label_column)
    if not cases:
        raise DataError("no images found", spec.table or spec.images)
    paths = [p for case in cases for p in case.images]
    # One label map per image file: a multi-channel case gets one per channel file.
    names = {p: f"{case.id if len(case.images) == 1 else case_id(p)}_seg.nii.gz"
             for case in cases for p in case.images}
    given = [p for p in (spec.images, spec.table, spec.centres) if p is not None]
    out = check_output(spec.out, [*given, *paths], "folder")

    failed: dict[Path, str] = {}  # a skipped case's first file: why

    def read_cases(stage: str) -> Iterator[tuple[Case, list[Image]]]:
        """Every case with its images, read through the door (all its checks); one that
        fails is skipped with a warning (once), and none left is a DataError."""
        done = 0
        for case in cases:
            report(done, len(paths), stage)
            done += len(case.images)
            if case.images[0] in failed:
                continue
            try:
                images = read_case(case)[0]
                check_source_memory(images, case.images[0])  # labels are made on its grid
            except CASE_ERRORS as e:
                _skip(failed, case, e)
                continue
            yield case, images
        report(len(paths), len(paths), stage)
        if len(failed) == len(cases):
            first, why = next(iter(failed.items()))
            raise DataError(f"none of the {len(cases)} case(s) could be labelled (the first: "
                            f"{why})", first)

    # refusals before any work (and before the thread count is said)
    _refuse_other_labels(out, set(names.values()), spec.method != "cavities")
    # a segmentation predict's table of the maps replaced here would describe them no more:
    # removed if segfew's, else refused
    stale = [SEGMENTATION_TABLE] if (out / SEGMENTATION_TABLE).exists() else []
    check_replace(out / RUN_RECORD, [*names.values(), LABEL_NAMES_FILE, PREVIEW_FILE.as_posix(),
                                     *([CENTRES_FILE] if spec.method != "cavities" else []),
                                     *stale, RUN_RECORD], overwrite)
    labeller: KMeansLabeller | None = None
    if spec.method == "cavities":
        label_names = list(LABEL_NAMES)
    elif spec.centres is not None:
        labeller = KMeansLabeller.from_file(spec.centres)
    set_threads(spec.threads)
    if spec.method != "cavities" and labeller is None:
        labeller = fit_kmeans((im.array for _, ims in read_cases("sampling intensities")
                               for im in ims), spec.k,
                              keep_background=spec.keep_background,
                              background_threshold=spec.background_threshold,
                              sample_per_image=spec.sample_per_image, seed=spec.seed,
                              intensity=spec.intensity)
    if labeller is not None:
        label_names = labeller.label_names()

    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".segfew-label-", dir=out))
    shown: list[tuple[str, np.ndarray, np.ndarray]] = []
    try:
        for case, images in read_cases("writing labels"):
            try:
                maps = ([labeller.label(im.array) for im in images] if labeller is not None
                        else _case_cavities(case, images))
                for image, labels in zip(images, maps, strict=True):
                    assert image.path is not None
                    write_image(labels, image, staging / names[image.path])
            except CASE_ERRORS as e:
                _skip(failed, case, e)
                continue
            for image, labels in zip(images, maps, strict=True):
                if len(shown) < PREVIEW_IMAGES and image.path is not None:
                    shown.append((names[image.path].removesuffix("_seg.nii.gz"), image.array,
                                  labels))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created:
            shutil.rmtree(out, ignore_errors=True)  # a refused run leaves no folder
        raise
    written = []
    skipped = {p for case in cases if case.images[0] in failed for p in case.images}
    for p in paths:
        if p in skipped:  # an earlier run's map of it would mix two labellings
            (staging / names[p]).unlink(missing_ok=True)
            (out / names[p]).unlink(missing_ok=True)
            continue
        os.replace(staging / names[p], out / names[p])
        written.append(out / names[p])
    shutil.rmtree(staging, ignore_errors=True)
    if stale and is_recorded(out / RUN_RECORD, SEGMENTATION_TABLE):
        (out / SEGMENTATION_TABLE).unlink(missing_ok=True)
    if labeller is not None:
        labeller.save(out / CENTRES_FILE)
    write_json(out / LABEL_NAMES_FILE, {"method": spec.method, "label_names": label_names})
    plot_label_preview(shown, label_names, out / PREVIEW_FILE,
                       "k-means labels" if labeller is not None else "cine cavities")
    outputs = [p.name for p in written] + [LABEL_NAMES_FILE, PREVIEW_FILE.as_posix(),
                                           *([CENTRES_FILE] if labeller is not None else [])]
    write_run_info(out, spec, spec.seed, inputs=paths, extra={
        "failed": [{"path": str(p), "error": why} for p, why in failed.items()],
        **outputs_record(out / RUN_RECORD, outputs)})
    return written


def label_failures(out: str | Path) -> list[dict[str, str]]:
    """The cases a ``label`` run into ``out`` skipped (``path``, ``error``), from its
    ``run.json``; empty when it has none or cannot be read."""
    try:
        info = json.loads((Path(out) / RUN_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    failed = info.get("failed") if isinstance(info, dict) else None
    return [f for f in failed if isinstance(f, dict)] if isinstance(failed, list) else []


def _skip(failed: dict[Path, str], case: Case, error: BaseException) -> None:
    """Record a case that cannot be labelled and say so: one line naming its file."""
    first = Path(case.images[0])
    if isinstance(error, SegfewError):
        where, why = error.path or first, error.message
    else:
        where, why = first, one_line(error)
    failed[first] = why
    warnings.warn(DataWarning(f"{why}; skipped: no label map for it", where), stacklevel=3)


def _refuse_other_labels(out: Path, maps: set[str], kmeans: bool) -> None:
    """A folder already holding label maps (or k-means centres) this run would not replace
    would mix two labellings, which ``pretrain`` reads as one: refused, naming one."""
    if not out.is_dir():
        return
    stale = sorted(p.name for p in out.glob("*_seg.nii.gz") if p.name not in maps)
    if not kmeans and (out / CENTRES_FILE).exists():
        stale.insert(0, CENTRES_FILE)
    if stale:
        raise DataError(f"holds {len(stale)} label file(s) of another run (e.g. {stale[0]}) "
                        "that this run would not replace: give an empty or new folder", out)


def _case_cavities(case: Case, images: list[Image]) -> list[np.ndarray]:
    """The cavities of one case; a DataWarning names a case whose maps say little (no heart
    found, ES larger than ED, a pixel size the rules were not made for)."""
    first = case.images[0]
    spacing = images[0].spacing
    try:
        maps = cine_cavities([im.array for im in images], spacing)
    except ValueError as e:
        raise DataError(str(e), first) from None
    axis = slice_axis_of(images[0].shape, spacing)
    in_plane = [float(v) for a, v in enumerate(spacing) if a != axis]
    lv = [int((m == LV).sum()) for m in maps]
    if lv[0] == 0:
        warnings.warn(DataWarning(f"{first}: no heart found (no bright cavity that moves "
                                  "between the phases): its label maps are empty"), stacklevel=2)
    elif any(v > lv[0] for v in lv[1:]):
        warnings.warn(DataWarning(f"{first}: the LV is larger in a later phase than in the "
                                  "first: is the first channel end-diastole?"), stacklevel=2)
    if not all(1.0 <= v <= 2.5 for v in in_plane):
        warnings.warn(DataWarning(
            f"{first}: pixels of {' × '.join(f'{v:g}' for v in in_plane)} mm; the cavity rules "
            "are sized for cine MRI at 1.2–2 mm: resample in-plane first"), stacklevel=2)
    return maps
