"""The image type and the bounds on reading: :class:`Image` (an array with its geometry),
:class:`ReadLimits`, the suffixes segfew reads, and the helpers every format's reader shares
(grey from RGB, placeholder spacings). The readers (:mod:`segfew.io.nifti`,
:mod:`segfew.io.itk`) build on this module; :mod:`segfew.io.dispatch` chooses between them."""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from segfew.errors import DataError, DataWarning, format_bytes
from segfew.files import free_memory

NIFTI_SUFFIXES = (".nii.gz", ".nii")
#: ``.hdr`` is the header of a NIfTI/Analyze pair (SPM); its data file ``.img`` is no image
IMAGE_SUFFIXES: tuple[str, ...] = (
    ".nii.gz", ".nii", ".hdr", ".nrrd", ".nhdr", ".mha", ".mhd",
    ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm",
)
_RGB_WEIGHTS = np.array([0.2125, 0.7154, 0.0721])  # scikit-image's rgb2gray (ITU-R BT.709)
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def image_suffix(name: str) -> str | None:
    """The image suffix ``name`` ends with (any case), or None."""
    lower = name.lower()
    for suffix in IMAGE_SUFFIXES:  # ".nii.gz" is listed before ".nii"
        if lower.endswith(suffix) and len(lower) > len(suffix):
            return suffix
    return None


def is_image_file(path: Path) -> bool:
    """True for a visible file with a supported image suffix (DICOM folders: see below)."""
    path = Path(path)
    return not path.name.startswith(".") and image_suffix(path.name) is not None and (
        path.is_file() or not path.exists()
    )


def case_id(path: Path) -> str:
    """File name without its image suffix: ``a/b/p1_frame01.nii.gz`` → ``p1_frame01``.

    A series folder of a CD export (below a ``DICOMDIR``) is named by its path from there,
    ``PT000000_ST000000_SE000000``, since every patient's first series is ``SE000000``.
    """
    path = Path(path)
    name = path.name
    if not image_suffix(name) and path.is_dir():
        for parent in list(path.parents)[:6]:
            if (parent / "DICOMDIR").is_file():
                return "_".join(path.relative_to(parent).parts)
    suffix = image_suffix(name)
    return name[: -len(suffix)] if suffix else name


@dataclass
class Image:
    """An image on its canonical grid, plus what is needed to write results back.

    ``array`` has spatial axes only, ``(X, Y)`` or ``(X, Y, Z)``; a 3D array is in RAS.
    ``affine`` maps voxel indices of ``array`` to RAS world coordinates (mm).
    """

    array: np.ndarray
    affine: np.ndarray
    path: Path | None = None
    source_affine: np.ndarray = field(default_factory=lambda: np.eye(4))
    """RAS affine of the array as stored in the file (before reorientation)."""
    source_shape: tuple[int, ...] = ()
    """Array shape as stored in the file, trailing singleton axes included."""
    ornt: np.ndarray | None = None
    """nibabel orientation transform from the stored axes to RAS (None: unchanged)."""
    format: str = "nifti"
    """``nifti``, ``itk`` (any SimpleITK file) or ``dicom`` (a series folder)."""
    nifti_codes: tuple[int, int] = (1, 1)
    """(qform_code, sform_code) of a NIfTI source, so written files keep the same meaning."""
    nifti_pixdim: tuple[float, ...] | None = None
    """A NIfTI source with neither qform nor sform (codes 0/0): its voxel sizes (pixdim 1–3)
    as stored. Its outputs are written with codes 0/0 and this pixdim, so that every reader
    places them where it places the scan (nibabel centres such a file and flips x; ITK puts
    its first voxel at 0 with identity axes)."""
    nifti_qform: np.ndarray | None = None
    """A NIfTI source's qform as stored, where it differs from the sform (both set): written
    back as it was, so an output overlays its scan in a viewer that shows the qform."""
    colour: bool = False
    """The file held colour (RGB) pixels, converted to grey on reading."""
    nifti_units: str = "mm"
    """Spatial unit of a NIfTI source (``mm``, ``micron``, ``meter``, or ``unknown``: none
    stated, read as mm as ITK and nibabel do); ``affine`` is in mm whatever it is, and
    outputs are written in it."""
    spacing_placeholder: str | None = None
    """Why the file holds no real voxel size (:func:`placeholder_spacing`), or None: sizes
    measured on it are then in voxels (pixels), not mm."""
    orientation_stated: bool = True
    """False where the file states no orientation (a DICOM without ImageOrientationPatient):
    its axes are then laid out as ITK's default, and :attr:`orientation` claims none."""

    def __post_init__(self) -> None:
        if not self.source_shape:
            self.source_shape = tuple(self.array.shape)

    @property
    def dim(self) -> int:
        return int(self.array.ndim)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.array.shape)

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size in mm along each axis of ``array``."""
        norms = np.linalg.norm(self.affine[:3, : self.dim], axis=0)
        return tuple(float(round(s, 6)) for s in norms)

    @property
    def spacing_known(self) -> bool:
        """Whether :attr:`spacing` is a measurement (not a placeholder of 1)."""
        return self.spacing_placeholder is None

    @property
    def orientation(self) -> str:
        """Axis codes of the source file, e.g. ``"LPS"`` (``"RA"`` for a 2D image); empty
        where the file states none (:attr:`orientation_stated`)."""
        if not self.orientation_stated:
            return ""
        return axcodes(self.source_affine)[: self.dim]


def axcodes(affine: np.ndarray) -> str:
    """nibabel's axis codes of ``affine`` (``"RAS"``), ``"???"`` for a singular one."""
    import nibabel as nib

    try:
        return "".join(c or "?" for c in nib.aff2axcodes(affine))
    except Exception:  # a singular affine has no orientation
        return "???"


