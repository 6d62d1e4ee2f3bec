"""The geometry a NRRD or MetaImage text header states, checked before ITK reads the file and
put in mm after.

ITK (teem for NRRD, MetaIO for MetaImage) reads a NaN position as 0 and a header that lacks
its blank line as data, or crashes on it; it refuses a zero or NaN voxel size in words of
its own ("Zero-valued spacing is not supported"), and it gives a file that states no voxel
size one of 1 mm, as if measured. :func:`header_problem` says the first three in words
before ITK reads; :func:`states_voxel_size` tells the last apart, so such a file's sizes
are in voxels (:attr:`segfew.io.Image.spacing_placeholder`), as a picture's are.
"""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path

import numpy as np

from segfew.errors import DataWarning
from segfew.io.headers import (
    DOMAIN_KINDS,
    MAX_HEADER_BYTES,
    metaimage_fields,
    nrrd_fields,
    nrrd_world_units,
)

__all__ = ["header_problem", "nrrd_in_mm", "states_voxel_size"]

#: MetaImage fields that place the image (a NaN there is read as 0)
_META_PLACE = ("Offset", "Origin", "Position", "TransformMatrix", "Rotation", "Orientation",
               "CenterOfRotation")
_META_SIZE = ("ElementSpacing", "ElementSize")


def _not_finite(text: str) -> bool:
    """Whether one of the numbers in a header field is NaN or infinite (``nan``, ``-inf``,
    ``1e999``), as C's strtod reads them."""
    for token in re.split(r"[\s,()]+", text):
        try:
            if not math.isfinite(float(token)):
                return True
        except ValueError:
            continue  # a word (none) or nothing
    return False


def _is_nrrd(header: Path) -> bool:
    return header.name.lower().endswith((".nrrd", ".nhdr"))


def header_problem(header: Path) -> str | None:
    """Why ITK would misread, or crash on, the NRRD or MetaImage ``header``, in words (a
    one-line refusal); None where nothing is amiss or the file is neither. Never raises.

    - An attached NRRD whose header does not end in a blank line before its data: teem
      takes the data for header lines (and crashes on ASCII data).
    - More than three image axes (``kinds`` domain, space or time: a time series), which
      ITK refuses in words of its own.
    - A position or direction that is NaN or infinite (NRRD ``space origin``, ``space
      directions``; MetaImage ``Offset``, ``TransformMatrix`` …): read as 0, the scan
      would be placed where it is not.
    - A voxel size that is 0, NaN or infinite (NRRD ``spacings`` other than NaN, which
      states none; a ``space directions`` vector of length 0; MetaImage
      ``ElementSpacing``).
    """
    if _is_nrrd(header):
        return _nrrd_lines_problem(header) or _nrrd_geometry_problem(_nrrd_keys(header))
    if header.name.lower().endswith((".mha", ".mhd")):
        return _meta_geometry_problem(metaimage_fields(header))
    return None


def _nrrd_lines_problem(header: Path) -> str | None:
    try:
        with open(header, "rb") as f:
            head = f.read(MAX_HEADER_BYTES)
    except OSError:
        return None
    lines = head.replace(b"\r\n", b"\n").split(b"\n")
    if not lines[0].startswith(b"NRRD") or len(head) == MAX_HEADER_BYTES:
        return None  # not a NRRD (ITK says so), or a header longer than is read here
    for number, line in enumerate(lines[1:], 2):
        if not line.strip():
            return None  # the blank line that ends the header (or a .nhdr's last newline)
        if line.startswith(b"#") or b": " in line or b":=" in line:
            key, _, value = line.partition(b": ")
            if key.replace(b" ", b"").lower() == b"datafile" and value.startswith(b"LIST"):
                return None  # the data files' names follow, one a line
            continue
        return (f"cannot read image (its header has no blank line before the voxel data: "
                f"line {number} is no 'field: value' line; a NRRD header ends with an empty "
                "line)")
    return None


