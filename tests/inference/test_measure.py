"""Measurements on synthetic shapes with known answers (segfew.inference.measure)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from segfew.inference.measure import keep_largest_component, measure_case, structure_measurements


def _grid(shape: tuple[int, ...], spacing: tuple[float, ...]) -> list[np.ndarray]:
    """Coordinates in mm of every voxel centre, the grid centred on 0."""
    axes = [(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, spacing, strict=True)]
    return list(np.meshgrid(*axes, indexing="ij"))


@pytest.mark.parametrize(("r", "slice_mm"), [(12.0, 5.0), (12.0, 10.0), (20.0, 10.0),
                                             (6.0, 5.0)])
def test_a_ball_on_thick_slices_keeps_its_surface_and_a_sphericity_of_at_most_one(
        r: float, slice_mm: float) -> None:
    """Smoothed by one voxel across 10 mm slices, a 12 mm ball lost 28 % of its surface and
    read a sphericity of 1.40 (6 mm: 2.9), which no shape can have."""
    spacing = (1.5, 1.5, slice_mm)
    shape = tuple(math.ceil(2 * r / s) + 6 for s in spacing)
    x, y, z = _grid(shape, spacing)
    m = structure_measurements(x**2 + y**2 + z**2 <= r**2, spacing)
    assert m["surface_mm2"] == pytest.approx(4 * math.pi * r**2, rel=0.12)
    assert 0.8 < m["sphericity"] <= 1.0


def test_sphere_volume_and_surface_in_ml_and_mm2_under_anisotropic_spacing() -> None:
    spacing = (0.8, 1.25, 2.5)  # mm: the ball is 50/40/20 voxels across
    r = 20.0
    x, y, z = _grid((64, 48, 24), spacing)
    ball = x**2 + y**2 + z**2 <= r**2
    m = structure_measurements(ball, spacing)
    assert m["volume_ml"] == pytest.approx(4 / 3 * math.pi * r**3 / 1000, rel=0.02)
    assert m["surface_mm2"] == pytest.approx(4 * math.pi * r**2, rel=0.05)
    assert m["sphericity"] == pytest.approx(1.0, abs=0.07)
    assert m["major_axis_mm"] == pytest.approx(m["minor_axis_mm"], rel=0.05)
    # the same ball on a voxel grid twice as coarse in-plane: same physical answers
    coarse = structure_measurements(ball[::2, ::2], (1.6, 2.5, 2.5))
    assert coarse["volume_ml"] == pytest.approx(m["volume_ml"], rel=0.05)


def test_ring_thickness_is_its_wall_width_in_mm() -> None:
    spacing = (0.5, 0.5, 8.0)  # cine-MRI-like: fine in-plane, thick slices
    x, y, _ = _grid((96, 96, 5), spacing)
    radius = np.hypot(x, y)
    ring = (radius >= 10) & (radius <= 16)  # a 6 mm wall around a 20 mm cavity
    m = structure_measurements(ring, spacing, slice_axis=2)
    assert m["thickness_mean_mm"] == pytest.approx(6.0, abs=0.5)
    assert m["thickness_max_mm"] < 8.0
    thin = structure_measurements((radius >= 10) & (radius <= 13), spacing, slice_axis=2)
    assert thin["thickness_mean_mm"] == pytest.approx(3.0, abs=0.5)


def test_a_structure_in_one_slice_has_no_solidity_and_no_warning() -> None:
    import warnings

    flat = np.zeros((30, 30, 6), bool)
    flat[5:25, 8:20, 3] = True  # one slice of a volume: Qhull has no 3D hull to build
    cube = np.zeros((30, 30, 6), bool)
    cube[5:25, 8:20, 1:5] = True
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = structure_measurements(flat, (1.5, 1.5, 8.0))
        solid = structure_measurements(cube, (1.5, 1.5, 8.0))["solidity"]
    assert [str(w.message) for w in caught] == []
    assert math.isnan(m["solidity"]) and m["volume_ml"] > 0
    assert solid == pytest.approx(1.0)


def test_ratios_between_channels_and_between_structures() -> None:
    ed = np.zeros((20, 20, 4), dtype=np.int16)
    es = np.zeros_like(ed)
    ed[2:12, 2:12] = 3  # cavity: 400 voxels at ED
    es[2:12, 2:7] = 3  # half of it at ES
    ed[14:18, 2:12] = 1  # another structure: 160 voxels in both phases
    es[14:18, 2:12] = 1
    m = measure_case([ed, es], [(1.0, 1.0, 2.0)] * 2, {1: "RV", 3: "LV"}, ["ED", "ES"])
    assert m["LV_volume_ml_ED"] == pytest.approx(400 * 2 / 1000)
    assert m["LV_ejection_fraction_ED_ES"] == pytest.approx(0.5)
    assert m["RV_ejection_fraction_ED_ES"] == pytest.approx(0.0)
    assert m["RV_to_LV_volume_ratio_ED"] == pytest.approx(160 / 400)
    assert m["RV_to_LV_volume_ratio_ES"] == pytest.approx(160 / 200)
    # an absent structure: volume 0, everything else undefined, never an exception
    empty = measure_case([ed * 0, es * 0], [(1.0, 1.0, 2.0)] * 2, {3: "LV"}, ["ED", "ES"])
    assert empty["LV_volume_ml_ED"] == 0.0
    assert math.isnan(empty["LV_ejection_fraction_ED_ES"])
    assert list(empty) == [k for k in m if k.startswith("LV_") and "_to_" not in k]


def test_measure_case_refuses_mismatched_inputs() -> None:
    with pytest.raises(ValueError, match="2 label maps, 1 spacings"):
        measure_case([np.zeros((4, 4, 2))] * 2, [(1.0, 1.0, 1.0)], {1: "A"}, ["a", "b"])


def test_largest_component_drops_islands_per_structure() -> None:
    labels = np.zeros((10, 10, 3), dtype=np.int16)
    labels[1:5, 1:5] = 1
    labels[8, 8, 1] = 1  # a stray voxel
    labels[6:9, 1:3] = 2
    out = keep_largest_component(labels, [1, 2])
    assert out[8, 8, 1] == 0
    assert (out == 1).sum() == 4 * 4 * 3 and (out == 2).sum() == 3 * 2 * 3
    assert labels[8, 8, 1] == 1  # the input is untouched


def test_a_structure_of_one_voxel_is_measured_not_an_error() -> None:
    mask = np.zeros((8, 8, 4), dtype=bool)
    mask[4, 4, 2] = True  # a stray voxel: smoothing by a voxel leaves nothing above 0.5
    m = structure_measurements(mask, (1.5, 1.5, 8.0))
    assert m["volume_ml"] == pytest.approx(1.5 * 1.5 * 8.0 / 1000)
    assert m["surface_mm2"] > 0


def test_a_segmentation_that_found_nothing_is_an_error_naming_the_image() -> None:
    from pathlib import Path

    from segfew.errors import DataError
    from segfew.inference.measure import measure_images
    from segfew.io import Image

    images = [Image(np.ones((8, 8, 4), np.float32), np.eye(4), Path(f"p_{c}.nii.gz"))
              for c in ("ED", "ES")]
    found = np.zeros((8, 8, 4), np.int16)
    found[2:5, 2:5, 1:3] = 1
    measure_images(images, [found, found], {1: "LV"}, ["ED", "ES"], ["ED", "ES"], 2)
    with pytest.raises(DataError, match=r"p_ES\.nii\.gz.*of ES holds no structure"):
        measure_images(images, [found, np.zeros_like(found)], {1: "LV"}, ["ED", "ES"],
                       ["ED", "ES"], 2)
    with pytest.raises(DataError, match=r"p_ED\.nii\.gz: the segmentation holds no"):
        measure_images(images[:1], [np.zeros_like(found)], {1: "LV"}, ["0"], ["0"], 2)
