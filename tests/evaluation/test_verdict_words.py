"""The experiment's leakage verdict in words claims what was compared, no more."""

from __future__ import annotations

import inspect

from segfew.experiment import verdict


def test_the_experiment_verdict_names_what_it_compared() -> None:
    source = inspect.getsource(verdict)
    assert "images trained the" not in source  # "no test image trained …" claimed too much
