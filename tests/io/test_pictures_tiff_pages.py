"""Multi-page TIFFs, one rule: pages of one size and mode are a volume (as ITK writes one, and
segfew writes a 3D .tif); pages that differ (a thumbnail after the picture, reduced copies) are
refused in segfew's words, before ITK's libtiff can print its own to the terminal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segfew.errors import DataError
from segfew.io import read_image
from tests.conftest import ramp


def _picture() -> Image.Image:
    return Image.fromarray(np.asarray(ramp((32, 32), np.float32) * 5 % 251, np.uint8))


def test_a_tiff_with_a_thumbnail_page_is_refused_quietly(tmp_path: Path,
                                                         capfd: pytest.CaptureFixture[str]
                                                         ) -> None:
    path = tmp_path / "thumb.tif"
    _picture().save(path, save_all=True, append_images=[_picture().resize((16, 16))])
    capfd.readouterr()
    with pytest.raises(DataError, match=r"thumb\.tif: a TIFF of 2 frames of different sizes "
                                        r"\(32×32, 16×16: a thumbnail or reduced copies\?\)"):
        read_image(path)
    printed = capfd.readouterr()
    assert "Row out of range" not in printed.err + printed.out


def test_a_tiff_whose_pages_differ_in_mode_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "modes.tif"
    _picture().save(path, save_all=True, append_images=[_picture().convert("RGB")])
    with pytest.raises(DataError, match=r"modes\.tif: a TIFF of 2 frames of different"):
        read_image(path)


def test_a_tiff_of_pages_of_one_size_stays_a_volume(tmp_path: Path) -> None:
    path = tmp_path / "pages.tif"
    _picture().save(path, save_all=True, append_images=[_picture().transpose(0)] * 2)
    img = read_image(path)
    assert img.dim == 3 and img.shape == (32, 32, 3)
    first = np.asarray(_picture()).T
    # a volume is LPS to ITK, turned to RAS as every ITK volume (tests/io/test_io.py)
    np.testing.assert_array_equal(img.array[..., 0], first[::-1, ::-1])
