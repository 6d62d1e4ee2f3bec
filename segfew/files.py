"""Write files so that a crash or a bad input never leaves a half-written output behind.

Also the checks every command makes before writing anything: an output path is never one
of its inputs, nor a folder inside one it reads (:func:`check_output`); a run folder is
locked while a run writes to it (:func:`run_lock`). Files are created with the modes the
user's umask gives (``0644`` under the usual ``022``), so a colleague on a shared server
can read a report, not ``0600`` as temporary files are.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import hashlib
import json
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from segfew.errors import DataError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: an exclusive create stands in
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = "segfew.lock"


def umask() -> int:
    """The process's umask (read without changing it where the OS says it)."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)  # elsewhere: set and restore
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    The temporary name keeps ``path``'s suffixes (``.nii.gz``, ``.csv``), so writers that
    choose a format by file name still work. On an exception the temporary file is removed.
    The file gets the mode of a newly created file (``0666`` less the umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = suffix if suffix is not None else "".join(path.suffixes)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{path.stem}.", suffix=f".tmp{suffix}", dir=path.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.is_file():
            os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, default=str) + "\n")


# ------------------------------------------------------------------------- output paths


def check_output(out: str | Path, inputs: Iterable[str | Path],
                 kind: Literal["file", "folder"], flag: str = "--out",
                 run_folder: bool = False) -> Path:
    """Refuse an output path that would clobber an input or be read back as one.

    ``out`` may not be one of ``inputs`` nor lie inside an input folder (it could replace
    an input there, or be read as one next time); a ``folder`` output may not contain an
    input file either, nor be a trained model's run folder (its ``run.json`` with a
    ``status``: how the model was trained) unless ``run_folder`` (the training's own). It
    must be of its kind if it exists, and creatable and writable where it does not.
    Returns ``out``; raises :class:`DataError` naming it.
    """
    out = Path(out)
    where = out.resolve()
    given = [(raw, Path(raw).resolve()) for raw in inputs]
    for raw, inp in given:
        if where == inp:
            raise DataError(f"{flag} is one of the inputs ({raw}); choose another path", out)
    for raw, inp in given:
        if inp.is_dir() and where.is_relative_to(inp):
            raise DataError(f"{flag} is inside the input folder {raw}: it could replace an "
                            "input there, or be read as one next time; choose a path outside "
                            "it", out)
        if kind == "folder" and inp.is_file() and inp.is_relative_to(where) and where.exists():
            raise DataError(f"{flag} holds the input {raw}; its outputs could overwrite it; "
                            "choose an empty folder", out)
    if kind == "folder" and not run_folder and _training_run(out):
        raise DataError(f"{flag} is a trained model's run folder: its run.json records how the "
                        "model was trained and would be overwritten; choose another folder", out)
    if out.exists():
        if kind == "folder" and not out.is_dir():
            raise DataError(f"{flag} exists and is a file, not a folder", out)
        if kind == "file" and out.is_dir():
            raise DataError(f"{flag} is a folder; give a file name", out)
    _check_writable(out if kind == "folder" and out.is_dir() else out.parent, out, flag)
    return out


