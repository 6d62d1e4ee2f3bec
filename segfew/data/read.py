"""The one door through which every case reaches segfew: read all its files, check them all.

Every command — inspect, label, pretrain, train-classifier, evaluate, predict, experiment —
reads a :class:`~segfew.data.Case` with :func:`read_case` (pre-processing and its cache go
through it too, :func:`segfew.preprocess.cache.load_case`), so a case that one command refuses,
every command refuses, with the same one-line :class:`~segfew.errors.DataError`. What the door
changes and goes on with is a :class:`~segfew.errors.DataWarning` naming the file, which
``segfew inspect`` lists too.

The checks, in order:

1. Each file is read within :class:`segfew.io.ReadLimits` (its header is checked before
   any voxel is read); DICOM series must be evenly spaced and untilted.
2. Every channel and label map shares the first channel's shape and geometry: the
   affines agree to ``GEOMETRY_ATOL`` mm (and 1e-5 relative).
3. Images: NaN and ±inf voxels are replaced by the image's finite minimum, with a warning
   that gives their count (no scanner value means "missing"; one NaN would otherwise
   spread through every resize). An image without one finite voxel is an error, as is
   one of a single value or fewer than 4 voxels across; spikes are said
   (:mod:`segfew.data.content`).
4. Label maps: stored losslessly, said from the content (:func:`check_lossless`); then
   (:func:`check_label_values`) not colour; ``label_map`` remaps values first, never onto
   a value the map leaves unmapped (:func:`check_remap_keeps_labels_apart`); integers (a
   float map within ``ROUNDING_TOL`` of integers is rounded, with a warning); no negative
   values; a binary mask stored as 0/255 is an error that names
   ``--label-map 255:1``, one resized or anti-aliased (grey levels at the edge of its
   structure) an error that says so (:mod:`segfew.data.binary_masks`); values within the
   declared set, when one is given; codes far sparser than their range refused
   (:class:`SparseLabelsError`) with the ``--label-map`` that makes them 0, 1, 2, ….
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from segfew.data import Case
from segfew.data.binary_masks import check_binary_255, check_interpolated
from segfew.data.content import check_scan_content
from segfew.errors import DataError, DataWarning
from segfew.io import Image, ReadLimits, read_image
from segfew.io.dicom import dicom_header, dicom_series_files

__all__ = [
    "GEOMETRY_ATOL",
    "ROUNDING_TOL",
    "LabelRules",
    "SparseLabelsError",
    "check_label_values",
    "check_lossless",
    "check_remap_keeps_labels_apart",
    "check_same_grid",
    "consecutive_label_map",
    "label_map_hint",
    "label_values",
    "read_case",
    "replace_non_finite",
]

GEOMETRY_ATOL = 1e-3
"""mm: how far the affines of one case's files may differ (rtol 1e-5 on top)."""
ROUNDING_TOL = 1e-3
"""A float label map this close to integers is rounded (with a warning), else refused."""
LABEL_CHECKS = 2
"""Bumped when :func:`check_label_values` refuses what it let in before (2: interpolated
binary masks)."""


@dataclass(frozen=True)
class LabelRules:
    """What a label map must satisfy beyond being integer and non-negative.

    ``values``: the declared label set (None: any). ``remap``: values replaced before any
    check, e.g. ``{255: 1}`` for a 0/255 mask (``--label-map 255:1``).
    """

    values: frozenset[int] | None = None
    remap: Mapping[int, int] | None = None

    def key(self) -> str:
        """A stable text of the rules and of the door's label checks (``LABEL_CHECKS``), for
        cache keys: a map cached before a check was added is read through the door again."""
        values = None if self.values is None else sorted(self.values)
        remap = None if not self.remap else sorted(self.remap.items())
        return f"checks={LABEL_CHECKS};values={values};remap={remap}"


