"""No command replaces a file segfew did not write: a model file at ``pretrain``'s or
``train-classifier``'s ``--out`` with no run folder beside it (another tool's checkpoint),
``split``'s tables, ``evaluate``'s outputs. Each is refused before any work, naming the
file; ``--overwrite`` replaces it; segfew's own outputs are replaced by a new run."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from segfew.cli import app
from tests.conftest import invoke
from tests.jobs.conftest import TINY_PRETRAIN

runner = CliRunner()
THEIRS = b"another tool's file"


def _refused(args: list[str], path: Path) -> None:
    result = runner.invoke(app, args)
    line = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert f"{path.name}: exists and segfew did not write it" in line and "--overwrite" in line
    assert path.read_bytes() == THEIRS


def test_pretrain_keeps_a_model_file_it_did_not_write(phantoms: Path, tmp_path: Path) -> None:
    out = tmp_path / "seg.pt"
    out.write_bytes(THEIRS)
    args = ["pretrain", "--images", str(phantoms / "images"), "--labels",
            str(phantoms / "labels"), "--out", str(out), *TINY_PRETRAIN, "--epochs", "1"]
    _refused(args, out)
    assert not (tmp_path / "seg-run").exists()
    invoke(*args, "--overwrite")
    assert out.read_bytes() != THEIRS
    invoke(*args)  # its own model file: replaced by the next run


def test_split_keeps_tables_it_did_not_write(phantoms: Path, tmp_path: Path) -> None:
    out = tmp_path / "split"
    out.mkdir()
    (out / "test.tsv").write_bytes(THEIRS)
    args = ["split", "--table", str(phantoms / "labels.csv"), "--test-per-class", "1",
            "--out", str(out)]
    _refused(args, out / "test.tsv")
    assert not (out / "train.tsv").exists()
    invoke(*args, "--overwrite")
    invoke(*args, "--seed", "3")  # its own tables: replaced


def test_evaluate_keeps_files_it_did_not_write(phantoms: Path, tmp_path: Path) -> None:
    model = tmp_path / "seg.pt"
    invoke("pretrain", "--images", str(phantoms / "images"), "--labels",
           str(phantoms / "labels"), "--out", str(model), *TINY_PRETRAIN, "--epochs", "1")
    out = tmp_path / "eval"
    out.mkdir()
    (out / "metrics.json").write_bytes(THEIRS)
    args = ["evaluate", "--model", str(model), "--images", str(phantoms / "images"),
            "--labels", str(phantoms / "labels"), "--out", str(out), "--allow-leakage",
            "--no-progress"]
    _refused(args, out / "metrics.json")
    assert not (out / "per_case.csv").exists()
    invoke(*args, "--overwrite")
    assert (out / "metrics.json").read_bytes() != THEIRS
    invoke(*args)  # its own outputs: replaced
