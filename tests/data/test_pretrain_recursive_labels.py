"""pretrain --images D --labels D --recursive (patient sub-folders holding their images and
label maps, same-named files included) pairs every map with its image."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segfew.jobs.pretrain import _segmentation_cases
from segfew.spec import PretrainSpec
from tests.conftest import ramp, save_nifti


def test_pretrain_recursive_pairs_label_maps_in_patient_sub_folders(tmp_path: Path) -> None:
    root = tmp_path / "brats"
    for n in (1, 2):
        save_nifti(root / f"patient{n}" / "flair.nii.gz", ramp((16, 16)))
        save_nifti(root / f"patient{n}" / "flair_seg.nii.gz", np.eye(16, dtype=np.uint8))
    spec = PretrainSpec.model_validate({
        "data": {"images": root, "labels": root, "recursive": True},
        "out": tmp_path / "seg.pt", "preprocess": {"size": [16]}, "network": {"n_s": 2},
        "train": {"epochs": 1}})
    cases = _segmentation_cases(spec)
    assert [(c.id, c.labels) for c in cases] == [
        ("patient1_flair", (root / "patient1" / "flair_seg.nii.gz",)),
        ("patient2_flair", (root / "patient2" / "flair_seg.nii.gz",))]
