"""The frameworks registry is the one list every reader follows (segfew.frameworks)."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest

from segfew.errors import SpecError
from segfew.experiment.protocol import FRAMEWORK_NAMES
from segfew.experiment.results import summarise
from segfew.frameworks import FRAMEWORKS, NEEDS, framework, framework_rank, help_list
from segfew.models import MODELS
from segfew.spec import ClassifierSpec, DataSource, ExperimentSpec, Framework


def test_the_spec_choices_the_models_and_the_report_words_follow_the_registry() -> None:
    assert list(get_args(Framework)) == list(FRAMEWORKS)
    assert list(FRAMEWORK_NAMES) == list(FRAMEWORKS)
    for name, info in FRAMEWORKS.items():
        assert info.network in MODELS, name
        assert FRAMEWORK_NAMES[name] == info.title
        assert all(need in NEEDS for need in info.needs)
    assert help_list().endswith(f"or {list(FRAMEWORKS)[-1]}")
    with pytest.raises(ValueError, match="unknown framework 'nope'; known: measures"):
        framework("nope")


@pytest.mark.parametrize("name", list(FRAMEWORKS))
def test_each_framework_asks_for_exactly_what_it_needs(name: str) -> None:
    data = DataSource(images=Path("images"))
    given = {"features": Path("seg.pt"), "vgg_weights": Path("vgg.pth")}
    ClassifierSpec(data=data, out=Path("c.pt"), framework=name, **given)  # all given: valid
    for need in FRAMEWORKS[name].needs:
        field = NEEDS[need][0]
        with pytest.raises(ValueError, match=f"needs --{field.replace('_', '-')}"):
            ClassifierSpec(data=data, out=Path("c.pt"), framework=name,
                           **{k: v for k, v in given.items() if k != field})
        exp_field = NEEDS[need][1]
        with pytest.raises(ValueError, match=f"needs {exp_field}"):
            ExperimentSpec(data=data, frameworks=[name])


def test_summaries_list_frameworks_in_registry_order() -> None:
    results = [{"framework": fw, "size": 1, "repetition": 1, "metrics": {"accuracy": 0.5}}
               for fw in reversed(list(FRAMEWORKS))]
    assert [row["framework"] for row in summarise(results)] == list(FRAMEWORKS)
    assert framework_rank("zzz") > framework_rank(list(FRAMEWORKS)[-1])


def test_train_classifier_help_names_every_framework() -> None:
    from typer.testing import CliRunner

    from segfew.cli import app

    result = CliRunner().invoke(app, ["train-classifier", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert all(name in result.output for name in FRAMEWORKS)


def test_spec_errors_name_the_missing_input() -> None:
    from segfew.spec import resolve_spec

    with pytest.raises(SpecError, match="framework measures needs --features"):
        resolve_spec(ClassifierSpec, {"data": {"images": "x"}, "out": "c.pt",
                                      "framework": "measures"})
