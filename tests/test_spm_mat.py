"""An Analyze pair's SPM ``.mat`` is part of the scan: the reader takes its affine from it,
so the pre-processing cache key, the scan digest and ``run.json``'s manifest cover it."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from segfew.data import Case
from segfew.errors import DataError
from segfew.files import file_digest
from segfew.identity import scan_digest, scan_files, voxel_digest
from segfew.preprocess.cache import PreprocessCache, load_case
from segfew.runinfo import manifest
from segfew.spec import PreprocessConfig

SHAPE = (12, 10, 4)
AFFINE = np.diag([2.0, 2.0, 3.0, 1.0])
#: SPM's "reorient" of the same voxels: a left-right flip, then a small rotation about z
FLIPPED = np.diag([-2.0, 2.0, 3.0, 1.0]) @ np.eye(4)
FLIPPED[0, 3] = 2.0 * (SHAPE[0] - 1)
_C, _S = np.cos(0.05), np.sin(0.05)
ROTATED = np.array([[_C, -_S, 0, 0], [_S, _C, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]) @ AFFINE


def _pair(folder: Path, name: str, data: np.ndarray, affine: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Spm2AnalyzeImage(data, affine), str(folder / f"{name}.img"))
    assert (folder / f"{name}.mat").is_file()  # SPM's affine beside the pair
    return folder / f"{name}.hdr"


def _reorient(header: Path, affine: np.ndarray, tmp: Path) -> None:
    """Rewrite only the pair's ``.mat``, as SPM's reorient does (header and data untouched)."""
    data = np.zeros(SHAPE, np.float32)
    other = _pair(tmp / "spm-reorient", header.name[:-4], data, affine)
    shutil.copyfile(other.with_suffix(".mat"), header.with_suffix(".mat"))


def _scan(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(3)
    image = _pair(tmp_path / "images", "p003", rng.random(SHAPE).astype(np.float32), AFFINE)
    labels = np.zeros(SHAPE, np.uint8)
    labels[3:9, 2:8, 1:3] = 1
    label = tmp_path / "labels" / "p003.nii.gz"
    label.parent.mkdir()
    nib.save(nib.Nifti1Image(labels, AFFINE), str(label))
    return image, label


def test_scan_files_and_digest_cover_the_mat(tmp_path: Path) -> None:
    image, _ = _scan(tmp_path)
    files = scan_files(image)
    assert [f.name for f in files] == ["p003.img", "p003.mat"]
    before = scan_digest(image)
    assert before != file_digest(image.with_suffix(".img"))
    _reorient(image, ROTATED, tmp_path)
    assert scan_digest(image) != before


def test_a_nifti_pair_ignores_a_mat_the_reader_does_not_read(tmp_path: Path) -> None:
    nib.save(nib.Nifti1Pair(np.ones(SHAPE, np.float32), AFFINE), str(tmp_path / "n.img"))
    shutil.copyfile(_pair(tmp_path / "spm", "n", np.ones(SHAPE, np.float32),
                          AFFINE).with_suffix(".mat"), tmp_path / "n.mat")
    assert [f.name for f in scan_files(tmp_path / "n.hdr")] == ["n.img"]


def test_a_rewritten_mat_misses_the_cache_and_its_mismatch_is_refused(tmp_path: Path) -> None:
    image, label = _scan(tmp_path)
    cfg = PreprocessConfig(size=(16, 16)).plain()
    case = Case("p003", (image,), (label,))
    cache = PreprocessCache(tmp_path / "cache")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first, _ = load_case(case, cfg, cache)
        assert cache.misses == 2 and load_case(case, cfg, cache)[0] is not None
    assert cache.hits == 2  # the image and label entries

    _reorient(image, FLIPPED, tmp_path)  # the images' .mat only: labels now mismatched
    with pytest.raises(DataError) as uncached:
        load_case(case, cfg, PreprocessCache(None))
    with pytest.raises(DataError) as cached:
        load_case(case, cfg, PreprocessCache(tmp_path / "cache"))
    assert str(cached.value) == str(uncached.value)

    _reorient(image, ROTATED, tmp_path)  # a small rotation the labels do not follow either
    fresh = PreprocessCache(tmp_path / "cache")
    with pytest.raises(DataError):
        load_case(case, cfg, fresh)
    assert fresh.hits == 0

    _reorient(image, AFFINE, tmp_path)  # back as it was: the old entries are found again
    again = PreprocessCache(tmp_path / "cache")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.testing.assert_array_equal(load_case(Case("p003", (image,), ()), cfg, again)[0],
                                      first)
    assert again.hits == 1 and again.misses == 0


def test_the_image_cache_sees_the_new_orientation(tmp_path: Path) -> None:
    image, _ = _scan(tmp_path)
    cfg = PreprocessConfig(size=(16, 16)).plain()
    cache = PreprocessCache(tmp_path / "cache")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        before = np.array(cache.image(image, cfg))
        _reorient(image, FLIPPED, tmp_path)
        after = np.array(PreprocessCache(tmp_path / "cache").image(image, cfg))
        uncached = PreprocessCache(None).image(image, cfg)
    np.testing.assert_array_equal(after, uncached)
    assert not np.array_equal(after, before)  # the flip, now seen


def test_run_manifest_lists_the_mat(tmp_path: Path) -> None:
    image, label = _scan(tmp_path)
    (row, _) = manifest([image, label])
    assert row["path"] == str(image) and row["files"] == ["p003.img", "p003.mat"]
    assert row["sha256"] == scan_digest(image)
    assert row["bytes"] == sum(image.with_suffix(s).stat().st_size for s in (".img", ".mat"))
    _reorient(image, ROTATED, tmp_path)
    assert manifest([image])[0]["sha256"] != row["sha256"]  # two inputs, two records


def test_voxel_digest_follows_the_mat(tmp_path: Path) -> None:
    """The voxel digest is of the scan in RAS: a ``.mat`` that keeps its nearest axes (a
    small rotation) is the same scan by its voxels, and so is one that flips an axis (the
    digest sets flips aside, as a NIfTI re-saved with other header codes is flipped); the
    in-process cache of digests sees the ``.mat`` change (the older digest, of RAS as
    read, differs)."""
    image, _ = _scan(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first, first_v1 = voxel_digest(image), voxel_digest(image, version=1)
        _reorient(image, ROTATED, tmp_path)
        assert voxel_digest(image) == first is not None
        _reorient(image, FLIPPED, tmp_path)
        assert voxel_digest(image) == first
        assert voxel_digest(image, version=1) not in (None, first_v1)


def test_leakage_finds_a_pair_recorded_before_its_mat_counted(tmp_path: Path) -> None:
    from segfew.evaluation.leakage import trained_on

    image, _ = _scan(tmp_path)
    assert trained_on(image, {scan_digest(image)})
    assert trained_on(image, {file_digest(image.with_suffix(".img"))})  # an older record
    other = _pair(tmp_path / "other", "p004", np.ones(SHAPE, np.float32), AFFINE)
    assert not trained_on(image, {scan_digest(other), file_digest(other.with_suffix(".img"))})
