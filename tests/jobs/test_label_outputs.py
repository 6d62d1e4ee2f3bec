"""``label`` keeps its good images when one is bad, and never replaces files it did not write."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from segfew.cli import app
from segfew.errors import DataError, DataWarning
from segfew.jobs.label import label_images
from segfew.spec import LabelSpec
from tests.conftest import save_nifti, scan

MM = np.diag([1.2, 1.2, 3.0, 1.0])
runner = CliRunner()


def _images(folder: Path, rng: np.random.Generator, bad: bool = True) -> Path:
    for name in ("a", "b", "c"):
        save_nifti(folder / f"{name}.nii.gz", scan(rng, (16, 16, 3)) * 100, MM)
    if bad:  # a 4D series: no 2D or 3D image
        save_nifti(folder / "fourd.nii.gz", np.stack([scan(rng, (16, 16, 3))] * 2, -1), MM)
    return folder


def _label(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["label", *args, "--no-progress"])
    return result.exit_code, " ".join(result.output.split())


def test_label_with_given_centres_skips_a_bad_image_and_writes_the_others(
        tmp_path: Path, rng: np.random.Generator) -> None:
    good = _images(tmp_path / "good", rng, bad=False)
    code, text = _label("--images", str(good), "--out", str(tmp_path / "fit"), "--k", "2")
    assert code == 0, text
    images = _images(tmp_path / "images", rng)
    out = tmp_path / "out"
    code, text = _label("--images", str(images), "--out", str(out),
                        "--centres", str(tmp_path / "fit" / "centres.json"))
    assert code == 1, text
    assert f"{images / 'fourd.nii.gz'}: has 4 dimensions" in text and "skipped" in text
    assert sorted(p.name for p in out.glob("*_seg.nii.gz")) == [
        "a_seg.nii.gz", "b_seg.nii.gz", "c_seg.nii.gz"]
    failed = json.loads((out / "run.json").read_text())["failed"]
    assert [Path(f["path"]).name for f in failed] == ["fourd.nii.gz"]
    assert "1 image(s) skipped" in text


def test_a_kmeans_fit_leaves_a_bad_image_out(tmp_path: Path, rng: np.random.Generator) -> None:
    images = _images(tmp_path / "images", rng)
    with pytest.warns(DataWarning, match=r"fourd\.nii\.gz: has 4 dimensions") as seen:
        written = label_images(LabelSpec(images=images, out=tmp_path / "out", k=2))
    assert sorted(p.name for p in written) == ["a_seg.nii.gz", "b_seg.nii.gz", "c_seg.nii.gz"]
    assert sum("fourd" in str(w.message) for w in seen) == 1  # one line, not one per stage
    only_bad = tmp_path / "bad"
    (only_bad / "x.nii.gz").parent.mkdir()
    (only_bad / "x.nii.gz").write_bytes(b"broken")
    with pytest.warns(DataWarning), pytest.raises(DataError, match="none of the 1 case"):
        label_images(LabelSpec(images=only_bad, out=tmp_path / "none", k=2))
    assert not (tmp_path / "none").exists()


def test_label_refuses_to_replace_an_experts_label_maps(tmp_path: Path,
                                                        rng: np.random.Generator) -> None:
    images = _images(tmp_path / "images", rng, bad=False)
    labels = tmp_path / "labels"
    for name in ("a", "b", "c"):
        save_nifti(labels / f"{name}_seg.nii.gz", np.ones((16, 16, 3), np.uint8), MM)
    before = {p.name: p.read_bytes() for p in labels.iterdir()}
    code, text = _label("--images", str(images), "--out", str(labels), "--k", "2")
    assert code == 2 and "a_seg.nii.gz: exists and segfew did not write it" in text
    assert "--overwrite" in text
    assert {p.name: p.read_bytes() for p in labels.iterdir()} == before
    code, text = _label("--images", str(images), "--out", str(labels), "--k", "2",
                        "--overwrite")
    assert code == 0, text
    code, text = _label("--images", str(images), "--out", str(labels), "--k", "2")
    assert code == 0, text  # now its own: a run again replaces them
