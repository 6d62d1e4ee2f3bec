"""A training set with several bad files names every one of them in one run, not the first
alone (each run would stop on the next): pretrain, train-classifier and experiment read
all their cases before they stop (:func:`segfew.errors.map_all`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import invoke
from tests.jobs.conftest import TINY_PRETRAIN

PAGE = b"<!DOCTYPE html><html><body>403 Forbidden</body></html>\n"


@pytest.fixture
def two_bad(phantoms: Path, tmp_path: Path) -> tuple[Path, list[Path]]:
    """A copy of the phantoms where two images are failed downloads (HTML pages)."""
    data = shutil.copytree(phantoms, tmp_path / "data")
    bad = sorted((data / "images").glob("*.nii.gz"))[3:5]
    for path in bad:
        path.write_bytes(PAGE)
    return data, bad


def _said(*args: str) -> str:
    return " ".join(invoke(*args, expect=2).split())


def _names_both(said: str, bad: list[Path], what: str) -> None:
    assert all(p.name in said for p in bad), said
    assert f"and 1 more of the 12 {what}" in said, said


def test_pretrain_names_every_unreadable_training_case(
        two_bad: tuple[Path, list[Path]], tmp_path: Path) -> None:
    data, bad = two_bad
    said = _said("pretrain", "--images", str(data / "images"), "--labels", str(data / "labels"),
                 "--out", str(tmp_path / "seg.pt"), *TINY_PRETRAIN)
    _names_both(said, bad, "training cases cannot be read")
    assert not (tmp_path / "seg.pt").exists()


def test_train_classifier_names_every_unreadable_training_case(
        two_bad: tuple[Path, list[Path]], tmp_path: Path) -> None:
    data, bad = two_bad
    said = _said("train-classifier", "--table", str(data / "labels.csv"), "--images",
                 str(data / "images"), "--framework", "scratch", "--size", "32", "--epochs",
                 "1", "--out", str(tmp_path / "clf.pt"), "--no-progress", "--no-cache")
    _names_both(said, bad, "training cases cannot be read")
    assert not (tmp_path / "clf.pt").exists()


def test_experiment_names_every_unreadable_case_before_any_task(
        two_bad: tuple[Path, list[Path]], tmp_path: Path) -> None:
    data, bad = two_bad
    spec = tmp_path / "curve.toml"
    spec.write_text('frameworks = ["scratch"]\nsizes = [1]\nrepetitions = 1\nbootstrap = 0\n'
                    '[preprocess]\nsize = [32]\n[train]\nepochs = 1\n')
    said = _said("experiment", "--spec", str(spec), "--out", str(tmp_path / "run"),
                 "--images", str(data / "images"), "--table", str(data / "labels.csv"),
                 "--no-progress")
    _names_both(said, bad, "cases cannot be used")
    assert not (tmp_path / "run" / "results").exists()
