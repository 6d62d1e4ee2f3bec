"""Multi-page TIFFs, one rule: pages of one size and mode are a volume (as ITK writes one, and
segfew writes a 3D .tif); pages that differ (a thumbnail after the picture, reduced copies) are
refused in segfew's words, before ITK's libtiff can print its own to the terminal."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segfew.errors import DataError, DataWarning
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


def _damaged(path: Path, compression: str | None) -> Path:
    """A 32² TIFF whose strip data (after the 8-byte header, before the IFD) is overwritten."""
    _picture().save(path, compression=compression)
    data = bytearray(path.read_bytes())
    data[40:300] = bytes(0xFF if i % 3 else 0 for i in range(260))
    path.write_bytes(bytes(data))
    return path


def test_what_libtiff_prints_of_a_damaged_tiff_is_one_warning_not_terminal_lines(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    path = _damaged(tmp_path / "damaged.tif", "packbits")
    capfd.readouterr()
    with pytest.warns(DataWarning) as said:
        read_image(path)
    printed = capfd.readouterr()
    assert "PackBitsDecode" not in printed.err + printed.out
    libtiff = [str(w.message) for w in said if "libtiff" in str(w.message)]
    assert len(libtiff) == 1 and libtiff[0].startswith(f"{path}: libtiff, reading it: ")
    assert "PackBitsDecode" not in libtiff[0]


def test_a_tiff_libtiff_cannot_decode_is_refused_without_its_lines(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    path = _damaged(tmp_path / "lzw.tif", "tiff_lzw")
    capfd.readouterr()
    with pytest.raises(DataError, match=r"lzw\.tif: "):
        read_image(path)
    printed = capfd.readouterr()
    assert "LZWDecode" not in printed.err + printed.out


def test_a_private_tiff_tag_itk_cannot_keep_is_not_said(tmp_path: Path) -> None:
    """A camera's or scanner's private tag (50838) was said three times: "ITK: Tag 50838 has
    unsupported data type (7) for meta-data dictionary" — of a header field, not a voxel."""
    from PIL import TiffImagePlugin

    info = TiffImagePlugin.ImageFileDirectory_v2()
    info[50838] = b"\x00\x01\x02\x03"
    info.tagtype[50838] = 7  # UNDEFINED
    path = tmp_path / "private.tif"
    Image.fromarray((np.arange(32 * 32) % 200).astype(np.uint8).reshape(32, 32)).save(
        path, tiffinfo=info)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        img = read_image(path)
    assert img.shape == (32, 32) and [str(w.message) for w in caught] == []


def test_a_volume_tiff_with_an_orientation_tag_is_refused_saying_so(tmp_path: Path) -> None:
    """Its pages were said to be "frames … read one frame at a time only", though the same
    pages without the tag read as a volume."""
    pages = [_picture() for _ in range(3)]
    exif = Image.Exif()
    exif[274] = 6
    path = tmp_path / "turned.tif"
    pages[0].save(path, save_all=True, append_images=pages[1:], exif=exif)
    with pytest.raises(DataError, match=r"turned\.tif: a TIFF of 3 pages whose Orientation "
                                        r"tag turns them"):
        read_image(path)
