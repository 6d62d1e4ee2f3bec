"""What an image must hold to be a scan (segfew.data.content): a blank image or a strip a
few pixels wide is refused naming the file, a batch keeps its other cases; a few voxels far
beyond the rest (a hot pixel) are said and left out of the network's intensity scaling, so
they cannot squeeze the contrast and change the class."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from segfew.data import Case
from segfew.data.content import spike_range
from segfew.data.read import read_case
from segfew.errors import DataError, DataWarning
from segfew.preprocess.grid import Preprocessing, normalise
from tests.conftest import make_classifier, read_csv, real_data, save_nifti, scan


def _read(path: Path) -> tuple[np.ndarray, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        (img,), _ = read_case(Case(path.name, (path,)))
    return img.array, [str(w.message) for w in caught if issubclass(w.category, DataWarning)]


@pytest.mark.parametrize("shape", [(1, 1), (1, 64), (64, 2), (64, 3, 1), (3, 3, 40)])
def test_an_image_a_few_pixels_across_is_no_scan(tmp_path: Path, rng: np.random.Generator,
                                                 shape: tuple[int, ...]) -> None:
    path = save_nifti(tmp_path / "strip.nii.gz", rng.normal(100, 20, shape).astype(np.float32))
    with pytest.raises(DataError, match=r"strip\.nii\.gz: an image of .* voxels is no scan"):
        _read(path)


@pytest.mark.parametrize("shape", [(64, 64, 1), (2, 64, 64), (4, 4)])
def test_a_stack_of_few_slices_is_a_scan(tmp_path: Path, rng: np.random.Generator,
                                         shape: tuple[int, ...]) -> None:
    path = save_nifti(tmp_path / "s.nii.gz", rng.normal(100, 20, shape).astype(np.float32))
    assert _read(path)[0].size == np.prod(shape)


@pytest.mark.parametrize("hot", [0, 1])
def test_a_blank_image_or_one_blank_but_a_voxel_is_refused(tmp_path: Path, hot: int) -> None:
    array = np.zeros((32, 32, 4), np.int16)
    array[3, 5, 1] = 900 * hot
    path = save_nifti(tmp_path / "blank.nii.gz", array)
    with pytest.raises(DataError, match=r"blank\.nii\.gz: the image holds one value \(0\) "
                                        "everywhere"):
        _read(path)


@pytest.mark.parametrize("factor", [5.0, 20.0, -20.0])
def test_a_hot_voxel_is_said_and_left_out_of_the_intensity_scaling(
        tmp_path: Path, rng: np.random.Generator, factor: float) -> None:
    image = rng.normal(300, 60, (40, 40, 6)).clip(0).astype(np.float32)
    hot = image.copy()
    hot[7, 9, 2] = factor * image.max()
    array, said = _read(save_nifti(tmp_path / "hot.nii.gz", hot))
    side = "above" if factor > 0 else "below"
    assert len(said) == 1 and f"hot.nii.gz: 1 voxel(s) lie far {side} the rest" in said[0]
    for intensity in ("clahe", "minmax", "zscore"):
        cfg = Preprocessing(size=(32, 32), intensity=intensity)  # type: ignore[arg-type]
        clean, spiked = normalise(image, cfg), normalise(array, cfg)
        others = np.ones(image.shape, bool)
        others[7, 9, 2] = False
        scale = float(np.ptp(clean))
        assert np.abs(spiked - clean)[others].max() < 0.05 * scale, intensity


def test_a_window_keeps_its_own_clip_and_an_image_without_spikes_is_unchanged(
        rng: np.random.Generator) -> None:
    image = rng.normal(300, 60, (40, 40)).astype(np.float32)
    assert spike_range(image) is None
    cfg = Preprocessing(size=(32, 32), intensity="minmax")
    unit = (image - image.min()) / np.ptp(image)
    assert np.allclose(normalise(image, cfg), unit, atol=1e-6)
    hot = image.copy()
    hot[0, 0] = 1e6
    windowed = Preprocessing(size=(32, 32), intensity="minmax", window=(0.0, 2e6))
    assert normalise(hot, windowed).max() == 1.0 and normalise(hot, windowed)[1:].max() < 0.01


def test_predict_gives_a_blank_scan_its_error_row_and_a_hot_one_its_clean_class(
        tmp_path: Path, rng: np.random.Generator) -> None:
    from segfew.inference.paths import predict_paths

    folder = tmp_path / "scans"
    image = scan(rng, (32, 32))
    save_nifti(folder / "a.nii.gz", image)
    hot = image.copy()
    hot[4, 4] = 20 * image.max()
    save_nifti(folder / "a_hot.nii.gz", hot)
    save_nifti(folder / "blank.nii.gz", np.zeros((32, 32), np.float32))
    with pytest.warns(DataWarning, match="a_hot.nii.gz: 1 voxel"):
        out, failed, count = predict_paths(make_classifier(tmp_path / "clf.pt"), [folder],
                                           tmp_path / "p.csv", device="cpu", workers=0)
    rows = {r["id"]: r for r in read_csv(out)}
    assert (count, failed) == (3, 1) and "holds one value" in rows["blank"]["error"]
    p = [[float(rows[i][k]) for k in rows[i] if k.startswith("p_")] for i in ("a", "a_hot")]
    assert np.allclose(p[0], p[1], atol=0.02)
    assert rows["a"]["predicted"] == rows["a_hot"]["predicted"]


@pytest.mark.realdata
@pytest.mark.parametrize("name", ["acdc", "lgg"])
def test_no_image_of_the_public_sets_has_spikes(name: str) -> None:
    """SPIKE_RATIO lies above every image the recipes were measured on: the door changes
    none of them."""
    from segfew.io import read_image

    paths = sorted((real_data(name) / "images").glob("*.nii.gz"))
    assert paths and [p.name for p in paths if spike_range(read_image(p).array)] == []


def test_a_label_map_whose_affine_permutes_the_axes_is_said_to_differ_in_orientation(
        tmp_path: Path, rng: np.random.Generator) -> None:
    """Same stored shape, axes permuted by the affine: not "shape (a) differs from (a)"."""
    import nibabel as nib

    image, label = tmp_path / "p3.nii.gz", tmp_path / "p3_seg.nii.gz"
    permuted = np.array([[0, 0, 10, 0], [1.5, 0, 0, 0], [0, 1.5, 0, 0], [0, 0, 0, 1.0]])
    nib.save(nib.Nifti1Image(rng.normal(100, 9, (24, 20, 6)).astype(np.float32), permuted),
             str(image))
    nib.save(nib.Nifti1Image(np.zeros((24, 20, 6), np.uint8), np.diag([1.5, 1.5, 10.0, 1])),
             str(label))
    with pytest.raises(DataError, match=r"p3_seg\.nii\.gz: orientation RAS differs from .*p3\."
                                        r"nii\.gz \(ASR\): its 24×20×6 voxels lie along other"):
        read_case(Case("p3", (image,), (label,)))