#: Axes that meet further than this from a right angle are sheared: the bound
#: :data:`segfew.io.itk.TILT_DEGREES` puts on the lean of a DICOM series (a gantry tilt).
SHEAR_DEGREES = 0.1


def refuse_sheared_axes(affine: np.ndarray, shape: tuple[int, ...], path: Path) -> None:
    """Refuse a voxel → world ``affine`` whose axes are not perpendicular (beyond
    :data:`SHEAR_DEGREES`): a sheared grid, as a gantry-tilted CT converted without
    resampling is stored. A box of voxels cannot hold it: its voxel sizes would be taken
    from the columns' lengths, so every volume is off by the lean's 1/cos — the same
    geometry as a DICOM series is refused as a gantry tilt.

    ``shape`` is the stored shape; the spatial axes checked are those kept on reading
    (trailing axes of one voxel dropped, at most 3). Columns of zeros (no voxel size) are
    left to the reader. Raises :class:`DataError` naming ``path`` and the angle.
    """
    kept = len(shape)
    while kept > 2 and shape[kept - 1] == 1:
        kept -= 1
    columns = np.asarray(affine, dtype=float)[:3, : min(kept, 3, len(affine) - 1)]
    worst = (0.0, 0, 0)
    for a in range(columns.shape[1]):
        for b in range(a + 1, columns.shape[1]):
            norms = float(np.linalg.norm(columns[:, a]) * np.linalg.norm(columns[:, b]))
            if norms > 0:
                cosine = min(1.0, abs(float(columns[:, a] @ columns[:, b])) / norms)
                worst = max(worst, (90.0 - float(np.degrees(np.arccos(cosine))), a, b))
    lean, a, b = worst
    if lean > SHEAR_DEGREES:
        raise DataError(f"its axes are sheared: axes {a} and {b} meet at {90 - lean:.1f}°, not "
                        f"90° (a lean of {lean:.1f}°, as a gantry-tilted CT kept unresampled), "
                        "which a box of voxels cannot hold; resample it to a grid of "
                        "perpendicular axes first (e.g. dcm2niix corrects gantry tilt)", path)


# ------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class ReadLimits:
    """What one image may claim before anything is allocated.

    ``max_voxels`` counts voxels times components; ``max_bytes`` the stored voxel data. Both
    are checked against the file's header before its voxels are read, so a header that
    claims 32000×32000×4 voxels, or a small ``.nii.gz`` that expands to gigabytes, is a
    one-line error instead of an allocation. The defaults hold any routine CT or MR scan
    (a 512×512×2000 int16 CT is 1 GiB); raise them with ``SEGFEW_MAX_VOXELS`` and
    ``SEGFEW_MAX_IMAGE_BYTES``.
    """

    max_voxels: int = 2**30
    max_bytes: int = 2**30
    free_bytes: int | None = None
    """Memory free for the work on each image (None: not checked): with ``bytes_per_voxel``
    (what that work needs per voxel) and ``work`` (what it is, in words), an image too
    large for it is refused before its voxels are read (:meth:`within_memory`)."""
    bytes_per_voxel: int = 0
    work: str = "reading it"

    def within_memory(self, bytes_per_voxel: int, work: str) -> ReadLimits:
        """These limits, and an image whose ``work`` needs more than ``bytes_per_voxel``
        times its voxels of the memory free now (:func:`segfew.files.free_memory`) refused."""
        return replace(self, free_bytes=free_memory(), bytes_per_voxel=bytes_per_voxel,
                       work=work)

    @classmethod
    def from_env(cls) -> ReadLimits:
        values = {}
        for name, env in (("max_voxels", VOXELS_ENV), ("max_bytes", BYTES_ENV)):
            raw = os.environ.get(env)
            if raw:
                try:
                    values[name] = int(float(raw))
                except ValueError:
                    raise DataError(f"{env}={raw!r} is not a number") from None
        return cls(max_voxels=values.get("max_voxels", cls.max_voxels),
                   max_bytes=values.get("max_bytes", cls.max_bytes))

    def check(self, shape: tuple[int, ...], components: int, itemsize: int, path: Path) -> None:
        voxels = math.prod(int(s) for s in shape) * max(1, components)
        nbytes = voxels * itemsize
        if voxels > self.max_voxels:
            raise DataError(f"the header declares {_dims(shape, components)} = {voxels:,} voxels, "
                            f"over the limit of {self.max_voxels:,} (raise it with {VOXELS_ENV})",
                            path)
        if nbytes > self.max_bytes:
            raise DataError(f"the header declares {_dims(shape, components)} voxels = "
                            f"{format_bytes(nbytes)} of data, over the limit of "
                            f"{format_bytes(self.max_bytes)} (raise it with {BYTES_ENV})", path)
        need = voxels * self.bytes_per_voxel
        if self.free_bytes is not None and need > self.free_bytes:
            raise DataError(f"{self.work} ({_dims(shape, components)} voxels) needs about "
                            f"{format_bytes(need)} and {format_bytes(self.free_bytes)} is free: "
                            "crop or resample it first", path)



