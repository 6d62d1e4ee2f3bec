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
never dropped silently. Where a folder becomes cases without label maps (image folders,
class sub-folders, ``--recursive``), :func:`label_maps_beside` skips the label maps lying
beside their images, and :func:`path_ids` names the files that share a name in different
sub-folders. :func:`attach_labels` gives cases their label maps from a folder (flat, the
images' own tree, or a tree mirroring it), never an image as its own map.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from segfew.data.case import _NNUNET_CHANNEL, FOLDER_LABEL_NAMES, LABEL_SUFFIXES, Case, _Problems
from segfew.errors import DataError, Skipped, map_all
from segfew.files import OUTPUT_LOCK_SUFFIX, RUN_RECORD, recorded_outputs
from segfew.io import IMAGE_SUFFIXES, case_id, is_image_file
from segfew.io.dicom import dicom_header, dicom_series_files, series_names
from segfew.io.image import image_suffix
from segfew.io.itk import detached_data_files
from segfew.io.nifti import is_pair_header, pair_files

__all__ = ["LabelMaps", "Listing", "attach_labels", "label_maps_beside", "list_folder",
           "path_ids", "summarise_skips"]

#: suffixes a DICOM file may carry; any file may be DICOM, these are checked first
DICOM_SUFFIXES = (".dcm", ".ima", ".dicom", ".dic")
#: data files a detached header names (a file with one of these and no header is skipped)
#: files that describe a folder of images or label maps rather than being one: the label
#: names ``segfew label`` writes, its k-means centres, an nnU-Net ``dataset.json``
DATASET_FILES = frozenset({"label_names.json", "centres.json", "dataset.json", "run.json"})
#: the sub-folder of a ``segfew label`` output (beside its label_names.json) holding its
#: preview picture, which is no label map
LABEL_PREVIEW = "preview"
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
        if child.name.startswith("."):  # .DS_Store, a macOS ._a.nii.gz: no one's scans
            out.skip("a hidden file or folder (its name starts with '.')", child)
            continue
        if child.is_symlink() and not child.exists():
            out.skip("dangling symbolic link (its target does not exist)", child)
            continue
        if child.is_dir():
            if child.name == LABEL_PREVIEW and (folder / "label_names.json").is_file():
                continue  # segfew label's own preview: nothing to say, nothing to read
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
                elif any(not c.name.startswith(".") for c in child.iterdir()):
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


def label_maps_beside(files: Sequence[Path], channels: Sequence[str] | None, nnunet: bool
                       ) -> tuple[list[Path], list[Skipped]]:
    """``files`` less those named like a label map of an image beside them (``a_seg.nii.gz``
    in the folder of ``a.nii.gz``; of ``a_t1.nii.gz`` with ``--channels t1``, of
    ``a_0000.nii.gz`` in nnU-Net's layout; ``segmentation.nii.gz`` beside ``imaging.nii.gz``
    in a case folder, :data:`~segfew.data.case.FOLDER_LABEL_NAMES`; a map that a segfew run
    record beside it lists as written), each skipped with its reason: a folder of scans and
    their masks is not twice as many scans. A file named ``<id>_seg`` … with no image beside
    it and no record stays a scan (its name may be its own); one named for what it is
    (``segmentation``, ``mask``) is skipped, image or not."""
    beside: dict[Path, dict[str, Path]] = defaultdict(dict)
    for path in files:
        beside[path.parent].setdefault(case_id(path), path)
    written = {folder: recorded_outputs(folder / RUN_RECORD) for folder in beside}
    kept: list[Path] = []
    skipped: list[Skipped] = []  # each its own line (one text each: the CLI folds them)
    named: list[Skipped] = []  # "a label map of <image>": summed up below when many
    for path in files:
        if path.name in written[path.parent] and case_id(path).endswith(SEGFEW_MAPS):
            skipped.append(Skipped(f"a map a segfew run wrote (its {RUN_RECORD} lists it), "
                                   "not read as a scan", path))
            continue
        image = _image_of_label(case_id(path), beside[path.parent], channels, nnunet)
        if image is None and case_id(path).lower() in FOLDER_LABEL_NAMES:
            image = next((p for cid, p in beside[path.parent].items()
                          if cid.lower() not in FOLDER_LABEL_NAMES
                          and not cid.endswith(LABEL_SUFFIXES)), None)
            if image is None:  # a case folder's map without its image: no scan either
                skipped.append(Skipped(f"a label map by its name ({path.name}), with no "
                                       "image beside it", path))
                continue
        if image is None or image == path:
            kept.append(path)
            continue
        named.append(Skipped(
            f"a label map of {image.name} (named like one), not read as a scan (label maps "
            "are given with --labels or --masks)", path, label_maps=True))
    if len(named) > NAMED_SKIPS:  # a data set's download (ACDC's 200 _gt): one line
        first = named[0].path
        assert first is not None
        where = Path(os.path.commonpath([str(e.path) for e in named]))
        named = [Skipped(
            f"{len(named)} label maps lying beside their images (named like one: "
            f"{first.name}, …), not read as scans (label maps are given with --labels or "
            "--masks)", where if where.is_dir() else first.parent, count=len(named),
            label_maps=True)]
    return kept, [*skipped, *named]


def _image_of_label(cid: str, beside: Mapping[str, Path], channels: Sequence[str] | None,
                    nnunet: bool) -> Path | None:
    for suffix in LABEL_SUFFIXES:
        base = cid[: -len(suffix)]
        if not cid.endswith(suffix) or not base:
            continue
        names = [base, *(f"{base}_{c}" for c in channels or ())]
        if nnunet:
            names += [n for n in beside if (m := _NNUNET_CHANNEL.match(n)) and m["id"] == base]
        found = next((beside[n] for n in names if n in beside), None)
        if found is not None:
            return found
    return None


#: how segfew names the maps it writes (predict, label): ``<id>_seg``, ``<id>_prob``
SEGFEW_MAPS = ("_seg", "_prob")
#: label maps skipped beside their images that are each named; more are said in one line
NAMED_SKIPS = 5


class LabelMaps:
    """The label maps in ``folder``, found for cases by id (:func:`attach_labels`).

    A map of image ``<id>`` is named ``<id>``, ``<id>_gt``, ``<id>_seg``, ``<id>_label``,
    ``<id>_labels`` or ``<id>_mask`` with any image suffix. With ``recursive`` the
    sub-folders are read too, and a map is also known by its path from ``folder`` joined
    by ``_`` (``patient1/flair_seg.nii.gz``: ``patient1_flair_seg``), as
    :func:`path_ids` names same-named images. An image lying in ``folder``'s tree (the
    images' own folder given as the labels folder) takes maps from its own folder only and
    never itself: ``a.nii.gz`` beside ``a_gt.nii.gz`` is the image, ``a_gt`` its map.
    Raises DataError naming the folder when it is missing or holds no image file.
    """

    def __init__(self, folder: Path, recursive: bool = False, quiet: bool = False) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise DataError("labels folder not found", self.folder)
        listing = list_folder(self.folder, recursive)
        if not quiet:  # quiet: the images' own folder, whose listing said what it skipped
            _Problems(collect=False).skip(listing.skipped)
        if not listing.images:
            raise DataError("no image files found (label maps: .nii.gz, .nii, .nrrd, .mha, "
                            ".mhd, .png, .tif, …)", self.folder)
        self.index: dict[str, list[Path]] = defaultdict(list)
        for path in listing.images:
            keys = {case_id(path)}
            rel = path.relative_to(self.folder)
            if len(rel.parts) > 1:
                keys.add("_".join([*rel.parts[:-1], case_id(path)]))
            for key in keys:
                self.index[key].append(path)
        self._root = self.folder.resolve()
        self._folder_maps = [p for p in listing.images
                             if case_id(p).lower() in FOLDER_LABEL_NAMES]

    def find(self, names: Sequence[str], image: Path) -> Path | None:
        """The map of ``image`` known by any of ``names`` (its ids), or None. DataError
        when several files are equally its map: two of one name in its folder, or one id
        under two of the map names (``<id>.nii.gz`` beside ``<id>_gt.nii.gz``: an expert's
        map and a draft, say; which is meant is the user's call, not the name order's)."""
        real = image.resolve()
        inside = self._root in real.parents  # the labels folder is the images' own tree
        kinds = LABEL_SUFFIXES if inside else ("", *LABEL_SUFFIXES)
        for suffix in kinds:
            for name in dict.fromkeys(names):  # the most precise id first
                found = self._named(name + suffix, real, inside)
                if found:
                    found += [p for k in kinds if k != suffix
                              for p in self._named(name + k, real, inside)]
                if len(found) > 1:
                    raise DataError(f"several label files for {case_id(image)!r}: "
                                    f"{', '.join(p.name for p in found)}: keep one (or move "
                                    "the others out of the folder)", found[0].parent)
                if found:
                    return found[0]
        return self._folder_map(image, real, inside)

    def _named(self, key: str, real: Path, inside: bool) -> list[Path]:
        """The files indexed as ``key`` that may be the map of the image at ``real``: in
        its own folder where there is one; in a mirrored tree, the folder of its name."""
        found = [p for p in dict.fromkeys(self.index.get(key, []))
                 if p.resolve() != real and (not inside or p.parent.resolve() == real.parent)]
        found = [p for p in found if p.parent.resolve() == real.parent] or found
        if len(found) > 1:  # a mirrored tree: only the map of the image's own folder
            found = [p for p in found if p.parent.name == real.parent.name] or (
                found if len({p.parent for p in found}) == 1 else [])
        return found

    def _folder_map(self, image: Path, real: Path, inside: bool) -> Path | None:
        """The one map named ``segmentation``, ``mask``, … in the image's own case folder
        (KiTS's layout), or in the sub-folder of that name in a mirrored tree; never one at
        the top of the labels folder, which would be every image's."""
        found = list(dict.fromkeys(
            p for p in self._folder_maps if p.resolve() != real and p.parent != self.folder
            and (p.parent.resolve() == real.parent
                 or (not inside and p.parent.name == real.parent.name))))
        if len(found) > 1:
            raise DataError(f"several label files for {case_id(image)!r}: "
                            f"{', '.join(str(p) for p in found)}", image)
        return found[0] if found else None

    def attach(self, case: Case) -> Case:
        """``case`` with its label map(s): one per channel, or one for the case. DataError
        (naming the image) when a map is missing."""
        channels = case.channel_names if len(case.images) > 1 else [None] * len(case.images)
        per_channel = [self.find([f"{case.id}_{ch}" if ch else case.id, case_id(p)], p)
                       for p, ch in zip(case.images, channels, strict=True)]
        case_level = self.find([case.id], case.images[0]) if len(case.images) > 1 else None
        if len(case.images) == 1:
            case_level = per_channel[0]
        found = [p for p in per_channel if p is not None]
        inside = self._root in case.images[0].resolve().parents  # never the image itself
        kinds = LABEL_SUFFIXES if inside else ("", *LABEL_SUFFIXES)
        if len(found) == len(case.images) > 1 and case_level is None:
            chosen = found
        elif case_level is not None:
            chosen = [case_level]
        elif found:  # name the channel whose map is missing
            missing = [case_id(p) for p, m in zip(case.images, per_channel, strict=True)
                       if m is None]
            names = ", ".join(f"{n}{s}.*" for n in missing for s in kinds)
            raise DataError(f"label map of channel {', '.join(missing)} missing (looked for "
                            f"{names} in {self.folder}; found "
                            f"{', '.join(m.name for m in found)})", case.images[0])
        else:
            names = ", ".join(f"{case.id}{s}.*" for s in kinds)
            own = (", or segmentation.*, mask.*, … in its own folder"
                   if case.images[0].parent.resolve() != self._root else "")
            raise DataError(f"image without label (looked for {names} in {self.folder}{own})",
                            case.images[0])
        return replace(case, labels=tuple(chosen))


def attach_labels(cases: Sequence[Case], labels: Path, recursive: bool = False) -> list[Case]:
    """Each case with its label map(s) from ``labels`` (:class:`LabelMaps`), matched by id
    as :func:`segfew.data.find_segmentation_cases` does: one per channel, or one for the
    case. The sub-folders of ``labels`` are read with ``recursive``, and whenever the
    cases' images lie in them (the images' own tree given as the labels folder). DataError
    (naming the image) for each case whose map is missing or ambiguous, all in one run."""
    labels = Path(labels)
    root = labels.resolve()
    real = [p.resolve() for c in cases for p in c.images]
    below = any(root in p.parent.parents for p in real)
    maps = LabelMaps(labels, recursive or below, quiet=any(root in p.parents for p in real))
    return map_all(maps.attach, cases, "cases cannot be paired with a label map")


_DICOMDIR_SOP = "1.2.840.10008.1.3.10"
_TEXT_SUFFIXES = frozenset({
    ".csv", ".tsv", ".json", ".txt", ".md", ".rst", ".toml", ".yaml", ".yml", ".xml",
    ".html", ".pdf", ".log", ".pt", ".pth", ".py", ".sh", ".zip", ".tar", ".xlsx",
    ".xls", ".ini", ".cfg", ".pkl", ".npy", ".npz", ".gz", ".bz2", ".7z",
})
