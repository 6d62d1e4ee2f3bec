"""What a folder holds: images, DICOM series (grouped by header), and everything skipped.

One listing serves every command: :mod:`segfew.data`
builds cases from :func:`list_folder`, so ``inspect``, ``label``, ``pretrain``,
``train-classifier``, ``evaluate``, ``predict`` and ``experiment`` see the same cases in the
same folder. A DICOM series is the DICOM image files of one SeriesInstanceUID in one folder,
found by their headers (pydicom, without reading pixels), not by a suffix; a folder holding
one series is a case, a folder holding several gives each series its own case, and a DICOM
file alone in its series is a case of its own. A ``DICOMDIR`` (a CD export) is followed into
its sub-folders. A detached header (``.mhd``, ``.nhdr``; ``.hdr`` of a NIfTI or Analyze
pair) and the data file it names are one image. Everything else under the input (data
files no header names, non-image DICOM objects, READMEs and tables, dangling links,
unreadable files, folders named like images) is returned in ``skipped`` with the reason,
never dropped silently. :func:`path_ids` names the files of ``--recursive`` that share a
name in different sub-folders. Which listed file is the label map of which image is
:mod:`segfew.data.label_maps`.
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from segfew.data.case import (
    hidden_reason,
)
from segfew.data.label_names import is_label_preview
from segfew.errors import Skipped
from segfew.files import OUTPUT_LOCK_SUFFIX
from segfew.io import IMAGE_SUFFIXES, case_id, is_image_file
from segfew.io.dicom import dicom_header, dicom_series_files, series_names
from segfew.io.image import image_suffix
from segfew.io.itk import detached_data_files
from segfew.io.nifti import is_pair_header, pair_files

__all__ = ["Listing", "list_folder", "path_ids", "summarise_skips"]

#: suffixes a DICOM file may carry; any file may be DICOM, these are checked first
DICOM_SUFFIXES = (".dcm", ".ima", ".dicom", ".dic")
#: files that describe a folder of images or label maps rather than being one: the label
#: names ``segfew label`` writes, its k-means centres, an nnU-Net ``dataset.json``
DATASET_FILES = frozenset({"label_names.json", "centres.json", "dataset.json", "run.json"})
#: skipped paths of one reason that are each named; more are said in one line
NAMED_SKIPS = 5
#: data files a detached header names (a file with one of these and no header is skipped)
DATA_SUFFIXES = (".raw", ".zraw", ".raw.gz", ".img", ".dat", ".bin")
#: why a sub-folder of the input is not read: true of every command, whether it has
#: ``--recursive`` or not (evaluate, train-classifier and inspect have none)
SUBFOLDER_SKIPPED = "a sub-folder, not read (predict, label and pretrain read sub-folders " \
    "with --recursive)"


@dataclass
class Listing:
    """``images``: files and DICOM series folders, one per image; ``skipped``: one
    :class:`~segfew.errors.Skipped` per path that is not part of an image, saying why."""

    images: list[Path] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def skip(self, reason: str, path: Path) -> None:
        self.skipped.append(Skipped(reason, path))


def list_folder(folder: Path, recursive: bool = False) -> Listing:
    """The images of ``folder`` (and its DICOM series sub-folders; with ``recursive``, of
    every sub-folder), sorted, and what was skipped. A folder holding a ``DICOMDIR`` is read
    recursively (a CD export keeps its series in ``PT*/ST*/SE*`` folders)."""
    folder = Path(folder)
    out = Listing()
    recursive = recursive or (folder / "DICOMDIR").is_file()
    _list_dir(folder, set(), recursive, out, top=True)
    out.images.sort()
    out.skipped = summarise_skips(out.skipped)
    return out


def summarise_skips(skipped: Sequence[Skipped]) -> list[Skipped]:
    """``skipped`` with more than :data:`NAMED_SKIPS` of one reason said in one line (their
    count, a few names, their common folder): a download's 150 ``Info.cfg`` are one line."""
    by_reason: dict[str, list[Skipped]] = defaultdict(list)
    for err in skipped:
        by_reason[err.reason].append(err)
    out: list[Skipped] = []
    for reason, errs in by_reason.items():
        paths = [e.path for e in errs if e.path is not None]
        if len(errs) <= NAMED_SKIPS or len(paths) < len(errs):
            out.extend(errs)
            continue
        names = sorted({p.name for p in paths})
        shown = ", ".join(names[:3]) + (", …" if len(names) > 3 else "")
        where = Path(os.path.commonpath([str(p.parent) for p in paths]))
        out.append(Skipped(f"{len(errs)} files or folders ({shown}): {reason}", where,
                           count=len(errs), reason=reason))
    return out


