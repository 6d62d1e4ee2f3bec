"""What the job tests share: tiny pre-training flags and one segmentation network."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import invoke

TINY_PRETRAIN = ["--dim", "2", "--n-s", "2", "--size", "32", "--epochs", "2", "--batch-size", "4",
                 "--no-progress", "--no-cache"]


@pytest.fixture(scope="session")
def seg_model(phantoms: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny M-Net pre-trained on the shared phantoms (trained once per session)."""
    out = tmp_path_factory.mktemp("seg") / "seg.pt"
    invoke("pretrain", "--images", str(phantoms / "images"), "--labels", str(phantoms / "labels"),
           "--out", str(out), *TINY_PRETRAIN)
    return out


def tiny_classifier(framework: str, phantoms: Path, seg_model: Path, out: Path) -> Path:
    """A tiny classifier of ``framework`` on the shared phantoms (three classes), on the
    features of ``seg_model``."""
    invoke("train-classifier", "--table", str(phantoms / "labels.csv"), "--images",
           str(phantoms / "images"), "--framework", framework, "--features", str(seg_model),
           "--out", str(out), "--size", "32", "--epochs", "2", "--batch-size", "4",
           "--classes", "3", "--no-progress", "--no-cache")
    return out
