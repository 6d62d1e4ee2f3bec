"""A picture whose Orientation tag (EXIF in a JPEG or PNG, tag 274 in a TIFF) is other than 1
is read as viewers show it (Pillow's ``ImageOps.exif_transpose``), image and label map alike,
with one warning naming the file; without the tag it reads exactly as before."""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from segfew.data import Case
from segfew.data.read import read_case
from segfew.errors import DataWarning
from segfew.io import read_image
from tests.conftest import ramp

TURNED = {2: "mirrored left to right", 3: "turned 180°", 4: "mirrored top to bottom",
          5: "mirrored across its diagonal", 6: "turned 90° clockwise",
          7: "mirrored across its other diagonal", 8: "turned 90° counter-clockwise"}


def _stored() -> np.ndarray:
    """A 20 × 30 (rows × columns) picture with no symmetry, so every turn shows."""
    return np.asarray(ramp((20, 30), np.float32) * 7 % 251, np.uint8)


def _save(path: Path, pixels: np.ndarray, orientation: int) -> Path:
    exif = Image.Exif()
    exif[0x0112] = orientation
    if path.suffix == ".tif":
        Image.fromarray(pixels).save(path, tiffinfo={274: orientation})
    else:
        Image.fromarray(pixels).save(path, exif=exif.tobytes(), quality=100)
    return path


def _shown(pixels: np.ndarray, orientation: int, tmp_path: Path) -> np.ndarray:
    """What a viewer shows: Pillow's exif_transpose of a PNG holding the tag."""
    with Image.open(_save(tmp_path / "viewer.png", pixels, orientation)) as im:
        return np.asarray(ImageOps.exif_transpose(im))


def _read(path: Path, label: bool = False) -> tuple[np.ndarray, list[str]]:
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        array = read_image(path, label=label).array
    return array, [str(w.message) for w in said if issubclass(w.category, DataWarning)]


@pytest.mark.parametrize("suffix", [".png", ".tif", ".jpg"])
@pytest.mark.parametrize("orientation", range(2, 9))
def test_a_tagged_picture_is_read_as_viewers_show_it(tmp_path: Path, suffix: str,
                                                      orientation: int) -> None:
    path = _save(tmp_path / f"o{orientation}{suffix}", _stored(), orientation)
    array, said = _read(path)
    expected = _shown(_stored(), orientation, tmp_path)
    if suffix == ".jpg":  # lossy: the JPEG's own pixels, turned as a viewer turns them
        with Image.open(path) as im:
            expected = np.asarray(ImageOps.exif_transpose(im))
    np.testing.assert_array_equal(array.T, expected)  # segfew's arrays are indexed (x, y)
    assert said == [f"{path}: its Orientation tag says it is shown {TURNED[orientation]} from "
                    "how it is stored: read as viewers show it"]


@pytest.mark.parametrize("suffix", [".png", ".tif", ".jpg"])
@pytest.mark.parametrize("orientation", [None, 1])
def test_an_untagged_picture_reads_as_stored_without_a_word(tmp_path: Path, suffix: str,
                                                             orientation: int | None) -> None:
    path = tmp_path / f"plain{suffix}"
    if orientation is None:
        Image.fromarray(_stored()).save(path, quality=100)
    else:
        _save(path, _stored(), orientation)
    array, said = _read(path)
    with Image.open(path) as im:
        np.testing.assert_array_equal(array.T, np.asarray(im))
    assert said == []


def test_a_tagged_label_map_is_turned_too_and_pairs_with_its_image(tmp_path: Path) -> None:
    """A phone's picture (stored sideways, tag 6) with its mask drawn on the upright picture
    pairs; a palette mask stored sideways with the tag gives its labels turned."""
    upright = np.rot90(_stored(), -1)  # what a viewer shows of the stored picture
    image = _save(tmp_path / "case.png", _stored(), 6)
    mask = np.zeros(upright.shape, np.uint8)
    mask[2:9, 3:12] = 1  # drawn on the upright picture
    Image.fromarray(mask).save(tmp_path / "case_mask.png")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        images, labels = read_case(Case("case", (image,), (tmp_path / "case_mask.png",)))
    np.testing.assert_array_equal(images[0].array.T, upright)
    np.testing.assert_array_equal(labels[0].array.T, mask)

    palette = Image.fromarray(np.rot90(mask, 1).copy(), mode="P")  # stored sideways
    palette.putpalette([0, 0, 0, 255, 255, 255] * 128)
    exif = Image.Exif()
    exif[0x0112] = 6
    palette.save(tmp_path / "p_mask.png", exif=exif.tobytes())
    labels, said = _read(tmp_path / "p_mask.png", label=True)
    np.testing.assert_array_equal(labels.T, mask)
    assert len(said) == 1 and "turned 90° clockwise" in said[0]


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def test_a_png_whose_exif_follows_its_pixels_is_turned(tmp_path: Path) -> None:
    """The PNG extensions allow the eXIf chunk after the image data: Pillow reads it only
    with the pixels, which segfew decodes then and not for every PNG."""
    plain = tmp_path / "plain.png"
    Image.fromarray(_stored()).save(plain)
    raw = plain.read_bytes()
    exif = Image.Exif()
    exif[0x0112] = 8
    end = raw.rindex(b"IEND") - 4
    late = tmp_path / "late.png"
    late.write_bytes(raw[:end] + _chunk(b"eXIf", exif.tobytes()[6:]) + raw[end:])
    array, said = _read(late)
    np.testing.assert_array_equal(array.T, _shown(_stored(), 8, tmp_path))
    assert len(said) == 1 and "turned 90° counter-clockwise" in said[0]
