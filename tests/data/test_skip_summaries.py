"""What a folder holds beyond its cases is said in one line, not one per file: the label
maps of a data set's download (ACDC's _gt beside every image), the channels --channels does
not name (a BraTS folder read for flair only); two inputs holding files of one name get error
rows that say how to tell them apart."""

from __future__ import annotations

from pathlib import Path

from segfew.data import collect_cases, find_image_cases
from tests.conftest import nii, ramp, save_nifti, warned


def test_many_label_maps_beside_their_images_are_one_line(tmp_path: Path) -> None:
    flat = tmp_path / "acdc"
    for n in range(8):
        save_nifti(flat / f"patient{n:03d}_frame01.nii.gz", ramp((16, 16)))
        nii(flat / f"patient{n:03d}_frame01_gt.nii.gz", shape=(16, 16))
    cases, said = warned(find_image_cases, flat)
    assert len(cases) == 8
    beside = [s for s in said if "label map" in s]
    assert len(beside) == 1, said
    assert "8 label maps" in beside[0] and "patient000_frame01_gt.nii.gz" in beside[0]
    assert str(flat) in beside[0] and "--labels" in beside[0]


def _brats(root: Path, n: int = 3) -> Path:
    for i in range(n):
        cid = f"BraTS_{i:05d}"
        for ch in ("flair", "t1", "t2"):
            save_nifti(root / cid / f"{cid}_{ch}.nii.gz", ramp((16, 16)))
    return root


def test_channels_naming_one_of_a_cases_files_skips_the_others_in_one_line(
        tmp_path: Path) -> None:
    root = _brats(tmp_path / "brats")
    cases, said = warned(collect_cases, [root], recursive=True, channels=["flair"])
    assert [(c.id, c.problem) for c in cases] == [
        (f"BraTS_{i:05d}", None) for i in range(3)]
    skipped = [s for s in said if "--channels" in s]
    assert len(skipped) == 1 and "6 file(s)" in skipped[0] and "t1, t2" in skipped[0]


def test_a_file_of_no_case_still_matches_no_channel(tmp_path: Path) -> None:
    root = _brats(tmp_path / "brats", n=1)
    save_nifti(root / "BraTS_00000" / "notes_scan.nii.gz", ramp((16, 16)))
    cases = collect_cases([root], recursive=True, channels=["flair"])
    bad = [c for c in cases if c.problem]
    assert len(bad) == 1 and "matches no channel" in str(bad[0].problem)
    assert "notes_scan.nii.gz" in str(bad[0].problem)


def test_two_inputs_holding_one_file_name_are_told_how_to_tell_them_apart(
        tmp_path: Path) -> None:
    a = save_nifti(tmp_path / "sites" / "siteA" / "p1" / "flair.nii.gz", ramp((16, 16)))
    b = save_nifti(tmp_path / "sites" / "siteB" / "p1" / "flair.nii.gz", ramp((16, 16)))
    cases = collect_cases([a.parent, b.parent])
    assert len(cases) == 2 and all(c.problem for c in cases)
    for case in cases:
        problem = str(case.problem)
        assert "duplicate case id 'flair'" in problem
        assert f"give their common folder {tmp_path / 'sites'}" in problem
        assert "--recursive, which reads every image below it" in problem  # all of them
        assert "siteA_p1_flair" in problem and ": rename one, or give" in problem


def test_many_files_skipped_for_one_reason_are_one_line(tmp_path: Path) -> None:
    root = tmp_path / "acdc_own"
    for n in range(8):
        save_nifti(root / f"patient{n:03d}" / f"patient{n:03d}_frame01.nii.gz", ramp((16, 16)))
        (root / f"patient{n:03d}" / "Info.cfg").write_text("ED: 1\nES: 2\n")
    cases, said = warned(find_image_cases, root, recursive=True)
    assert len(cases) == 8
    assert len(said) == 1, said
    assert said[0].startswith(f"{root}: skipped: 8 files or folders (Info.cfg)")
    assert "not an image" in said[0]


def test_a_recursive_listing_reads_no_segfew_outputs_as_scans(tmp_path: Path) -> None:
    """split found a table's scans below its folder, and read an experiment report's
    evidence sheets (``case000.png``) as scans: a false near-copy warning followed."""
    import json

    from segfew.data.scan import list_folder

    def record(folder: Path, name: str, info: dict) -> None:  # type: ignore[type-arg]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(json.dumps(info))

    save_nifti(tmp_path / "scans" / "case000.nii.gz", ramp((16, 16)))
    versions = {"versions": {"segfew": "0.2.0"}}
    record(tmp_path / "runs" / "curve", "run.json", {"command": "segfew experiment --out x",
                                                      **versions})
    save_nifti(tmp_path / "runs" / "curve" / "report" / "case000.nii.gz", ramp((16, 16)))
    record(tmp_path / "explain", "index.run.json", {"task": "explain"})
    save_nifti(tmp_path / "explain" / "sheets" / "case001.nii.gz", ramp((16, 16)))
    record(tmp_path / "data", "run.json", {"command": "segfew synth --out data", **versions})
    save_nifti(tmp_path / "data" / "images" / "case002.nii.gz", ramp((16, 16)))
    listing = list_folder(tmp_path, recursive=True)
    assert sorted(p.name for p in listing.images) == ["case000.nii.gz", "case002.nii.gz"]
    said = " ".join(map(str, listing.skipped))
    assert "curve: skipped: the outputs of segfew experiment" in said
    assert "explain: skipped: the outputs of segfew explain" in said
