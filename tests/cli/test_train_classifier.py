"""train-classifier's data use: the validation split is announced with its sizes, the
default holds nothing out with few cases, and framework measures fits on every case."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pytest
from rich.table import Table
from typer.testing import CliRunner

from segfew.cli import app
from segfew.data import Case
from segfew.errors import DataWarning
from segfew.jobs.common import validation_split
from segfew.spec import TrainConfig

runner = CliRunner()


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


def test_measures_fits_on_every_training_case(tmp_path: Path) -> None:
    from segfew.modelfile import read_model_file
    from segfew.synth import make_phantoms

    make_phantoms(tmp_path / "d", dim=2, n_per_class=3, size=32, num_classes=2, seed=0)
    d = tmp_path / "d"
    seg = tmp_path / "seg.pt"
    for argv in (["pretrain", "--images", str(d / "images"), "--labels", str(d / "labels"),
                  "--out", str(seg), "--dim", "2", "--n-s", "2", "--size", "32",
                  "--epochs", "1", "--threads", "1", "--no-cache"],
                 ["train-classifier", "--spec", str(_spec(tmp_path)), "--table",
                  str(d / "labels.csv"), "--images", str(d / "images"), "--framework",
                  "measures", "--features", str(seg), "--out", str(tmp_path / "m.pt"),
                  "--size", "32", "--threads", "1", "--no-cache"]):
        result = runner.invoke(app, argv)
        assert result.exit_code == 0, result.output
    meta, _ = read_model_file(tmp_path / "m.pt")
    assert len(meta.metrics["train_cases"]) == 6 and meta.metrics["validation_cases"] == []


def _spec(tmp_path: Path) -> Path:
    spec = tmp_path / "clf.toml"
    spec.write_text("[train]\nval_fraction = 0.5\n", encoding="utf-8")  # ignored by measures
    return spec


def test_tables_are_printed_at_full_width_when_not_a_terminal(capsys) -> None:
    from segfew.cli.common import make_console

    table = Table("class", "cases")
    table.add_row("meningioma " * 12, "708")
    make_console(stderr=False).print(table)  # stdout is captured here: not a terminal
    out = capsys.readouterr().out
    assert "meningioma " * 11 in out and "…" not in out
    assert max(len(line) for line in out.splitlines()) > 120
