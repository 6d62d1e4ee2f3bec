"""``inspect_dataset`` and ``segfew inspect``: summaries, collected problems, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from segfew.cli import app
from segfew.data.inspect import inspect_dataset
from tests.conftest import nii, real_data

LPS = np.diag([-1.5, -1.5, 5.0, 1.0])


def dataset(root: Path, n: int = 4) -> tuple[Path, Path, Path]:
    """n two-channel cases with per-channel labels and a class table."""
    images, labels = root / "images", root / "labels"
    for i in range(n):
        for ch in ("ed", "es"):
            nii(images / f"p{i}_{ch}.nii.gz", value=7 + i, dtype=np.int16,  # one scan each
                affine=LPS)
            nii(labels / f"p{i}_{ch}_gt.nii.gz", value=1 + i % 2,
                affine=LPS)
    table = root / "t.csv"
    table.write_text("id,label\n" + "".join(f"p{i},{'AB'[i % 2]}\n" for i in range(n)))
    return images, labels, table


def test_clean_dataset_summary(tmp_path: Path) -> None:
    images, labels, table = dataset(tmp_path)
    seen: list[int] = []
    report = inspect_dataset(images, labels, table, ["ed", "es"],
                             progress=lambda done, total, cid: seen.append(done))
    assert report.problems == [] and not report.fatal
    assert (report.n_cases, report.n_channels, report.n_images, report.n_labelled) == (4, 2, 8, 8)
    assert report.kind == "segmentation and classification"
    assert report.channel_names == ["ed", "es"]
    assert report.class_counts == {"A": 2, "B": 2}
    assert report.label_counts == {0: 8 * 24, 1: 4 * 24, 2: 4 * 24}
    assert report.label_volumes == {0: 8, 1: 4, 2: 4}
    case = report.cases[0]
    assert case.shape == (4, 4, 3) and case.spacing == (1.5, 1.5, 5.0)
    assert case.orientation == "LPS" and case.intensity == (0.0, 7.0, 3.5)
    assert seen == [1, 2, 3, 4]



def test_one_scan_under_two_ids_is_noted(tmp_path: Path) -> None:
    images, labels, table = dataset(tmp_path)
    for ch in ("ed", "es"):
        (images / f"p3_{ch}.nii.gz").write_bytes((images / f"p1_{ch}.nii.gz").read_bytes())
    report = inspect_dataset(images, labels, table, ["ed", "es"])
    assert report.problems == ["identical images: p1, p3 hold the same scan (split and "
                               "experiment keep them on one side of every split; a copy in "
                               "training and in a test set would be leakage)"]
    assert not report.fatal

def test_images_a_subset_table_leaves_out_are_one_note(tmp_path: Path) -> None:
    images, labels, table = dataset(tmp_path, n=6)
    table.write_text("id,label\np0,A\np1,B\n")  # as train-classifier uses: the listed ones
    (images / "p1_es.nii.gz").write_bytes(b"corrupt" * 20)  # a real problem stays visible
    report = inspect_dataset(images, labels, table, ["ed", "es"])
    assert [p for p in report.problems if "not in the table" in p] == [
        f"{table}: 4 images are not in the table and are not used"]
    assert not any("no row in the table" in p for p in report.problems)
    assert report.n_cases == 2 and report.class_counts == {"A": 1, "B": 1}
    assert [p for p in report.fatal_problems if "p1_es.nii.gz: cannot read" in p]
    assert not any("not in the table" in p for p in report.fatal_problems)


def test_every_problem_is_collected(tmp_path: Path) -> None:
    images, labels, table = dataset(tmp_path, n=4)
    (images / "p0_es.nii.gz").write_bytes(b"corrupt" * 20)                  # unreadable
    nii(labels / "p1_ed_gt.nii.gz", shape=(4, 4, 2))                          # shape mismatch
    nii(labels / "p2_es_gt.nii.gz", value=9, affine=LPS)                      # bad label value
    nii(labels / "zz_ed_gt.nii.gz")                                           # label w/o image
    with table.open("a") as f:
        f.write("p9,A\n")                                                     # id w/o image
    report = inspect_dataset(images, labels, table, ["ed", "es"], label_values={0, 1, 2})
    text = "\n".join(report.problems)
    assert report.fatal
    assert "p0_es.nii.gz: cannot read image" in text
    assert "p1_ed_gt.nii.gz: shape (4, 4, 2) differs" in text
    assert "p2_es_gt.nii.gz: label values [9] outside the declared set [0, 1, 2]" in text
    assert "zz_ed_gt.nii.gz: label without image" in text
    assert "id 'p9' has no image" in text
    assert report.n_cases == 4  # every matched case was still read
    assert [c.ok for c in report.cases] == [False, False, False, True]


def test_non_fatal_notes_and_single_class(tmp_path: Path) -> None:
    images, labels, table = dataset(tmp_path, n=1)
    report = inspect_dataset(images, labels, table, ["ed", "es"])
    assert report.fatal
    assert any("only one class" in p for p in report.fatal_problems)
    assert any("has only 1 case" in p for p in report.problems)
    assert not any("has only 1 case" in p for p in report.fatal_problems)


def test_mixed_dimensions_is_fatal(tmp_path: Path) -> None:
    nii(tmp_path / "a.nii.gz", shape=(4, 4, 3))
    nii(tmp_path / "b.nii.gz", shape=(4, 4))
    report = inspect_dataset(tmp_path)
    assert report.kind == "images" and report.dims == [2, 3]
    assert report.fatal and "mix 2D and 3D" in report.fatal_problems[0]


def test_nnunet_and_class_folders(tmp_path: Path) -> None:
    root = tmp_path / "Dataset002"
    nii(root / "imagesTr" / "c1_0000.nii.gz")
    nii(root / "labelsTr" / "c1.nii.gz")
    (root / "dataset.json").write_text(json.dumps(
        {"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1, "tumour": 2}}))
    report = inspect_dataset(root)
    assert report.kind == "segmentation" and report.channel_names == ["CT"]
    assert report.label_names == {0: "background", 1: "liver", 2: "tumour"}
    assert any("label 2 (tumour) never appears" in p for p in report.problems)
    assert not report.fatal

    nii(tmp_path / "cls" / "x" / "a.nii.gz")
    nii(tmp_path / "cls" / "y" / "b.nii.gz")
    report = inspect_dataset(tmp_path / "cls")
    assert report.kind == "classification" and report.class_counts == {"x": 1, "y": 1}


def test_missing_table_column_is_reported_not_raised(tmp_path: Path) -> None:
    images, labels, table = dataset(tmp_path)
    table.write_text("foo,bar\np0,A\n")
    report = inspect_dataset(images, labels, table, ["ed", "es"])
    assert report.fatal and "columns: foo, bar" in report.problems[0]


def test_cli_clean_and_fatal(tmp_path: Path) -> None:
    images, labels, table = dataset(tmp_path)
    runner = CliRunner()
    args = ["inspect", "--images", str(images), "--labels", str(labels), "--table", str(table),
            "--channels", "ed,es", "--no-progress"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "no problems found" in result.output and "labelled volumes" in result.output
    assert "2 (ed, es)" in result.output
    single = runner.invoke(app, ["inspect", "--images", str(labels), "--no-progress"])
    line = next(ln for ln in single.output.splitlines() if "channels" in ln)
    assert "(" not in line  # one channel with no name: no "(0)"
    nii(labels / "zz_ed_gt.nii.gz")
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert "label without image" in result.output
    result = runner.invoke(app, [*args, "--label-values", "0,x"])
    assert result.exit_code == 2 and "--label-values must be integers" in result.output


def test_cli_help_shows_example() -> None:
    result = CliRunner().invoke(app, ["inspect", "--help"])
    assert result.exit_code == 0 and "segfew inspect --images data/images" in result.output


@pytest.mark.realdata
def test_acdc_inspect() -> None:
    acdc = real_data("acdc")
    report = inspect_dataset(acdc / "images", acdc / "labels", acdc / "labels.csv",
                             ["frame01", "frame02"])
    # the public copy holds one scan under two patients (074 and 076), and its affines are
    # the identity (no spacing): notes, not refusals
    assert [p for p in report.problems if not p.startswith("identical images:")] == [
        "60 of the 60 cases read have no real voxel size (identity affine): sizes are in "
        "voxels, not mm — measurements say vox/px instead of ml/mm"]
    assert not report.fatal
    assert (report.n_cases, report.n_channels, report.n_labelled) == (60, 2, 120)
    assert report.class_counts == {"DCM": 12, "HCM": 12, "MINF": 12, "NOR": 12, "RV": 12}
    assert set(report.label_counts) == {0, 1, 2, 3}


def test_cli_spec_file_gives_the_same_report_as_flags(tmp_path: Path) -> None:
    images, labels, table = dataset(tmp_path)
    runner = CliRunner()
    flags = runner.invoke(app, ["inspect", "--images", str(images), "--labels", str(labels),
                                "--table", str(table), "--channels", "ed,es",
                                "--label-values", "0,1,2", "--no-progress"])
    spec = tmp_path / "inspect.yaml"
    spec.write_text(f"images: {images}\nlabels: {labels}\ntable: {table}\n"
                    "channels: [ed, es]\nlabel_values: [0, 1, 2]\n")
    from_file = runner.invoke(app, ["inspect", "--spec", str(spec), "--no-progress"])
    assert flags.exit_code == from_file.exit_code == 0, from_file.output
    assert from_file.output == flags.output
    # a flag overrides the file: label value 2 is no longer allowed
    override = runner.invoke(app, ["inspect", "--spec", str(spec), "--label-values", "0,1",
                                   "--no-progress"])
    assert override.exit_code == 1 and override.output != flags.output


def test_nan_voxels_are_a_note_naming_the_count_not_fatal(tmp_path: Path) -> None:
    images, labels, table = dataset(tmp_path, n=2)
    img = nib.load(str(images / "p0_ed.nii.gz"))
    arr = np.asarray(img.dataobj).astype(np.float32)
    arr[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(arr, img.affine), str(images / "p0_ed.nii.gz"))
    report = inspect_dataset(images, labels, table, ["ed", "es"])
    assert not report.fatal
    assert any("p0_ed.nii.gz: 1 NaN/infinite voxel(s) of 48 replaced by the image's finite "
               "minimum (0)" in p for p in report.problems), report.problems


def test_the_no_spacing_note_counts_the_cases_read(tmp_path: Path) -> None:
    """A refused case's voxel size is unknown: "1 of the 1 cases read", not "1 of 3"."""
    from PIL import Image as PILImage

    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        PILImage.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(
            tmp_path / f"{name}.png")
    (tmp_path / "labels").mkdir()
    PILImage.fromarray(np.eye(16, dtype=np.uint8)).save(tmp_path / "labels" / "a.png")
    for name in ("b", "c"):  # refused: another shape
        PILImage.fromarray(np.eye(8, dtype=np.uint8)).save(tmp_path / "labels" / f"{name}.png")
    report = inspect_dataset(tmp_path, tmp_path / "labels")
    assert sum(not c.ok for c in report.cases) == 2
    assert any(p.startswith("1 of the 1 cases read have no real voxel size")
               for p in report.problems), report.problems


