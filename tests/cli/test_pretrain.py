"""The no-expert workflow through the CLI: label → pretrain on k-means labels, with the inputs
train-classifier takes, plain progress lines and the thread count recorded."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import invoke

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TINY = ["--dim", "2", "--n-s", "2", "--size", "32", "--epochs", "2", "--batch-size", "4",
        "--no-cache", "--threads", "1"]


@pytest.fixture(scope="module")
def phantoms(make_phantom_set: Callable[[int, int], Path]) -> Path:
    """Three phantoms of each of two classes: the label folders stay small."""
    return make_phantom_set(3, 2)


@pytest.fixture(scope="module")
def class_folders(phantoms: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The phantoms as DIR/<class>/<image>, as a user's JPEG folders are."""
    root = tmp_path_factory.mktemp("by-class")
    with (phantoms / "labels.csv").open() as f:
        for row in csv.DictReader(f):
            (root / row["label"]).mkdir(exist_ok=True)
            name = f"{row['id']}.nii.gz"
            shutil.copy(phantoms / "images" / name, root / row["label"] / name)
    return root


@pytest.fixture(scope="module")
def kmeans(class_folders: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("km") / "kmeans"
    invoke("label", "--images", str(class_folders), "--out", str(out), "--k", "3",
           "--threads", "1")
    return out


def test_label_reads_class_folders_and_writes_a_preview(kmeans: Path) -> None:
    assert len(list(kmeans.glob("*_seg.nii.gz"))) == 6
    assert (kmeans / "preview" / "kmeans_preview.png").read_bytes()[:4] == b"\x89PNG"
    info = json.loads((kmeans / "run.json").read_text())
    assert info["threads"] == 1 and info["threads_chosen_by"] == "--threads"


@pytest.fixture(scope="module")
def kmeans_seg(kmeans: Path, class_folders: Path, tmp_path_factory: pytest.TempPathFactory
               ) -> tuple[Path, str]:
    """examples/acdc/pretrain.toml (4 expert label names) on k-means labels, and its log."""
    out = tmp_path_factory.mktemp("seg") / "seg.pt"
    # the recipe declares ACDC's channels (frame01, frame02); these images have one, and
    # its 80 × 80 patches would not fit the tiny grid
    recipe = (EXAMPLES / "acdc" / "pretrain.toml").read_text(encoding="utf-8")
    assert "patch_size = [80, 80]" in recipe
    spec = out.parent / "pretrain.toml"
    spec.write_text(recipe.replace('channels = ["frame01", "frame02"]', "").replace(
        "patch_size = [80, 80]", "patch_size = [16, 16]"), encoding="utf-8")
    text = invoke("pretrain", "--spec", str(spec),
                  "--images", str(class_folders), "--labels", str(kmeans), "--out", str(out),
                  *TINY)
    return out, text


def test_pretrain_on_kmeans_labels_with_the_example_spec(kmeans_seg: tuple[Path, str]) -> None:
    # k = 3 gives 4 labels of their own; any k works: the names come from the k-means folder.
    from segfew.modelfile import read_model_file

    out, text = kmeans_seg
    meta, _ = read_model_file(out)
    assert meta.classes == ["background", "k1", "k2", "k3"]
    lines = text.splitlines()
    assert any(line.startswith("epochs 1/2  loss ") for line in lines)  # piped: plain lines
    assert any(line.startswith("epochs 2/2  loss ") for line in lines)
    info = json.loads((out.parent / "seg-run" / "run.json").read_text())
    assert info["threads"] == 1 and info["spec"]["train"]["threads"] == 1
    assert info["runtime"]["threads_chosen_by"] == "--threads"
    assert (out.parent / "seg-run" / "training_curve.png").read_bytes()[:4] == b"\x89PNG"


def test_2d_probability_maps_are_2d_images(kmeans_seg: tuple[Path, str], phantoms: Path,
                                           tmp_path: Path) -> None:
    import nibabel as nib

    out = tmp_path / "pred"
    invoke("predict", "--model", str(kmeans_seg[0]), "--input", str(phantoms / "images"),
           "--out", str(out), "--probabilities", "--threads", "1")
    source = nib.load(str(phantoms / "images" / "case000.nii.gz"))
    seg = nib.load(str(out / "case000_seg.nii.gz"))
    prob = nib.load(str(out / "case000_prob.nii.gz"))
    assert seg.shape == source.shape == (32, 32)
    assert prob.shape == (32, 32, 1, 4)  # one slice, one map per label
    assert abs(prob.get_fdata().sum(-1) - 1).max() < 1e-4
    assert (prob.affine == source.affine).all()


def test_pretrain_with_a_table_and_no_validation_split_announced(
        phantoms: Path, kmeans: Path, tmp_path: Path) -> None:
    table = tmp_path / "some.csv"
    rows = (phantoms / "labels.csv").read_text().splitlines()
    table.write_text("\n".join(rows[:5]) + "\n")  # header and 4 cases
    out = tmp_path / "seg.pt"
    text = invoke("pretrain", "--table", str(table), "--images", str(phantoms / "images"),
                  "--labels", str(kmeans), "--out", str(out), *TINY)
    assert "warning: 4 case(s) are too few for a validation split" in " ".join(text.split())
    info = json.loads((tmp_path / "seg-run" / "run.json").read_text())
    names = {Path(d["path"]).name for d in info["data"]}
    assert len(names) == 9 and "some.csv" in names  # the table, 4 images, 4 label maps


def test_the_thread_count_is_said_once_work_runs_and_not_before_a_refusal(
        class_folders: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The log names the threads a run uses and why; a run refused before it starts prints
    its one error line only."""
    from typer.testing import CliRunner

    import segfew.runtime as runtime
    from segfew.cli import app

    monkeypatch.setattr(runtime, "_CHOSEN_BY", "nothing yet")  # as in a fresh process
    out = tmp_path / "km"
    ran = CliRunner().invoke(app, ["label", "--images", str(class_folders), "--out", str(out),
                                   "--k", "2", "--threads", "1", "--no-progress"])
    assert ran.exit_code == 0, ran.output
    assert "CPU threads: 1 (--threads)" in ran.output.splitlines()
    monkeypatch.setattr(runtime, "_CHOSEN_BY", "nothing yet")
    inside = class_folders / "km"  # an output folder inside the input folder: refused
    refused = CliRunner().invoke(app, ["label", "--images", str(class_folders), "--out",
                                       str(inside), "--k", "2", "--threads", "1"])
    assert refused.exit_code == 2 and refused.output.count("\n") == 1, refused.output
    assert "CPU threads" not in refused.output and not inside.exists()
