"""A picture whose content lies in its alpha channel alone (a mask drawn black or white on
transparent) is refused naming the file: read without its alpha, as every picture is, it
would be blank — a label map of background only, trained on as such."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from segfew.errors import DataError
from segfew.io import read_image

DISC = np.zeros((32, 32), np.uint8)
DISC[8:20, 10:24] = 255


def _save(path: Path, mode: str, colour: int | None) -> Path:
    """``DISC`` as the alpha of a picture of one ``colour`` (RGBA or LA), or as grey."""
    if colour is None:
        PILImage.fromarray(DISC).save(path)
    elif mode == "RGBA":
        rgba = np.dstack([np.full_like(DISC, colour)] * 3 + [DISC])
        PILImage.fromarray(rgba, "RGBA").save(path)
    else:
        PILImage.fromarray(np.dstack([np.full_like(DISC, colour), DISC]), "LA").save(path)
    return path


@pytest.mark.parametrize(("mode", "colour"), [("RGBA", 0), ("RGBA", 255), ("LA", 0)])
@pytest.mark.parametrize("label", [True, False])
def test_a_mask_drawn_as_transparency_is_refused(tmp_path: Path, mode: str, colour: int,
                                                  label: bool) -> None:
    path = _save(tmp_path / "mask.png", mode, colour)
    with pytest.raises(DataError, match=r"mask\.png: its colour is one value .* alpha channel"):
        read_image(path, label=label)


def test_pictures_with_content_in_their_colours_keep_being_read(tmp_path: Path) -> None:
    grey = read_image(_save(tmp_path / "grey.png", "L", None), label=True)
    assert np.array_equal(grey.array.T, DISC)
    rgba = np.dstack([DISC, DISC, DISC, np.full_like(DISC, 255)])  # opaque
    PILImage.fromarray(rgba, "RGBA").save(tmp_path / "opaque.png")
    assert np.array_equal(read_image(tmp_path / "opaque.png", label=True).array.T, DISC)
    faded = np.dstack([DISC, DISC, DISC, np.where(DISC > 0, 255, 128).astype(np.uint8)])
    PILImage.fromarray(faded, "RGBA").save(tmp_path / "faded.png")  # content in both
    assert np.array_equal(read_image(tmp_path / "faded.png").array.T, DISC)
