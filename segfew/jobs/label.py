"""The ``label`` job: labels without an expert for every image of a folder or table.

From a validated :class:`~segfew.spec.LabelSpec` to one label map per image, their names
(``label_names.json``, which ``pretrain`` reads), a preview and, for k-means, the centres
(the algorithms are :mod:`segfew.labelling.kmeans` and :mod:`segfew.labelling.cavities`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
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
    (``failed``: path and reason; :func:`label_failures`). A DataError when no case is left,
    when a file cannot be written (naming its place in ``out``), when ``spec.centres`` fixes
    a setting given otherwise (:func:`refuse_unlike_centres`), or when most cavities cases
    look to have their phases in the order ES, ED (:func:`_refuse_phases_reversed`).
    Every file is written into a hidden folder of ``out`` first and moved into place only
    when all are done (:func:`commit_staged`): a run stopped part-way, by an error or an
    interrupt, leaves ``out`` as it was. ``run.json``'s ``spec`` holds the settings that
    labelled (those of ``spec.centres`` where given). Before any work, a file this run would
    replace that no earlier segfew run recorded writing there is refused unless ``overwrite``
    (:func:`segfew.files.check_replace`). A second run into ``spec.out`` at the same time
    is refused (:func:`segfew.files.output_lock`).
    """
    with output_lock(spec.out):
        return _label_images(spec, progress, overwrite)


def _label_images(spec: LabelSpec, progress: Progress | None, overwrite: bool) -> list[Path]:
    report = progress or (lambda done, total, what: None)
    cases = find_cases(spec.images, spec.table, spec.channels, spec.id_column, spec.recursive,
                       spec.label_column, keep_missing=True)
    unfound = [{"path": str(spec.table), "error": str(c.problem)} for c in cases if not c.images]
    cases = [c for c in cases if c.images]  # a table row without its image: said, recorded
    if unfound and not cases:
        first = unfound[0]["error"].removeprefix(f"{spec.table}: ")
        raise DataError(f"none of its {len(unfound)} rows has its image (the first: {first})",
                        spec.table)
    if not cases:
        raise DataError("no images found", spec.table or spec.images)
    for row in unfound:
        warnings.warn(DataWarning(f"{row['error']}; skipped: no label map for it"), stacklevel=2)
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
        refuse_unlike_centres(spec, labeller, spec.centres)
    set_threads(spec.threads)
    if spec.method != "cavities" and labeller is None:
        try:
            labeller = fit_kmeans((im.array for _, ims in read_cases("sampling intensities")
                                   for im in ims), spec.k,
                                  keep_background=spec.keep_background,
                                  background_threshold=spec.background_threshold,
                                  sample_per_image=spec.sample_per_image, seed=spec.seed,
                                  intensity=spec.intensity)
        except DataError as e:  # of the images as a whole: named by their folder or table
            raise DataError(e.message, e.path or spec.table or spec.images) from None
    if labeller is not None:
        label_names = labeller.label_names()
        spec = used_spec(spec, labeller)  # the run record holds the settings that labelled

    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".segfew-label-", dir=out))
    try:
        shown, late = _write_maps(read_cases("writing labels"), labeller, staging, out, names,
                                  failed)
        if spec.method == "cavities":
            _refuse_phases_reversed(spec, late, len(cases) - len(failed))
        skipped = {p for case in cases if case.images[0] in failed for p in case.images}
        written = [p for p in paths if p not in skipped]
        extra = [LABEL_NAMES_FILE, PREVIEW_FILE.as_posix(),
                 *([CENTRES_FILE] if labeller is not None else [])]
        if labeller is not None:
            with _writing(out / CENTRES_FILE):
                labeller.save(staging / CENTRES_FILE)
        with _writing(out / LABEL_NAMES_FILE):
            write_json(staging / LABEL_NAMES_FILE,
                       {"method": spec.method, "label_names": label_names})
        with _writing(out / PREVIEW_FILE):
            plot_label_preview(shown, label_names, staging / PREVIEW_FILE,
                               "k-means labels" if labeller is not None else "cine cavities")
        # an earlier run's map of a skipped case would mix two labellings: removed
        gone = [names[p] for p in paths if p in skipped and (out / names[p]).exists()]
        if stale and is_recorded(out / RUN_RECORD, SEGMENTATION_TABLE):
            gone.append(SEGMENTATION_TABLE)
        outputs = [*(names[p] for p in written), *extra]

        def record() -> None:
            write_run_info(out, spec, spec.seed, inputs=paths, extra={
                "failed": [*unfound, *({"path": str(p), "error": why}
                                       for p, why in failed.items())],
                **outputs_record(out / RUN_RECORD, outputs)})

        commit_staged(staging, out, outputs, gone, record)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created:
            shutil.rmtree(out, ignore_errors=True)  # a refused run leaves no folder
        raise
    shutil.rmtree(staging, ignore_errors=True)
    return [out / names[p] for p in written]


