"""What makes a run reproducible: the validated spec, seed, versions and data manifest.

``write_run_info`` saves them as ``run.json`` next to a command's outputs.
"""

from __future__ import annotations

import errno
import hashlib
import importlib.metadata
import json
import os
import platform
import sys
import warnings
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel
from threadpoolctl import threadpool_info

from segfew import __version__
from segfew.errors import DataError, SpecError
from segfew.files import file_digest, write_json

LIBRARIES = ("torch", "numpy", "nibabel", "SimpleITK", "scikit-learn", "scikit-image",
             "pydantic", "typer", "rich", "matplotlib")


def versions() -> dict[str, str]:
    """segfew, Python and library versions (segfew's of the code that runs, which an editable
    install's metadata may not be)."""
    out = {"segfew": __version__, "python": platform.python_version()}
    out.update({name: _version(name) for name in LIBRARIES})
    return out


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


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
    from segfew.io.dicom import dicom_series_files, series_path_files

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
        from segfew.io.itk import detached_data_files

        return detached_data_files(header)
    if lower.endswith(".hdr"):
        from segfew.io.nifti import is_pair_header, pair_data_file, spm_mat

        if is_pair_header(header):
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


#: what :func:`voxel_digest` hashes first: v1 (older model files'), v2 (written "v2:<hex>")
VOXELS_V1, VOXELS_V2, VOXEL_VERSION = b"segfew voxels v1\n", b"segfew voxels v2\n", 2
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
    from segfew.io import read_image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return read_image(path).array
    except (DataError, OSError, MemoryError):
        return None


def digest_version(digest: str) -> int:
    """Which :func:`voxel_digest` ``digest`` is: 2 (``"v2:<hex>"``) or 1 (plain hex)."""
    return 2 if str(digest).startswith("v2:") else 1


