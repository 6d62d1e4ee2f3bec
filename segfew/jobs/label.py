"""The ``label`` job: labels without an expert for every image of a folder or table.

From a validated :class:`~segfew.spec.LabelSpec` to one label map per image, their names
(``label_names.json``, which ``pretrain`` reads), a preview and, for k-means, the centres
(the algorithms are :mod:`segfew.labelling.kmeans` and :mod:`segfew.labelling.cavities`).
"""

from __future__ import annotations

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
from segfew.errors import DataError, DataWarning
from segfew.evaluation.figures import plot_label_preview
from segfew.files import check_output, write_json
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


def label_images(spec: LabelSpec, progress: Progress | None = None) -> list[Path]:
    """``segfew label``: write one label map per image, by k-means or cine cavities.

    Images are found as ``train-classifier`` finds them (``spec.table``, class sub-folders,
    ``spec.recursive``). Writes ``<out>/<id>_seg.nii.gz`` in each image's source geometry,
    ``<out>/label_names.json``, ``<out>/preview/kmeans_preview.png`` (a few images beside
    their labels) and ``<out>/run.json``; method ``kmeans`` fits (or loads) the centres and
    writes ``<out>/centres.json``; method ``cavities`` labels each case from all its phases
    at once (:func:`segfew.labelling.cavities.cine_cavities`). Label maps are moved into ``out``
    only
    when all of them are done, so a bad image stops the run with a DataError naming it and
    leaves no partial output.
    """
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

    def read_cases(stage: str) -> Iterator[tuple[Case, list[Image]]]:
        """Every case with its images, read through the door (all its checks)."""
        done = 0
        for case in cases:
            report(done, len(paths), stage)
            images = read_case(case)[0]
            check_source_memory(images, case.images[0])  # labels are made on its own grid
            yield case, images
            done += len(case.images)
        report(len(paths), len(paths), stage)

    # refusals before any work (and before the thread count is said)
    _refuse_other_labels(out, set(names.values()), spec.method != "cavities")
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
            maps = ([labeller.label(im.array) for im in images] if labeller is not None
                    else _case_cavities(case, images))
            for image, labels in zip(images, maps, strict=True):
                assert image.path is not None
                write_image(labels, image, staging / names[image.path])
                if len(shown) < PREVIEW_IMAGES:
                    shown.append((names[image.path].removesuffix("_seg.nii.gz"), image.array,
                                  labels))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created:
            shutil.rmtree(out, ignore_errors=True)  # a refused run leaves no folder
        raise
    written = []
    for p in paths:
        os.replace(staging / names[p], out / names[p])
        written.append(out / names[p])
    shutil.rmtree(staging, ignore_errors=True)
    if labeller is not None:
        labeller.save(out / CENTRES_FILE)
    write_json(out / LABEL_NAMES_FILE, {"method": spec.method, "label_names": label_names})
    plot_label_preview(shown, label_names, out / PREVIEW_FILE,
                       "k-means labels" if labeller is not None else "cine cavities")
    write_run_info(out, spec, spec.seed, inputs=paths)
    return written


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
