"""A model's run folder: its own (``m.v1.pt`` → ``m.v1-run``), and never restarted silently
when its ``run.json`` says the run started and did not complete."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from segfew.cli import app
from segfew.evaluation.leakage import trained_digests
from segfew.runinfo import run_dir_for
from tests.conftest import invoke, make_segmenter
from tests.jobs.conftest import TINY_PRETRAIN

runner = CliRunner()


def _pretrain(phantoms: Path, out: Path, *extra: str) -> list[str]:
    return ["pretrain", "--images", str(phantoms / "images"), "--labels",
            str(phantoms / "labels"), "--out", str(out), *TINY_PRETRAIN, "--epochs", "1",
            "--threads", "1", *extra]


def _killed(run_dir: Path, model: Path | None) -> None:
    """What ``kill -9`` before the first checkpoint leaves: run.json says running, rows in
    metrics.csv, no last.pt (and no new model file)."""
    for name in ("last.pt", "best.pt"):
        (run_dir / name).unlink()
    if model is not None:
        model.unlink()
    info = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**info, "status": "running"}))
    assert (run_dir / "metrics.csv").is_file()


def _refused(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    line = " ".join(result.output.split())
    assert "unfinished run" in line and "never completed" in line, line
    assert "--resume" in line and "--overwrite" in line
    return line


def test_pretrain_killed_before_its_first_checkpoint_is_refused(
        phantoms: Path, tmp_path: Path) -> None:
    out = tmp_path / "k.pt"
    invoke(*_pretrain(phantoms, out))
    _killed(tmp_path / "k-run", out)
    assert "no checkpoint was written" in _refused(_pretrain(phantoms, out))
    assert not out.exists()
    said = invoke(*_pretrain(phantoms, out, "--resume"))
    assert "no checkpoint to resume from; starting afresh" in " ".join(said.split())
    assert json.loads((tmp_path / "k-run" / "run.json").read_text())["status"] == "completed"


def test_train_classifier_rerun_killed_before_a_checkpoint_is_refused(
        phantoms: Path, tmp_path: Path) -> None:
    """The model file of an earlier completed run is there; the later run died early."""
    out = tmp_path / "clf.pt"
    args = ["train-classifier", "--images", str(phantoms / "images"), "--table",
            str(phantoms / "labels.csv"), "--framework", "scratch", "--size", "32",
            "--epochs", "1", "--threads", "1", "--no-progress", "--no-cache", "--out", str(out)]
    invoke(*args)
    _killed(tmp_path / "clf-run", None)
    _refused(args)
    invoke(*args, "--overwrite")
    assert json.loads((tmp_path / "clf-run" / "run.json").read_text())["status"] == "completed"


def test_models_sharing_a_first_name_part_have_their_own_run_folders(
        phantoms: Path, tmp_path: Path) -> None:
    assert run_dir_for(tmp_path / "m.v1.pt") == tmp_path / "m.v1-run"
    assert run_dir_for(tmp_path / "seg.pt") == tmp_path / "seg-run"
    v1, v2 = tmp_path / "m.v1.pt", tmp_path / "m.v2.pt"
    invoke(*_pretrain(phantoms, v1))
    before = (tmp_path / "m.v1-run" / "run.json").read_text()
    invoke(*_pretrain(phantoms, v2))  # no false "unfinished run"
    invoke(*_pretrain(phantoms, v2, "--overwrite"))  # removes nothing of m.v1's
    assert (tmp_path / "m.v1-run" / "last.pt").is_file()
    assert (tmp_path / "m.v1-run" / "run.json").read_text() == before
    assert not (tmp_path / "m-run").exists()
    for model in (v1, v2):
        info = json.loads((run_dir_for(model) / "run.json").read_text())
        assert Path(info["spec"]["out"]).name == model.name


def test_leakage_reads_a_dotted_models_own_run_folder(tmp_path: Path) -> None:
    """A model file without a record falls back to its run folder's manifest: its own, or
    the ``m-run`` an older segfew gave it if that run's spec names it."""
    v1, v2 = make_segmenter(tmp_path / "m.v1.pt"), make_segmenter(tmp_path / "m.v2.pt")
    legacy = tmp_path / "m-run"
    legacy.mkdir()
    (legacy / "run.json").write_text(json.dumps({
        "spec": {"out": str(v1)}, "data": [{"path": "a.nii.gz", "sha256": "ab" * 32}]}))
    assert trained_digests(v1) == {"ab" * 32}
    assert trained_digests(v2) is None  # m-run is m.v1's
    own = tmp_path / "m.v2-run"
    own.mkdir()
    (own / "run.json").write_text(json.dumps({
        "spec": {"out": str(v2)}, "data": [{"path": "b.nii.gz", "sha256": "cd" * 32},
                                           {"path": "c.nii.gz", "unreadable": "EIO"}]}))
    assert trained_digests(v2) == {"cd" * 32}
