"""Pixels that are not one real number: complex values, and several components that are
channels rather than colours. Each is one line naming the file, never a silent stand-in
(the real part; three modalities mixed by colour weights, a fourth dropped)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from segfew.errors import DataError
from segfew.io import read_image
from tests.conftest import save_itk, save_nifti
from tests.io import read_warned


@pytest.mark.parametrize("suffix", [".nii.gz", ".mha", ".nrrd"])
def test_a_complex_image_is_refused_naming_the_file(tmp_path: Path,
                                                    rng: np.random.Generator,
                                                    suffix: str) -> None:
    magnitude = rng.uniform(10, 100, (8, 8, 3)).astype(np.float32)
    values = (magnitude * np.exp(1j * rng.uniform(0, 6, magnitude.shape))).astype(np.complex64)
    path = tmp_path / f"c{suffix}"
    if suffix == ".nii.gz":
        nib.save(nib.Nifti1Image(values, np.eye(4)), str(path))
    else:
        import SimpleITK as sitk

        sitk.WriteImage(sitk.GetImageFromArray(values.transpose(2, 1, 0)), str(path))
    said = "2 components per pixel: .*complex image: its magnitude" if suffix == ".mha" \
        else "complex values .*magnitude"
    with pytest.raises(DataError, match=said) as err:  # MetaImage stores them as 2 channels
        read_image(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(("components", "dtype"), [(3, np.float32), (4, np.float32),
                                                  (4, np.uint16), (3, np.int16)])
def test_float_or_wide_components_are_channels_not_colour(
        tmp_path: Path, rng: np.random.Generator, components: int, dtype: type) -> None:
    """T1, T1c, T2, FLAIR in one vector file: no luminance of them, no dropped fourth."""
    stack = rng.normal(100, 20, (8, 8, 3, components)).astype(dtype)
    stack[..., 1:] = stack[..., :1]  # even channels that agree are not a grey picture
    path = save_itk(tmp_path / "mr.mha", stack, vector=True)
    name = np.dtype(dtype).name
    with pytest.raises(DataError, match=f"{components} components of {name} per pixel: "
                                        "channels, not a colour picture; give one file per"):
        read_image(path)
    vector = tmp_path / "mr.nii.gz"
    save_nifti(vector, stack[:, :, :, None, :])  # a NIfTI vector (5D, one time point)
    with pytest.raises(DataError, match="channels, not a colour picture"):
        read_image(vector)


def test_a_colour_picture_of_integers_is_still_grey_by_luminance(
        tmp_path: Path, rng: np.random.Generator) -> None:
    rgba = rng.integers(0, 256, (8, 8, 4), dtype=np.uint8)
    path = save_itk(tmp_path / "photo.png", rgba, vector=True)
    img, said = read_warned(path)
    assert img.shape == (8, 8) and img.colour
    assert said == [f"{path}: RGB image converted to grey (luminance, ITU-R BT.709)"]


def test_a_16_bit_rgb_png_is_a_colour_picture(tmp_path: Path, rng: np.random.Generator) -> None:
    rgb = rng.integers(0, 65536, (8, 8, 3)).astype(np.uint16)
    img, said = read_warned(save_itk(tmp_path / "photo16.png", rgb, vector=True))
    assert img.colour and len(said) == 1 and "converted to grey" in said[0]
