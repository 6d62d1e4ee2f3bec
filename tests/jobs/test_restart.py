"""No silent restart: a run folder holding an unfinished run needs --resume or --overwrite."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from segfew.cli import app
from tests.conftest import invoke
from tests.jobs.conftest import TINY_PRETRAIN

runner = CliRunner()


def _pretrain_args(phantoms: Path, out: Path) -> list[str]:
    return ["pretrain", "--images", str(phantoms / "images"), "--labels",
            str(phantoms / "labels"), "--out", str(out), *TINY_PRETRAIN, "--epochs", "1"]


def test_pretrain_on_an_interrupted_run_is_refused_naming_resume_and_overwrite(
        phantoms: Path, tmp_path: Path) -> None:
    out = tmp_path / "seg.pt"
    invoke(*_pretrain_args(phantoms, out))
    info = json.loads((tmp_path / "seg-run" / "run.json").read_text())
    assert info["status"] == "completed"
    out.unlink()  # stopped before the model file was written: last.pt and no model
    result = runner.invoke(app, _pretrain_args(phantoms, out))
    assert result.exit_code == 2 and not out.exists()
    line = " ".join(result.output.split())
    assert "unfinished run" in line and "--resume" in line and "--overwrite" in line
    assert len(result.output.strip().splitlines()) == 1
    invoke(*_pretrain_args(phantoms, out), "--overwrite")
    assert out.exists()
    # a finished run may be trained again (its model file is replaced)
    invoke(*_pretrain_args(phantoms, out))


def test_train_classifier_on_a_run_marked_running_is_refused(
        phantoms: Path, tmp_path: Path) -> None:
    out = tmp_path / "clf.pt"
    args = ["train-classifier", "--images", str(phantoms / "images"), "--table",
            str(phantoms / "labels.csv"), "--framework", "scratch", "--size", "32",
            "--epochs", "1", "--no-progress", "--no-cache", "--out", str(out)]
    invoke(*args)
    run_json = tmp_path / "clf-run" / "run.json"
    info = json.loads(run_json.read_text())
    run_json.write_text(json.dumps({**info, "status": "running"}))  # a later run, stopped
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "--resume" in result.output and "--overwrite" in result.output
    result = runner.invoke(app, [*args, "--resume", "--overwrite"])
    assert result.exit_code == 2 and "give one" in result.output
    invoke(*args, "--overwrite")
    assert json.loads(run_json.read_text())["status"] == "completed"


def test_a_run_trained_again_never_resumes_the_earlier_runs_checkpoint(
        phantoms: Path, tmp_path: Path) -> None:
    """A completed run trained again (no --resume) and stopped before its own first
    checkpoint: --resume must not continue the earlier run's network, trained on other
    data. Starting afresh removes the earlier checkpoints."""
    from segfew.jobs.common import guarded_run
    from segfew.spec import PretrainSpec

    out = tmp_path / "seg.pt"
    invoke(*_pretrain_args(phantoms, out))
    run_dir = tmp_path / "seg-run"
    assert (run_dir / "last.pt").is_file()
    spec = PretrainSpec.model_validate({"data": {"images": str(phantoms / "images"),
                                                 "labels": str(phantoms / "labels")},
                                        "out": str(out)})
    with guarded_run(out, [phantoms / "images"], spec, resume=False):
        assert not (run_dir / "last.pt").exists() and not (run_dir / "best.pt").exists()


def test_a_run_resumed_on_other_data_is_refused(phantoms: Path, tmp_path: Path) -> None:
    """--resume with other --images/--labels continued the first data's checkpoint, and the
    run record then listed only the second: a test on the first was not called leakage."""
    import shutil

    out = tmp_path / "seg.pt"
    invoke(*_pretrain_args(phantoms, out))
    out.unlink()  # stopped before the model file: an unfinished run
    other = tmp_path / "other"
    shutil.copytree(phantoms, other)
    first = sorted((other / "images").iterdir())[0]
    first.unlink()  # one case fewer
    next((other / "labels").glob(first.name.split(".")[0] + "*")).unlink()
    result = runner.invoke(app, [*_pretrain_args(other, out), "--resume"])
    line = " ".join(result.output.split())
    assert result.exit_code == 2 and not out.exists(), result.output
    assert "the run was started on other data (0 input(s) new, 2 gone" in line  # scan, map
    assert f"{first.name} is gone" in line
    invoke(*_pretrain_args(phantoms, out), "--resume")  # its own data: resumes
    assert out.exists()
