"""Files of one name: under --recursive told apart by their path; one file named twice is
one case; different files of one id from different inputs are error rows, never one output
written over another."""

from __future__ import annotations

from pathlib import Path

import pytest

from segfew.data import collect_cases, find_image_cases
from segfew.errors import DataError
from tests.conftest import ramp, read_csv, save_nifti


def _scan(path: Path, base: float = 0.0) -> Path:
    return save_nifti(path, ramp((16, 16), base=base))


def _patients(root: Path, n: int = 3) -> Path:
    for i in range(n):
        _scan(root / f"patient{i}" / "flair.nii.gz", base=i)
    _scan(root / "patient0" / "t2.nii.gz")  # a name of its own keeps it as its id
    return root


def test_recursive_over_patient_folders_of_one_file_name_gives_every_scan_a_case(
        tmp_path: Path) -> None:
    root = _patients(tmp_path / "in")
    cases = collect_cases([root], recursive=True)
    assert [(c.id, c.problem) for c in cases] == [
        ("patient0_flair", None), ("patient1_flair", None), ("patient2_flair", None),
        ("t2", None)]
    assert cases[1].images == (root / "patient1" / "flair.nii.gz",)
    assert [c.id for c in find_image_cases(root, recursive=True)] == [
        "patient0_flair", "patient1_flair", "patient2_flair", "t2"]


def test_the_path_ids_of_deeper_folders_are_file_names(tmp_path: Path) -> None:
    root = tmp_path / "in"
    _scan(root / "site.a" / "p1" / "flair.nii.gz")
    _scan(root / "site.b" / "p1" / "flair.nii")
    ids = [c.id for c in find_image_cases(root, recursive=True)]
    assert ids == ["site.a_p1_flair", "site.b_p1_flair"]
    assert all("/" not in i and "\\" not in i for i in ids)


def test_two_formats_of_one_scan_in_one_folder_still_clash(tmp_path: Path) -> None:
    root = tmp_path / "in"
    _scan(root / "p1" / "a.nii.gz")
    _scan(root / "p1" / "a.nii")
    _scan(root / "p2" / "b.nii.gz")
    cases = collect_cases([root], recursive=True)
    bad = [c for c in cases if c.problem is not None]
    assert len(bad) == 2 and all("duplicate case id 'p1_a'" in str(c.problem) for c in bad)
    assert [c.id for c in cases if c.problem is None] == ["b"]


def test_recursive_channels_of_one_name_in_patient_folders(tmp_path: Path) -> None:
    root = tmp_path / "in"
    for p in ("p1", "p2"):
        for c in ("t1", "t2"):
            _scan(root / p / f"x_{c}.nii.gz")
    cases = find_image_cases(root, channels=["t1", "t2"], recursive=True)
    assert [(c.id, c.channel_names) for c in cases] == [
        ("p1_x", ["t1", "t2"]), ("p2_x", ["t1", "t2"])]


def test_the_same_file_named_twice_is_one_case(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    a = _scan(folder / "a.nii.gz")
    _scan(folder / "b.nii.gz")
    assert [c.id for c in collect_cases([a, a])] == ["a"]
    assert [c.id for c in collect_cases([folder, a])] == ["a", "b"]
    assert [c.id for c in collect_cases([a, folder])] == ["a", "b"]
    assert [c.id for c in find_image_cases([a, a])] == ["a"]
    assert [c.id for c in find_image_cases([folder, a])] == ["a", "b"]


def test_different_files_of_one_id_from_two_inputs_are_error_rows(tmp_path: Path) -> None:
    one = _scan(tmp_path / "d1" / "a.nii.gz")
    two = _scan(tmp_path / "d2" / "a.nii.gz", base=3)
    _scan(tmp_path / "d2" / "b.nii.gz")
    cases = collect_cases([tmp_path / "d1", tmp_path / "d2"])
    by_path = {c.images[0]: c for c in cases}
    assert by_path[one].problem is not None and str(two) in by_path[one].problem
    assert by_path[two].problem is not None and str(one) in by_path[two].problem
    assert by_path[tmp_path / "d2" / "b.nii.gz"].problem is None
    with pytest.raises(DataError, match="duplicate case id 'a'"):
        find_image_cases([tmp_path / "d1", tmp_path / "d2"])


def test_predict_writes_one_label_map_per_patient_and_counts_a_file_once(
        tmp_path: Path) -> None:
    from segfew.inference.paths import predict_paths
    from tests.conftest import make_classifier, make_segmenter

    root = _patients(tmp_path / "in", n=2)
    seg = make_segmenter(tmp_path / "seg.pt")
    out, failed, n = predict_paths(seg, [root], tmp_path / "maps", recursive=True,
                                   device="cpu")
    assert (failed, n) == (0, 3)
    assert sorted(p.name for p in out.glob("*_seg.nii.gz")) == [
        "patient0_flair_seg.nii.gz", "patient1_flair_seg.nii.gz", "t2_seg.nii.gz"]
    clf = make_classifier(tmp_path / "clf.pt")
    scan = root / "patient1" / "flair.nii.gz"
    out, failed, n = predict_paths(clf, [scan, scan], tmp_path / "p.csv", device="cpu")
    assert (failed, n) == (0, 1) and len(read_csv(out)) == 1
