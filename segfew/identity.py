"""What identifies a scan: the bytes of the files that hold it (:func:`scan_digest`) and
its voxels however stored (:func:`voxel_digest`). Manifests, model files' training records,
the leakage check and the grouping of copies all compare scans by these.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import re
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from segfew.errors import DataError
from segfew.files import file_digest
from segfew.io import read_image
from segfew.io.dicom import dicom_series_files, series_path_files
from segfew.io.itk import detached_data_files
from segfew.io.nifti import is_pair_header, pair_data_file, spm_mat


def scan_files(path: Path) -> list[Path]:
    """The files that hold the image at ``path``, whose bytes are the scan's identity.

    A DICOM series folder: the image files of the series the reader reads (its one series,
    or its one series of several files beside single-file strays), sorted; empty for a
    folder holding no such series, or several. One series of a folder holding several
    (``<folder>/<name>``, :func:`segfew.io.dicom.series_of_path`): its files. A detached
    header (``.mhd``, ``.nhdr``, the ``.hdr`` of a NIfTI or Analyze pair): the data file it
    names, not itself — a header is the same for every scan of one size and spacing, and a
    copy renamed changes only the data file's name in it — and, after it, an Analyze pair's
    SPM ``.mat`` where there is one: the reader takes the scan's affine from it, so a
    ``.mat`` rewritten (SPM's reorient) is another input to the cache key, the manifest
    and the digest. Anything else (a single DICOM file too): the file itself.
    """
    path = Path(path)
    if path.is_dir():
        grouped = dicom_series_files(path)
        series = {uid: f for uid, f in grouped.items() if len(f) > 1} or grouped
        return sorted(series[next(iter(series))]) if len(series) == 1 else []
    if not path.exists():
        return series_path_files(path) or [path]  # [path]: its digest says it is missing
    return _data_files(path) or [path]


def _data_files(header: Path) -> list[Path]:
    """The files a detached header's image is read from besides it ([]: not a detached
    header, or its data is inside it): the data file it names (one that is missing is
    returned, for its digest to say so), and an Analyze pair's SPM ``.mat`` where the
    reader takes its affine from one (:func:`segfew.io.nifti.spm_mat`)."""
    lower = header.name.lower()
    if lower.endswith((".mhd", ".nhdr")):
        return detached_data_files(header)
    if lower.endswith(".hdr") and is_pair_header(header):
        mat = spm_mat(header)
        return [pair_data_file(header) or header.with_name(header.name[:-4] + ".img"),
                *([mat] if mat is not None else [])]
    return []


def scan_digest(path: Path, files: list[Path] | None = None) -> str:
    """The SHA-256 that identifies the scan at ``path`` in every manifest and comparison
    (``run.json``, a model's ``training_data``, the leakage check, the grouping of copies);
    beside it, :func:`voxel_digest` identifies the scan by its voxels, however stored.

    One file (a NIfTI, an attached header, a single DICOM file, a detached header's data
    file): its bytes' SHA-256, as :func:`file_digest`. Several (:func:`scan_files`): the
    SHA-256 of their SHA-256s one a line — sorted for a DICOM series, so a copy with its
    slices renamed is the same scan; in order for a header's (an Analyze pair's data file,
    then its ``.mat``: the same voxels under another ``.mat`` are another digest, as a NIfTI
    with another affine is, found again by :func:`voxel_digest` where they are the same in
    RAS). ``files``: :func:`scan_files` of ``path`` if
    known. Raises OSError when the scan cannot be read, IsADirectoryError for a folder
    that holds no single DICOM series.
    """
    path = Path(path)
    files = scan_files(path) if files is None else files
    if not files:
        raise IsADirectoryError(errno.EISDIR, "holds no single DICOM series", str(path))
    if len(files) == 1:
        return file_digest(files[0])
    digests = [file_digest(f) for f in files]
    if not path.is_file():  # a series: its slices in any order, under any names
        digests.sort()
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()


#: what :func:`voxel_digest` hashes first, by version: 1 and 2 (older model files'), 3
VOXEL_HEADS = {1: b"segfew voxels v1\n", 2: b"segfew voxels v2\n", 3: b"segfew voxels v3\n"}
VOXEL_VERSION = 3
_CHUNK = 1 << 18  # voxels hashed at a time: 2 MiB of float64
_voxel_cache: dict[tuple[Any, ...], str | None] = {}


def _scan_key(path: Path) -> tuple[Any, ...] | None:
    """The path, and each of its files' (a detached header's too) path, size, mtime, inode."""
    try:
        files = scan_files(path)
        if not files:
            return None
        every = sorted({*([path] if path.is_file() else []), *files})
        stats = [(str(f), s.st_size, s.st_mtime_ns, s.st_ino) for f in every
                 for s in [f.stat()]]
    except OSError:
        return None
    return (str(path), *stats)


def read_quietly(path: Path) -> np.ndarray | None:
    """The voxels of the scan at ``path`` as :func:`segfew.io.read_image` gives them, its
    warnings unsaid (reading it for a command says them); None where it cannot be read."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return read_image(path).array
    except (DataError, OSError, MemoryError):
        return None


