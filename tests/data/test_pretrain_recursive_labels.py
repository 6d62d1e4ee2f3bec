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


def test_maps_given_as_labels_are_not_said_to_be_skipped(tmp_path: Path) -> None:
    """--labels = --images: the maps beside the images are skipped as scans and used as
    maps; "skipped … label map" about them would contradict the run."""
    from tests.conftest import warned

    root = tmp_path / "kits"
    for n in (1, 2):
        save_nifti(root / f"case{n}" / "imaging.nii.gz", ramp((16, 16), base=n))
        save_nifti(root / f"case{n}" / "segmentation.nii.gz", np.eye(16, dtype=np.uint8))
    (root / "notes.txt").write_text("a note")
    spec = PretrainSpec.model_validate({
        "data": {"images": root, "labels": root, "recursive": True},
        "out": tmp_path / "seg.pt", "preprocess": {"size": [16]}, "network": {"n_s": 2},
        "train": {"epochs": 1}})
    cases, said = warned(_segmentation_cases, spec)
    assert len(cases) == 2 and all(c.labels for c in cases)
    assert not [s for s in said if "label map" in s]
    assert [s for s in said if "notes.txt" in s]  # what else was skipped is still said