VOXELS_ENV = "SEGFEW_MAX_VOXELS"
BYTES_ENV = "SEGFEW_MAX_IMAGE_BYTES"


def _dims(shape: tuple[int, ...], components: int) -> str:
    dims = "×".join(str(int(s)) for s in shape)
    return f"{dims}×{components}" if components > 1 else dims




#: why a complex-valued image is refused: its real part is not the image a reader sees
COMPLEX = ("holds complex values (real and imaginary parts); save its magnitude (|x|) as a "
           "real image")


def grey(pixels: np.ndarray, path: Path, picture: bool = False) -> tuple[np.ndarray, bool]:
    """Colour pixels (components on the last axis) → grey; equal RGB channels are kept as
    stored (a grey image saved as RGB).

    Only RGB or RGBA of 8 bits is colour (alpha dropped), or of 16 bits in a ``picture``
    (PNG, TIFF, a DICOM's RGB); any other number of components, or other types (T1, T2,
    FLAIR stacked in one MHA or NIfTI, as floats or 16-bit integers), are channels that no
    weighting of colours may mix: :class:`DataError` asking for a file per channel (a
    complex image stored as two components, too).
    Returns ``(grey, colour)``: ``colour`` is True when the channels differed and the
    luminance (scikit-image's rgb2gray weights, ITU-R BT.709) was taken, which is said in a
    :class:`DataWarning`.
    """
    n = pixels.shape[-1]
    if n not in (3, 4) or pixels.dtype not in ((np.uint8, np.uint16) if picture else (np.uint8,)):
        kind = f" of {pixels.dtype.name}" if n in (3, 4) else ""
        raise DataError(f"has {n} components{kind} per pixel: channels, not a colour picture; "
                        "give one file per channel" + (" (a complex image: its magnitude)"
                                                       if n == 2 else ""), path)
    rgb = pixels[..., :3]
    if n == 4:
        refuse_content_in_alpha(rgb, pixels[..., 3], path)
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
        return np.ascontiguousarray(rgb[..., 0]), False
    warnings.warn(DataWarning("RGB image converted to grey (luminance, ITU-R BT.709)", path),
                  stacklevel=3)
    return (rgb.astype(np.float64) @ _RGB_WEIGHTS).astype(np.float32), True


def refuse_content_in_alpha(colour: np.ndarray, alpha: np.ndarray, path: Path) -> None:
    """Refuse a picture whose colour is one value everywhere while its alpha varies: a mask
    drawn as transparency (black or white on transparent). Read without its alpha, as every
    picture is, it would be blank — a label map of background alone, trained on as such.
    Raises :class:`DataError` naming ``path``."""
    if alpha.size and alpha.min() != alpha.max() and colour.min() == colour.max():
        raise DataError(f"its colour is one value ({colour.flat[0]}) everywhere and its content "
                        "lies in the alpha channel (transparency), which segfew does not read: "
                        "save it as grey levels (a mask: its labels as grey values)", path)


def placeholder_spacing(affine: np.ndarray, dim: int, units_stated: bool) -> str | None:
    """Why a file's voxel size is a placeholder rather than a measurement, or None.

    An identity affine (no geometry was stored: the public ACDC copy), or a spacing of 1 in
    a file that states no unit (NIfTI ``xyzt_units`` unknown; PNG, JPEG, TIFF and BMP, whose
    DPI is a print size, not a pixel size) is read as 1 mm by every library, but means
    nothing: sizes are then in voxels. (A NIfTI voxel size of 0 is said by its reader.)
    """
    spacing = np.linalg.norm(np.asarray(affine)[:3, :dim], axis=0)
    if np.allclose(affine, np.eye(4)):
        return "identity affine"
    if not units_stated and np.allclose(spacing, 1.0):
        return "pixel size 1 with no unit" if dim == 2 else "voxel size 1 with no unit"
    return None
