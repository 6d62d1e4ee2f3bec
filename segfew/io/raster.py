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

A picture whose Orientation tag (EXIF in a JPEG or PNG, tag 274 in a TIFF) is other than 1
is stored turned or mirrored, and every viewer and annotation tool shows it with the tag
applied; ITK ignores it (a JPEG, a PNG) or misreads it (a TIFF: flipped, in colour). Such a
picture (image or label map alike, so a pair stays as drawn) is read with Pillow and turned
as viewers show it, said in a warning.

A TIFF of several pages of one size and mode is a volume (as ITK writes one), read by ITK. A
TIFF whose pages differ (a thumbnail or reduced copies after the picture) is neither one
picture nor a volume: it is refused before ITK, whose libtiff prints its errors to the
terminal.
"""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np

from segfew.errors import DataError, DataWarning
from segfew.io.image import LPS_TO_RAS, ReadLimits, grey, refuse_content_in_alpha

__all__ = ["LIBTIFF_PRINTS", "RASTER_IOS", "as_picture", "is_raster", "orientation",
           "pillow_reads", "read_with_pillow"]

#: ITK's readers of pictures whose resolution tag is a print size (DPI)
RASTER_IOS = frozenset({"PNGImageIO", "JPEGImageIO", "JPEG2000ImageIO", "TIFFImageIO",
                        "BMPImageIO"})
_RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
#: Pillow's format names for each suffix, to tell a misnamed file
_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF",
            ".bmp": "BMP"}
#: modes SimpleITK cannot read or misreads (grey + alpha; a palette in a TIFF)
_PILLOW_MODES = frozenset({"LA", "La", "PA"})
#: what reading a picture as viewers show it does to its stored pixels, by Orientation tag
#: (the tag's values 2-8; 1 and any other value: as stored), and Pillow's transposition
_TURNS = {2: ("mirrored left to right", 0), 3: ("turned 180°", 3),
          4: ("mirrored top to bottom", 1), 5: ("mirrored across its diagonal", 5),
          6: ("turned 90° clockwise", 4), 7: ("mirrored across its other diagonal", 6),
          8: ("turned 90° counter-clockwise", 2)}
_ORIENTATION = 0x0112  # the EXIF and TIFF Orientation tag
#: how a line that libtiff prints itself begins (its handlers: "<function or file>: [Warning, ]")
LIBTIFF_PRINTS = r"(?:_?TIFF\w*|\w*(?:Decode|Encode|JPEG|Fax3)\w*|.*\.(?i:tiff?)): "


def is_raster(path: Path, io: str) -> bool:
    """Whether ITK reads ``path`` with a raster reader (``io``: its ImageIO name, or empty
    when none was chosen; then the suffix decides)."""
    return io in RASTER_IOS if io else path.name.lower().endswith(_RASTER_SUFFIXES)


def as_picture(img: Any, printed: str, path: Path) -> Any:
    """The SimpleITK image ``img`` of the raster file ``path`` on a grid of pixels of 1 from
    origin 0 (its DPI is a print size: no unit, as PNG). What libtiff printed as ITK read it
    (in ``printed``, kept off the terminal) is said in one :class:`DataWarning`: words of a
    damaged file that ITK read all the same (compressed data it had to cut)."""
    img.SetSpacing([1.0] * img.GetDimension())
    img.SetOrigin([0.0] * img.GetDimension())
    said = [re.sub(f"^{LIBTIFF_PRINTS}(Warning, )?", "", line).rstrip(".") for line in
            printed.splitlines() if re.match(LIBTIFF_PRINTS, line)]
    if said:
        more = f" (and {len(said) - 1} more such lines)" if len(said) > 1 else ""
        warnings.warn(DataWarning(f"libtiff, reading it: {said[0]}{more}; the file may be "
                                  "damaged: check the picture", path), stacklevel=3)
    return img


def pillow_reads(path: Path, palette: bool = False) -> bool:
    """Whether the raster file ``path`` is read with Pillow (:func:`read_with_pillow`), not
    SimpleITK: a mode SimpleITK cannot read or misreads (grey + alpha, a palette TIFF), a
    picture with an Orientation tag other than 1 (:func:`orientation`), or a TIFF whose pages
    differ in size or mode (refused there, before libtiff prints its errors).

    ``palette``: a palette file (mode ``P`` or ``PA``) is one too, whatever its format: it is
    read as a label map, whose indices SimpleITK would turn into colours; so is a 1-bit
    file, whose labels are 0/1 where SimpleITK reads 0/255."""
    if not path.name.lower().endswith(_RASTER_SUFFIXES):
        return False
    try:
        from PIL import Image as PILImage

        with PILImage.open(path) as im:
            mode, fmt = str(im.mode), str(im.format)
            if mode in _PILLOW_MODES or (mode == "P" and (fmt == "TIFF" or palette)) \
                    or (mode == "1" and palette):  # a 1-bit mask's labels are 0/1
                return True
            return orientation(im, path) in _TURNS or bool(_page_sizes(im))
    except Exception:  # not Pillow's to say: ITK reads it or says why not
        return False


def orientation(im: Any, path: Path) -> int:
    """The Orientation tag of the open Pillow picture ``im`` (file ``path``): 1 (as stored)
    where it has none. Pixels are decoded only for a PNG whose EXIF chunk follows them."""
    if im.format == "PNG" and "exif" not in im.info and "Raw profile type exif" not in im.info:
        if not _png_exif_after_pixels(path):
            return 1
        im.load()  # Pillow reads the chunks after the pixels with them
    try:
        value = im.getexif().get(_ORIENTATION, 1)
        return int(value) if isinstance(value, int) else 1
    except Exception:  # an EXIF block Pillow cannot parse: no tag a viewer could apply
        return 1


def _png_exif_after_pixels(path: Path) -> bool:
    """Whether the PNG ``path`` has an eXIf chunk (one after its image data, which Pillow
    reads only with the pixels); its chunks are walked, their data skipped."""
    with open(path, "rb") as f:
        f.seek(8)
        while len(head := f.read(8)) == 8 and head[4:] != b"IEND":
            if head[4:] == b"eXIf":
                return True
            f.seek(int.from_bytes(head[:4], "big") + 4, 1)
    return False


def _page_sizes(im: Any) -> list[str]:
    """Each page's size (``W×H``) of a TIFF whose pages differ in size or mode, else []; a
    TIFF of pages of one size and mode is a volume, which ITK reads."""
    frames = int(getattr(im, "n_frames", 1)) if im.format == "TIFF" else 1
    pages = []
    for i in range(frames):
        im.seek(i)
        pages.append((im.size, im.mode))
    im.seek(0)
    if len(set(pages)) < 2:
        return []
    return [f"{w}×{h}" for (w, h), _ in pages]


def read_with_pillow(path: Path, limits: ReadLimits, after: Exception | None = None,
                     indices: bool = False) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """A one-frame raster file through Pillow: (array indexed X, Y; RAS affine of a 1-pixel
    grid, no unit; extra). ``after``: ITK's failure, re-raised when Pillow cannot read the
    file either, or the file holds another format than its suffix says. ``indices``: a
    palette file gives its indices (uint8, a label map's labels) instead of its colours.
    A picture with an Orientation tag other than 1 is turned as viewers show it, and a
    :class:`DataWarning` says how. Raises :class:`DataError` for a file of several frames
    (a camera JPEG's preview pictures aside: its first is the picture) or one over
    ``limits``."""
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
        fmt = "JPEG" if im.format == "MPO" else im.format  # a camera's JPEG with previews
        if after is not None and expected and fmt != expected:
            raise DataError(f"holds {im.format} data but is named {path.suffix}; rename it to "
                            "what it holds", path) from None
        frames = 1 if fmt == "JPEG" else int(getattr(im, "n_frames", 1))
        sizes = _page_sizes(im)
        if sizes:
            raise DataError(f"a TIFF of {frames} frames of different sizes ({', '.join(sizes)}:"
                            " a thumbnail or reduced copies?), which is neither one picture nor "
                            "a volume; save each frame on its own", path)
        if frames > 1 and im.format == "TIFF" and orientation(im, path) in _TURNS:
            raise DataError(f"a TIFF of {frames} pages whose Orientation tag turns them: "
                            "segfew reads the pages of a TIFF as a volume as they are stored "
                            "only; save it without the tag, or each page on its own", path)
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
            array, turned = _shown_pixels(im, path, indices)
    if turned:
        warnings.warn(DataWarning(f"its Orientation tag says it is shown {turned} from how it "
                                  "is stored: read as viewers show it", path), stacklevel=3)
    colour = False
    if array.ndim == 3 and array.shape[-1] == 2:  # grey + alpha
        refuse_content_in_alpha(array[..., 0], array[..., 1], path)
        array = array[..., 0]
    elif array.ndim == 3:
        array, colour = grey(array, path, picture=True)
    affine = LPS_TO_RAS @ np.eye(4)  # what ITK gives a raster image: origin 0, pixels of 1
    return (np.ascontiguousarray(array.T), affine,
            {"format": "itk", "colour": colour, "units_stated": False})


def _shown_pixels(im: Any, path: Path, indices: bool) -> tuple[np.ndarray, str | None]:
    """The pixels of the open picture ``im`` (file ``path``) as viewers show them
    (:func:`_pixels`), and how they were turned from how they are stored (None: not). A TIFF
    is decoded from a copy whose Orientation tag says 1, then turned here: Pillow 11 and later
    turn a TIFF as they load it, wrongly where the turn swaps its sides, and older ones not."""
    from PIL import Image as PILImage

    turn = _TURNS.get(orientation(im, path))
    if turn is None:
        return _pixels(im, indices), None
    method = PILImage.Transpose(turn[1])
    if im.format != "TIFF":
        return _pixels(im.transpose(method), indices), turn[0]
    with PILImage.open(_as_stored(path)) as stored:
        return _pixels(stored.transpose(method), indices), turn[0]


def _as_stored(path: Path) -> io.BytesIO:
    """The TIFF ``path`` with its first page's Orientation tag set to 1 (as stored)."""
    data = bytearray(path.read_bytes())
    order: Literal["little", "big"] = "little" if data[:2] == b"II" else "big"
    big = int.from_bytes(data[2:4], order) == 43  # BigTIFF: 8-byte counts and offsets
    at = int.from_bytes(data[8:16] if big else data[4:8], order)
    count = int.from_bytes(data[at:at + (8 if big else 2)], order)
    step, first = (20, at + 8) if big else (12, at + 2)
    for entry in range(first, first + count * step, step):
        if int.from_bytes(data[entry:entry + 2], order) == _ORIENTATION:  # a SHORT, in place
            value = entry + (12 if big else 8)
            data[value:value + 2] = (1).to_bytes(2, order)
    return io.BytesIO(bytes(data))


def _pixels(im: Any, indices: bool = False) -> np.ndarray:
    """Grey (Y, X), grey + alpha (Y, X, 2) or RGB(A) (Y, X, C) pixels; alpha is dropped by
    the caller. ``indices``: a palette image's indices (Y, X), not its colours, and a
    1-bit image's 0/1."""
    mode = im.mode
    if indices and mode in ("P", "PA"):
        return np.asarray(im.getchannel(0) if mode == "PA" else im)
    if mode in ("LA", "La"):
        return np.asarray(im.convert("LA"))  # (Y, X, 2): the caller drops alpha
    if mode == "1":  # a label map's 0/1 (bool as PIL and scikit-image save it); else 0/255,
        return np.asarray(im, np.uint8) if indices else np.asarray(im.convert("L"))  # as ITK
    if mode in ("P", "PA"):
        return np.asarray(im.convert("RGBA"))
    if mode in ("L", "I", "F") or mode.startswith("I;16"):
        return np.asarray(im)
    return np.asarray(im.convert("RGBA" if mode.endswith(("A", "a")) else "RGB"))