def read_case(case: Case, rules: LabelRules | None = None, limits: ReadLimits | None = None
              ) -> tuple[list[Image], list[Image]]:
    """Read and check every file of ``case``: ``(channel images, label maps)``.

    Images keep their stored dtype (non-finite voxels replaced); label maps are returned
    with small unsigned integer arrays. Raises :class:`DataError` (one line, naming the
    file) on the first problem; warns :class:`DataWarning` on what it changed.
    """
    if case.problem is not None:
        raise DataError(case.problem)
    for path in case.labels:
        check_lossless(path)
    rules = rules or LabelRules()
    limits = limits if limits is not None else ReadLimits.from_env()
    images: list[Image] = []
    blanks: list[Path] = []
    for path in case.images:
        img = read_image(path, limits)
        if images:
            check_same_grid(img, images[0])
        array = replace_non_finite(img.array, path)
        if check_scan_content(array, path, labelled=bool(case.labels)):
            blanks.append(path)
        images.append(replace(img, array=array))
    labels: list[Image] = []
    for path in case.labels:
        lab = read_image(path, limits, label=True)
        check_same_grid(lab, images[0])
        arr = check_label_values(lab.array, rules.values, path, rules.remap, colour=lab.colour)
        labels.append(replace(lab, array=arr))
    drawn = [lab.path for lab in labels if lab.array.any()] if blanks else []
    if drawn:  # a blank slice is kept beside an empty label map, not beside structures
        raise DataError(f"the image holds one value everywhere, yet {drawn[0]} draws "
                        "structures on it", blanks[0])
    return images, labels


def source_shape(img: Image) -> tuple[int, ...]:
    """The shape in the file's own axis order, without trailing singleton axes."""
    shape = img.source_shape
    while len(shape) > img.dim and shape[-1] == 1:
        shape = shape[:-1]
    return shape


def check_same_grid(img: Image, first: Image) -> None:
    """Raise when ``img`` is not on ``first``'s grid (shape, then affine within tolerance)."""
    assert img.path is not None
    if img.shape != first.shape:
        if source_shape(img) == source_shape(first):  # the same array, other axes
            raise DataError(f"orientation {img.orientation or 'unstated'} differs from "
                            f"{first.path} ({first.orientation or 'unstated'}): its "
                            f"{'×'.join(map(str, source_shape(img)))} voxels lie along other "
                            "axes (its affine permutes them); save both with one affine",
                            img.path)
        raise DataError(f"shape {source_shape(img)} differs from {first.path} "
                        f"{source_shape(first)}", img.path)
    if not np.allclose(img.source_affine, first.source_affine, rtol=1e-5, atol=GEOMETRY_ATOL):
        if np.allclose(img.affine, first.affine, rtol=1e-5, atol=GEOMETRY_ATOL):
            raise DataError(f"orientation {img.orientation or 'unstated'} differs from "
                            f"{first.path} ({first.orientation or 'unstated'}): the same "
                            "voxels, stored with their axes flipped or in another order; "
                            "save both with one affine", img.path)
        raise DataError("geometry (affine/spacing/origin/direction) differs from "
                        f"{first.path} by more than {GEOMETRY_ATOL:g} mm", img.path)


def replace_non_finite(array: np.ndarray, path: Path) -> np.ndarray:
    """``array`` with NaN/±inf replaced by its finite minimum; warns with their count."""
    if array.dtype.kind not in "fc":
        return array
    finite = np.isfinite(array)
    if finite.all():
        return array
    if not finite.any():
        raise DataError("image has no finite voxel (all NaN or infinite)", path)
    low = array[finite].min()
    n = int(array.size - np.count_nonzero(finite))
    warnings.warn(DataWarning(f"{n} NaN/infinite voxel(s) of {array.size} replaced by the "
                              f"image's finite minimum ({float(low):g})", path), stacklevel=3)
    return np.where(finite, array, low).astype(array.dtype, copy=False)


SPARSE_MIN_TOP = 16
"""A label map whose largest value is at least this, and more than ``SPARSE_RATIO`` times
the number of values present, is a code book (FreeSurfer's 0, 2, 41, 1035, 2035), not
consecutive labels: a network would get an output per unused code."""
SPARSE_RATIO = 4


def check_lossless(label: Path) -> None:
    """Raise :class:`DataError` for a label map stored with lossy compression, which changes
    label values: a JPEG (or JPEG 2000) file, a TIFF compressed as JPEG, a DICOM whose
    transfer syntax or Lossy Image Compression flag says lossy. Said from the content — the
    first bytes, a TIFF's directories, a DICOM header — before any pixel is read, never
    from the name: a PNG called ``.jpg`` holds exact values, JPEG bytes called ``.png`` not.
    A file that cannot be opened is left to the reader's words."""
    label = Path(label)
    for path in sorted(dicom_file for files in dicom_series_files(label).values()
                       for dicom_file in files) if label.is_dir() else [label]:
        lossy = _lossy_storage(path)
        if lossy is not None:  # a DICOM series: its file is named
            raise DataError(f"label map stored as {lossy}, whose lossy compression changes "
                            "label values: masks must be stored losslessly: PNG, NIfTI, NRRD",
                            path)