def digest_version(digest: str) -> int:
    """Which :func:`voxel_digest` ``digest`` is: ``"v3:<hex>"`` 3, ``"v2:<hex>"`` 2, plain
    hex 1."""
    found = re.match(r"v(\d+):", str(digest))
    return int(found.group(1)) if found else 1


def voxel_digest(path: Path, array: np.ndarray | None = None, version: int = VOXEL_VERSION
                 ) -> str | None:
    """The SHA-256 of the scan's voxels: its identity by content, whatever stores it.

    The array :func:`segfew.io.read_image` returns: a 3D scan in its canonical RAS
    orientation (a re-save in another storage order is the same scan) by the least digest
    of its forms with the axes in order of size (:func:`_axis_orders`) and each then flipped
    by a rule of its content (:func:`_canonical_flips`): a copy whose header gives the axes
    another order or direction, as NIfTI qform and sform codes 0 do, is the same scan too; a
    2D picture by the least digest of its 8 rotations and mirrors. Hashed: the version's
    head (:data:`VOXEL_HEADS`), the shape as text (``"256x256x10\\n"``), then the values in
    C order as little-endian float32 where it holds every one (``"<f4\\n"``), else float64
    (``"<f8\\n"``: chosen by the values, not the dtype), :data:`_CHUNK` voxels at a time;
    -0.0 as 0.0, NaN/±inf as the finite minimum, as :func:`segfew.data.read.read_case` gives
    them (``array`` may be that, if in memory already); not the geometry. Returned as
    ``"v3:<hex>"``. Older model files record ``version`` 2 (flips, not axis orders: written
    ``"v2:<hex>"``) or 1 (plain hex, neither), compared in their form (:func:`digest_version`).

    None for a scan that cannot be read (reading it says why), a constant image or one
    without a finite voxel. Cached per version by its files' path, size, mtime and inode.
    """
    path = Path(path)
    key = None if (found := _scan_key(path)) is None else (version, *found)
    if key is not None and key in _voxel_cache and array is None:
        return _voxel_cache[key]
    if array is None and (array := read_quietly(path)) is None:
        return None
    digest = _digest_of(np.asarray(array), version)
    if key is not None:
        if len(_voxel_cache) >= 1 << 16:
            _voxel_cache.clear()
        _voxel_cache[key] = digest
    return digest


def _digest_of(array: np.ndarray, version: int) -> str | None:
    if array.dtype.kind == "f" and not (finite := np.isfinite(array)).all():
        if not finite.any():
            return None
        array = np.where(finite, array, array[finite].min())  # as the door gives them
    forms = ([np.rot90(b, k) for b in (array, array[::-1]) for k in range(4)] if array.ndim == 2
             else [array] if version == 1 else _canonical_flips(array) if version == 2
             else [f for a in _axis_orders(array) for f in _canonical_flips(a)])
    digests = [d for f in forms if (d := _array_digest(f, VOXEL_HEADS[version])) is not None]
    return None if not digests else min(digests) if version == 1 else \
        f"v{version}:{min(digests)}"


