"""Which file is the label map of which image: maps lying beside their images in a folder
of scans (:func:`label_maps_beside`, skipped as scans: a folder of scans and their masks is
not twice as many scans), and a labels folder's maps found for cases by id
(:class:`LabelMaps`, :func:`attach_labels`: flat, the images' own tree, or a tree mirroring
it), never an image as its own map.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from segfew.data.case import _NNUNET_CHANNEL, FOLDER_LABEL_NAMES, LABEL_SUFFIXES, Case, _Problems
from segfew.data.scan import NAMED_SKIPS, list_folder
from segfew.errors import DataError, Skipped, map_all
from segfew.files import RUN_RECORD, recorded_outputs
from segfew.io import case_id

__all__ = ["LabelMaps", "attach_labels", "label_maps_beside"]

#: a label map numbered after its suffix, as BUSI names an image's second lesion (``_mask_1``)
_NUMBERED = re.compile(rf"({'|'.join(LABEL_SUFFIXES)})_\d+$")


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
    """The image beside a file named like its label map (``<id>_seg``; ``<id>_mask_1``,
    BUSI's second lesion), else None."""
    cid = _NUMBERED.sub(r"\1", cid)  # <id>_mask_1: <id>_mask
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
            keys = {case_id(path), _NUMBERED.sub(r"\1", case_id(path))}  # <id>_mask_1 too
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
                                    f"{', '.join(p.name for p in found)}: keep one, or merge "
                                    "them into one map", found[0].parent)
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
