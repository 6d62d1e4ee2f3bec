"""A scan's identity by its voxels whatever direction its header gives each axis (tester14
F11), and model files that record the older form of that identity still finding copies."""

from __future__ import annotations

import hashlib
import json
import shutil
from itertools import combinations, permutations
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from segfew.data.case import Case
from segfew.errors import DataError
from segfew.evaluation.leakage import check_models, find_leakage
from segfew.identity import voxel_digest, voxel_digests
from segfew.io import read_image
from tests.conftest import make_segmenter, save_nifti

MM = np.diag([1.5, 1.5, 3.0, 1.0])


def _volume(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 200, (16, 18, 4)).astype(np.int16)


def _recording(model: Path, **metrics: object) -> Path:
    """Set ``metrics`` in a model file, as pretrain records them."""
    payload = torch.load(model, map_location="cpu", weights_only=True)
    meta = json.loads(payload["metadata"])
    meta["metrics"] = {**(meta.get("metrics") or {}), **metrics}
    payload["metadata"] = json.dumps(meta)
    torch.save(payload, model)
    return model


def _v1(path: Path) -> str:
    """The digest an older segfew recorded: ``segfew voxels v1``, the shape, ``<f4`` and the
    float32 values of the scan as read (RAS), no flips."""
    array = read_image(path).array
    head = f"segfew voxels v1\n{'x'.join(map(str, array.shape))}\n<f4\n".encode()
    return hashlib.sha256(head + np.ascontiguousarray(array, "<f4").tobytes()).hexdigest()


def test_a_scan_saved_with_qform_and_sform_codes_0_is_the_same_scan(tmp_path: Path) -> None:
    """nib.Nifti1Image(array, None) writes codes 0: nibabel then reads x mirrored."""
    array = _volume(1)
    scan = save_nifti(tmp_path / "scan.nii.gz", array, MM)
    bare = tmp_path / "bare.nii.gz"
    nib.save(nib.Nifti1Image(array, None), bare)
    assert not np.array_equal(read_image(bare).array, read_image(scan).array)  # read mirrored
    assert voxel_digest(bare) == voxel_digest(scan) is not None
    other = save_nifti(tmp_path / "other.nii.gz", _volume(2), MM)
    assert voxel_digest(other) != voxel_digest(scan)


@pytest.mark.parametrize("shape", [(9, 8, 5), (6, 6, 1), (8, 8, 4)])
def test_every_flip_of_a_volumes_axes_is_one_digest(tmp_path: Path, shape: tuple) -> None:
    rng = np.random.default_rng(3)
    array = rng.normal(size=shape).astype(np.float32)
    array[:, :, 0] = array[::-1, :, 0]  # one slice symmetric: the rule still decides
    if shape == (8, 8, 4):  # a profile symmetric along x: both directions hashed
        array = np.concatenate([array[:4], array[:4][::-1]], axis=0)
    first = voxel_digest(tmp_path / "none", array)
    assert first is not None and first.startswith("v3:")
    for k in range(1, 4):
        for axes in combinations(range(3), k):
            flipped = np.flip(array, axes)
            assert voxel_digest(tmp_path / "none", np.asfortranarray(flipped)) == first, axes
    for order in permutations(range(3)):  # the axes in another order (and flipped): one scan
        turned = np.flip(np.transpose(array, order), 0)
        assert voxel_digest(tmp_path / "none", turned) == first, order
    other = array.copy()
    other[0, 0, 0] += 1
    assert voxel_digest(tmp_path / "none", other) != first


def test_a_sagittal_scan_re_saved_with_codes_0_is_the_same_scan(tmp_path: Path) -> None:
    """Its header gives the axes in another order (x is the slice axis): read in RAS, the
    codes-0 copy's stored order is the first's axes swapped, which v2 set apart."""
    array = _volume(7)  # its third stored axis runs right to left: 4 sagittal slices
    affine = np.array([[0, 0, -3.0, 0], [1.5, 0, 0, 0], [0, 1.5, 0, 0], [0, 0, 0, 1]])
    scan = tmp_path / "sag.nii.gz"
    nib.save(nib.Nifti1Image(array, affine), scan)
    bare = tmp_path / "copy_q0s0.nii.gz"
    nib.save(nib.Nifti1Image(array, None), bare)
    assert read_image(bare).array.shape != read_image(scan).array.shape
    assert voxel_digest(bare) == voxel_digest(scan) is not None
    assert voxel_digest(bare, version=2) != voxel_digest(scan, version=2)


def test_leakage_finds_a_training_scan_re_saved_with_codes_0(tmp_path: Path) -> None:
    array = _volume(4)
    train = save_nifti(tmp_path / "train" / "p003.nii.gz", array, MM)
    model = _recording(make_segmenter(tmp_path / "seg.pt"),
                       training_data=[hashlib.sha256(train.read_bytes()).hexdigest()],
                       training_voxels=voxel_digests([train]))
    bare = tmp_path / "test" / "copy_q0s0.nii.gz"
    bare.parent.mkdir()
    nib.save(nib.Nifti1Image(array, None), bare)
    check = find_leakage(model, [Case("copy_q0s0", (bare,))])
    assert check.leaked == check.restored == ["copy_q0s0"]
    with pytest.raises(DataError, match="copy_q0s0: the same voxels as training scans"):
        check_models([model], [Case("copy_q0s0", (bare,))])


def test_an_older_model_files_voxel_record_still_finds_an_exact_copy(tmp_path: Path) -> None:
    """A model file of an older segfew records plain v1 digests: compared in that form."""
    train = save_nifti(tmp_path / "train" / "p1.nii.gz", _volume(5), MM)
    fresh = save_nifti(tmp_path / "test" / "fresh.nii.gz", _volume(6), MM)
    copy = tmp_path / "test" / "p1.nii"
    nib.save(nib.load(train), copy)  # decompressed: other bytes, the same voxels
    shutil.copy(train, tmp_path / "test" / "bytes.nii.gz")
    assert voxel_digest(copy, version=1) == _v1(train)  # the old form, unchanged
    model = _recording(make_segmenter(tmp_path / "old.pt"),
                       training_data=[hashlib.sha256(train.read_bytes()).hexdigest()],
                       training_voxels=[_v1(train)])
    cases = [Case("p1", (copy,)), Case("fresh", (fresh,)),
             Case("bytes", (tmp_path / "test" / "bytes.nii.gz",))]
    check = find_leakage(model, cases)
    assert check.by_voxels and check.leaked == ["bytes", "p1"] and check.restored == ["p1"]
