"""Find cases on disk: files and DICOM series, nnU-Net layout, channels, segmentation
pairs and unlabelled images.
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from segfew.data.case import _NNUNET_CHANNEL, LABEL_SUFFIXES, Case, _Problems
from segfew.data.label_maps import label_maps_beside
from segfew.data.scan import list_folder, path_ids
from segfew.data.split_series import refuse_split_series
from segfew.errors import DataError, Skipped, SpecError
from segfew.io import case_id, is_image_file
from segfew.io.dicom import dicom_header, series_of_path

# ------------------------------------------------------------------------- files

def _list_images(folder: Path, problems: _Problems, recursive: bool = False) -> list[Path]:
    """Image files and DICOM series folders in ``folder``, sorted (:func:`list_folder`);
    what is skipped is said (:meth:`_Problems.skip`); no image → a problem."""
    if not folder.exists():
        problems.add("no such folder", folder)
        return []
    if not folder.is_dir():
        problems.add("is not a folder", folder)
        return []
    listing = list_folder(folder, recursive)
    problems.skip(listing.skipped)
    if not listing.images:
        problems.add("no image files found (supported: .nii.gz, .nii, .hdr/.img, .nrrd, .mha, "
                     ".mhd, .png, .jpg, .tif, .dcm, DICOM series folders, DICOMDIR)", folder)
    return listing.images


def _index(paths: Iterable[Path], problems: _Problems,
           id_of: Callable[[Path], str] = case_id) -> dict[str, Path]:
    """Map case id → path; two files with one id is a problem."""
    index: dict[str, Path] = {}
    for path in paths:
        cid = id_of(path)
        if cid in index:
            problems.add(f"duplicate case id {cid!r} (also {index[cid]})", path)
            continue
        index[cid] = path
    return index


def read_dataset_json(path: Path) -> tuple[list[str] | None, dict[int, str] | None]:
    """Channel names and label names from an nnU-Net ``dataset.json`` (v1 or v2 keys)."""
    try:
        info = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read dataset.json ({e})", path) from None
    channels_raw = info.get("channel_names") or info.get("modality")
    channels = None
    if isinstance(channels_raw, dict):
        channels = [str(channels_raw[k]) for k in sorted(channels_raw, key=lambda k: int(k))]
    labels_raw = info.get("labels")
    labels = None
    if isinstance(labels_raw, dict):
        try:
            if all(str(k).isdigit() for k in labels_raw):  # v1: {"0": "background"}
                labels = {int(k): str(v) for k, v in labels_raw.items()}
            else:  # v2: {"background": 0}
                labels = {int(v): str(k) for k, v in labels_raw.items()
                          if isinstance(v, int | str) and str(v).isdigit()}
        except (TypeError, ValueError):
            labels = None
    return channels, labels


def _nnunet_layout(images: Path) -> tuple[Path, Path | None, Path | None] | None:
    """(images folder, labels folder, dataset.json) when ``images`` is an nnU-Net dataset."""
    if (images / "imagesTr").is_dir():
        labels = images / "labelsTr"
        meta = images / "dataset.json"
        return images / "imagesTr", labels if labels.is_dir() else None, \
            meta if meta.is_file() else None
    if images.name in ("imagesTr", "imagesTs"):
        labels = images.parent / images.name.replace("images", "labels")
        meta = images.parent / "dataset.json"
        return images, labels if labels.is_dir() else None, meta if meta.is_file() else None
    return None


def _group_channels(files: Sequence[Path], channels: Sequence[str] | None, nnunet: bool,
                    folder: Path, problems: _Problems,
                    incomplete: list[Case] | None = None,
                    ids: Mapping[Path, str] | None = None) -> dict[str, tuple[Path, ...]]:
    """Case id → channel files, by ``--channels`` suffixes or nnU-Net's ``_0000``.

    With ``incomplete``, a case missing a channel (or a file matching no channel, or files
    whose case ids clash) is put there as a :class:`Case` with its ``problem``, instead of
    being a problem of the batch. ``ids``: a file's id where it is not its
    :func:`~segfew.io.case_id` (:func:`~segfew.data.scan.path_ids`).
    """
    def id_of(path: Path) -> str:
        return ids[path] if ids and path in ids else case_id(path)

    def per_case(message: str, path: Path, cid: str, paths: tuple[Path, ...]) -> None:
        if incomplete is None:
            problems.add(message, path)
        else:
            incomplete.append(Case(cid, paths, group=cid, problem=str(DataError(message, path))))

    if channels is None and not nnunet:
        if incomplete is None:
            return {cid: (path,) for cid, path in _index(files, problems, id_of).items()}
        by_id: dict[str, list[Path]] = defaultdict(list)
        for path in files:
            by_id[id_of(path)].append(path)
        for cid, paths in by_id.items():
            for path in paths if len(paths) > 1 else ():  # each clashing file: an error row
                others = ", ".join(str(p) for p in paths if p != path)
                per_case(f"duplicate case id {cid!r} (also {others})", path, cid, (path,))
        return {cid: (paths[0],) for cid, paths in by_id.items() if len(paths) == 1}
    twice = sorted(c for c, n in Counter(channels or ()).items() if n > 1)
    if twice:
        raise SpecError(f"channel {', '.join(twice)} given twice in --channels (channels)")
    by_case: dict[str, dict[str, Path]] = defaultdict(dict)
    clashes: dict[str, list[Path]] = defaultdict(list)
    unmatched: list[Path] = []
    for path in files:
        cid = id_of(path)
        if channels is not None:
            match = next((c for c in channels if cid.endswith(f"_{c}") and len(cid) > len(c) + 1),
                         None)
            if match is None:
                unmatched.append(path)
                continue
            case, channel = cid[: -len(match) - 1], match
        else:
            m = _NNUNET_CHANNEL.match(cid)
            if m is None:
                problems.add("nnU-Net image without a channel suffix (_0000)", path)
                continue
            case, channel = m["id"], m["channel"]
        if channel in by_case[case]:
            if incomplete is not None:
                clashes[case].append(path)
                continue
            problems.add(f"duplicate case id {cid!r} (also {by_case[case][channel]})", path)
            continue
        by_case[case][channel] = path
    if channels is not None:
        _other_channels(unmatched, by_case, channels, id_of, per_case, problems)
    for case, extra in clashes.items():
        found = by_case.pop(case)
        for path in extra:
            first = next(p for p in found.values() if id_of(p) == id_of(path))
            per_case(f"duplicate case id {id_of(path)!r} (also {first})", path, case, (path,))
            per_case(f"duplicate case id {id_of(path)!r} (also {path})", first, case, (first,))
    wanted = list(channels) if channels is not None else \
        sorted({c for chans in by_case.values() for c in chans})
    out: dict[str, tuple[Path, ...]] = {}
    for case, found in by_case.items():
        missing = [c for c in wanted if c not in found]
        if missing:
            per_case(f"case {case!r} has no file for channel(s) "
                     f"{', '.join(missing)} ({', '.join(f'{case}_{c}.*' for c in missing)})",
                     folder, case, tuple(found[c] for c in wanted if c in found))
            continue
        out[case] = tuple(found[c] for c in wanted)
    return out


def _other_channels(files: Sequence[Path], by_case: Mapping[str, object],
                    channels: Sequence[str], id_of: Callable[[Path], str],
                    per_case: Callable[[str, Path, str, tuple[Path, ...]], None],
                    problems: _Problems) -> None:
    """Files matching no channel of ``--channels``: those of a case it found (``X_t1`` of
    case ``X`` with ``--channels flair``: a BraTS folder read for one channel) are
    skipped in one line; any other is its own problem (a name the rule does not fit)."""
    other: list[Path] = []
    for path in files:
        cid = id_of(path)
        if any(cid[:k] in by_case for k in range(len(cid)) if cid[k] == "_"):
            other.append(path)
        else:
            per_case("matches no channel (expected a name ending in "
                     f"{', '.join('_' + c for c in channels)})", path, id_of(path), (path,))
    if other:
        names = sorted({id_of(p)[_case_end(id_of(p), by_case) + 1:] for p in other})
        shown = ", ".join(names[:6]) + (", …" if len(names) > 6 else "")
        where = Path(os.path.commonpath([str(p.parent) for p in other]))
        problems.skip([Skipped(
            f"{len(other)} file(s) of channels not in --channels {','.join(channels)} "
            f"({shown}; e.g. {other[0].name})", where, count=len(other))])


def _case_end(cid: str, cases: Mapping[str, object]) -> int:
    """Where the longest case id of ``cases`` that starts ``cid`` ends."""
    return max(k for k in range(len(cid)) if cid[k] == "_" and cid[:k] in cases)


# ------------------------------------------------------------------------- segmentation


def find_segmentation_cases(images: Path, labels: Path | None = None,
                            channels: Sequence[str] | None = None) -> list[Case]:
    """Pair images with label maps by case id.

    ``images`` is a folder of images, or an nnU-Net dataset (``imagesTr/``, ``labelsTr/``,
    ``dataset.json``; channels ``_0000``, ``_0001``… recognised without ``channels``). For
    image ``<id>`` the label may be named ``<id>``, ``<id>_gt``, ``<id>_seg``, ``<id>_label``
    or ``<id>_labels`` with any image suffix. With ``channels``, case ``X`` is made of
    ``X_<c>.*`` for each channel, and takes one label per channel (``X_<c>_gt.*``) or one for
    the case (``X_gt.*``). Without ``labels`` the images folder may hold the label files
    itself (``<id>_seg.*`` beside ``<id>.*``); if it holds none the cases are unlabelled.
    """
    problems = _Problems(collect=False, together=True)  # every unpaired image named at once
    cases = _find_segmentation(Path(images), None if labels is None else Path(labels),
                               channels, problems)
    problems.raise_all()
    return cases


def _find_segmentation(images: Path, labels: Path | None, channels: Sequence[str] | None,
                       problems: _Problems) -> list[Case]:
    layout = _nnunet_layout(images)
    nnunet = layout is not None and channels is None
    if layout is not None:
        images = layout[0]
        labels = labels if labels is not None else layout[1]
    files = _list_images(images, problems)
    same_folder = labels is None or labels.resolve() == images.resolve()
    if same_folder:  # label files (<id>_seg.* …) may sit beside the images
        label_files = [p for p in files if case_id(p).endswith(LABEL_SUFFIXES)]
        files = [p for p in files if p not in set(label_files)]
        if not files and label_files:
            problems.add("holds label files only", images)
    else:
        assert labels is not None
        label_files = _list_images(labels, problems)
    problems.settle()  # a folder missing or empty: its cases' lines would only echo it
    cases_files = _group_channels(files, channels, nnunet, images, problems)
    if same_folder and not label_files:
        return refuse_split_series([Case(cid, paths, group=cid)
                                     for cid, paths in sorted(cases_files.items())], problems)

    label_index = _index(label_files, problems)
    used: set[str] = set()
    cases = []
    where = labels or images
    for cid, paths in sorted(cases_files.items()):
        own = [case_id(p) for p in paths]
        per_channel = [_find_label(name, label_index, allow_own=not same_folder) for name in own]
        chosen: list[list[Path]] = []
        if own == [cid]:
            chosen = per_channel if per_channel[0] else []
        else:
            case_level = _find_label(cid, label_index, allow_own=not same_folder)
            n_found = sum(1 for m in per_channel if m)
            if case_level and n_found:
                problems.add(f"case {cid!r} has both a case label ({case_level[0].name}) and "
                             f"per-channel labels ({next(m for m in per_channel if m)[0].name})",
                             paths[0])
                continue
            if case_level:
                chosen = [case_level]
            elif n_found == len(paths):
                chosen = per_channel
            elif n_found:
                missing = [n for n, m in zip(own, per_channel, strict=True) if not m]
                problems.add(f"no label for channel(s) {', '.join(missing)} in {where}",
                             paths[0])
                continue
        if not chosen:
            names = ", ".join(f"{cid}{s}.*" for s in ("", *LABEL_SUFFIXES))
            problems.add(f"image without label (looked for {names} in {where})", paths[0])
            continue
        ok = True
        for match in chosen:
            used.update(case_id(m) for m in match)
            if len(match) > 1:
                problems.add(f"several label files for {case_id(paths[0])!r}: "
                             f"{', '.join(p.name for p in match)}", match[0])
                ok = False
        if ok:
            cases.append(Case(cid, paths, tuple(m[0] for m in chosen), group=cid))
    for lid, path in sorted(label_index.items()):
        if lid not in used:
            problems.add(f"label without image (no image for it in {images})", path)
    return refuse_split_series(cases, problems)


def _find_label(name: str, index: dict[str, Path], allow_own: bool) -> list[Path]:
    """Label files that may belong to image ``name`` (more than one is ambiguous)."""
    keys = [name] if allow_own else []
    keys += [name + s for s in LABEL_SUFFIXES]
    return [index[k] for k in keys if k in index]


# ------------------------------------------------------------------------- unlabelled


def find_image_cases(inputs: Path | Sequence[Path], channels: Sequence[str] | None = None,
                     recursive: bool = False, keep_incomplete: bool = False) -> list[Case]:
    """Unlabelled cases (for ``predict``) from folders, image files or DICOM series folders.

    Every case id must be unique, since outputs are named after it. With ``recursive``,
    files of one name in different sub-folders (``patient1/flair.nii.gz``,
    ``patient2/flair.nii.gz``) are told apart by their path (``patient1_flair``,
    :func:`~segfew.data.scan.path_ids`). A file named twice (two inputs, or a folder and a
    file in it) is one case. In a folder, a file named like a label map of an image beside
    it (``a_seg.nii.gz`` beside ``a.nii.gz``) is skipped with a
    :class:`~segfew.errors.DataWarning`, not made a case
    (:func:`~segfew.data.label_maps.label_maps_beside`). With ``keep_incomplete``, a case that
    lacks a channel file, and each file whose case id clashes with another's, is returned
    with its ``problem`` (a batch gives it an error row) instead of stopping the whole
    batch; so is each folder of a DICOM series whose files lie in several folders
    (:mod:`segfew.data.split_series`).
    """
    return _find_images(inputs, channels, recursive, _Problems(collect=False), keep_incomplete)


def _find_images(inputs: Path | Sequence[Path], channels: Sequence[str] | None,
                 recursive: bool, problems: _Problems, keep_incomplete: bool = False,
                 refuse_split: bool = True) -> list[Case]:
    """:func:`find_image_cases`; ``refuse_split`` false: the caller checks the split series
    of all the cases it builds at once (class sub-folders, several inputs)."""
    items = [Path(inputs)] if isinstance(inputs, str | Path) else [Path(p) for p in inputs]
    files: list[Path] = []
    ids: dict[Path, str] = {}
    seen: set[Path] = set()  # the files of earlier inputs, resolved: one file is one case
    nnunet = False
    for item in items:
        if item.is_dir():
            layout = _nnunet_layout(item)
            if layout is not None:
                nnunet = channels is None
                item = layout[0]
            listed, beside = label_maps_beside(_list_images(item, problems, recursive),
                                                channels, layout is not None and nnunet)
            problems.skip(beside)
            if recursive:
                ids |= path_ids(listed, item)
            new = [p for p in listed if p.resolve() not in seen]
            seen.update(p.resolve() for p in listed)
            files += new
        elif item.is_file() and (is_image_file(item) or dicom_header(item) is not None):
            if item.resolve() not in seen:
                files.append(item)
                seen.add(item.resolve())
        elif item.exists():
            problems.add("not an image file or folder", item)
        else:
            problems.add("no such file or folder", item)
    incomplete: list[Case] | None = [] if keep_incomplete else None
    grouped = _group_channels(files, channels, nnunet, items[0] if items else Path("."),
                              problems, incomplete, ids)
    cases = [Case(cid, paths, group=cid) for cid, paths in grouped.items()]
    cases = [*cases, *(incomplete or [])]
    if refuse_split:
        cases = refuse_split_series(cases, problems, keep_incomplete)
    return sorted(cases, key=lambda c: (c.id, str(c.images[:1])))


# ------------------------------------------------------------------------- any inputs


def collect_cases(inputs: Sequence[Path], *, recursive: bool = False,
                  channels: Sequence[str] | None = None) -> list[Case]:
    """Cases for every input file or folder, in order (the batch commands' door).

    A named file always becomes a case (an unsupported or corrupt one then fails when it is
    read, and gets an error row); so does one series of a folder holding several, named
    as its case is (``exam1/exam1_series3``, :func:`segfew.io.dicom.series_names`). In
    folders, what is not part of an image (tables, text, data files no header names,
    non-image DICOM objects, dangling links) is skipped with a
    :class:`~segfew.errors.DataWarning` naming it (:func:`segfew.data.scan.list_folder`).
    A DICOM series whose files lie in several folders, of one input or of several, gives
    each folder an error row naming all the others (:mod:`segfew.data.split_series`).
    A file reached by two inputs (given twice, or a folder and a file in it) is one case;
    different files of one case id from different inputs are each an error row (their
    outputs, named by the id, would overwrite each other).
    """
    cases: list[Case] = []
    origin: list[int] = []  # which input each case came from
    for n, raw in enumerate(inputs):
        found = _input_cases(Path(raw), channels, recursive)
        known = {tuple(p.resolve() for p in c.images) for c in cases}
        found = [c for c in found if tuple(p.resolve() for p in c.images) not in known]
        cases += found
        origin += [n] * len(found)
    return refuse_split_series(_clashing_inputs(cases, origin), _Problems(collect=False),
                               keep=True)  # of the inputs at once


def _input_cases(path: Path, channels: Sequence[str] | None, recursive: bool) -> list[Case]:
    """The cases of one input of :func:`collect_cases`."""
    if not path.exists() and series_of_path(path) is not None:
        return [Case(id=case_id(path), images=(path,))]  # one series of a folder
    if not path.exists():
        raise DataError("input not found", path)
    if path.is_file():
        try:
            found = _find_images(path, channels, recursive, _Problems(collect=False),
                                 keep_incomplete=True, refuse_split=False)
        except DataError:
            found = []
        # a named file always gets a row; reading it later says what is wrong with it
        return found or [Case(id=case_id(path), images=(path,))]
    return _find_images(path, channels, recursive, _Problems(collect=False),
                        keep_incomplete=True, refuse_split=False)


def _clashing_inputs(cases: Sequence[Case], origin: Sequence[int]) -> list[Case]:
    """Cases of different inputs sharing an id (``d1/a.nii.gz``, ``d2/a.nii.gz``) would
    write one output (``a_seg.nii.gz``): each becomes an error row naming the others."""
    by_id: dict[str, list[int]] = defaultdict(list)
    for i, case in enumerate(cases):
        by_id[case.id].append(i)
    out = list(cases)
    for cid, where in by_id.items():
        if len({origin[i] for i in where}) < 2:
            continue
        hint = _clash_hint([cases[i].images[0] for i in where])
        for i in where:
            if out[i].problem is None:
                others = ", ".join(str(cases[j].images[0]) for j in where if j != i)
                out[i] = replace(out[i], problem=str(DataError(
                    f"duplicate case id {cid!r} (also {others}){hint}", cases[i].images[0])))
    return out


def _clash_hint(paths: Sequence[Path]) -> str:
    """How to tell same-named files of different inputs apart: their common folder with
    ``--recursive`` names each by its path (:func:`~segfew.data.scan.path_ids`)."""
    full = [p.absolute() for p in paths]
    try:
        common = Path(os.path.commonpath([str(p) for p in full]))
    except ValueError:  # different drives
        return ": rename one of them"
    ids = path_ids(full, common)
    if len(set(ids.values())) < len(full) or common == Path(common.anchor):
        return ": rename one of them"
    example = ids[full[0]]
    return (f": rename one, or give their common folder {common} as one --input with "
            f"--recursive, which reads every image below it and names each by its path "
            f"({example}, …)")