def _axis_orders(array: np.ndarray) -> list[np.ndarray]:
    """``array`` with its first three axes in order of size, each order of equal sizes: a
    copy whose header gives the axes in another order (a sagittal series re-saved with
    NIfTI codes 0, read in its stored order) has one of these forms too."""
    sizes = array.shape[:3]
    return [np.transpose(array, (*order, *range(3, array.ndim)))
            for order in itertools.permutations(range(3))
            if [sizes[a] for a in order] == sorted(sizes)]


def _canonical_flips(array: np.ndarray) -> list[np.ndarray]:
    """The forms of a 3D scan whose least digest identifies it whatever direction its header
    gave each of its first three axes: each axis turned so that the first moment of its
    profile (its slices' sums) about its centre is positive, the same for a copy flipped
    along any axes; an axis whose moment is 0 (symmetric) both ways: 2^k forms for k such."""
    forms = [array]  # whole numbers' sums are exact; floats' last bits vary with the order
    scale = 0.0 if array.dtype.kind in "biu" else 1e-9 * float(np.abs(array).sum())
    for axis, profile in enumerate(_profiles(array)):
        if (n := profile.size) < 2:
            continue
        weights = (n - 1 - 2 * np.arange(n // 2)).astype(np.float64)
        moment = float(((profile[::-1] - profile)[:n // 2] * weights).sum())  # negated if flipped
        if abs(moment) <= scale * n:
            forms += [np.flip(f, axis) for f in forms]
        elif moment < 0:
            forms = [np.flip(f, axis) for f in forms]
    return forms


def _profiles(array: np.ndarray) -> list[np.ndarray]:
    """The float64 sums of the slices across each of the first 3 axes (3D: in 2 passes)."""
    if array.ndim != 3:
        return [array.sum(axis=tuple(a for a in range(array.ndim) if a != axis),
                          dtype=np.float64) for axis in range(min(array.ndim, 3))]
    inner = [a for a in range(3) if a != (outer := int(np.argmax(np.abs(array.strides))))]
    rest = array.sum(axis=outer, dtype=np.float64)  # over the inner two axes, in order
    out = {outer: array.sum(axis=tuple(inner), dtype=np.float64),
           inner[0]: rest.sum(axis=1), inner[1]: rest.sum(axis=0)}
    return [out[a] for a in range(3)]


def _array_digest(array: np.ndarray, head: bytes) -> str | None:
    flat = array.reshape(-1)  # C order (a copy only where not contiguous)
    if flat.size == 0:
        return None
    kind = "<f4" if _float32_holds(flat) else "<f8"
    h = hashlib.sha256(head + f"{'x'.join(map(str, array.shape))}\n{kind}\n".encode())
    first, constant = float(flat[0]), True
    for start in range(0, flat.size, _CHUNK):
        part = np.array(flat[start:start + _CHUNK], dtype=kind)
        part += 0  # -0.0 → 0.0
        constant = constant and bool(np.all(part == first))
        h.update(part.tobytes())
    return None if constant else h.hexdigest()


def _float32_holds(flat: np.ndarray) -> bool:
    """Whether float32 holds every value exactly (by the values, never the dtype alone)."""
    if flat.dtype.char in "?bBhHef":  # every value of these
        return True
    return all(np.array_equal(part.astype(np.float32), part)
               for part in (flat[i:i + _CHUNK] for i in range(0, flat.size, _CHUNK)))


def scan_digests(paths: Iterable[Path]) -> list[str]:
    """The :func:`scan_digest` of each scan (a DICOM series' files, a detached header's data
    file), sorted and unique, beside :func:`voxel_digests`: the byte copies ``evaluate`` and
    ``predict`` look for (``metrics.training_data``). A scan that cannot be read again is
    left out (run.json says so)."""
    digests = set()
    for path in map(Path, paths):
        with contextlib.suppress(OSError):
            digests.add(scan_digest(path))
    return sorted(digests)


def voxel_digests(paths: Iterable[Path]) -> list[str]:
    """The :func:`voxel_digest` of each scan, sorted and unique (a scan without one is left
    out): what a model file records of its training images (``metrics.training_voxels``)."""
    return sorted({d for d in map(voxel_digest, map(Path, paths)) if d is not None})