#: TIFF Compression tag (259) values that are lossy: JPEG (old, new, DNG lossy), JPEG 2000
#: (Aperio's and the registered code), JPEG XR, WebP, JPEG XL
_TIFF_LOSSY = {6: "JPEG", 7: "JPEG", 34892: "JPEG", 33003: "JPEG 2000", 33005: "JPEG 2000",
               34712: "JPEG 2000", 34934: "JPEG XR", 50001: "WebP", 50002: "JPEG XL"}
_TIFF_MAX_PAGES = 100_000
#: DICOM transfer syntaxes that are always lossy (PS3.5 §8.2): JPEG baseline, extended and
#: the retired DCT processes (and MPEG video, pydicom's MPEGTransferSyntaxes)
_DICOM_LOSSY = frozenset(f"1.2.840.10008.1.2.4.{n}" for n in (
    50, 51, 52, 53, 54, 55, 56, 59, 60, 61, 62, 63, 64))
#: ... and those that may be either (JPEG-LS near-lossless, JPEG 2000, HTJ2K): lossy unless
#: the header's Lossy Image Compression (0028,2110) is "00"
_DICOM_MAYBE_LOSSY = frozenset(f"1.2.840.10008.1.2.4.{n}" for n in (81, 91, 93, 203))


def _lossy_storage(path: Path) -> str | None:
    """How ``path`` is stored lossily, in words (e.g. ``TIFF with JPEG compression``), or
    None: lossless, or not for this check to say."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return None
    if head.startswith(b"\xff\xd8\xff"):
        named = path.name.lower().endswith((".jpg", ".jpeg"))
        return "JPEG" if named else "JPEG (by its bytes, whatever its name)"
    if head.startswith((b"\xff\x4f\xff\x51", b"\x00\x00\x00\x0cjP  \r\n\x87\n")):
        return "JPEG 2000"
    if head[:4] in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"):
        return _lossy_tiff(path, head)
    return _lossy_dicom(path)


def _lossy_tiff(path: Path, head: bytes) -> str | None:
    """The lossy Compression of any page of a (Big)TIFF, read from its directories only."""
    from PIL.TiffImagePlugin import ImageFileDirectory_v2

    try:
        ifh = head[:16] if head[2:4] in (b"+\0", b"\0+") else head[:8]
        ifd = ImageFileDirectory_v2(ifh)
        offset, seen = ifd.next, set[int]()
        with open(path, "rb") as f:
            while offset and offset not in seen and len(seen) < _TIFF_MAX_PAGES:
                seen.add(offset)
                f.seek(offset)
                ifd.load(f)
                how = _TIFF_LOSSY.get(int(ifd.get(259, 1)))
                if how is not None:
                    return f"TIFF with {how} compression"
                offset = ifd.next
    except Exception:  # a corrupt TIFF: the reader says what is wrong
        return None
    return None


def _lossy_dicom(path: Path) -> str | None:
    """The lossy transfer syntax, or the Lossy Image Compression flag, of a DICOM file
    (its header as :func:`segfew.io.dicom.dicom_header` reads it; None for another file)."""
    from pydicom.uid import MPEGTransferSyntaxes

    header = dicom_header(path)
    if header is None:
        return None
    syntax, flag = header.transfer_syntax, header.lossy_compression
    if syntax in _DICOM_LOSSY or syntax in MPEGTransferSyntaxes or (
            syntax in _DICOM_MAYBE_LOSSY and flag != "00"):
        return f"DICOM compressed as {header.transfer_syntax_name}"
    if flag == "01":
        return "DICOM once lossy compressed (Lossy Image Compression 01)"
    return None


def check_label_values(label: np.ndarray, allowed: set[int] | frozenset[int] | None,
                       path: Path, remap: Mapping[int, int] | None = None,
                       colour: bool = False) -> np.ndarray:
    """Return ``label`` as an unsigned integer array, or raise :class:`DataError`.

    ``allowed`` is the declared label set (None: any non-negative integer); ``remap``
    replaces values before the checks; ``colour`` says the file held RGB pixels.
    """
    if colour:
        raise DataError("colour label map: give one integer label per pixel", path)
    check_lossless(path)
    arr = np.asarray(label)
    if arr.dtype.kind == "b":
        arr = arr.astype(np.uint8)
    elif arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise DataError("label map has NaN or infinite values", path)
        rounded = np.rint(arr)
        off = float(np.max(np.abs(arr - rounded))) if arr.size else 0.0
        if off > ROUNDING_TOL:
            check_interpolated(arr, path)  # a 0/1 mask smoothed: say so, not "non-integer"
            worst = float(arr.flat[int(np.argmax(np.abs(arr - rounded)))])
            raise DataError(f"label map has non-integer values (e.g. {worst:g}); give one "
                            "integer label per voxel", path)
        if off > 0:
            warnings.warn(DataWarning(f"label map values rounded to integers (off by up to "
                                      f"{off:.2g})", path), stacklevel=3)
        arr = rounded.astype(np.int64)
    elif arr.dtype.kind not in "iu":
        raise DataError(f"label map has unsupported type {arr.dtype}", path)
    raw = np.unique(arr)
    if raw.size > 3:  # 0, a maximum and grey levels between: a binary mask resized?
        check_interpolated(arr, path)
    values = raw
    if remap:
        check_remap_keeps_labels_apart(raw, remap, path)
        arr = _remap(arr, raw, remap)
        values = np.unique(_remap(raw, raw, remap))
    if values.size and values[0] < 0:
        raise DataError(f"label map has negative values ({int(values[0])}); labels are 0 "
                        "(background), 1, 2, …", path)
    present = {int(v) for v in values}
    check_binary_255(present, allowed, path)
    if allowed is not None:
        bad = sorted(v for v in present if v not in allowed)
        if bad:
            raise DataError(f"label values {bad} outside the declared set {sorted(allowed)}", path)
    top = int(values[-1]) if values.size else 0
    if allowed is None and top >= SPARSE_MIN_TOP and top + 1 > SPARSE_RATIO * len(present):
        raise SparseLabelsError.of(sorted(present), {int(v) for v in raw}, remap, path)
    dtype = np.uint8 if top < 256 else np.uint16 if top < 65536 else np.int32
    return arr if arr.dtype == dtype else arr.astype(dtype)


class SparseLabelsError(DataError):
    """Label codes far sparser than their range. The door sees one map, so it gives this
    map's own pairs only as such: other maps may hold values those pairs would merge with.
    Where every map is known (``pretrain``), :meth:`over` adds the pairs over all of them;
    commands that take ``--label-map consecutive`` name it (:meth:`taking_consecutive`):
    ``evaluate`` and ``train-classifier --masks`` do not, so the door does not."""

    HINT_MAX = 80
    """Longer pair lists are not spelled out: ``--label-map consecutive`` is the way."""

    @classmethod
    def of(cls, present: Sequence[int], raw: Iterable[int], remap: Mapping[int, int] | None,
           path: Path) -> SparseLabelsError:
        """The refusal of the map at ``path``: ``present`` its values after ``remap``,
        ``raw`` before."""
        hint = label_map_hint(raw, remap)
        listed = ", ".join(str(v) for v in present[:8]) + (", …" if len(present) > 8 else "")
        alone = f" (this map alone: {hint})" if len(hint) < cls.HINT_MAX else ""
        return cls(f"label values {listed} are far sparser than their range 0..{present[-1]} "
                   f"({len(present)} values): codes, not labels numbered 0, 1, 2, …; remap them "
                   f"with --label-map OLD:NEW pairs{alone}", path)

    def over(self, paths: Iterable[Path], remap: Mapping[int, int] | None,
             limits: ReadLimits | None = None) -> SparseLabelsError:
        """This refusal, with the ``--label-map`` pairs from the values of every map at
        ``paths`` added (the ones safe to follow); itself when one cannot be read (its case
        says why) or the pairs would be too long to give."""
        paths = sorted(set(paths))
        if len(paths) < 2:
            return self
        try:
            hint = label_map_hint(label_values(paths, limits), remap)
        except DataError:
            return self
        if len(hint) >= self.HINT_MAX:
            return self
        return SparseLabelsError(f"{self.message}; over all {len(paths)} label maps that is "
                                 f"--label-map {hint}", self.path)

    def taking_consecutive(self) -> SparseLabelsError:
        """This refusal where ``--label-map consecutive`` is taken (``pretrain``,
        ``inspect``), which numbers the values of every map in order."""
        return SparseLabelsError(f"{self.message}; or --label-map consecutive, which numbers "
                                 "the values of every map", self.path)


def label_map_hint(raw: Iterable[int], remap: Mapping[int, int] | None = None) -> str:
    """The ``--label-map`` pairs that make the values ``raw`` 0, 1, 2, … in order, after
    ``remap`` (whose pairs it keeps, so it replaces ``remap`` whole)."""
    remap = remap or {}
    index = {v: i for i, v in enumerate(sorted({remap.get(v, v) for v in raw}))}
    pairs = {v: index[remap.get(v, v)] for v in sorted(raw)}
    return ",".join(f"{a}:{b}" for a, b in pairs.items() if a != b or a in remap)


def check_remap_keeps_labels_apart(raw: Iterable[int], remap: Mapping[int, int],
                                   path: Path) -> None:
    """Raise :class:`DataError` where ``remap`` turns a value into one this map holds and
    leaves as it is (``3:1`` on a map with 1s): two labels would silently become one.

    Each map is checked, so a remap built from some maps' values is checked against them all.
    0 may be a target (that is what mapping to background means); a 0/1/255 mask under
    ``255:1`` is the merge the binary-mask refusal proposes. ``1:1`` merges on purpose."""
    raw = {int(v) for v in raw}
    targets = {t: sorted(s for s, u in remap.items() if u == t) for t in set(remap.values())}
    kept = sorted(v for v in raw if v != 0 and v not in remap and v in targets)
    if not kept or (raw <= {0, 1, 255} and kept == [1] and targets[1] == [255]):
        return
    pairs = ", ".join(f"{s}:{v}" for v in kept for s in targets[v])
    these = ", ".join(str(v) for v in kept)
    one = len(kept) == 1
    raise DataError(f"label value{'' if one else 's'} {these} {'is' if one else 'are'} left "
                    f"unmapped by --label-map, which also maps {pairs}: the labels would merge; "
                    f"map {these} too ({kept[0]}:{kept[0]} merges on purpose)", path)


def label_values(paths: Iterable[Path], limits: ReadLimits | None = None) -> set[int]:
    """Every value the label maps at ``paths`` hold, as stored (floats rounded). Raises
    :class:`DataError` for a map that cannot be read."""
    found: set[int] = set()
    for path in sorted(set(paths)):
        values = np.unique(read_image(path, limits, label=True).array)
        if values.dtype.kind == "f":
            values = np.unique(np.rint(values[np.isfinite(values)]))
        found.update(int(v) for v in values)
    return found


def consecutive_label_map(paths: Iterable[Path], limits: ReadLimits | None = None
                          ) -> dict[int, int]:
    """``{value: index}`` over every value the label maps at ``paths`` hold, in order, so
    that sparse codes (FreeSurfer's 0, 2, 41, 1035, 2035) become 0, 1, 2, … (``label_map =
    "consecutive"``). Background 0, when present, stays 0. Raises :class:`DataError` for a
    map that cannot be read."""
    return {v: i for i, v in enumerate(sorted(label_values(paths, limits))) if v != i}


def _remap(arr: np.ndarray, raw: np.ndarray, remap: Mapping[int, int]) -> np.ndarray:
    """``arr`` with ``remap`` applied in one pass (``raw``: its sorted unique values)."""
    new = np.array([remap.get(int(v), int(v)) for v in raw], np.int64)
    return new[np.searchsorted(raw, arr)]


def warn_placeholder_spacing(cases: Sequence[Case], measures: bool = True) -> str | None:
    """Read the first case's first image; where its voxel size is a placeholder
    (:func:`segfew.io.placeholder_spacing`), say so in a :class:`DataWarning` — sizes and,
    where there are ``measures``, measurements are then in voxels (``vox``/``px``), not
    mm — and return why (else None).

    One file stands for the data set (its files come from one source); ``inspect`` checks
    every case. A file that cannot be read is left to the door that reads it next.
    """
    first = next((c for c in cases if c.images), None)
    if first is None:
        return None
    try:
        image = read_image(first.images[0])
    except DataError:
        return None
    why = image.spacing_placeholder
    if why is not None:
        unit = "voxels (vox)" if image.dim == 3 else "pixels (px)"
        said = (f"; measurements say {'vox' if image.dim == 3 else 'px'} instead of ml/mm"
                if measures else "")
        warnings.warn(DataWarning(f"no real voxel size ({why}): sizes are in {unit}, not "
                                  f"mm{said}", first.images[0]), stacklevel=2)
    return why
