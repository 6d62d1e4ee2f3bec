"""What makes a run reproducible: the validated spec, seed, versions and data manifest.

``write_run_info`` saves them as ``run.json`` next to a command's outputs.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from threadpoolctl import threadpool_info

from segfew import __version__
from segfew.errors import SpecError
from segfew.files import write_json
from segfew.identity import scan_digest, scan_files

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
    old, new = flat_settings(saved), flat_settings(spec.model_dump(mode="json"))
    differ = sorted(k for k in set(old) | set(new)
                    if k.startswith(RESUME_KEYS) and k in old and old[k] != new.get(k))
    if differ:
        shown = ", ".join(f"{k} {old.get(k)!r} → {new.get(k)!r}" for k in differ[:6])
        raise SpecError(f"the run folder holds another configuration ({shown}); resume with "
                        "its settings, or drop --resume and choose another --out", run_dir)


def check_resumed_data(run_dir: Path, data: Sequence[dict[str, Any]]) -> None:
    """A run resumed (``--resume``) on other inputs than it started on is refused: its
    checkpoint, trained on the first, would go on with the second, and the run record would
    list only the second, so a leakage check would miss the first. ``data``: this run's
    manifest (:func:`manifest`), compared by digest (a folder moved is the same data).
    Raises :class:`SpecError` naming ``run_dir``; a run record without a manifest passes."""
    try:
        saved = json.loads((Path(run_dir) / "run.json").read_text(encoding="utf-8"))["data"]
    except (OSError, ValueError, KeyError, TypeError):
        return
    words = other_data(saved, data)
    if words:
        raise SpecError(f"the run was started on other data ({words}); its checkpoint would go "
                        "on with these: resume with the files it started on, or start afresh "
                        "with --overwrite", run_dir)


def other_data(saved: Iterable[Any], data: Iterable[Any]) -> str | None:
    """How the inputs of manifest ``data`` differ from those of ``saved`` (an earlier run
    record's), in words — "1 input(s) new, 0 gone: a.nii.gz is new; …" — or None where they
    hold the same. Compared by digest (SHA-256), each as often as it occurs: a folder moved
    holds the same data, a file saved again counts as new, and so does another byte copy of
    an input. Rows without a digest (an unreadable file) are left out."""
    def by_digest(rows: Iterable[Any]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for r in rows:
            if isinstance(r, dict) and r.get("sha256"):
                out.setdefault(str(r["sha256"]), []).append(str(r.get("path")))
        return out

    def beyond(mine: dict[str, list[str]], theirs: dict[str, list[str]]) -> list[str]:
        """The paths of each digest that ``mine`` holds more often, those ``theirs`` lacks
        named first."""
        out = []
        for d, paths in mine.items():
            known = theirs.get(d, [])
            named = sorted(paths, key=lambda p: p in known)  # a path theirs lacks, first
            out += named[:max(0, len(paths) - len(known))]
        return out

    old, new = by_digest(saved), by_digest(data)
    added, gone = beyond(new, old), beyond(old, new)
    if not (added or gone):
        return None
    changed = [p for p in added if p in gone]  # its bytes differ under the same path
    first = (f"{changed[0]} changed" if changed else f"{added[0]} is new" if added
             else f"{gone[0]} is gone")
    return (f"{len(added)} input(s) new, {len(gone)} gone: {first}; inputs are compared by "
            "their bytes, so a file saved again counts as new")


def flat_settings(data: Any, prefix: str = "") -> dict[str, Any]:
    """A spec's nested settings as dotted keys (``{"train": {"lr": 1}}`` → ``train.lr``),
    so that two specs' differences are named setting by setting."""
    if not isinstance(data, dict):
        return {prefix.rstrip("."): data}
    out: dict[str, Any] = {}
    for k, v in data.items():
        out.update(flat_settings(v, f"{prefix}{k}."))
    return out
