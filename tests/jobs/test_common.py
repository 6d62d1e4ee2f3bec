"""What the jobs share: the validation split is announced with its sizes, and the default
holds nothing out with few cases."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pytest

from segfew.data import Case
from segfew.errors import DataWarning
from segfew.jobs.common import validation_split
from segfew.spec import TrainConfig


def _cases(per_class: int) -> list[Case]:
    return [Case(f"{c}{i}", (Path(f"{c}{i}.png"),), target=c) for c in "abc"
            for i in range(per_class)]


def test_the_validation_split_is_announced_with_its_sizes(caplog) -> None:
    with caplog.at_level(logging.INFO, logger="segfew"):
        train, val = validation_split(_cases(10), TrainConfig(), per_class=True)
    assert (len(train), len(val)) == (24, 6)
    assert "validation split: 6 of 30 cases held out (val_fraction 0.2)" in caplog.text


def test_with_few_cases_the_default_holds_nothing_out_and_says_so() -> None:
    with pytest.warns(DataWarning, match=r"9 case\(s\) in the smallest class are too few"):
        train, val = validation_split(_cases(9), TrainConfig(), per_class=True)
    assert (len(train), val) == (27, [])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # asked for: held out, nothing to say
        _, val = validation_split(_cases(3), TrainConfig(val_fraction=0.4), per_class=True)
    assert len(val) == 3


def test_a_segmentation_split_holds_out_its_fraction_whatever_the_classes() -> None:
    """Pre-training ignores classes: ten patients of five classes, val_fraction 0.2, hold
    out two, not one of each class (five)."""
    cases = [Case(f"{c}{i}", (Path(f"{c}{i}.nii.gz"),), target=c) for c in "abcde"
             for i in range(2)]
    train, val = validation_split(cases, TrainConfig(val_fraction=0.2), per_class=False)
    assert (len(train), len(val)) == (8, 2)
    assert {c.target for c in val} <= set("abcde")  # the cases themselves, classes kept
    _, val_c = validation_split(cases, TrainConfig(val_fraction=0.2), per_class=True)
    assert len(val_c) == 5  # a classifier's split still keeps every class on both sides
