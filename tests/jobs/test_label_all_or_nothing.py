"""``label`` writes all its files or none: an error part-way leaves ``--out`` as it was, and
names the user's file and the cause, never the hidden folder the run writes into first."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from segfew.cli import app
from segfew.jobs import label as label_job
from tests.conftest import save_nifti, scan

MM = np.diag([1.2, 1.2, 3.0, 1.0])
runner = CliRunner()


def _images(folder: Path, rng: np.random.Generator) -> Path:
    for name in ("a", "b", "c"):
        save_nifti(folder / f"{name}.nii.gz", scan(rng, (16, 16, 3)) * 100, MM)
    return folder


def _label(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["label", *args, "--no-progress"])
    return result.exit_code, " ".join(result.output.split())


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too) and its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def earlier(tmp_path: Path, rng: np.random.Generator) -> tuple[Path, Path, dict[str, bytes]]:
    """An images folder, the output folder of an earlier k = 2 run and its files."""
    images = _images(tmp_path / "images", rng)
    out = tmp_path / "out"
    code, text = _label("--images", str(images), "--out", str(out), "--k", "2")
    assert code == 0, text
    return images, out, _files(out)


def test_a_map_that_cannot_be_written_stops_the_run_and_leaves_out_as_it_was(
        earlier: tuple[Path, Path, dict[str, bytes]], monkeypatch: pytest.MonkeyPatch) -> None:
    images, out, before = earlier
    real = label_job.write_image
    calls: list[Path] = []

    def full_disk(array: Any, reference: Any, path: Any) -> Path:
        calls.append(Path(path))
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(array, reference, path)

    monkeypatch.setattr(label_job, "write_image", full_disk)
    code, text = _label("--images", str(images), "--out", str(out), "--k", "3")
    assert code == 2, text
    assert f"{out / 'b_seg.nii.gz'}: cannot write it (No space left on device)" in text
    assert ".segfew-label" not in text and "skipped" not in text
    assert _files(out) == before  # the earlier run's maps, centres and record, untouched


@pytest.mark.parametrize("stage", ["preview", "record"])
def test_an_error_after_the_maps_are_done_puts_the_earlier_run_back(
        earlier: tuple[Path, Path, dict[str, bytes]], monkeypatch: pytest.MonkeyPatch,
        stage: str) -> None:
    images, out, before = earlier

    def fails(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.EACCES, "Permission denied", str(out / "x"))

    monkeypatch.setattr(label_job, "plot_label_preview" if stage == "preview"
                        else "write_run_info", fails)
    code, text = _label("--images", str(images), "--out", str(out), "--k", "3")
    assert code == 2, text
    where = out / ("preview/kmeans_preview.png" if stage == "preview" else "run.json")
    assert f"{where}: cannot write it (Permission denied)" in text
    assert _files(out) == before


def test_a_run_into_a_new_folder_that_fails_leaves_no_folder(
        tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch) -> None:
    images = _images(tmp_path / "images", rng)

    def fails(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(label_job, "write_run_info", fails)
    code, text = _label("--images", str(images), "--out", str(tmp_path / "new"), "--k", "2")
    assert code == 2 and "new/run.json: cannot write it (Input/output error)" in text
    assert not (tmp_path / "new").exists()
