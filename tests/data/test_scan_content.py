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


ONE_VOXEL = np.zeros((32, 32, 4), np.int16)
ONE_VOXEL[3, 5, 1] = 900


@pytest.mark.parametrize("array", [np.zeros((32, 32, 4), np.int16), ONE_VOXEL,
                                   100 + np.random.default_rng(0).normal(0, 1e-3, (32, 32, 4))],
                         ids=["zeros", "zeros but a voxel", "float noise around 100"])
def test_a_blank_image_is_refused(tmp_path: Path, array: np.ndarray) -> None:
    path = save_nifti(tmp_path / "blank.nii.gz", array.astype(np.float32))
    with pytest.raises(DataError, match=r"blank\.nii\.gz: the image holds one value "
                                        r"\((0|99\.99\d*)\) everywhere"):
        _read(path)


def test_a_blank_slice_beside_an_empty_label_map_is_kept_not_beside_structures(
        tmp_path: Path) -> None:
    """A slice-per-file export (LGG's kaggle_3m) holds blank slices with empty masks: data a
    segmentation network learns from. A mask drawing structures on a blank image is not."""
    image = save_nifti(tmp_path / "s0.nii.gz", np.zeros((32, 32), np.uint8))
    empty = save_nifti(tmp_path / "s0_seg.nii.gz", np.zeros((32, 32), np.uint8))
    (img,), (lab,) = read_case(Case("s0", (image,), (empty,)))
    assert not img.array.any() and not lab.array.any()
    drawn = np.zeros((32, 32), np.uint8)
    drawn[4:9, 4:9] = 1
    mask = save_nifti(tmp_path / "s1_seg.nii.gz", drawn)
    with pytest.raises(DataError, match=r"s0\.nii\.gz: the image holds one value everywhere, "
                                        r"yet .*s1_seg\.nii\.gz draws structures"):
        read_case(Case("s0", (image,), (mask,)))


def _clipped_to_clean(image: np.ndarray, spiked: np.ndarray, where: np.ndarray,
                      modes: tuple[str, ...] = ("clahe", "minmax", "zscore", "ct")) -> None:
    """Each intensity mode sees ``spiked`` as it sees ``image`` away from the spikes."""
    for intensity in modes:
        cfg = Preprocessing(size=(32, 32), intensity=intensity)  # type: ignore[arg-type]
        clean, seen = normalise(image, cfg), normalise(spiked, cfg)
        scale = float(np.ptp(clean))
        assert np.abs(seen - clean)[~where].max() < 0.05 * scale, intensity


@pytest.mark.parametrize(("factor", "count"), [(3.9, 1), (20.0, 2), (-20.0, 1), (50.0, 200)])
def test_spikes_are_said_counted_and_left_out_of_the_intensity_scaling(
        tmp_path: Path, rng: np.random.Generator, factor: float, count: int) -> None:
    """A hot voxel under 4 times the maximum, two at 20 times, a dead one, a burnt-in marker
    of 200 voxels (0.3 % of the image) at the top of the bit depth."""
    image = rng.normal(300, 60, (40, 40, 40)).clip(1).astype(np.float32)
    where = np.zeros(image.shape, bool)
    where.flat[rng.choice(image.size, count, replace=False)] = True
    spiked = np.where(where, factor * image.max(), image).astype(np.float32)
    array, said = _read(save_nifti(tmp_path / "hot.nii.gz", spiked))
    side = "above" if factor > 0 else "below"
    assert len(said) == 1 and f"hot.nii.gz: {count} voxel(s) lie far {side} the rest" in said[0]
    _clipped_to_clean(image, array, where)


def test_dead_pixels_of_a_ct_slice_are_clipped_in_hounsfield_units_too(
        tmp_path: Path, rng: np.random.Generator) -> None:
    hu = rng.normal(40, 300, (64, 64)).clip(-1024, 3000).astype(np.int16)
    dead = np.zeros(hu.shape, bool)
    dead[5, :30] = True
    _, said = _read(save_nifti(tmp_path / "ct.nii.gz", np.where(dead, -32768, hu).astype(np.int16)))
    assert "30 voxel(s) lie far below the rest of the image" in said[0]
    _clipped_to_clean(hu.astype(np.float32), np.where(dead, -32768, hu).astype(np.float32), dead,
                      ("minmax", "zscore", "ct"))  # CLAHE is local: the row's neighbours move


def test_a_window_keeps_its_own_clip_and_an_image_without_spikes_is_unchanged(
        rng: np.random.Generator) -> None:
    image = rng.normal(300, 60, (40, 40)).astype(np.float32)
    assert spike_range(image) is None
    cfg = Preprocessing(size=(32, 32), intensity="minmax")
    unit = (image - image.min()) / np.ptp(image)
    assert np.allclose(normalise(image, cfg), unit, atol=1e-6)
    tail = np.concatenate([rng.normal(300, 60, 5000), rng.uniform(400, 1500, 40)])
    assert spike_range(tail) is None  # a tail that thins out is no spike: no gap
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
