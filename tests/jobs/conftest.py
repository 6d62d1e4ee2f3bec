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
