"""Shared fixtures: seeded RNGs and the location of the optional real data."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    random.seed(0)
    np.random.seed(0)
    try:
        import torch
    except ImportError:  # pragma: no cover
        return
    torch.manual_seed(0)
    torch.set_num_threads(1)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def real_data(name: str) -> Path:
    """Path of ``../shared/data/<name>``; skips the test when it is absent (a user's clone)."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real data {name!r} not present")
    return path


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--device", default="cpu",
                     help="device for the tests that take one (the `device` fixture): cpu, cuda")


@pytest.fixture
def device(request: pytest.FixtureRequest) -> str:
    """The ``--device`` these tests run on; CUDA tests skip where no GPU is present."""
    name = str(request.config.getoption("--device"))
    if name.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            pytest.skip("--device cuda, but CUDA is not available")
    return name
