"""The verified cache of pre-processed arrays, and a case on the grid (SPEC §5).

:func:`load_case` reads a case through the door (:func:`segfew.data.read.read_case`) and
brings it onto the grid with :mod:`segfew.preprocess.grid`, through a :class:`PreprocessCache`
on disk when given, so epochs and repeated runs skip reading and CLAHE.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from types import EllipsisType

import numpy as np

from segfew.data import Case
from segfew.data.read import LabelRules, check_label_values, read_case
from segfew.errors import DataError, DataWarning
from segfew.files import atomic_path, file_digest, write_json
from segfew.identity import scan_files
from segfew.io import ReadLimits, case_id, read_image
from segfew.preprocess import grid as pp
from segfew.preprocess.grid import Preprocessing

__all__ = ["PreprocessCache", "load_case"]

CACHE_ENV = "SEGFEW_CACHE"
DEFAULT_CACHE = ".segfew-cache"
_CACHE_FORMAT = 6  # bump when the meaning of a cached array changes


class PreprocessCache:
    """Pre-processed arrays on disk, so epochs and repeated runs skip reading and CLAHE.

    Keyed by the file's content (SHA-256), the settings (their JSON), the kind (image or
    label) and, for labels, the label rules, so a changed file or setting is a miss, never
    a stale hit. Arrays are ``.npy`` files opened memory-mapped and read-only; each has a
    ``.json`` record of its own SHA-256 and the settings that made it, checked on every
    read: an entry that does not match is recomputed and replaced, with a
    :class:`~segfew.errors.DataWarning`. A case is cached only after it passed the door
    (:func:`segfew.data.read.read_case`); a ``case-*.json`` record keeps the door's warnings,
    said again on every hit. Entries are written to a temporary file and renamed, so
    concurrent processes at worst compute the same entry twice.

    ``root`` defaults to ``$SEGFEW_CACHE`` or ``./.segfew-cache``; ``PreprocessCache(None)``
    or ``enabled=False`` computes every time and writes nothing.
    """

    def __init__(self, root: Path | str | EllipsisType | None = ..., enabled: bool = True
                 ) -> None:
        if isinstance(root, EllipsisType):
            root = os.environ.get(CACHE_ENV) or Path.cwd() / DEFAULT_CACHE
        self.root = None if root is None else Path(root)
        self.enabled = enabled and self.root is not None
        self.hits = 0
        self.misses = 0
        # Hashing a file costs a full read; remember digests while the file is unchanged.
        self._digests: dict[tuple[tuple[str, int, int, int], ...], str] = {}

    def __repr__(self) -> str:
        return f"PreprocessCache({str(self.root) if self.enabled else None!r})"

    def image(self, path: Path, cfg: Preprocessing) -> np.ndarray:
        """``preprocess_image`` of the image at ``path`` (float32 on the grid), cached."""
        return self.arrays(Case(case_id(Path(path)), (Path(path),)), cfg)[0][0]

    def label(self, path: Path, cfg: Preprocessing, rules: LabelRules | None = None
              ) -> np.ndarray:
        """``preprocess_label`` of the label map at ``path`` (int64 on the grid), cached."""
        rules = rules or LabelRules()

        def compute() -> np.ndarray:
            lab = read_image(path, label=True)
            pp.check_memory([lab.array], path)
            arr = check_label_values(lab.array, rules.values, path, rules.remap, lab.colour)
            return pp.preprocess_label(arr, cfg, lab.spacing)

        return self._entry(self._key(Path(path), cfg, "label", rules), cfg, compute)

    def arrays(self, case: Case, cfg: Preprocessing, rules: LabelRules | None = None
               ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """A case's channels and label maps on the grid, read through the door once."""
        rules = rules or LabelRules()
        if not self.enabled or self.root is None or case.problem is not None:
            self.misses += 1
            images, labels = read_case(case, rules)
            pp.check_memory([im.array for im in images + labels], case.images[0])
            return ([pp.preprocess_image(im.array, cfg, im.spacing, im.path) for im in images],
                    [pp.preprocess_label(lab.array, cfg, lab.spacing) for lab in labels])
        keys = ([self._key(p, cfg, "image", rules) for p in case.images],
                [self._key(p, cfg, "label", rules) for p in case.labels])
        record = self.root / f"case-{_hash([*keys[0], '|', *keys[1]])}.json"
        said = _read_record(record)
        ready: dict[str, np.ndarray] = {}

        def through_door() -> None:
            nonlocal said
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                images, labels = read_case(case, rules)
            said = [str(w.message) for w in caught]
            for w in caught:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
            pp.check_memory([im.array for im in images + labels], case.images[0])
            ready.update({k: pp.preprocess_image(im.array, cfg, im.spacing, im.path)
                          for k, im in zip(keys[0], images, strict=True)})
            ready.update({k: pp.preprocess_label(lab.array, cfg, lab.spacing)
                          for k, lab in zip(keys[1], labels, strict=True)})

        def compute(key: str) -> np.ndarray:
            if not ready:
                through_door()
            return ready[key]

        if said is None or not all(self._file(k).is_file() for k in (*keys[0], *keys[1])):
            through_door()
        else:
            for text in said:  # what the door said when it let this case in
                warnings.warn(DataWarning(text), stacklevel=2)
        out = ([self._entry(k, cfg, functools.partial(compute, k)) for k in keys[0]],
               [self._entry(k, cfg, functools.partial(compute, k)) for k in keys[1]])
        if ready:  # the door was passed in this call: record what it said
            with contextlib.suppress(OSError):
                write_json(record, said)
        return out

    def key(self, path: Path, cfg: Preprocessing, kind: str) -> str:
        return self._key(Path(path), cfg, kind, None)

    def _key(self, path: Path, cfg: Preprocessing, kind: str, rules: LabelRules | None
             ) -> str:
        parts = [str(_CACHE_FORMAT), kind, self._digest(Path(path)), _settings(cfg),
                 repr(ReadLimits.from_env())]
        if kind == "label" and rules is not None:
            parts.append(rules.key())
        return f"{kind}-{_hash(parts)}"

    def _file(self, key: str) -> Path:
        assert self.root is not None
        return self.root / f"{key}.npy"

    def _digest(self, path: Path) -> str:
        """The identity of every byte the image at ``path`` is read from: the file itself and
        the rest of its scan (:func:`segfew.identity.scan_files`: a detached header's data
        file, the slices of a DICOM series, one series of a folder holding several)."""
        try:
            files = sorted({*([path] if path.is_file() else []), *scan_files(path)})
            memo = tuple((str(f.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
                         for f in files for st in (f.stat(),))
        except OSError as e:
            raise DataError(f"cannot read image ({e.strerror})", path) from None
        if not files:
            raise DataError("cannot read image (no DICOM series found)", path)
        if memo not in self._digests:
            self._digests[memo] = _hash([f"{f.name}:{file_digest(f)}" for f in files])
        return self._digests[memo]

    def _entry(self, key: str, cfg: Preprocessing, compute: Callable[[], np.ndarray]
               ) -> np.ndarray:
        """The verified array of ``key``, or ``compute()`` stored under it."""
        if not self.enabled or self.root is None:
            self.misses += 1
            return compute()
        file = self._file(key)
        sidecar = file.with_suffix(".json")
        if file.is_file():
            problem = _verify(file, sidecar, cfg)
            if problem is None:
                with contextlib.suppress(OSError, ValueError):
                    out = np.load(file, mmap_mode="r")
                    self.hits += 1
                    return out
                problem = "cannot be read"
            warnings.warn(DataWarning(f"cache entry {problem}; recomputed and replaced", file),
                          stacklevel=3)
        self.misses += 1
        out = compute()
        try:
            with atomic_path(file, suffix=".npy") as tmp:
                np.save(tmp, out)
                record = {"sha256": file_digest(tmp), "settings": _settings(cfg),
                          "format": _CACHE_FORMAT}
            write_json(sidecar, record)
        except OSError:  # a read-only or full cache disk must not stop training
            return out
        return np.load(file, mmap_mode="r")


def _settings(cfg: Preprocessing) -> str:
    return json.dumps(dataclasses.asdict(cfg), sort_keys=True)


def _hash(parts: list[str]) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _verify(file: Path, sidecar: Path, cfg: Preprocessing) -> str | None:
    """None when ``file`` matches its record; else what is wrong with it."""
    try:
        record = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "has no readable checksum record"
    if not isinstance(record, dict) or record.get("settings") != _settings(cfg):
        return "was made with other settings"
    try:
        digest = file_digest(file)
    except OSError:
        return "cannot be read"
    return None if digest == record.get("sha256") else "does not match its checksum"


def _read_record(path: Path) -> list[str] | None:
    try:
        said = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return [str(s) for s in said] if isinstance(said, list) else None


def load_case(case: Case, cfg: Preprocessing, cache: PreprocessCache | None = None,
              rules: LabelRules | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """A case on the grid: ``(C, *grid)`` float32 images and its labels (int64) or None.

    The case is read through the door (:func:`segfew.data.read.read_case`, every check, with
    ``rules`` for its label maps), then pre-processed, through ``cache`` when given. One
    label map gives ``grid``-shaped labels; one per channel gives ``(C, *grid)``.
    """
    cache = cache or PreprocessCache(None)
    images, labels = cache.arrays(case, cfg, rules)
    shapes = {a.shape for a in images + labels}
    if len(shapes) > 1:
        raise DataError(f"case {case.id}: channels and labels land on different grids "
                        f"{sorted(shapes)}; give the size of every axis", case.images[0])
    image = np.stack(images).astype(np.float32, copy=False)
    if not labels:
        return image, None
    if len(labels) == 1:
        return image, np.array(labels[0], dtype=np.int64)
    return image, np.stack(labels).astype(np.int64, copy=False)
