"""The names of a folder of label maps: ``label_names.json``, which ``segfew label`` writes
beside its maps (and an nnU-Net ``dataset.json`` holds for its own, see
:func:`segfew.data.discover.read_dataset_json`)."""

from __future__ import annotations

import json
from pathlib import Path

from segfew.errors import DataError

__all__ = ["CENTRES_FILE", "LABEL_NAMES_FILE", "PREVIEW_DIR", "is_label_preview",
           "kmeans_label_names", "read_label_names"]

#: beside every folder of maps ``segfew label`` writes: the names of labels 0, 1, …
LABEL_NAMES_FILE = "label_names.json"
#: the k-means centres ``segfew label --method kmeans`` writes (older folders have only these)
CENTRES_FILE = "centres.json"
#: the sub-folder of a ``segfew label`` output holding its preview picture, which is no scan
PREVIEW_DIR = "preview"


def is_label_preview(path: Path) -> bool:
    """Whether ``path`` is the preview folder of a ``segfew label`` output (beside its
    label names or k-means centres): neither scans nor a class of them."""
    return (path.name == PREVIEW_DIR and path.is_dir()
            and any((path.parent / name).is_file() for name in (LABEL_NAMES_FILE, CENTRES_FILE)))


def kmeans_label_names(k: int, keep_background: bool) -> list[str]:
    """``background`` (with ``keep_background``), then ``k1`` (darkest) … ``k<k>``."""
    return (["background"] if keep_background else []) + [f"k{i + 1}" for i in range(k)]


def read_label_names(folder: Path) -> list[str] | None:
    """The names of labels 0, 1, … of a folder of maps that ``segfew label`` wrote: its
    ``label_names.json`` (or an older folder's ``centres.json``); None for other folders.
    Raises DataError naming a file that is not what it says."""
    path = folder / LABEL_NAMES_FILE
    if path.is_file():
        try:
            names = json.loads(path.read_text(encoding="utf-8"))["label_names"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DataError(f"not a label names file ({type(e).__name__})", path) from None
        if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
            raise DataError("label_names must be a list of names", path)
        return names
    path = folder / CENTRES_FILE
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            k, keep = int(data["k"]), data["keep_background"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DataError(f"not a k-means centres file ({type(e).__name__})", path) from None
        if k < 1 or not isinstance(keep, bool):
            raise DataError("k-means centres file has invalid settings (k, keep_background)",
                            path)
        return kmeans_label_names(k, keep)
    return None
