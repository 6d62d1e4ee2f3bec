"""Raster pictures (PNG, JPEG, TIFF, BMP): no pixel size, and the pixel modes ITK misreads.

A raster file's DPI or resolution tag is a print size, not a pixel size: ITK turns 72 dpi
into 0.353 mm pixels, which would make a photograph's or a slice export's areas look like
millimetres. Every raster image is therefore read on a grid of 1 with no stated unit, as
PNG always was (:func:`segfew.io.placeholder_spacing`).

SimpleITK cannot read grey + alpha (PIL mode ``LA``) PNGs, reads a grey + alpha TIFF as
interleaved samples, 1-bit BMPs not at all, and palette TIFFs as 16-bit colours; those are
read with Pillow instead (a dependency of scikit-image), alpha dropped as it is for RGBA
(a picture whose content lies in its alpha alone is refused:
:func:`segfew.io.image.refuse_content_in_alpha`).

A palette picture (PIL mode ``P``, a VOC-style mask) read as a label map gives its indices,
which are the labels: its colours are only how a viewer shows them (three labels may all
show white). Read as an image, it gives its colours, as any picture does.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from segfew.errors import DataError
from segfew.io.image import LPS_TO_RAS, ReadLimits, grey, refuse_content_in_alpha

__all__ = ["RASTER_IOS", "is_raster", "pillow_mode", "read_with_pillow"]

#: ITK's readers of pictures whose resolution tag is a print size (DPI)
RASTER_IOS = frozenset({"PNGImageIO", "JPEGImageIO", "JPEG2000ImageIO", "TIFFImageIO",
                        "BMPImageIO"})
_RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
#: Pillow's format names for each suffix, to tell a misnamed file
_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF",
            ".bmp": "BMP"}
#: modes SimpleITK cannot read or misreads (grey + alpha; a palette in a TIFF)
_PILLOW_MODES = frozenset({"LA", "La", "PA"})


def is_raster(path: Path, io: str) -> bool:
    """Whether ITK reads ``path`` with a raster reader (``io``: its ImageIO name, or empty
    when none was chosen; then the suffix decides)."""
    return io in RASTER_IOS if io else path.name.lower().endswith(_RASTER_SUFFIXES)


def pillow_mode(path: Path, palette: bool = False) -> str | None:
    """The Pillow mode of a raster file that SimpleITK must not read, else None.

    ``palette``: a palette file (mode ``P`` or ``PA``) is one too, whatever its format: it is
    read as a label map, whose indices SimpleITK would turn into colours."""
    if not path.name.lower().endswith(_RASTER_SUFFIXES):
        return None
    try:
        from PIL import Image as PILImage

        with PILImage.open(path) as im:
            mode = str(im.mode)
            fmt = str(im.format)
    except Exception:  # not Pillow's to say: ITK reads it or says why not
        return None
    if mode in _PILLOW_MODES or (mode == "P" and (fmt == "TIFF" or palette)):
        return mode
    return None


def read_with_pillow(path: Path, limits: ReadLimits, after: Exception | None = None,
                     indices: bool = False) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """A one-frame raster file through Pillow: (array indexed X, Y; RAS affine of a 1-pixel
    grid, no unit; extra). ``after``: ITK's failure, re-raised when Pillow cannot read the
    file either, or the file holds another format than its suffix says. ``indices``: a
    palette file gives its indices (uint8, a label map's labels) instead of its colours.
    Raises :class:`DataError` for a file of several frames or one over ``limits``."""
    from PIL import Image as PILImage

    try:
        im = PILImage.open(path)
    except Exception:
        if after is not None:
            raise after from None
        raise
    with im:
        expected = _FORMATS.get(next((s for s in _FORMATS if path.name.lower().endswith(s)),
                                     ""), "")
        if after is not None and expected and im.format != expected:
            raise DataError(f"holds {im.format} data but is named {path.suffix}; rename it to "
                            "what it holds", path) from None
        frames = int(getattr(im, "n_frames", 1))
        if frames > 1:
            raise DataError(f"a {im.format} of {frames} frames in mode {im.mode}, which "
                            "segfew reads one frame at a time only; save each frame on its own",
                            path)
        width, height = im.size
        bands = len(im.getbands())
        itemsize = 4 if im.mode in ("I", "F") else 2 if im.mode.startswith("I;16") else 1
        limits.check((width, height), bands, itemsize, path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's own notes (palette transparency)
            array = _pixels(im, indices)
    colour = False
    if array.ndim == 3 and array.shape[-1] == 2:  # grey + alpha
        refuse_content_in_alpha(array[..., 0], array[..., 1], path)
        array = array[..., 0]
    elif array.ndim == 3:
        array, colour = grey(array, path, picture=True)
    affine = LPS_TO_RAS @ np.eye(4)  # what ITK gives a raster image: origin 0, pixels of 1
    return (np.ascontiguousarray(array.T), affine,
            {"format": "itk", "colour": colour, "units_stated": False})


def _pixels(im: Any, indices: bool = False) -> np.ndarray:
    """Grey (Y, X), grey + alpha (Y, X, 2) or RGB(A) (Y, X, C) pixels; alpha is dropped by
    the caller. ``indices``: a palette image's indices (Y, X), not its colours."""
    mode = im.mode
    if indices and mode in ("P", "PA"):
        return np.asarray(im.getchannel(0) if mode == "PA" else im)
    if mode in ("LA", "La"):
        return np.asarray(im.convert("LA"))  # (Y, X, 2): the caller drops alpha
    if mode == "1":
        return np.asarray(im.convert("L"))  # 0/255, as ITK reads a 1-bit PNG
    if mode in ("P", "PA"):
        return np.asarray(im.convert("RGBA"))
    if mode in ("L", "I", "F") or mode.startswith("I;16"):
        return np.asarray(im)
    return np.asarray(im.convert("RGBA" if mode.endswith(("A", "a")) else "RGB"))
