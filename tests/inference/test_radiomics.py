"""segfew.inference.radiomics on phantoms whose IBSI answers are known by hand, and the families'
names as the measures framework's inner cross-validation reads them."""

from __future__ import annotations

import math

import numpy as np
import pytest

from segfew.inference import radiomics as r


def test_a_uniform_block_has_no_spread_no_entropy_and_one_zone() -> None:
    image = np.zeros((12, 12, 6))
    image[3:9, 2:10, 1:5] = 7.0
    mask = image > 0
    first = r.first_order(image[mask])
    assert first["mean"] == first["median"] == first["p10"] == first["p90"] == 7.0
    assert first["sd"] == first["iqr"] == first["skewness"] == first["kurtosis"] == 0.0
    assert first["entropy_bits"] == 0.0 and first["uniformity"] == 1.0
    q = np.where(mask, r.quantise(image[mask])[0], 0)  # a constant quantises to level 1
    zone = r.size_zone(q)
    n = int(mask.sum())
    assert zone["zone_percentage"] == pytest.approx(1 / n)
    assert zone["small_zone_emphasis"] == pytest.approx(1 / n**2)
    assert zone["large_zone_emphasis"] == pytest.approx(n**2)
    glcm = r.cooccurrence(q)
    assert glcm["contrast"] == 0.0 and glcm["joint_entropy_bits"] == 0.0
    assert glcm["angular_second_moment"] == pytest.approx(1.0)
    # runs along rows of 8, columns of 6 and diagonals of 1 … 6, in each of 4 slices
    runs = r.run_length(q)
    lengths = [8] * 6 + [6] * 8 + 2 * ([1, 2, 3, 4, 5] * 2 + [6] * 3)
    assert runs["long_run_emphasis"] == pytest.approx(np.mean(np.square(lengths)))
    assert runs["run_percentage"] == pytest.approx(len(lengths) / (4 * 48))


def test_a_two_level_checkerboard_has_the_contrast_counted_by_hand() -> None:
    n = 6
    q = np.indices((n, n)).sum(0) % 2 + 1  # 1 and 2 alternate
    glcm = r.cooccurrence(q, levels=2)
    # n(n−1) pairs per row/column direction differ by one level; (n−1)² per diagonal agree
    differ, agree = 2 * n * (n - 1), 2 * (n - 1) ** 2
    assert glcm["contrast"] == pytest.approx(differ / (differ + agree))
    assert glcm["dissimilarity"] == pytest.approx(differ / (differ + agree))
    # every run is one voxel long along rows and columns, a whole diagonal along diagonals
    runs = r.run_length(q, levels=2)
    assert runs["grey_level_nonuniformity"] == pytest.approx(0.5)
    # 8-connected zones: each level is one diagonal lattice, one zone of n²/2 voxels
    zone = r.size_zone(q, levels=2)
    assert zone["zone_percentage"] == pytest.approx(2 / n**2)
    assert zone["zone_size_nonuniformity"] == pytest.approx(1.0)


def test_first_order_matches_the_moments_of_a_known_sample() -> None:
    values = np.array([1.0, 2.0, 2.0, 3.0, 10.0])
    first = r.first_order(values, levels=9)
    d = values - values.mean()
    assert first["sd"] == pytest.approx(math.sqrt(np.mean(d**2)))  # IBSI: population SD
    assert first["skewness"] == pytest.approx(np.mean(d**3) / np.mean(d**2) ** 1.5)
    assert first["kurtosis"] == pytest.approx(np.mean(d**4) / np.mean(d**2) ** 2 - 3)
    # fixed bin number 9 over 1 … 10: bins 1, 2, 2, 3, 9 → p = 1/5, 2/5, 1/5, 1/5
    p = np.array([0.2, 0.4, 0.2, 0.2])
    assert first["entropy_bits"] == pytest.approx(-(p * np.log2(p)).sum())
    assert first["uniformity"] == pytest.approx((p**2).sum())
    assert r.quantise(np.array([0.0, 0.5, 1.0]), 2).tolist() == [1, 2, 2]


def test_surroundings_and_location_of_a_bright_blob_off_centre() -> None:
    rng = np.random.default_rng(0)
    image = np.zeros((40, 40))
    body = np.zeros((40, 40), bool)
    body[5:35, 5:35] = True
    image[body] = 100 + rng.normal(0, 5, body.sum())
    labels = np.zeros((40, 40), np.int16)
    labels[8:14, 20:26] = 1  # towards −axis 0 (left), +axis 1 (anterior)
    image[labels == 1] = 200.0
    out = r.image_measurements([image], ["t2"], [labels], (1.0, 1.0), {1: "lesion"})
    assert out["lesion_surround_ring_contrast_t2"] > 10
    assert out["lesion_surround_ring_ratio_t2"] == pytest.approx(2.0, rel=0.05)
    assert out["lesion_surround_body_percentile_t2"] == 1.0
    assert out["lesion_location_right_fraction_t2"] < 0
    assert out["lesion_location_anterior_fraction_t2"] > 0
    # the centroid (10.5, 22.5) against the body's: the distance by hand
    centre = np.argwhere(r.body_mask(image, labels > 0)).mean(0)
    expected = math.dist((10.5, 22.5), centre)
    assert out["lesion_location_distance_mm_t2"] == pytest.approx(expected)
    names = {k.removeprefix("lesion_").split("_")[0] for k in out}
    assert names == set(r.FAMILIES)


def test_an_absent_structure_gives_nan_and_the_same_names() -> None:
    image = np.random.default_rng(1).normal(size=(16, 16, 4))
    labels = np.zeros((16, 16, 4), np.int16)
    labels[4:8, 4:8, 1:3] = 1
    present = r.image_measurements([image], ["0"], [labels], (1, 1, 2), {1: "a", 2: "b"})
    b = {k: v for k, v in present.items() if k.startswith("b_")}
    a = {k: v for k, v in present.items() if k.startswith("a_")}
    assert [k[2:] for k in a] == [k[2:] for k in b]  # the same names, present or not
    assert all(math.isnan(v) for v in b.values())
    assert all(math.isfinite(v) for k, v in a.items() if "ring" not in k)


def test_the_families_are_those_the_measures_selection_knows() -> None:
    from segfew.models.measures_selection import FAMILIES, family_of, subset_mask

    assert FAMILIES[1:] == r.FAMILIES
    names = ["tumour_volume_ml_0", "tumour_intensity_mean_0",
             "tumour_texture_cooccurrence_contrast_0", "tumour_location_distance_mm_0",
             "tumour_surround_ring_contrast_0"]
    assert [family_of(n) for n in names] == ["shape", "intensity", "texture", "location",
                                            "surround"]
    assert subset_mask(names, "intensity+surround").tolist() == [False, True, False, False, True]
    assert subset_mask(names, "volumes").tolist() == [True, False, False, False, False]
