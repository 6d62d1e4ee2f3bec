"""A case folder's one label map named for what it is, not after its image (KiTS:
``case_00000/imaging.nii.gz`` + ``segmentation.nii.gz``; ``image.png`` + ``mask.png``): never a
scan of its own, and the map of the image beside it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segfew.data import attach_labels, find_image_cases
from segfew.errors import DataError
from tests.conftest import ramp, save_nifti, warned


def _kits(root: Path, n: int = 3, map_name: str = "segmentation") -> Path:
    for i in range(n):
        save_nifti(root / f"case_{i:05d}" / "imaging.nii.gz", ramp((16, 16, 4), base=i))
        save_nifti(root / f"case_{i:05d}" / f"{map_name}.nii.gz", np.eye(16, dtype=np.uint8))
    return root


@pytest.mark.parametrize("map_name", ["segmentation", "Mask", "seg"])
def test_a_case_folders_map_is_skipped_as_a_scan_and_pairs_with_its_image(
        tmp_path: Path, map_name: str) -> None:
    root = _kits(tmp_path / "kits", map_name=map_name)
    cases, said = warned(find_image_cases, root, recursive=True)
    assert [c.id for c in cases] == [f"case_{i:05d}_imaging" for i in range(3)]
    assert sum(f"{map_name}.nii.gz" in s and "label map of imaging.nii.gz" in s
               for s in said) == 3
    paired = attach_labels(cases, root, recursive=True)
    assert [c.labels for c in paired] == [
        (root / f"case_{i:05d}" / f"{map_name}.nii.gz",) for i in range(3)]


def test_a_mirrored_tree_of_case_folders_pairs_by_folder(tmp_path: Path) -> None:
    images = tmp_path / "images"
    for i in range(2):
        save_nifti(images / f"case_{i}" / "imaging.nii.gz", ramp((16, 16), base=i))
        save_nifti(tmp_path / "labels" / f"case_{i}" / "segmentation.nii.gz",
                   np.eye(16, dtype=np.uint8))
    paired = attach_labels(find_image_cases(images, recursive=True), tmp_path / "labels",
                           recursive=True)
    assert [c.labels[0].parent.name for c in paired] == ["case_0", "case_1"]


def test_a_mask_at_the_top_of_a_labels_folder_is_no_images_map(tmp_path: Path) -> None:
    """Only a case folder's own map: a flat folder's ``mask.nii.gz`` would be every image's."""
    for name in ("a", "b"):
        save_nifti(tmp_path / "images" / f"{name}.nii.gz", ramp((16, 16)))
    save_nifti(tmp_path / "labels" / "a_gt.nii.gz", np.eye(16, dtype=np.uint8))
    save_nifti(tmp_path / "labels" / "mask.nii.gz", np.eye(16, dtype=np.uint8))
    cases = find_image_cases(tmp_path / "images")
    with pytest.raises(DataError, match=r"b\.nii\.gz: image without label"):
        attach_labels(cases, tmp_path / "labels")


def test_a_map_named_file_alone_in_its_folder_is_skipped_not_classified(
        tmp_path: Path) -> None:
    """A KiTS test case folder that holds only its ``segmentation.nii.gz``: no scan."""
    save_nifti(tmp_path / "scans" / "p1" / "segmentation.nii.gz", np.eye(16, dtype=np.uint8))
    save_nifti(tmp_path / "scans" / "p2" / "image.nii.gz", ramp((16, 16)))
    save_nifti(tmp_path / "scans" / "p3" / "p3_seg.nii.gz", ramp((16, 16)))  # a name of its own
    cases, said = warned(find_image_cases, tmp_path / "scans", recursive=True)
    assert [c.id for c in cases] == ["image", "p3_seg"]
    assert any("segmentation.nii.gz: skipped: a label map by its name" in s for s in said)


def test_two_folder_maps_for_one_image_are_refused_by_name(tmp_path: Path) -> None:
    root = _kits(tmp_path / "kits", n=1)
    save_nifti(root / "case_00000" / "mask.nii.gz", np.eye(16, dtype=np.uint8))
    cases, _ = warned(find_image_cases, root, recursive=True)
    with pytest.raises(DataError, match="several label files"):
        attach_labels(cases, root, recursive=True)


def test_maps_a_segfew_run_wrote_are_no_scans_but_stay_label_maps(tmp_path: Path) -> None:
    """``predict --recursive`` over a study holding an earlier segmentation predict's output
    folder: the maps its run.json lists are skipped, not classified; as --labels they pair."""
    from segfew.files import outputs_record, write_json

    save_nifti(tmp_path / "study" / "scans" / "a.nii.gz", ramp((16, 16)))
    segs = tmp_path / "study" / "segs"
    save_nifti(segs / "a_seg.nii.gz", np.eye(16, dtype=np.uint8))
    save_nifti(segs / "b_seg.nii.gz", ramp((16, 16)))  # not in the record: a scan
    write_json(segs / "run.json", outputs_record(segs / "run.json", ["a_seg.nii.gz"]))
    cases, said = warned(find_image_cases, tmp_path / "study", recursive=True)
    assert [c.id for c in cases] == ["a", "b_seg"]
    assert any("a_seg.nii.gz: skipped: a map a segfew run wrote" in s for s in said)
    paired = attach_labels(cases[:1], segs)
    assert paired[0].labels == (segs / "a_seg.nii.gz",)


def test_many_maps_a_segfew_run_wrote_are_not_said_to_lie_beside_images(tmp_path: Path) -> None:
    """Only maps named after an image beside them are summed up as such; segfew's own maps
    in a folder of their own are said for what they are (the CLI folds repeated lines)."""
    from segfew.files import outputs_record, write_json

    save_nifti(tmp_path / "study" / "scans" / "a.nii.gz", ramp((16, 16)))
    segs = tmp_path / "study" / "segs"
    names = [f"c{i}_seg.nii.gz" for i in range(7)]
    for name in names:
        save_nifti(segs / name, np.eye(16, dtype=np.uint8))
    write_json(segs / "run.json", outputs_record(segs / "run.json", names))
    cases, said = warned(find_image_cases, tmp_path / "study", recursive=True)
    assert [c.id for c in cases] == ["a"]
    assert not [s for s in said if "lying beside their images" in s]
    assert sum("a map a segfew run wrote" in s for s in said) == 7


def test_a_table_names_case_folders_by_their_folder(tmp_path: Path) -> None:
    """A table of ``case_00000`` ids finds each folder's one image (KiTS, a hospital's export
    of one folder per patient); a folder holding two images is no case of its own."""
    from segfew.data import find_cases

    root = _kits(tmp_path / "kits")
    save_nifti(root / "case_00002" / "other.nii.gz", ramp((16, 16, 4), base=9))
    table = tmp_path / "t.csv"
    table.write_text("id,label\ncase_00000,A\ncase_00001,B\n")
    cases, _ = warned(find_cases, root, table)
    assert [(c.id, c.images) for c in cases] == [
        (f"case_{i:05d}", (root / f"case_{i:05d}" / "imaging.nii.gz",)) for i in range(2)]
    table.write_text("id,label\ncase_00002,A\n")
    with pytest.raises(DataError, match="id 'case_00002' has no image"):
        warned(find_cases, root, table)
