"""Readers of every format: shared helpers."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from segfew.errors import DataWarning
from segfew.io import read_image


def read_warned(path: Path) -> tuple[Any, list[str]]:
    """``read_image(path)`` and the DataWarnings it gave, as text."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        img = read_image(path)
    return img, [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
