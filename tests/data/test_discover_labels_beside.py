"""Label maps lying beside their images are not scans: class sub-folders, a flat folder,
channels; a lone label-named file, or one named on the command line, stays a scan."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segfew.data import collect_cases, find_class_folders, find_image_cases
from segfew.data.inspect import inspect_dataset
from segfew.errors import DataWarning
from tests.conftest import nii, ramp, read_csv, save_nifti, warned

BESIDE = "a label map of {} (named like one), not read as a scan"


def _scan(path: Path) -> Path:
    return save_nifti(path, ramp((16, 16)))


def _class_folders(root: Path) -> Path:
    for cls, ids in (("normal", ["a", "b"]), ("oval", ["c", "d"])):
        for cid in ids:
            _scan(root / cls / f"{cid}.nii.gz")
            nii(root / cls / f"{cid}_seg.nii.gz", shape=(16, 16))
    return root


def test_class_folders_holding_masks_beside_their_scans_train_on_the_scans_only(
        tmp_path: Path) -> None:
    root = _class_folders(tmp_path / "classes")
    cases, said = warned(find_class_folders, root)
    assert [(c.id, c.target) for c in cases] == [
        ("a", "normal"), ("b", "normal"), ("c", "oval"), ("d", "oval")]
    for cid, cls in (("a", "normal"), ("d", "oval")):
        line = next(s for s in said if f"{cid}_seg.nii.gz" in s)
        assert str(root / cls / f"{cid}_seg.nii.gz") in line
        assert BESIDE.format(f"{cid}.nii.gz") in line and "--labels" in line
    assert len([s for s in said if "a label map of" in s]) == 4


def test_inspect_lists_the_skipped_masks_of_class_folders(tmp_path: Path) -> None:
    report = inspect_dataset(_class_folders(tmp_path / "classes"))
    assert report.kind == "classification" and len(report.cases) == 4
    notes = [p for p in report.problems if "a label map of" in p]
    assert len(notes) == 4 and not any("label map" in p for p in report.fatal_problems)


def test_a_flat_predict_folder_of_scans_and_masks_predicts_the_scans(
        tmp_path: Path) -> None:
    folder = tmp_path / "flat"
    for cid in ("case000", "case001"):
        _scan(folder / f"{cid}.nii.gz")
        nii(folder / f"{cid}_seg.nii.gz", shape=(16, 16))
    nii(folder / "case001_gt.nii", shape=(16, 16))
    cases, said = warned(collect_cases, [folder])
    assert [c.id for c in cases] == ["case000", "case001"]
    assert any(str(folder / "case000_seg.nii.gz") in s and BESIDE.format("case000.nii.gz")
               in s for s in said)
    assert any(str(folder / "case001_gt.nii") in s for s in said)
    assert [c.id for c in warned(find_image_cases, folder)[0]] == ["case000", "case001"]


def test_predict_of_a_flat_folder_gives_no_row_to_a_mask(tmp_path: Path) -> None:
    from segfew.inference.paths import predict_paths
    from tests.conftest import make_classifier

    folder = tmp_path / "flat"
    for cid in ("case000", "case001"):
        _scan(folder / f"{cid}.nii.gz")
        nii(folder / f"{cid}_seg.nii.gz", shape=(16, 16))
    model = make_classifier(tmp_path / "clf.pt")
    with pytest.warns(DataWarning, match="a label map of case000.nii.gz"):
        out, failed, n = predict_paths(model, [folder], tmp_path / "p.csv", device="cpu")
    assert n == 2 and failed == 0
    assert [r["id"] for r in read_csv(out)] == ["case000", "case001"]


def test_a_label_named_file_without_its_image_or_named_on_its_own_stays_a_scan(
        tmp_path: Path) -> None:
    folder = tmp_path / "in"
    _scan(folder / "x_seg.nii.gz")  # no x.* beside it: perhaps a scan genuinely named so
    _scan(folder / "y.nii.gz")
    nii(folder / "y_label.nii.gz", shape=(16, 16))
    cases, said = warned(collect_cases, [folder])
    assert [c.id for c in cases] == ["x_seg", "y"]
    assert not any("x_seg" in s for s in said)
    # a file named on the command line is always a case
    assert [c.id for c in collect_cases([folder / "y_label.nii.gz"])] == ["y_label"]


def test_a_mask_beside_the_channels_of_its_case_is_skipped(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    for c in ("t1", "t2"):
        _scan(folder / f"p_{c}.nii.gz")
    nii(folder / "p_seg.nii.gz", shape=(16, 16))  # the case's map
    nii(folder / "p_t1_gt.nii.gz", shape=(16, 16))  # a channel's map
    cases, said = warned(find_image_cases, folder, channels=["t1", "t2"])
    assert [(c.id, c.channel_names) for c in cases] == [("p", ["t1", "t2"])]
    assert len([s for s in said if "a label map of" in s]) == 2


def test_the_sub_folder_reason_is_true_of_commands_without_recursive(tmp_path: Path) -> None:
    _scan(tmp_path / "top.nii.gz")
    _scan(tmp_path / "sub" / "inner.nii.gz")
    _, said = warned(find_image_cases, tmp_path)
    line = next(s for s in said if "sub-folder" in s)
    assert "not read without --recursive" not in line
    assert "predict, label and pretrain read sub-folders with --recursive" in line


def test_masks_beside_scans_in_recursive_sub_folders_are_skipped(tmp_path: Path) -> None:
    for p in ("p1", "p2"):
        _scan(tmp_path / p / "flair.nii.gz")
        nii(tmp_path / p / "flair_seg.nii.gz", shape=(16, 16))
    cases, said = warned(find_image_cases, tmp_path, recursive=True)
    assert [c.id for c in cases] == ["p1_flair", "p2_flair"]
    assert len([s for s in said if "a label map of flair.nii.gz" in s]) == 2
    assert np.all([c.problem is None for c in cases])


def test_a_slice_export_with_mask_files_beside_its_slices(tmp_path: Path) -> None:
    """kaggle_3m (LGG's own export) and BUSI name masks ``<id>_mask``: beside their slices
    they pair as label maps when the folder is given as both, and are no scans alone."""
    from PIL import Image as PILImage

    from segfew.data import find_segmentation_cases

    folder = tmp_path / "TCGA_CS_4941"
    folder.mkdir()
    for k in (1, 2):
        PILImage.fromarray(np.asarray(ramp((16, 16)), np.uint8)).save(folder / f"s_{k}.tif")
        mask = np.zeros((16, 16), np.uint8)
        mask[4:9, 4:9] = 255
        PILImage.fromarray(mask).save(folder / f"s_{k}_mask.tif")
    pairs = find_segmentation_cases(folder, folder)
    assert [(c.id, c.labels[0].name) for c in pairs] == [("s_1", "s_1_mask.tif"),
                                                         ("s_2", "s_2_mask.tif")]
    cases, said = warned(collect_cases, [folder])
    assert [c.id for c in cases] == ["s_1", "s_2"]
    assert len([s for s in said if BESIDE.format("s_1.tif") in s]) == 1