def _write_maps(read: Iterator[tuple[Case, list[Image]]], labeller: KMeansLabeller | None,
                staging: Path, out: Path, names: dict[Path, str], failed: dict[Path, str]
                ) -> tuple[list[tuple[str, np.ndarray, np.ndarray]], list[Path]]:
    """Label every case read and write its maps into ``staging``; a case that cannot be
    labelled is skipped (:func:`_skip`), one whose map cannot be written stops the run (a
    DataError naming the map's place in ``out``). Returns the preview's images and the
    first files of the cases whose LV is larger in a later phase than in the first."""
    shown: list[tuple[str, np.ndarray, np.ndarray]] = []
    late: list[Path] = []
    for case, images in read:
        try:
            maps = ([labeller.label(im.array) for im in images] if labeller is not None
                    else _case_cavities(case, images, late))
        except CASE_ERRORS as e:
            _skip(failed, case, e)
            continue
        for image, labels in zip(images, maps, strict=True):
            assert image.path is not None
            with _writing(out / names[image.path]):
                write_image(labels, image, staging / names[image.path])
            if len(shown) < PREVIEW_IMAGES:
                shown.append((names[image.path].removesuffix("_seg.nii.gz"), image.array,
                              labels))
    return shown, late


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


def _case_cavities(case: Case, images: list[Image], late: list[Path]) -> list[np.ndarray]:
    """The cavities of one case; a DataWarning names a case whose maps say little (no heart
    found, a pixel size the rules were not made for). A case whose LV is larger in a later
    phase than in the first is added to ``late`` (:func:`_refuse_phases_reversed`)."""
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
        late.append(first)
    if not all(1.0 <= v <= 2.5 for v in in_plane):
        warnings.warn(DataWarning(
            f"{first}: pixels of {' × '.join(f'{v:g}' for v in in_plane)} mm; the cavity rules "
            "are sized for cine MRI at 1.2–2 mm: resample in-plane first"), stacklevel=2)
    return maps


def _refuse_phases_reversed(spec: LabelSpec, late: Sequence[Path], labelled: int) -> None:
    """Cavities assume end-diastole first (the blood threshold, and the RV as the cavity that
    empties, come from it). Most of the ``labelled`` cases (two or more) with an LV larger
    in a later phase than in the first (``late``) say the channels are in the wrong order:
    a DataError naming the order to give, before any map is written; a few are a
    DataWarning each (a case's own rhythm or a poor labelling)."""
    if len(late) >= 2 and 2 * len(late) > labelled:
        channels = list(spec.channels or ())
        if len(channels) == 2:
            what = (f"the channels look to be in the order ES, ED for {len(late)} of "
                    f"{labelled} cases (the LV is larger in the second phase than in the first)"
                    f": give --channels {channels[1]},{channels[0]}, end-diastole first")
        else:
            what = (f"the first channel does not look to be end-diastole for {len(late)} of "
                    f"{labelled} cases (the LV is larger in a later phase than in the first): "
                    "give the end-diastole phase first in --channels")
        raise DataError(f"--channels {','.join(channels)}: {what}", spec.table or spec.images)
    for first in late:
        warnings.warn(DataWarning(f"{first}: the LV is larger in a later phase than in the "
                                  "first: is the first channel end-diastole?"), stacklevel=3)


#: what a k-means centres file fixes: the LabelSpec settings its fit used
CENTRES_FIX = ("k", "intensity", "keep_background", "background_threshold")
#: the settings of a fit alone: without effect when centres are given
FIT_ONLY = ("seed", "sample_per_image")