def _list_dir(folder: Path, seen: set[Path], recursive: bool, out: Listing, top: bool) -> None:
    try:
        real = folder.resolve()
        if real in seen:  # a link back up the tree
            out.skip("a link to a folder already read", folder)
            return
        seen.add(real)
        children = sorted(folder.iterdir())
    except OSError as e:
        out.skip(f"folder cannot be read ({e.strerror or e})", folder)
        return
    series: dict[str, list[Path]] = defaultdict(list)
    data_files: list[Path] = []
    named: set[Path] = set()
    for child in children:
        if child.name.endswith(OUTPUT_LOCK_SUFFIX):  # a run writing beside: nothing to say
            continue
        if (hidden := hidden_reason(child)) is not None:  # .DS_Store, ._a.nii.gz, __MACOSX
            out.skip(hidden, child)
            continue
        if child.is_symlink() and not child.exists():
            out.skip("dangling symbolic link (its target does not exist)", child)
            continue
        if child.is_dir():
            if is_label_preview(child):
                continue  # segfew label's own preview: nothing to say, nothing to read
            if recursive and (command := segfew_outputs(child)) is not None:
                out.skip(f"the outputs of segfew {command} (its run record says so), not scans",
                         child)
                continue
            if recursive:
                _list_dir(child, seen, recursive, out, top=False)
                if _named_like_image(child) and not dicom_series_files(child):
                    out.skip("a folder named like an image file, holding no DICOM series",
                             child)
            elif top:
                if dicom_series_files(child):  # a series folder: its series, and what else
                    _list_dir(child, seen, recursive, out, top=False)  # it holds, said
                elif _named_like_image(child):
                    out.skip("a folder named like an image file, holding no DICOM series", child)
                elif not os.access(child, os.R_OK | os.X_OK):
                    out.skip("folder cannot be read (permission denied)", child)
                elif any(hidden_reason(c) is None for c in child.iterdir()):
                    out.skip(SUBFOLDER_SKIPPED, child)
            continue
        if not child.is_file():
            out.skip("not a regular file", child)
            continue
        if not os.access(child, os.R_OK) and not is_image_file(child):
            out.skip("file cannot be read (permission denied)", child)
            continue
        lower = child.name.lower()
        if lower.endswith(".hdr") and not is_pair_header(child):
            out.skip("not an image format segfew reads (a .hdr that is no NIfTI or Analyze "
                     "header)", child)
            continue
        if is_image_file(child) and not lower.endswith(DICOM_SUFFIXES):
            out.images.append(child)
            if lower.endswith((".mhd", ".nhdr")):
                named.update(p.resolve() for p in detached_data_files(child))
            if lower.endswith(".hdr"):
                named.update(p.resolve() for p in pair_files(child))
            continue
        if lower.endswith((*DATA_SUFFIXES, ".mat")):  # a .mat: SPM's affine of a pair
            data_files.append(child)
            continue
        if lower in DATASET_FILES:  # the data set's own description: nothing to say
            continue
        if Path(lower).suffix in _TEXT_SUFFIXES:
            out.skip("not an image (a table, text or other non-image file)", child)
            continue
        header = dicom_header(child)
        if header is None:
            if lower.endswith(DICOM_SUFFIXES):
                out.images.append(child)  # reading it says what is wrong with it
            else:
                out.skip("not an image format segfew reads", child)
        elif lower == "dicomdir" or header.sop_class_uid == _DICOMDIR_SOP:
            out.skip("DICOMDIR, the index of a CD export (its series are read from the "
                     "folders below it)", child)
        elif not header.has_pixels:
            out.skip(f"DICOM {header.kind} holds no image (no pixel data)", child)
        else:
            series[header.series_uid].append(child)
    for path in data_files:
        if path.resolve() in named:
            continue
        if path.name.lower().endswith(".mat"):
            out.skip("not an image format segfew reads", path)
        else:
            out.skip("data file that no header (.mhd, .nhdr, .hdr) beside it names", path)
    if series:
        # a folder of one series (nothing else) is read as one series; a stray DICOM file
        # among other images, or a series of one file, is a case of its own
        others = any(p.parent == folder for p in out.images)
        _add_series(folder, series, out, whole_folder=not others or not top)