def test_a_note_of_many_files_is_listed_for_the_first_few_and_counted(tmp_path: Path) -> None:
    """A colour export of many slices: three notes and one count, not a note per slice."""
    from PIL import Image as PILImage

    rng = np.random.default_rng(0)
    for i in range(9):
        PILImage.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(
            tmp_path / f"s{i}.png")
    notes = [p for p in inspect_dataset(tmp_path).problems if "RGB" in p]
    assert len(notes) == 4 and notes[0].startswith(str(tmp_path / "s0.png"))
    assert notes[-1].endswith("also 6 more files (s3.png … s8.png)")


def test_notes_say_which_commands_refuse_what_they_note(tmp_path: Path) -> None:
    """A blank slice beside an empty map trains a network but stops framework measures: the
    note says so, instead of a bare "all background" under "no fatal problems"."""
    images, labels, table = dataset(tmp_path)
    for name in ("p0_ed_gt", "p1_ed_gt", "p1_es_gt"):
        nii(labels / f"{name}.nii.gz", value=0, affine=LPS)
    for name in ("p1_ed", "p1_es"):  # a blank slice beside blank maps
        nii(images / f"{name}.nii.gz", value=0, dtype=np.int16, affine=LPS)
    report = inspect_dataset(images, labels, table, ["ed", "es"])
    assert any("p0_ed_gt.nii.gz: label map is all background: pretrain learns it as "
               "background; framework measures refuses it" in p for p in report.problems)
    assert any("p1_ed.nii.gz: image is constant (0): pretrain keeps it beside an "
               "all-background label map; a classifier refuses it" in p
               for p in report.problems)