def _training_run(folder: Path) -> bool:
    """Whether ``folder`` holds a training's ``run.json`` (``pretrain``, ``train-classifier``
    record a ``status``; an evaluation's or a prediction's has none)."""
    try:
        info = json.loads((folder / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and "status" in info


def _check_writable(folder: Path, out: Path, flag: str) -> None:
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise DataError(f"{flag} cannot be created: {existing} is a file, not a folder", out)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise DataError(f"{flag} cannot be written: no permission to write in {existing}", out)


# ------------------------------------------------------------------------- replacing files

#: a run record's name in an output folder; beside an output table it is ``<stem>.run.json``
RUN_RECORD = "run.json"


def check_replace(record: str | Path, names: Iterable[str], overwrite: bool = False,
                  flag: str = "--out", legacy: Iterable[str] = ()) -> None:
    """Refuse, before any work, to replace a file that segfew did not write.

    ``names`` are the files a run will write (or remove), relative to the folder of
    ``record``, the run record it writes beside them (``<out>/run.json``, or
    ``<stem>.run.json`` beside a table). One that exists is replaced only when that record
    lists it among an earlier run's outputs (:func:`outputs_record`) and, where the record
    holds its SHA-256, its bytes are still those segfew wrote (a map corrected by hand is
    not segfew's any more); when the record is an older segfew's that lists no outputs but
    names this ``--out`` (it wrote everything there), or names it in ``legacy`` (the files
    an older segfew wrote beside such a record); or with ``overwrite``.
    Raises :class:`DataError` naming the first such file.
    """
    if overwrite:
        return
    record = Path(record)
    ours = _recorded(record, legacy)
    for name in names:
        path = record.parent / name
        if not (path.exists() or path.is_symlink()):
            continue
        verdict = ours(name)
        if verdict == "changed":
            raise DataError(f"changed since segfew wrote it (edited by hand?): choose another "
                            f"{flag}, or pass --overwrite", path)
        if verdict != "ours":
            raise DataError(f"exists and segfew did not write it: choose another {flag}, or "
                            "pass --overwrite", path)


def is_recorded(record: str | Path, name: str) -> bool:
    """Whether the run record at ``record`` says segfew wrote ``name`` (relative to its
    folder) and, where it holds its SHA-256, the file still holds those bytes: a file that
    a run may remove (:func:`check_replace`'s rule, without ``overwrite``)."""
    return _recorded(Path(record), ())(name) == "ours"


def recorded_outputs(record: str | Path) -> frozenset[str]:
    """The names (relative to its folder) that the segfew run record at ``record`` lists as
    written, by it or by earlier runs there; empty for no record."""
    listed = _listed(_run_record(Path(record)) or {})
    return frozenset(listed or ())


def outputs_record(record: str | Path, written: Iterable[str],
                   digests: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The run record's ``outputs`` (``written``, names relative to its folder),
    ``earlier_outputs`` (the files an earlier run's record there, which this one replaces,
    listed that are still there, so that a later run may replace them too) and
    ``output_sha256`` (each output file's SHA-256, so that a file edited since is not taken
    for segfew's; ``digests`` gives those already computed, an earlier output keeps the
    digest its record held) and ``output_stat`` (size and modification time: an output
    that has neither changed is not hashed again when checked)."""
    record = Path(record)
    outputs = sorted(set(written))
    info = _run_record(record) or {}
    ours = _recorded(record, ())
    listed = _listed(info)
    if listed is not None:  # a record that lists its outputs: those still there
        there: Iterable[str] = listed
    else:
        there = (p.relative_to(record.parent).as_posix() for p in _beside(record)
                 if p != record and not p.name.startswith("."))
    earlier = _still_ours(record, ours, there, outputs)
    old_sha, old_stat = _sums(info)
    sha: dict[str, str] = {}
    stat: dict[str, list[int]] = {}
    for name in outputs:
        path = record.parent / name
        if path.is_file():
            sha[name] = (digests or {}).get(name) or file_digest(path)
            stat[name] = _stat(path)
    for name in earlier:
        if name in old_sha:
            sha[name] = old_sha[name]
            if name in old_stat:
                stat[name] = old_stat[name]
    return {"outputs": outputs, "earlier_outputs": earlier, "output_sha256": sha,
            "output_stat": stat}


def claim_outputs(record: str | Path, names: Iterable[str]) -> None:
    """Write a run record listing ``names`` before a run writes them one by one, so that a
    run stopped part-way can be run again into the same place; the run's full record
    replaces it at the end. Files an earlier record listed are kept in the list, with the
    digests it held (checked by :func:`check_replace` before this is called)."""
    record = Path(record)
    info = _run_record(record) or {}
    old_sha, old_stat = _sums(info)
    names = sorted(set(names))
    ours = _recorded(record, ())
    listed = _listed(info) or []
    earlier = _still_ours(record, ours, listed, names)
    kept = [n for n in [*names, *earlier] if n in old_sha and (record.parent / n).exists()]
    write_json(record, {"outputs": names, "earlier_outputs": earlier,
                        "output_sha256": {n: old_sha[n] for n in kept},
                        "output_stat": {n: old_stat[n] for n in kept if n in old_stat},
                        "unfinished": "a segfew run started writing these files and did not "
                                      "finish; its full record replaces this one at the end"})


def file_digest(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes (hex): a run's outputs, the cache's entries, a scan's files
    (:func:`segfew.identity.scan_digest`)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _still_ours(record: Path, ours: Callable[[str], str | None], listed: Iterable[str],
                written: Sequence[str]) -> list[str]:
    """The ``listed`` files, other than those ``written`` now, that are still there and
    still segfew's: an earlier run's outputs a later run may replace too."""
    return sorted({n for n in listed if n not in written and (record.parent / n).exists()
                   and ours(n) == "ours"})


def _stat(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _sums(info: dict[str, Any]) -> tuple[dict[str, str], dict[str, list[int]]]:
    sha = info.get("output_sha256")
    stat = info.get("output_stat")
    return ({str(k): str(v) for k, v in sha.items()} if isinstance(sha, dict) else {},
            {str(k): list(v) for k, v in stat.items() if isinstance(v, list)}
            if isinstance(stat, dict) else {})


def _listed(info: dict[str, Any]) -> list[str] | None:
    if not isinstance(info.get("outputs"), list):
        return None
    return [str(n) for n in [*info["outputs"], *(info.get("earlier_outputs") or [])]]


def _run_record(path: Path) -> dict[str, Any] | None:
    """A segfew run record's contents (a :func:`segfew.runinfo.run_info` dict or the list
    of :func:`claim_outputs`); None for no such file or a file segfew did not write."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict):
        return None
    if isinstance(info.get("outputs"), list) or {"command", "versions"} <= info.keys():
        return info
    return None


def _recorded(record: Path, legacy: Iterable[str]) -> Callable[[str], str | None]:
    """``name -> "ours" | "changed" | None``: whether the record at ``record`` says segfew
    wrote that file (the record itself included), and whether its bytes changed since
    (where the record holds their SHA-256)."""
    info = _run_record(record)
    if info is None:
        return lambda name: None
    listed = _listed(info)
    if listed is not None:
        names = set(listed)
        sha, stat = _sums(info)

        def check(name: str) -> str | None:
            if name == record.name:
                return "ours"
            if name not in names:
                return None
            path = record.parent / name
            if name not in sha or not path.is_file():
                return "ours"  # an older record (names only), or a folder
            if stat.get(name) == _stat(path) or file_digest(path) == sha[name]:
                return "ours"
            return "changed"
        return check
    old = set(legacy)
    spec = info.get("spec")
    out = spec.get("out") if isinstance(spec, dict) else None
    if not isinstance(out, str) or not out:
        return lambda name: "ours" if name == record.name or name in old else None
    if record.name == RUN_RECORD:  # an older segfew's folder of outputs: all of it is its
        return lambda name: "ours" if Path(out).name == record.parent.name else None
    stem = record.name.removesuffix("." + RUN_RECORD)  # an older segfew's table and siblings
    return lambda name: "ours" if name == record.name or name in old or (
        Path(out).name.startswith(stem + ".") and name.startswith(stem + ".")) else None


def _beside(record: Path) -> list[Path]:
    """The files a record's scope may hold: everything under its folder for ``run.json``
    (one level of sub-folders: a preview), the ``<stem>.*`` siblings of ``<stem>.run.json``."""
    folder = record.parent
    try:
        if record.name == RUN_RECORD:
            return sorted(p for p in [*folder.glob("*"), *folder.glob("*/*")] if p.is_file())
        stem = record.name.removesuffix("." + RUN_RECORD)
        return sorted(p for p in folder.glob(f"{glob.escape(stem)}.*") if p.is_file())
    except OSError:
        return []


# ------------------------------------------------------------------------- run lock


@contextlib.contextmanager
def run_lock(folder: str | Path, name: str = LOCK_NAME, what: Path | None = None
             ) -> Iterator[Path]:
    """Hold ``<folder>/segfew.lock`` (or ``<folder>/<name>``: one output's lock, ``what``
    the output a refusal names) while a run writes into ``folder``.

    A second run on the same folder is refused with a :class:`DataError` naming the lock
    and who holds it. The lock is an OS file lock (``flock``), so a run that dies releases
    it; the file is removed when the run ends, and so is the folder if the lock made it and
    the run left nothing in it (a run refused after its checks).
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise DataError("exists and is a file, not a folder", folder)
    created = [folder, *folder.parents]
    created = created[:next(i for i, p in enumerate(created) if p.exists() or p == p.parent)]
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / name
    for _ in range(5):
        if fcntl is None:  # pragma: no cover
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                raise _in_use(what or folder, lock) from None
            break
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise _in_use(what or folder, lock) from None
        try:  # the holder before us may have removed the file as we opened it
            if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    else:  # pragma: no cover - five races in a row
        raise _in_use(what or folder, lock)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        yield lock
    finally:
        with contextlib.suppress(OSError):
            lock.unlink()
        os.close(fd)
        with contextlib.suppress(OSError):  # stops at one that is not empty
            for made in created:
                made.rmdir()


#: the end of an output's lock file, beside it (:func:`output_lock`): no one's scan
OUTPUT_LOCK_SUFFIX = ".segfew.lock"


def output_lock(out: str | Path) -> contextlib.AbstractContextManager[Path]:
    """Hold ``.<name>.segfew.lock`` beside the output file or folder ``out`` while a run
    writes it (:func:`run_lock`): a second ``predict`` or ``evaluate`` into the same
    ``--out`` is refused rather than mixed into the first's files. Beside, not inside: the
    output is not made before the run's checks, and an input folder's listing skips it."""
    real = Path(out).resolve()  # one lock whatever name (a link) the output is given by
    return run_lock(real.parent, f".{real.name}{OUTPUT_LOCK_SUFFIX}", Path(out))


def _in_use(folder: Path, lock: Path) -> DataError:
    try:
        holder = lock.read_text(encoding="utf-8").strip()
    except OSError:
        holder = ""
    who = f" ({holder})" if holder else ""
    return DataError(f"is in use by another segfew run{who}: lock file {lock}; wait for it "
                     "to finish or choose another --out", folder)


def write_rows_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> Path:
    """Write a CSV (UTF-8, a header line, then one line per row) atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path

def free_memory() -> int:
    """Bytes of CPU memory free now: the system's MemAvailable (Linux), else free pages;
    what the checks before a large read or a run compare their need with."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