def _nrrd_keys(header: Path) -> dict[str, str]:
    """A NRRD's fields by name without spaces (teem reads ``space origin`` and ``spaceorigin``
    alike)."""
    return {key.replace(" ", ""): value for key, value in nrrd_fields(header).items()}


def _nrrd_geometry_problem(fields: dict[str, str]) -> str | None:
    kinds = fields.get("kinds", "").split()
    if sum(k.lower() in ("domain", "space", "time") for k in kinds) > 3:
        return (f"has {len(kinds)} dimensions (sizes {fields.get('sizes', '?')}, kinds "
                f"{fields['kinds']}); expected a 2D or 3D image: save each time point as a file")
    for key, name, verb, what in (("spaceorigin", "space origin", "holds", "position"),
                                  ("spacedirections", "space directions", "hold", "voxel size")):
        if _not_finite(fields.get(key, "")):
            return f"its {name} ({fields[key]}) {verb} NaN or inf: the scan has no {what}"
    for axis, vector in enumerate(re.findall(r"\(([^)]*)\)", fields.get("spacedirections",
                                                                        "")), 1):
        try:
            if np.linalg.norm([float(v) for v in vector.split(",")]) == 0:
                return (f"its space directions give axis {axis} a length of 0 "
                        f"({fields['spacedirections']}): no voxel size")
        except ValueError:
            return None  # teem's own words
    spacings = fields.get("spacings", "").split()
    if any(s.lower() != "nan" and not _positive(s) for s in spacings):
        return f"its spacings ({fields['spacings']}) are no voxel size: each must be above 0"
    return None


def _meta_geometry_problem(fields: dict[str, str]) -> str | None:
    for key in _META_PLACE:
        if _not_finite(fields.get(key, "")):
            return f"its {key} ({fields[key]}) holds NaN or inf: the scan has no position"
    for key in _META_SIZE:
        if key in fields and not all(_positive(v) for v in fields[key].split()):
            return (f"its {key} ({fields[key]}) is no voxel size: each value must be a number "
                    "above 0")
    return None


def _positive(text: str) -> bool:
    try:
        return 0 < abs(float(text)) < float("inf")  # a negative size: ITK reads its length
    except ValueError:
        return False


def states_voxel_size(header: Path) -> bool:
    """Whether a NRRD or MetaImage states a voxel size (NRRD ``space directions`` or
    ``spacings`` with no NaN; MetaImage ``ElementSpacing`` or ``ElementSize``). Any other
    file: True (its reader says)."""
    if _is_nrrd(header):
        fields = _nrrd_keys(header)
        spacings, kinds = fields.get("spacings", "").split(), fields.get("kinds", "").split()
        if len(kinds) == len(spacings):  # a vector axis (RGB) has none: the image axes'
            spacings = [s for s, k in zip(spacings, kinds, strict=True)
                        if k.lower() in DOMAIN_KINDS]
        return "spacedirections" in fields or (bool(spacings) and all(
            s.lower() != "nan" for s in spacings))  # one axis of NaN: no voxel size either
    if header.name.lower().endswith((".mha", ".mhd")):
        return any(key in metaimage_fields(header) for key in _META_SIZE)
    return True


def nrrd_in_mm(affine: np.ndarray, path: Path, dim: int, extra: dict[str, object]
               ) -> np.ndarray:
    """``affine`` (ITK's numbers, read as mm) in mm by the NRRD's stated units; a unit
    segfew does not know is said in a warning and leaves no real voxel size
    (``extra["spacing_placeholder"]``)."""
    scales, unknown = nrrd_world_units(path, dim)
    if unknown is not None:
        warnings.warn(DataWarning(f"NRRD unit \"{unknown}\" is none segfew knows (mm, cm, m, "
                                  "µm, nm): no real voxel size, sizes are in voxels", path),
                      stacklevel=4)
        extra["spacing_placeholder"] = f"unknown unit \"{unknown}\""
        return affine
    affine = np.array(affine, dtype=float)
    affine[:dim, :] *= np.array(scales)[:, None]  # world axes: ITK's LPS ↔ RAS flips no axis
    return affine
