"""A binary mask resized or anti-aliased (0, a maximum, grey levels at the edge between them)
is refused as such — never with the advice to number its grey levels consecutively, which
trained a network with one output per grey level — while real label maps, sparse codes
included, keep their verdicts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segfew.data.read import check_label_values
from segfew.errors import DataError
from tests.conftest import real_data


def _disc(size: int, top: int = 255) -> np.ndarray:
    """A 0/``top`` disc, a little off-centre (its edge crosses pixels at every phase)."""
    yy, xx = np.mgrid[:size, :size]
    inside = (yy - size * 0.45) ** 2 + (xx - size * 0.55) ** 2 < (size * 0.3) ** 2
    return inside.astype(np.uint8) * top


def _resized(mask: np.ndarray, size: int, how: Image.Resampling) -> np.ndarray:
    return np.asarray(Image.fromarray(mask).resize((size, size), how))


def _smoothed(mask: np.ndarray) -> np.ndarray:
    """A 0/1 float mask after a 3×3 mean filter: an anti-aliased edge in (0, 1)."""
    padded = np.pad(mask.astype(np.float64), 1, mode="edge")
    return sum(padded[i:i + mask.shape[0], j:j + mask.shape[1]]
               for i in range(3) for j in range(3)) / 9


SOFT = {
    "bilinear-down": lambda: _resized(_disc(64), 32, Image.Resampling.BILINEAR),
    "bilinear-up": lambda: _resized(_disc(16), 64, Image.Resampling.BILINEAR),
    "lanczos-down": lambda: _resized(_disc(96), 24, Image.Resampling.LANCZOS),
    "uint16-0-65535": lambda: _resized(_disc(64).astype(np.uint16) * 257, 32,
                                       Image.Resampling.BILINEAR),
    "float-0-1": lambda: _smoothed(_disc(32, 1)),
}


@pytest.mark.parametrize("name", SOFT)
@pytest.mark.parametrize("remap", [None, {255: 1}, "consecutive"])
def test_a_resized_binary_mask_is_called_so_whatever_the_remap(
        tmp_path: Path, name: str, remap: dict[int, int] | str | None) -> None:
    mask = SOFT[name]()
    values = np.unique(mask)
    assert values.size > 3  # grey levels between 0 and the maximum
    if remap == "consecutive":  # as pretrain resolves it: every value found, numbered
        remap = {int(v): i for i, v in enumerate(values)} if mask.dtype.kind != "f" else None
    path = tmp_path / "mask.png"
    with pytest.raises(DataError) as err:
        check_label_values(mask, None, path, remap)
    said = str(err.value)
    top = f"{float(mask.max()):g}"
    assert said.startswith(f"{path}: it looks like a binary mask resized or anti-aliased ("), said
    assert f"grey levels between 0 and {top} at the edge of the {top} region" in said, said
    assert "re-save it with nearest-neighbour interpolation, or threshold it" in said, said
    assert "consecutive" not in said and "sparser" not in said, said


def test_inspect_says_so_where_it_had_advised_consecutive(tmp_path: Path) -> None:
    from segfew.data.inspect import inspect_dataset

    for i in range(2):
        (tmp_path / "images").mkdir(exist_ok=True)
        (tmp_path / "labels").mkdir(exist_ok=True)
        Image.fromarray(np.full((32, 32), 40 + i, np.uint8)).save(
            tmp_path / "images" / f"c{i}.png")
        Image.fromarray(_resized(_disc(64 + 8 * i), 32, Image.Resampling.BILINEAR)).save(
            tmp_path / "labels" / f"c{i}.png")
    for label_map in (None, "consecutive"):
        report = inspect_dataset(tmp_path / "images", tmp_path / "labels", label_map=label_map)
        said = " ".join(report.fatal_problems)
        assert report.fatal and said.count("resized or anti-aliased") == 2, report.problems
        assert "--label-map consecutive" not in said


@pytest.mark.parametrize("name", ["nearest", "codes-rows", "three-grey-labels"])
def test_masks_and_label_maps_that_were_not_interpolated_keep_their_verdict(
        tmp_path: Path, name: str) -> None:
    """Each beside its structure as a 0/255 mask resized bilinearly, which is refused as
    interpolated."""
    path = tmp_path / "m.png"
    if name == "nearest":  # a 0/255 mask resized as it should be: still only 0/255
        mask = _resized(_disc(64), 32, Image.Resampling.NEAREST)
        expected = "binary mask stored as 0/255: remap it with --label-map 255:1"
    elif name == "codes-rows":  # FreeSurfer-style codes in rows (the sparse-codes tests')
        mask = np.zeros((16, 16), np.uint16)
        for i, v in enumerate((0, 2, 41, 1035, 2035)):
            mask[i] = v
        expected = "far sparser than their range"
    else:  # three labels stored as grey levels: a disc (255) inside a ring (128)
        mask = np.where(_inner_disc(64), 255, _disc(64, 128)).astype(np.uint8)
        expected = "far sparser than their range"
    with pytest.raises(DataError, match=expected):
        check_label_values(mask, None, path)
    soft = _resized((mask > 0).astype(np.uint8) * 255, mask.shape[0] * 3,
                    Image.Resampling.BILINEAR)
    with pytest.raises(DataError, match="resized or anti-aliased"):
        check_label_values(soft, None, path)


def _inner_disc(size: int) -> np.ndarray:
    """A disc half as wide as :func:`_disc`'s, at its centre."""
    yy, xx = np.mgrid[:size, :size]
    return (yy - size * 0.45) ** 2 + (xx - size * 0.55) ** 2 < (size * 0.15) ** 2


@pytest.mark.parametrize("name", ["acdc", "lgg"])
def test_real_label_maps_are_never_called_interpolated(tmp_path: Path, name: str) -> None:
    """ACDC's 0–3 maps (and their codes × 80, FreeSurfer-like spacing) and LGG's 0/1 masks:
    the same verdict as before; their 0/255 masks resized bilinearly are refused as such."""
    from segfew.io import read_image

    folder = real_data(name) / "labels"
    for path in sorted(folder.glob("*.nii.gz"))[:6]:
        arr = read_image(path, label=True).array
        assert check_label_values(arr, None, path).max() == arr.max()
        codes = arr.astype(np.uint16) * 80
        if arr.max() > 1:  # ACDC: sparse codes, with the sparse-codes advice
            with pytest.raises(DataError, match="far sparser than their range"):
                check_label_values(codes, None, path)
        plane = (arr > 0).astype(np.uint8)[..., arr.shape[-1] // 2] * 255 if arr.ndim == 3 \
            else (arr > 0).astype(np.uint8) * 255
        if plane.any():
            soft = _resized(plane, plane.shape[0] // 2, Image.Resampling.BILINEAR)
            with pytest.raises(DataError, match="resized or anti-aliased"):
                check_label_values(soft, None, path)
