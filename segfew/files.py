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
import json
import os
import socket
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
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


# ------------------------------------------------------------------------- run lock


@contextlib.contextmanager
def run_lock(folder: str | Path) -> Iterator[Path]:
    """Hold ``<folder>/segfew.lock`` while a run writes into ``folder``.

    A second run on the same folder is refused with a :class:`DataError` naming the lock
    and who holds it. The lock is an OS file lock (``flock``), so a run that dies releases
    it; the file is removed when the run ends, and so is the folder if the lock made it and
    the run left nothing in it (a run refused after its checks).
    """
    folder = Path(folder)
    created = [folder, *folder.parents]
    created = created[:next(i for i, p in enumerate(created) if p.exists() or p == p.parent)]
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_NAME
    for _ in range(5):
        if fcntl is None:  # pragma: no cover
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                raise _in_use(folder, lock) from None
            break
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise _in_use(folder, lock) from None
        try:  # the holder before us may have removed the file as we opened it
            if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    else:  # pragma: no cover - five races in a row
        raise _in_use(folder, lock)
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