def refuse_unlike_centres(spec: LabelSpec, labeller: KMeansLabeller, path: Path) -> None:
    """``--centres`` fixes k, the intensity normalisation and the background: a setting
    given (flag or spec file, ``spec.model_fields_set``) that differs from the centres
    file's is refused, one DataError naming the file, the value given and the one fixed; one
    that agrees is accepted. The fit's own settings (seed, sample_per_image) are refused as
    without effect."""
    given = spec.model_fields_set
    fixed = used_spec(spec, labeller)
    for key in CENTRES_FIX:
        mine, theirs = getattr(spec, key), getattr(fixed, key)
        same = (mine is None and theirs is None) or (
            mine is not None and theirs is not None and (mine == theirs if isinstance(
                mine, bool | str) else math.isclose(float(mine), float(theirs))))
        if key in given and not same:
            raise DataError(f"{_flag(key, mine)}: these centres were fitted with {key} = "
                            f"{_shown(theirs)}; drop {_flag(key, mine, value=False)}, or fit "
                            "anew without --centres", path)
    for key in FIT_ONLY:
        if key in given:
            raise DataError(f"{_flag(key, getattr(spec, key))}: these centres are used as they "
                            f"are, not fitted again, so {key} has no effect; drop "
                            f"{_flag(key, None, value=False)}, or fit anew without --centres",
                            path)


def used_spec(spec: LabelSpec, labeller: KMeansLabeller) -> LabelSpec:
    """``spec`` with the settings that ``labeller`` labels with (:data:`CENTRES_FIX`): what
    the run record says was used."""
    return spec.model_copy(update={
        "k": labeller.k, "intensity": labeller.intensity,
        "keep_background": labeller.keep_background,
        "background_threshold": labeller.background_threshold})


def _flag(key: str, given: object, value: bool = True) -> str:
    flag = f"--{key.replace('_', '-')}"
    if isinstance(given, bool):
        return flag if given else f"--no-{flag[2:]}"
    return f"{flag} {given}" if value else flag


def _shown(value: object) -> str:
    if value is None:
        return "none (each image's minimum)"
    return str(value).lower() if isinstance(value, bool) else f"{value}"


@contextlib.contextmanager
def _writing(target: Path, what: str = "cannot write it") -> Iterator[None]:
    """A file of the run that cannot be written stops it: a DataError naming its place in
    the output folder and why, never the hidden folder it is first written to."""
    try:
        yield
    except (OSError, SegfewError, ValueError, RuntimeError) as e:
        if isinstance(e, SegfewError):
            why = e.message
        else:
            why = (e.strerror if isinstance(e, OSError) and e.strerror else one_line(e))
        raise DataError(f"{what} ({why})", target) from e


def commit_staged(staging: Path, out: Path, new: Sequence[str], gone: Sequence[str],
                  finish: Callable[[], None]) -> None:
    """Move ``staging/<name>`` onto ``out/<name>`` for each of ``new``, remove ``out/<name>``
    for each of ``gone``, then call ``finish`` (it writes the run record). The files replaced
    or removed wait in ``staging`` until ``finish`` returns: an error on the way (a
    DataError naming the file in ``out`` for an OSError) puts them back and takes the new
    ones out, so that ``out`` is as it was."""
    aside = staging / ".replaced"
    fresh = set(new)
    done: list[tuple[str, bool]] = []  # name, whether a file it replaced waits aside
    made: list[Path] = []
    try:
        for name in [*new, *gone]:
            target = out / name
            with _writing(target):
                kept = os.path.lexists(target)
                if kept:
                    (aside / name).parent.mkdir(parents=True, exist_ok=True)
                    os.replace(target, aside / name)
                done.append((name, kept))
                if name in fresh:
                    if not target.parent.is_dir():
                        target.parent.mkdir(parents=True)
                        made.append(target.parent)
                    os.replace(staging / name, target)
        with _writing(out / RUN_RECORD):
            finish()
    except BaseException:
        for name, kept in reversed(done):
            with contextlib.suppress(OSError):
                if name in fresh:
                    (out / name).unlink(missing_ok=True)
                if kept:
                    os.replace(aside / name, out / name)
        for folder in reversed(made):
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
