"""No command writes over, or into, what it reads: every input (images, labels, table,
--features, --model, --centres, --vgg-weights) and the run folders of training commands.
Training run folders: a refused run leaves none, a resumed one must hold the same settings,
Ctrl-C says where to resume."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from segfew.cli import app

runner = CliRunner()
TINY = ["--n-s", "2", "--size", "32", "--epochs", "1", "--batch-size", "4", "--no-cache",
        "--threads", "1", "--no-progress"]
CLF = ["--size", "32", "--epochs", "1", "--batch-size", "4", "--no-cache", "--threads", "1",
       "--no-progress"]


def ok(*args: str) -> None:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Phantoms, k-means centres, a segmentation model and a classifier on them."""
    root = tmp_path_factory.mktemp("outs")
    ok("synth", "--out", str(root / "d"), "--dim", "2", "--n-per-class", "2", "--size", "32",
       "--classes", "2", "--seed", "0")
    ok("label", "--images", str(root / "d/images"), "--out", str(root / "km"), "--k", "2",
       "--threads", "1", "--no-progress")
    d = root / "d"
    ok("pretrain", "--images", str(d / "images"), "--labels", str(d / "labels"), "--dim", "2",
       "--out", str(root / "seg.pt"), *TINY)
    ok("train-classifier", "--table", str(d / "labels.csv"), "--images", str(d / "images"),
       "--framework", "manual", "--features", str(root / "seg.pt"), "--out",
       str(root / "clf.pt"), *CLF)
    shutil.copytree(d / "labels", root / "bad-run")  # labels in what would be a run folder
    (root / "curve.toml").write_text(
        'sizes = [1]\nrepetitions = 1\nframeworks = ["manual"]\n[preprocess]\nsize = [32, 32]\n'
        '[train]\nepochs = 1\n', encoding="utf-8")
    return root


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else b""
            for p in sorted(root.rglob("*"))}


