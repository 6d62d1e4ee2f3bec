"""Palette pictures (PIL mode ``P``, VOC-style masks): read as a label map, the index of each
pixel is its label; read as an image, its colours, as before."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from segfew.io import read_image

LABELS = np.array([[0, 0, 1, 1, 2], [0, 3, 3, 1, 2], [0, 0, 2, 2, 2], [0, 0, 0, 1, 1]],
                  np.uint8)  # (Y, X)
VOC = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0]  # black, dark red, green, olive
WHITE = [0, 0, 0] + [255, 255, 255] * 3  # labels 1, 2 and 3 all show white


def palette(path: Path, colours: list[int]) -> Path:
    im = PILImage.fromarray(LABELS, mode="P")
    im.putpalette(colours + [0] * (768 - len(colours)))
    im.save(path)
    return path


@pytest.mark.parametrize("suffix", [".png", ".tif", ".bmp"])
@pytest.mark.parametrize("colours", [VOC, WHITE], ids=["voc", "all-white"])
def test_a_palette_label_map_gives_its_indices(tmp_path: Path, suffix: str,
                                               colours: list[int]) -> None:
    path = palette(tmp_path / f"m{suffix}", colours)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "converted to grey"
        lab = read_image(path, label=True)
    np.testing.assert_array_equal(lab.array, LABELS.T)
    assert not lab.colour and lab.array.dtype == np.uint8 and lab.spacing == (1.0, 1.0)


def test_a_palette_image_still_reads_as_its_colours(tmp_path: Path) -> None:
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        img = read_image(palette(tmp_path / "m.png", VOC))
    assert img.colour and img.array.dtype == np.float32
    white = read_image(palette(tmp_path / "w.png", WHITE))
    np.testing.assert_array_equal(white.array, np.where(LABELS.T > 0, 255, 0))


def test_a_grey_mask_reads_the_same_either_way(tmp_path: Path) -> None:
    PILImage.fromarray(LABELS).save(tmp_path / "g.png")
    for label in (False, True):
        np.testing.assert_array_equal(read_image(tmp_path / "g.png", label=label).array,
                                      LABELS.T)


def test_the_door_reads_a_palette_mask_as_its_labels_not_a_remapped_0_255(
        tmp_path: Path) -> None:
    """Through ``read_case`` (pretrain, evaluate, --masks): three structures drawn in white
    stay three, where a grey reading had advised ``--label-map 255:1``."""
    from segfew.data import Case
    from segfew.data.read import read_case

    PILImage.fromarray((LABELS * 60).astype(np.uint8)).save(tmp_path / "x.png")
    case = Case("x", (tmp_path / "x.png",), labels=(palette(tmp_path / "x_seg.png", WHITE),))
    _, labels = read_case(case)
    np.testing.assert_array_equal(labels[0].array, LABELS.T)


@pytest.mark.parametrize("suffix", [".png", ".tif", ".bmp"])
def test_a_one_bit_mask_gives_0_and_1_as_every_reader_does(tmp_path: Path, suffix: str) -> None:
    """A bool array saved by Pillow or scikit-image is a 1-bit file: its labels are 0/1, not
    the 0/255 that SimpleITK reads (which the door then refused as "stored as 0/255")."""
    mask = np.zeros((16, 20), bool)
    mask[4:10, 5:15] = True
    path = tmp_path / f"m{suffix}"
    PILImage.fromarray(mask).save(path)
    assert PILImage.open(path).mode == "1"
    label = read_image(path, label=True).array
    assert sorted(np.unique(label).tolist()) == [0, 1] and label.sum() == mask.sum()
    assert np.array_equal(label, mask.T)  # (X, Y) as every image here
    assert sorted(np.unique(read_image(path).array).tolist()) == [0, 255]  # as a picture
