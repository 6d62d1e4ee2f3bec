"""Outputs: atomic, with the user's umask, never clobbering inputs; run folders locked."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from segfew.errors import DataError
from segfew.files import check_output, run_lock, write_text


def test_files_get_the_mode_the_umask_gives(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_text(tmp_path / "report.md", "hello")
        os.umask(0o077)
        write_text(tmp_path / "private.md", "hello")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "report.md").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "private.md").stat().st_mode) == 0o600


def test_an_output_may_not_be_an_input_nor_inside_an_input_folder(tmp_path: Path) -> None:
    scans = tmp_path / "scans"
    scans.mkdir()
    scan = scans / "a.nii.gz"
    scan.write_bytes(b"x")
    with pytest.raises(DataError, match=r"a\.nii\.gz: --out is one of the inputs"):
        check_output(scan, [scans, scan], "file")
    with pytest.raises(DataError, match=r"preds: --out is inside the input folder .*scans: it "
                                        r"could replace an input there, or be read as one"):
        check_output(scans / "preds", [scans], "folder")
    assert check_output(tmp_path / "preds", [scans, scan], "folder") == tmp_path / "preds"
    with pytest.raises(DataError, match=r"predictions\.csv: --out is inside the input folder"):
        check_output(scans / "predictions.csv", [scans, scan], "file")  # a file too
    assert check_output(tmp_path / "predictions.csv", [scans, scan], "file")


def test_a_folder_output_may_not_be_a_trained_models_run_folder(tmp_path: Path) -> None:
    """Any model's: evaluating a classifier into its feature network's run folder, or
    predicting into a segmentation model's own, replaced the training's run.json."""
    run = tmp_path / "seg-run"
    run.mkdir()
    (run / "run.json").write_text('{"command": "segfew pretrain", "status": "completed"}')
    with pytest.raises(DataError, match="seg-run: --out is a trained model's run folder"):
        check_output(run, [], "folder")
    assert check_output(run, [], "folder", run_folder=True) == run  # the training's own
    assert check_output(run / "sub", [], "folder") == run / "sub"
    evaluation = tmp_path / "eval"
    evaluation.mkdir()
    (evaluation / "run.json").write_text('{"command": "segfew evaluate"}')
    assert check_output(evaluation, [], "folder") == evaluation  # written again, as before


def test_unwritable_and_clashing_outputs_are_one_line_errors(tmp_path: Path) -> None:
    a_file = tmp_path / "taken"
    a_file.write_text("x")
    with pytest.raises(DataError, match="--out exists and is a file, not a folder"):
        check_output(a_file, [], "folder")
    with pytest.raises(DataError, match=r"--out cannot be created: .*taken is a file"):
        check_output(a_file / "sub" / "out.csv", [], "file")
    with pytest.raises(DataError, match="--out is a folder; give a file name"):
        check_output(tmp_path, [], "file")
    locked = tmp_path / "ro"
    locked.mkdir(mode=0o555)
    if os.access(locked, os.W_OK):  # root may write anywhere
        pytest.skip("running as root: permissions are not enforced")
    with pytest.raises(DataError, match=r"--out cannot be written: no permission to write in"):
        check_output(locked / "out.csv", [], "file")


def test_a_second_run_on_a_locked_folder_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "m-run"
    with run_lock(run) as lock:
        assert lock.read_text().startswith(f"pid {os.getpid()} on ")
        other = subprocess.run(
            [sys.executable, "-c", "import sys; from segfew.files import run_lock\n"
             "try:\n  run_lock(sys.argv[1]).__enter__()\n"
             "except Exception as e: print(e)", str(run)],
            capture_output=True, text=True, check=True)
        assert "is in use by another segfew run" in other.stdout
        assert f"lock file {lock}" in other.stdout
    assert not (run / "segfew.lock").exists()
    with run_lock(run):  # free again once the first run is done
        pass
