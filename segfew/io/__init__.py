"""Read and write medical images with their geometry.

Every reader returns an :class:`Image` whose array holds spatial axes only, indexed
``(X, Y[, Z])`` like nibabel, with a 4×4 voxel→world affine in RAS. 3D arrays are reoriented
to the closest canonical (RAS) orientation so that every network sees anatomy the same way
whatever the scanner wrote. The source geometry is kept so that
:func:`write_image` puts a label or probability map back on the source grid: same shape,
same affine, so it overlays the input in ITK-SNAP or 3D Slicer.

NIfTI (and NIfTI/Analyze ``.hdr``/``.img`` pairs) is read with nibabel
(:mod:`segfew.io.nifti`); NRRD, MHA/MHD, TIFF, PNG/JPEG/BMP, single DICOM files and DICOM
series with SimpleITK (:mod:`segfew.io.itk`, whose LPS geometry is converted to RAS), the
picture modes ITK cannot read with Pillow (:mod:`segfew.io.raster`). What ITK leaves out is
read from the headers: a NRRD's stated unit (:mod:`segfew.io.headers`), a DICOM file's
missing voxel sizes and orientation (:func:`segfew.io.dicom.dicom_geometry`). A file that is
not what its name says (a Git LFS pointer, an HTML page, a workbook, a damaged PNG) is named
for what it is from its first bytes (:mod:`segfew.io.content`, which tables share).
Reading is bounded: the header is checked against :class:`ReadLimits` before any voxel is
read. What ITK would print goes out as :class:`~segfew.errors.DataWarning` naming the file.
"""

from segfew.io.dicom import is_dicom_series_dir
from segfew.io.dispatch import read_image, write_image
from segfew.io.image import (
    BYTES_ENV,
    IMAGE_SUFFIXES,
    LPS_TO_RAS,
    NIFTI_SUFFIXES,
    VOXELS_ENV,
    Image,
    ReadLimits,
    case_id,
    format_bytes,
    grey,
    is_image_file,
    placeholder_spacing,
)

__all__ = [
    "BYTES_ENV",
    "IMAGE_SUFFIXES",
    "LPS_TO_RAS",
    "NIFTI_SUFFIXES",
    "VOXELS_ENV",
    "Image",
    "ReadLimits",
    "case_id",
    "format_bytes",
    "grey",
    "is_dicom_series_dir",
    "is_image_file",
    "placeholder_spacing",
    "read_image",
    "write_image",
]