# {root} is the work folder; each case gives an --out that is, or lies inside, an input.
CASES = {
    "label: out inside the images": (
        "label --images {root}/d/images --out {root}/d/images/km --threads 1", "inside"),
    "label: out holds the centres": (
        "label --images {root}/d/images --centres {root}/km/centres.json --out {root}/km",
        "holds the input"),
    "pretrain: out is a label map": (
        "pretrain --images {root}/d/images --labels {root}/d/labels --dim 2 "
        "--out {root}/d/labels/case000_seg.nii.gz", "inside the input folder"),
    "pretrain: out is the table": (
        "pretrain --images {root}/d/images --labels {root}/d/labels --table {root}/d/labels.csv "
        "--dim 2 --out {root}/d/labels.csv", "one of the inputs"),
    "pretrain: run folder is the labels": (
        "pretrain --images {root}/d/images --labels {root}/bad-run --dim 2 --out {root}/bad.pt",
        "run folder"),
    "train-classifier: out is the features": (
        "train-classifier --table {root}/d/labels.csv --images {root}/d/images --framework manual "
        "--features {root}/seg.pt --out {root}/seg.pt", "one of the inputs"),
    "train-classifier: out is the vgg weights": (
        "train-classifier --table {root}/d/labels.csv --images {root}/d/images --framework vgg "
        "--vgg-weights {root}/seg.pt --out {root}/seg.pt", "one of the inputs"),
    "train-classifier: out inside the images": (
        "train-classifier --table {root}/d/labels.csv --images {root}/d/images --framework manual "
        "--features {root}/seg.pt --out {root}/d/images/clf.pt", "inside the input folder"),
    "predict: csv inside the input folder": (
        "predict --model {root}/clf.pt --input {root}/d/images --out {root}/d/images/p.csv",
        "inside the input folder"),
    "predict: maps inside the input folder": (
        "predict --model {root}/seg.pt --input {root}/d/images --out {root}/d/images/maps",
        "inside the input folder"),
    "evaluate: out holds the model": (
        "evaluate --model {root}/clf.pt --images {root}/d/images --table {root}/d/labels.csv "
        "--out {root}", "holds the input"),
    "evaluate: out inside the labels": (
        "evaluate --model {root}/seg.pt --images {root}/d/images --labels {root}/d/labels "
        "--out {root}/d/labels/ev", "inside the input folder"),
    "experiment: out inside the images": (
        "experiment --spec {root}/curve.toml --images {root}/d/images --table "
        "{root}/d/labels.csv --features {root}/seg.pt --out {root}/d/images/exp", "inside"),
    "experiment: out holds the features": (
        "experiment --spec {root}/curve.toml --images {root}/d/images --table "
        "{root}/d/labels.csv --features {root}/seg.pt --out {root}", "holds the input"),
    "split: out is the table": (
        "split --table {root}/d/labels.csv --test-per-class 1 --out {root}/d/labels.csv",
        "one of the inputs"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_no_command_writes_over_or_into_its_inputs(work: Path, name: str) -> None:
    command, expected = CASES[name]
    before = snapshot(work)
    args = command.format(root=work).split()
    if args[0] in ("pretrain", "train-classifier"):
        args += TINY if args[0] == "pretrain" else CLF
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert expected in result.output and result.output.count("\n") == 1, result.output
    assert snapshot(work) == before  # nothing replaced, nothing (not even a folder) made


def test_resuming_a_run_folder_of_other_settings_is_one_line(work: Path, tmp_path: Path
                                                             ) -> None:
    d = work / "d"
    args = ["pretrain", "--images", str(d / "images"), "--labels", str(d / "labels"), "--dim",
            "2", "--out", str(tmp_path / "r.pt"), *TINY]
    ok(*args)
    wider = [a if a != "2" or args[i - 1] != "--n-s" else "4" for i, a in enumerate(args)]
    result = runner.invoke(app, [*wider, "--resume"])
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
    assert ("r-run: the run folder holds another configuration (network.n_s 2 → 4)"
            in " ".join(result.output.split()))
    result = runner.invoke(app, [*args[:-len(TINY)], *TINY[:4], "--epochs", "2", *TINY[6:],
                                 "--resume"])
    assert result.exit_code == 0, result.output
    assert "resuming from epoch 2 of 2" in result.output


@pytest.mark.parametrize("command", ["pretrain", "train-classifier"])
def test_a_refused_training_run_leaves_no_run_folder(work: Path, tmp_path: Path,
                                                     command: str) -> None:
    d = work / "d"
    table = tmp_path / "one.csv"  # one class: refused after the run folder was locked
    table.write_text("id,label\ncase000,a\ncase001,a\n", encoding="utf-8")
    out = tmp_path / "sub" / "m.pt"
    if command == "pretrain":
        args = ["pretrain", "--images", str(d / "images"), "--labels", str(d / "labels"),
                "--table", str(tmp_path / "none.csv"), "--dim", "2", *TINY]
    else:
        args = ["train-classifier", "--table", str(table), "--images", str(d / "images"),
                "--framework", "scratch", *CLF]
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert list(tmp_path.iterdir()) == [table]


def test_ctrl_c_says_where_to_resume(work: Path, tmp_path: Path, monkeypatch) -> None:
    """The epoch to resume from is last.pt's: metrics.csv may hold rows no checkpoint backs
    (a hard kill while last.pt waited for its interval)."""
    import torch

    import segfew.train

    def stopped(*args, out_dir: Path, **kwargs):  # Ctrl-C after two epochs were saved
        (out_dir / "metrics.csv").write_text("epoch\n1\n2\n3\n4\n", encoding="utf-8")
        torch.save({"epoch": 2}, out_dir / "last.pt")
        raise KeyboardInterrupt

    monkeypatch.setattr(segfew.train, "fit", stopped)
    d = work / "d"
    six_epochs = [*TINY[:TINY.index("--epochs")], "--epochs", "6",
                  *TINY[TINY.index("--epochs") + 2:]]
    result = runner.invoke(app, ["pretrain", "--images", str(d / "images"), "--labels",
                                 str(d / "labels"), "--dim", "2", "--out",
                                 str(tmp_path / "c.pt"), *six_epochs])
    assert result.exit_code == 130, result.output
    assert result.output.splitlines()[-1].startswith(
        "interrupted; rerun with --resume to continue from epoch 3 of 6")
    assert (tmp_path / "c-run" / "last.pt").exists()  # kept: the run can resume