def _named_like_image(path: Path) -> bool:
    name = path.name.lower()
    return any(name.endswith(s) and len(name) > len(s) for s in IMAGE_SUFFIXES)


def _add_series(folder: Path, series: dict[str, list[Path]], out: Listing,
                whole_folder: bool) -> None:
    """One image per series: the folder for its one series of several files, a file for a
    series of one; a folder holding several series of several files (a PACS study export)
    gives each its own ``<folder>/<name>`` (:func:`segfew.io.dicom.series_names`)."""
    multi = {uid: files for uid, files in series.items() if len(files) > 1}
    if len(multi) > 1:
        out.images.extend(folder / name for name in series_names(folder, multi).values())
        out.images.extend(files[0] for files in series.values() if len(files) == 1)
        return
    if whole_folder and len(series) == 1:
        files = next(iter(series.values()))
        out.images.append(files[0] if len(files) == 1 else folder)
        return
    singles = [files[0] for files in series.values() if len(files) == 1]
    out.images.extend(singles)
    if len(singles) < len(series):
        out.images.append(folder)


#: the run records segfew writes into a folder of its outputs
OUTPUT_RECORDS = ("run.json", "index.run.json", "report.run.json")


def segfew_outputs(folder: Path) -> str | None:
    """The segfew command whose outputs ``folder`` holds, by the run record it wrote there
    (``label``'s maps, ``predict``'s, an evaluation, an experiment's RUN_DIR, a training's
    run folder, an explain folder, a report), else None: a listing that walks sub-folders
    reads none of them as scans. ``synth``'s data set is scans."""
    for name in OUTPUT_RECORDS:
        try:
            info = json.loads((folder / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(info, dict):
            continue
        words = str(info.get("command") or "").split()
        segfew = "segfew" in (info.get("versions") or {})
        command = str(info.get("task") or (words[1] if segfew and len(words) > 1 else ""))
        if command and command != "synth":
            return command
    return None


def path_ids(files: Sequence[Path], root: Path) -> dict[Path, str]:
    """Ids for the files of ``--recursive`` over ``root`` whose names clash
    (``patient1/flair.nii.gz``, ``patient2/flair.nii.gz``): the path from ``root`` joined
    by ``_`` (``patient1_flair``), as a CD export's series are named
    (:func:`segfew.io.case_id`).

    Only clashing files are renamed: every other file keeps its name as its id, which is
    what label maps (``<id>_seg``), ``--masks`` and tables are named after, so ``pretrain
    --recursive --labels`` and ``--masks`` still find them. The id of a clashing file
    depends on its path only, never on the order of the listing; ``_`` keeps it one file
    name for the outputs named after it (``<id>_seg.nii.gz``). Ids that still clash (two
    formats of one scan in one folder) stay duplicates, each an error row.
    """
    counts = Counter(case_id(p) for p in files)
    out: dict[Path, str] = {}
    for path in files:
        if counts[case_id(path)] < 2:
            continue
        try:
            rel = path.relative_to(root)
        except ValueError:
            continue
        suffix = image_suffix(rel.name)
        out[path] = "_".join([*rel.parts[:-1], rel.name[: -len(suffix)] if suffix else rel.name])
    return out


_DICOMDIR_SOP = "1.2.840.10008.1.3.10"
_TEXT_SUFFIXES = frozenset({
    ".csv", ".tsv", ".json", ".txt", ".md", ".rst", ".toml", ".yaml", ".yml", ".xml",
    ".html", ".pdf", ".log", ".pt", ".pth", ".py", ".sh", ".zip", ".tar", ".xlsx",
    ".xls", ".ini", ".cfg", ".pkl", ".npy", ".npz", ".gz", ".bz2", ".7z",
})
