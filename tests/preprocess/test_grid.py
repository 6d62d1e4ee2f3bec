"""Pre-processing: intensity modes, grid shapes, exact inverse geometry, the cache."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

import segfew.preprocess.grid as pp
from segfew.data import Case
from segfew.errors import DataError, DataWarning, SpecError
from segfew.preprocess.cache import PreprocessCache, load_case
from segfew.preprocess.grid import (
    grid_shape,
    normalise,
    preprocess_image,
    preprocess_label,
    restore,
    slice_axis_for,
)
from segfew.spec import PreprocessConfig
from tests.conftest import ramp, save_nifti


def blobs(shape: tuple[int, ...], rng: np.random.Generator, n: int = 3) -> np.ndarray:
    """A label map of ``n`` large ellipsoidal blobs (labels 1..n) on background 0."""
    idx = np.indices(shape)
    out = np.zeros(shape, np.int64)
    for v in range(1, n + 1):
        centre = [rng.uniform(0.3, 0.7) * s for s in shape]
        radius = [max(2.0, 0.22 * s) for s in shape]
        out[sum(((i - c) / r) ** 2 for i, c, r in zip(idx, centre, radius, strict=True)) <= 1] = v
    return out


# ---------------------------------------------------------------- intensity


@pytest.mark.parametrize("shape", [(40, 48), (24, 20, 6), (24, 20, 3)])
def test_clahe_spans_0_to_255(shape, rng):
    image = rng.gamma(2.0, 300.0, shape)  # skewed MR-like intensities, far from 0-255
    out = normalise(image, PreprocessConfig(intensity="clahe").plain())
    assert out.dtype == np.float32 and out.shape == shape  # a 3-slice volume is not RGB
    assert out.min() == pytest.approx(0.0) and out.max() == pytest.approx(255.0)


def test_zscore_and_minmax(rng):
    image = rng.normal(500, 80, (32, 32, 4))
    z = normalise(image, PreprocessConfig(intensity="zscore").plain())
    assert abs(z.mean()) < 1e-4 and z.std() == pytest.approx(1.0, abs=1e-4)
    m = normalise(image, PreprocessConfig(intensity="minmax").plain())
    assert m.min() == 0.0 and m.max() == pytest.approx(1.0)
    assert not normalise(np.full((4, 4), 7.0), PreprocessConfig(intensity="minmax").plain()).any()


def test_an_image_wholly_outside_the_window_is_refused_naming_it(tmp_path) -> None:
    """Every network input became one constant; pretrain ran to the end without a word."""
    from segfew.errors import DataError
    from segfew.preprocess.grid import preprocess_image

    mr = np.linspace(0, 900, 32 * 32, dtype=np.float32).reshape(32, 32)
    cfg = PreprocessConfig(size=(32,), intensity="minmax", window=(1000, 3000)).plain()
    with pytest.raises(DataError, match=r"mr\.nii\.gz: its values \(0 to 900\) all lie outside "
                                        r"the intensity window \[1000, 3000\]"):
        preprocess_image(mr, cfg, path=tmp_path / "mr.nii.gz")
    part = PreprocessConfig(size=(32,), intensity="minmax", window=(500, 3000)).plain()
    assert float(np.ptp(preprocess_image(mr, part))) > 0  # a window holding some values: read


def test_ct_keeps_hounsfield_units_and_clips_to_window():
    hu = np.array([[-1000.0, -100.0], [40.0, 1500.0]])
    assert np.array_equal(normalise(hu, PreprocessConfig(intensity="ct").plain()), hu)
    windowed = normalise(hu, PreprocessConfig(intensity="ct", window=(-160, 240)).plain())
    assert windowed.tolist() == [[-160.0, -100.0], [40.0, 240.0]]


def test_normalise_does_not_modify_input_and_handles_nan():
    a = np.array([[1.0, np.nan], [3.0, 5.0]], np.float32)
    out = normalise(a, PreprocessConfig(intensity="ct").plain())
    assert np.isnan(a[0, 1]) and out[0, 1] == 1.0


# ---------------------------------------------------------------- geometry


@pytest.mark.parametrize(
    ("shape", "size", "slice_axis", "expected"),
    [
        ((50, 70), (32,), 2, (32, 32)),
        ((50, 70), (32, 48), 2, (32, 48)),
        ((50, 70, 9), (32,), 2, (32, 32, 32)),
        ((50, 70, 9), (32, 48), 2, (32, 48, 9)),  # native slice count kept
        ((9, 50, 70), (32, 48), 0, (32, 48, 9)),  # slice axis moved last
        ((50, 70, 9), (32, 48, 16), 2, (32, 48, 16)),
        ((50, 9, 70), (32, 48, 16), 1, (32, 48, 16)),
    ],
)
def test_grid_shape(shape, size, slice_axis, expected):
    cfg = PreprocessConfig(size=size, slice_axis=slice_axis).plain()
    assert grid_shape(shape, cfg) == expected
    assert preprocess_label(np.zeros(shape, np.uint8), cfg).shape == expected


@pytest.mark.parametrize(("spacing", "axis"), [
    ((1.5, 1.5, 8.0), 2), ((8.0, 1.5, 1.5), 0), ((1.4, 10.0, 1.4), 1),
    ((1.0, 1.0, 1.0), 0)])  # spacing lost (identity affine): 6 slices of 32 × 36
def test_a_stack_is_sliced_along_its_slice_axis_whatever_axis_holds_it(spacing, axis, rng):
    # An oblique short-axis series, reoriented to RAS, may hold its slices on any axis.
    cfg = PreprocessConfig(size=(32, 32), intensity="minmax").plain()  # slice_axis "auto"
    stack = rng.random((32, 36, 6)).astype(np.float32)
    stored = np.moveaxis(stack, 2, axis)
    assert slice_axis_for(cfg, stored.shape, spacing) == axis
    on_grid = preprocess_image(stored, cfg, spacing)
    np.testing.assert_array_equal(on_grid, preprocess_image(stack, cfg, (1.5, 1.5, 8.0)))
    assert restore(on_grid[None], stored.shape, cfg, 1, spacing)[0].shape == stored.shape


@pytest.mark.parametrize(("shape", "spacing"), [
    ((64, 60, 56), (1.0, 1.0, 1.0)), ((64, 60, 56), (1.6, 1.0, 1.0)),
    ((64, 60, 56), None), ((20, 24, 6), (1.0, 5.0, 5.0))])
def test_a_volume_is_sliced_along_its_last_axis_unless_told(shape, spacing):
    assert slice_axis_for(PreprocessConfig(size=(32, 32)).plain(), shape, spacing) == 2
    assert slice_axis_for(PreprocessConfig(size=(32, 32), slice_axis=0).plain(), shape,
                          spacing) == 0


def test_a_3d_grid_keeps_ras_axis_order_and_a_fixed_axis_warns_on_a_stack():
    # A 3D network sees every volume in RAS order, whichever axis is the thick one.
    assert slice_axis_for(PreprocessConfig(size=32).plain(), (20, 24, 6), (8.0, 1.5, 1.5)) == 2
    # A model file fixed on axis 2 (from before "auto") meets a stack sliced along x.
    fixed = PreprocessConfig(size=(32, 32), slice_axis=2).plain()
    with pytest.warns(DataWarning, match="slices along axis 0 is cut along axis 2"):
        assert slice_axis_for(fixed, (6, 20, 24), (8.0, 1.5, 1.5)) == 2


def test_grid_shape_rejects_3_sizes_for_2d_and_bad_dims():
    with pytest.raises(SpecError):
        grid_shape((40, 40), PreprocessConfig(size=(32, 32, 32)).plain())
    with pytest.raises(DataError):
        grid_shape((4, 4, 4, 4), PreprocessConfig().plain())


@pytest.mark.parametrize(
    ("shape", "cfg"),
    [
        ((40, 56), PreprocessConfig(size=64).plain()),
        ((30, 44, 7), PreprocessConfig(size=(48, 64)).plain()),
        ((7, 30, 44), PreprocessConfig(size=(48, 64), slice_axis=0).plain()),
        ((30, 20, 12), PreprocessConfig(size=32, keep_aspect=True).plain()),
        ((24, 40), PreprocessConfig(size=(32, 64), keep_aspect=True).plain()),
        ((30, 13, 20), PreprocessConfig(size=(32, 32), slice_axis=1, keep_aspect=True).plain()),
    ],
)
def test_label_round_trip_is_exact_when_grid_is_not_smaller(shape, cfg, rng):
    label = blobs(shape, rng)
    grid = preprocess_label(label, cfg)
    assert grid.dtype == np.int64
    back = restore(grid, shape, cfg, order=0)
    assert back.shape == shape
    assert np.array_equal(back, label)


@pytest.mark.parametrize("keep_aspect", [False, True])
def test_label_round_trip_when_shrinking_moves_only_boundaries(keep_aspect, rng):
    shape = (150, 110, 5)
    cfg = PreprocessConfig(size=(64, 64), keep_aspect=keep_aspect).plain()
    label = blobs(shape, rng)
    back = restore(preprocess_label(label, cfg), shape, cfg, order=0)
    assert back.shape == shape
    assert (back != label).mean() < 0.02
    for v in (1, 2, 3):  # every structure survives, roughly the same size
        assert abs((back == v).sum() / (label == v).sum() - 1) < 0.1


def test_keep_aspect_pads_to_a_square_field_of_view(rng):
    shape = (64, 32)
    image = np.zeros(shape)
    image[16:48, 8:24] = 1.0  # a square 32×16 block: stays 2:1 on a square grid
    cfg = PreprocessConfig(size=32, intensity="minmax", keep_aspect=True).plain()
    grid = preprocess_image(image, cfg)
    assert grid.shape == (32, 32)
    rows, cols = np.nonzero(grid > 0.5)
    assert np.ptp(rows) + 1 == pytest.approx(2 * (np.ptp(cols) + 1), abs=1)
    assert grid[:, :8].max() == 0.0  # padding on both sides of the narrow axis
    stretched = preprocess_image(image, PreprocessConfig(size=32, intensity="minmax").plain())
    assert (stretched > 0.5).sum() > (grid > 0.5).sum()


def test_restore_probabilities_keeps_leading_axes(rng):
    shape = (20, 26, 5)
    cfg = PreprocessConfig(size=(32, 32)).plain()
    probs = rng.random((4, 32, 32, 5)).astype(np.float32)
    back = restore(probs, shape, cfg, order=1)
    assert back.shape == (4, *shape)
    with pytest.raises(ValueError, match="grid"):
        restore(probs[:, :16], shape, cfg, order=1)


def test_preprocess_image_is_float32_on_the_grid(rng):
    out = preprocess_image(rng.random((50, 40, 6)) * 900, PreprocessConfig(size=(32, 32)).plain())
    assert out.dtype == np.float32 and out.shape == (32, 32, 6)
    assert out.min() >= 0 and out.max() <= 255


# ---------------------------------------------------------------- cache


def test_cache_hits_and_misses(tmp_path, rng, monkeypatch):
    path = save_nifti(tmp_path / "a.nii.gz", rng.random((40, 40)).astype(np.float32))
    calls = []
    real = pp.preprocess_image
    monkeypatch.setattr(pp, "preprocess_image",
                        lambda a, c, s=None, p=None: calls.append(1) or real(a, c, s, p))
    cache = PreprocessCache(tmp_path / "cache")
    cfg = PreprocessConfig(size=32).plain()

    first = cache.image(path, cfg)
    second = cache.image(path, cfg)
    assert len(calls) == 1 and (cache.hits, cache.misses) == (1, 1)
    assert np.array_equal(first, second) and isinstance(second, np.memmap)
    assert not second.flags.writeable

    cache.image(path, PreprocessConfig(size=32, intensity="zscore").plain())  # changed setting
    assert len(calls) == 2
    save_nifti(path, rng.random((40, 40)).astype(np.float32))  # changed content
    cache.image(path, cfg)
    assert len(calls) == 3
    assert len(list((tmp_path / "cache").glob("image-*.npy"))) == 3
    assert not list((tmp_path / "cache").glob(".*tmp*"))  # no temporary files left

    fresh = PreprocessCache(tmp_path / "cache")  # another process, same folder
    fresh.image(path, cfg)
    assert len(calls) == 3 and fresh.hits == 1


def test_cache_off_and_damaged_entries(tmp_path, rng, monkeypatch):
    path = save_nifti(tmp_path / "l.nii.gz", blobs((40, 40), rng).astype(np.uint8))
    cfg = PreprocessConfig(size=32).plain()
    monkeypatch.chdir(tmp_path)
    for off in (PreprocessCache(None), PreprocessCache(enabled=False)):
        assert off.label(path, cfg).dtype == np.int64
    assert not (tmp_path / ".segfew-cache").exists()

    monkeypatch.setenv("SEGFEW_CACHE", str(tmp_path / "env-cache"))
    cache = PreprocessCache()
    expected = preprocess_label(blobs((40, 40), np.random.default_rng(0)), cfg)
    assert np.array_equal(cache.label(path, cfg), expected)
    (entry,) = (tmp_path / "env-cache").glob("label-*.npy")
    entry.write_bytes(b"not a numpy file")
    with pytest.warns(UserWarning, match="cache entry does not match its checksum"):
        assert np.array_equal(PreprocessCache().label(path, cfg), expected)


def test_load_case_stacks_channels_and_labels(tmp_path, rng):
    shape = (30, 34, 5)
    images = tuple(save_nifti(tmp_path / f"c_{i}.nii.gz", rng.random(shape).astype(np.float32))
                   for i in range(2))
    labels = tuple(save_nifti(tmp_path / f"c_{i}_seg.nii.gz", blobs(shape, rng).astype(np.uint8))
                   for i in range(2))
    cfg = PreprocessConfig(size=(32, 32)).plain()
    case = Case("c", images, labels[:1])
    image, label = load_case(case, cfg)
    assert image.shape == (2, 32, 32, 5) and image.dtype == np.float32
    assert label is not None and label.shape == (32, 32, 5) and label.dtype == np.int64

    both = Case("c", images, labels)
    _, per_channel = load_case(both, cfg, PreprocessCache(tmp_path / "cache"))
    assert per_channel is not None and per_channel.shape == (2, 32, 32, 5)

    none = Case("c", images[:1], ())
    assert load_case(none, cfg)[1] is None

    other = save_nifti(tmp_path / "d.nii.gz", rng.random((30, 34, 6)).astype(np.float32))
    bad = Case("c", (images[0], other), ())
    # channels of another shape are refused by the door, as every command refuses them
    with pytest.raises(DataError, match=r"d\.nii\.gz: shape \(30, 34, 6\) differs from .*c_0"):
        load_case(bad, cfg)


def test_a_cache_entry_overwritten_at_the_same_size_is_recomputed_with_a_warning(
        tmp_path, rng):
    from segfew.errors import DataWarning

    path = save_nifti(tmp_path / "a.nii.gz", rng.random((40, 40)).astype(np.float32))
    cfg = PreprocessConfig(size=32).plain()
    cache = PreprocessCache(tmp_path / "cache")
    good = np.array(cache.image(path, cfg))
    (entry,) = (tmp_path / "cache").glob("image-*.npy")
    size = entry.stat().st_size
    header = entry.read_bytes()[:128]  # still a valid .npy: the header kept, voxels zeroed
    entry.write_bytes(header + bytes(size - 128))
    with pytest.warns(DataWarning, match=r"image-.*\.npy: cache entry does not match its "
                                         r"checksum; recomputed and replaced"):
        again = PreprocessCache(tmp_path / "cache").image(path, cfg)
    np.testing.assert_array_equal(again, good)
    fresh = PreprocessCache(tmp_path / "cache")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the bad entry was replaced: no second warning
        np.testing.assert_array_equal(fresh.image(path, cfg), good)
    assert fresh.hits == 1


def test_an_entry_made_with_other_settings_is_not_used(tmp_path, rng):
    path = save_nifti(tmp_path / "a.nii.gz", rng.random((40, 40)).astype(np.float32))
    cache = PreprocessCache(tmp_path / "cache")
    cache.image(path, PreprocessConfig(size=32).plain())
    (entry,) = (tmp_path / "cache").glob("image-*.json")
    record = json.loads(entry.read_text())
    record["settings"] = record["settings"].replace('"minmax"', '"zscore"').replace(
        '"clahe"', '"zscore"')
    entry.write_text(json.dumps(record))
    with pytest.warns(UserWarning, match="made with other settings"):
        PreprocessCache(tmp_path / "cache").image(path, PreprocessConfig(size=32).plain())


def test_the_doors_warnings_are_said_again_on_a_cache_hit(tmp_path):
    from segfew.errors import DataWarning

    arr = ramp((20, 20))
    arr[0, 0] = np.nan
    path = save_nifti(tmp_path / "n.nii.gz", arr)
    case = Case("n", (path,))
    for _ in range(2):
        cache = PreprocessCache(tmp_path / "cache")
        with pytest.warns(DataWarning, match=r"n\.nii\.gz: 1 NaN/infinite voxel"):
            load_case(case, PreprocessConfig(size=16).plain(), cache)
    assert cache.hits == 1


def test_a_case_too_large_to_preprocess_in_free_memory_is_refused_naming_its_file(
        tmp_path, rng, monkeypatch) -> None:
    """Through the cache or not, image or label map: the scan is refused before CLAHE and
    the resize, naming the file, and nothing is cached for it."""
    import segfew.runtime

    image = save_nifti(tmp_path / "a.nii.gz", rng.normal(100, 30, (40, 40, 6)).astype(np.float32))
    label = save_nifti(tmp_path / "a_seg.nii.gz", np.zeros((40, 40, 6), np.uint8))
    cfg = pp.Preprocessing(size=(16, 16), intensity="clahe")
    monkeypatch.setattr(segfew.runtime, "available_bytes",
                        lambda device: 40 * 40 * 6 * pp.PREPROCESS_BYTES_PER_VOXEL - 1)
    cache = PreprocessCache(tmp_path / "cache")
    for call in (lambda: load_case(Case("a", (image,), (label,)), cfg, cache),
                 lambda: load_case(Case("a", (image,), (label,)), cfg, PreprocessCache(None)),
                 lambda: cache.label(label, cfg)):
        with pytest.raises(DataError, match="onto the network grid") as err:
            call()
        assert "a.nii.gz" in str(err.value) or "a_seg.nii.gz" in str(err.value)
    assert not list((tmp_path / "cache").glob("*.npy"))
    monkeypatch.setattr(segfew.runtime, "available_bytes", lambda device: 2**40)
    assert load_case(Case("a", (image,), (label,)), cfg, cache)[0].shape == (1, 16, 16, 6)