def voxel_digest(path: Path, array: np.ndarray | None = None, version: int = VOXEL_VERSION
                 ) -> str | None:
    """The SHA-256 of the scan's voxels: its identity by content, whatever stores it.

    The array :func:`segfew.io.read_image` returns: a 3D scan in its canonical RAS
    orientation (a re-save in another storage order is the same scan) with each axis then
    flipped by a rule of its content (:func:`_canonical_flips`: a copy whose header gives an
    axis another direction, as NIfTI qform and sform codes 0 do, is the same scan too); a
    2D picture by the least digest of its 8 rotations and mirrors. Hashed: ``VOXELS_V2``,
    the shape as text (``"256x256x10\\n"``), then the values in C order as little-endian
    float32 where it holds every one (``"<f4\\n"``), else float64 (``"<f8\\n"``: chosen by
    the values, not the dtype), :data:`_CHUNK` voxels at a time; -0.0 as 0.0, NaN/±inf as the
    finite minimum, as :func:`segfew.data.read.read_case` gives them (``array`` may be that,
    if in memory already); not the geometry. Returned as ``"v2:<hex>"``; ``version`` 1: the
    plain hex of ``VOXELS_V1`` without flips, as older model files record (:func:`digest_version`).

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
             else [array] if version == 1 else _canonical_flips(array))  # 2D: no orientation
    head = VOXELS_V1 if version == 1 else VOXELS_V2
    digests = [d for f in forms if (d := _array_digest(f, head)) is not None]
    return None if not digests else min(digests) if version == 1 else "v2:" + min(digests)


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


def voxel_digests(paths: Iterable[Path]) -> list[str]:
    """The :func:`voxel_digest` of each scan, sorted and unique (a scan without one is left
    out): what a model file records of its training images (``metrics.training_voxels``)."""
    return sorted({d for d in map(voxel_digest, map(Path, paths)) if d is not None})


def manifest(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """One entry per input scan: path, size and :func:`scan_digest` (a DICOM series or a
    detached header also ``files``: the files hashed); any other folder: one entry per file
    in it. A scan that cannot be read is recorded as such (``unreadable``: the reason),
    never re-opened into a crash after the outputs are written."""
    rows: dict[str, dict[str, Any]] = {}
    scans: dict[Path, list[Path]] = {}
    for p in (Path(p) for p in paths):
        if p.is_dir():
            try:
                series = scan_files(p)
                children = [] if series else [c for c in p.iterdir()
                                              if c.is_file() and not c.name.startswith(".")]
            except OSError:
                rows[str(p)] = {"path": str(p), "unreadable": "folder cannot be listed"}
                continue
            if series:
                scans[p] = series
            for c in children:
                scans.setdefault(c, [])
        elif p.is_file():
            scans.setdefault(p, [])
        else:
            try:  # one series of a folder holding several: a path on no disk
                series = scan_files(p) if p.parent.is_dir() else []
            except OSError:
                series = []
            if series and series != [p]:
                scans[p] = series
    for p, series in sorted(scans.items()):
        try:
            files = series or scan_files(p)
            row: dict[str, Any] = {"path": str(p), "bytes": sum(f.stat().st_size for f in files),
                                   "sha256": scan_digest(p, files)}
            if files != [p]:
                base = p if p.is_dir() else p.parent
                row["files"] = [os.path.relpath(f, base) for f in files]
            rows[str(p)] = row
        except OSError as e:
            why = e.strerror or type(e).__name__
            if e.filename and Path(e.filename) != p:  # a series' or header's data file
                why += f": {Path(e.filename).name}"
            rows[str(p)] = {"path": str(p), "unreadable": why}
    return sorted(rows.values(), key=lambda r: r["path"])


def cpu_threads() -> int:
    """Threads of torch where it is loaded, else of the BLAS/OpenMP pools (``label``), so
    recording them never loads torch."""
    if "torch" in sys.modules:
        from segfew.runtime import threads

        return threads()

    return max([int(p["num_threads"]) for p in threadpool_info()] or [os.cpu_count() or 1])


def _threads_chosen_by() -> str:
    if "torch" in sys.modules:
        from segfew.runtime import threads_chosen_by

        return threads_chosen_by()
    return "the BLAS/OpenMP default"


def run_info(spec: BaseModel | dict[str, Any], seed: int | None, inputs: Iterable[Path] = (),
             runtime: dict[str, Any] | None = None, extra: dict[str, Any] | None = None
             ) -> dict[str, Any]:
    """The record of a run; ``runtime`` is how its networks ran (segfew.runtime.describe);
    ``extra`` adds fields (a training run's ``status``, its ``validation`` set).

    ``threads`` is the CPU thread count of every command, ``threads_chosen_by`` how it was
    chosen (``--threads``, ``OMP_NUM_THREADS`` or the idle cores by the load average)."""

    spec_data = spec.model_dump(mode="json") if isinstance(spec, BaseModel) else spec
    return {
        "command": " ".join(Path(sys.argv[0]).name.split() + sys.argv[1:]),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "spec": spec_data,
        "seed": seed,
        "versions": versions(),
        "platform": platform.platform(),
        "threads": cpu_threads(),
        "threads_chosen_by": _threads_chosen_by(),
        **({"runtime": runtime} if runtime is not None else {}),
        **(extra or {}),
        "data": manifest(inputs),
    }


def write_run_info(path: Path, spec: BaseModel | dict[str, Any], seed: int | None,
                   inputs: Iterable[Path] = (), runtime: dict[str, Any] | None = None,
                   extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``run.json`` (or ``path`` if it names a file) and return what was written."""
    path = Path(path)
    if path.suffix != ".json":
        path = path / "run.json"
    info = run_info(spec, seed, inputs, runtime, extra)
    write_json(path, info)
    return info


def update_run_info(run_dir: Path, **fields: Any) -> None:
    """Set ``fields`` in a run folder's ``run.json`` (nothing when there is none), e.g.
    ``status="completed"`` once the model file is written."""
    path = Path(run_dir) / "run.json"
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if isinstance(info, dict):
        write_json(path, {**info, **fields})


def run_dir_for(model_path: Path) -> Path:
    """Where a model file's checkpoints, metrics and ``run.json`` live: ``<name>-run/``
    beside it, the name less only the model file's own suffix (``m.v1.pt`` → ``m.v1-run``),
    so models whose names share a first part never share a run."""
    model_path = Path(model_path)
    return model_path.with_name(f"{model_path.stem}-run")


def legacy_run_dir(model_path: Path) -> Path | None:
    """The run folder an older segfew gave a dotted model name (``m.v1.pt`` → ``m-run``), or
    None where it is :func:`run_dir_for`'s. It may hold another model's run (``m.v2.pt``
    shared it): check its spec's ``out``."""
    model_path = Path(model_path)
    old = model_path.with_name(f"{model_path.name.split('.')[0]}-run")
    return None if old == run_dir_for(model_path) else old


def unfinished_run(run_dir: Path, model_path: Path) -> str | None:
    """Why ``run_dir`` holds a training run that did not finish, or None.

    Unfinished: ``run.json`` says ``status: running`` (it started and never completed:
    killed, or stopped before its first checkpoint), whatever checkpoints exist; or a
    checkpoint (``last.pt``) is there but the model file is not. A folder of an older
    segfew, without a status, counts as finished when its model file exists.
    """
    run_dir = Path(run_dir)
    has_last = (run_dir / "last.pt").is_file()
    try:
        info = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
        status = info.get("status")
    except (OSError, ValueError, AttributeError):
        info, status = {}, None
    if status == "running":
        since = f" on {info['created']}" if isinstance(info.get("created"), str) else ""
        kept = "its checkpoint last.pt is kept" if has_last else "no checkpoint was written"
        return f"run.json says it started{since} and never completed; {kept}"
    if has_last and not Path(model_path).is_file():
        return f"a checkpoint last.pt but no model file {Path(model_path).name}"
    return None


#: the settings a training run's checkpoint depends on (its network and inputs' shapes, and
#: the learning-rate schedule it is partway along)
RESUME_KEYS = ("network", "head", "preprocess", "framework", "finetune", "features",
               "data.channels", "data.label_map", "label_names", "train.lr_schedule")


def check_resumable(run_dir: Path, spec: BaseModel) -> None:
    """A run folder resumed (``--resume``) must hold a run of these settings: those of
    :data:`RESUME_KEYS` in its ``run.json`` must be the same (a setting newer than the run,
    absent from it, is not compared). Raises :class:`SpecError` naming the ones that differ;
    a folder without ``run.json`` passes."""
    saved_path = Path(run_dir) / "run.json"
    try:
        saved = json.loads(saved_path.read_text(encoding="utf-8"))["spec"]
    except (OSError, ValueError, KeyError, TypeError):
        return
    old, new = _flat(saved), _flat(spec.model_dump(mode="json"))
    differ = sorted(k for k in set(old) | set(new)
                    if k.startswith(RESUME_KEYS) and k in old and old[k] != new.get(k))
    if differ:
        shown = ", ".join(f"{k} {old.get(k)!r} → {new.get(k)!r}" for k in differ[:6])
        raise SpecError(f"the run folder holds another configuration ({shown}); resume with "
                        "its settings, or drop --resume and choose another --out", run_dir)


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict):
        return {prefix.rstrip("."): data}
    out: dict[str, Any] = {}
    for k, v in data.items():
        out.update(_flat(v, f"{prefix}{k}."))
    return out
