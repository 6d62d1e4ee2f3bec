"""What makes a run reproducible: the validated spec, seed, versions and data manifest.

``write_run_info`` saves them as ``run.json`` next to a command's outputs.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import sys
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from segfew.atomic import write_json

LIBRARIES = ("torch", "numpy", "nibabel", "SimpleITK", "scikit-learn", "scikit-image",
             "pydantic", "typer", "rich", "matplotlib")


def versions() -> dict[str, str]:
    """segfew, Python and library versions."""
    out = {"segfew": _version("segfew"), "python": platform.python_version()}
    out.update({name: _version(name) for name in LIBRARIES})
    return out


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def file_digest(path: Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes (the cache key and manifest use it)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def manifest(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """One entry per input file: path, size and SHA-256."""
    rows = []
    for p in sorted({Path(p) for p in paths}):
        if p.is_file():
            rows.append({"path": str(p), "bytes": p.stat().st_size, "sha256": file_digest(p)})
    return rows


def cpu_threads() -> int:
    """Threads of torch where it is loaded, else of the BLAS/OpenMP pools (``label``), so
    recording them never loads torch."""
    if "torch" in sys.modules:
        from segfew.runtime import threads

        return threads()
    from threadpoolctl import threadpool_info

    return max([int(p["num_threads"]) for p in threadpool_info()] or [os.cpu_count() or 1])


def run_info(spec: BaseModel | dict[str, Any], seed: int | None, inputs: Iterable[Path] = (),
             runtime: dict[str, Any] | None = None) -> dict[str, Any]:
    """The record of a run; ``runtime`` is how its networks ran (segfew.runtime.describe).

    ``threads`` is the CPU thread count (``--threads``) of every command."""

    spec_data = spec.model_dump(mode="json") if isinstance(spec, BaseModel) else spec
    return {
        "command": " ".join(Path(sys.argv[0]).name.split() + sys.argv[1:]),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "spec": spec_data,
        "seed": seed,
        "versions": versions(),
        "platform": platform.platform(),
        "threads": cpu_threads(),
        **({"runtime": runtime} if runtime is not None else {}),
        "data": manifest(inputs),
    }


def write_run_info(path: Path, spec: BaseModel | dict[str, Any], seed: int | None,
                   inputs: Iterable[Path] = (), runtime: dict[str, Any] | None = None
                   ) -> dict[str, Any]:
    """Write ``run.json`` (or ``path`` if it names a file) and return what was written."""
    path = Path(path)
    if path.suffix != ".json":
        path = path / "run.json"
    info = run_info(spec, seed, inputs, runtime)
    write_json(path, info)
    return info