def test_the_verdict_counts_what_a_classifier_would_refuse(tmp_path: Path) -> None:
    """Constant images and all-background maps are notes (pretrain takes them), so the
    verdict is "no fatal problems" — but it counts them and says a classifier refuses them,
    since their notes may be among those not shown."""
    images, labels, table = dataset(tmp_path)
    for name in ("p0_ed_gt", "p1_ed_gt", "p1_es_gt"):
        nii(labels / f"{name}.nii.gz", value=0, affine=LPS)
    nii(images / "p1_ed.nii.gz", value=0, dtype=np.int16, affine=LPS)
    result = CliRunner().invoke(app, ["inspect", "--images", str(images), "--labels",
                                      str(labels), "--table", str(table), "--channels",
                                      "ed,es", "--no-progress"])
    said = " ".join(result.output.split())
    assert result.exit_code == 0, said
    assert ("no fatal problems for pretrain; but 1 constant image (a classifier refuses "
            "it) and 3 all-background label maps (framework measures refuses them): drop "
            "or mend them before training a classifier") in said, said


def test_an_image_too_large_for_the_memory_free_is_one_problem_and_the_others_are_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 0.9-gigapixel picture took the whole report with it (a MemoryError after minutes);
    its header now says it cannot be checked in the memory free, before its pixels are read."""
    import segfew.io.image
    from segfew.data.inspect import INSPECT_BYTES_PER_VOXEL

    rng = np.random.default_rng(0)
    for name, side in (("small", 32), ("huge", 512)):
        nib.save(nib.Nifti1Image(rng.normal(100, 10, (side, side, 4)).astype(np.float32),
                                 np.eye(4)), tmp_path / f"{name}.nii.gz")
    monkeypatch.setattr(segfew.io.image, "free_memory",
                        lambda: 64 * 64 * 4 * INSPECT_BYTES_PER_VOXEL)
    report = inspect_dataset(tmp_path)
    assert [c.id for c in report.cases if c.ok] == ["small"]
    (problem,) = report.fatal_problems
    assert problem.startswith(str(tmp_path / "huge.nii.gz") + ": reading and checking this "
                              "image (512×512×4 voxels) needs about 32.0 MiB and"), problem
    assert problem.endswith("is free: crop or resample it first")


def test_the_summary_counts_fatal_problems_apart_from_notes(tmp_path: Path) -> None:
    """The summary said "problems 1" of a voxel-size note beside "no fatal problems"."""
    images, labels, table = dataset(tmp_path, n=1)  # one class: fatal; one case: a note
    out = " ".join(CliRunner().invoke(app, ["inspect", "--images", str(images), "--labels",
                                            str(labels), "--table", str(table), "--channels",
                                            "ed,es", "--no-progress"]).output.split())
    assert "│ problems │ 1 fatal, 1 note │" in out, out
    images, labels, table = dataset(tmp_path / "clean")
    out = " ".join(CliRunner().invoke(app, ["inspect", "--images", str(images), "--labels",
                                            str(labels), "--table", str(table), "--channels",
                                            "ed,es", "--no-progress"]).output.split())
    assert "│ problems │ 0 fatal │" in out, out
