"""The learning-curve report and the ``experiment`` / ``report`` commands."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from segfew.experiment.protocol import FRAMEWORK_NAMES, Task, run_experiment
from segfew.experiment.report import _ci, _summary, write_report
from tests.experiment.test_protocol import CLASSES, Counting, fake_trainer, make_cases, make_spec


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    out = tmp_path / "run"
    run_experiment(make_spec(), out, Counting(fail_key="size004_rep02_scratch"),
                   cases=make_cases())
    return out


def test_html_is_self_contained_and_names_every_framework(run_dir: Path) -> None:
    md, page = write_report([run_dir])
    assert md.parent == page.parent == run_dir / "report"
    text = page.read_text()
    # accuracy, kappa, F1 per class, confusion matrix of the best method
    assert text.count('src="data:image/png;base64,') == 4
    assert not re.search(r'(src|href)="(?!data:)', text)  # no external assets
    assert "<link" not in text and "<script" not in text
    for fw in ("manual", "scratch"):
        assert FRAMEWORK_NAMES[fw] in text
    assert "labelled" in text and "11 of 12 finished, 1 failed" in text
    assert "size004_rep02_scratch" in text  # the failed task is listed
    assert "scikit-learn" in text and "Software" in text  # versions from run.json


def test_markdown_has_a_row_per_framework_and_size(run_dir: Path, tmp_path: Path) -> None:
    md, _ = write_report([run_dir], tmp_path / "out")
    text = md.read_text()
    for fw in ("manual", "scratch"):
        for size in (1, 2, 4):
            # one row in the results table and one in the per-class F1 table
            assert len(re.findall(rf"^\| {fw} \| {size} \|", text, flags=re.M)) == 2
    # 4 per class, scratch: one repetition failed, so one value and no spread
    assert re.search(r"^\| scratch \| 4 \| 1 \| \d\.\d{3} \|", text, flags=re.M)
    assert re.search(r"^\| manual \| 4 \| 2 \| \d\.\d{3} ± \d\.\d{3} \|", text, flags=re.M)
    for png in re.findall(r"!\[[^]]*\]\(([^)]+)\)", text):
        assert (md.parent / png).read_bytes()[:4] == b"\x89PNG"
    for name in CLASSES:
        assert name in text
    assert "| class | cases | patients |" in text


# ---------------------------------------------------------------- CLI


def _project(tmp_path: Path, frameworks: str = '["scratch"]') -> Path:
    images = tmp_path / "images"
    images.mkdir()
    rows = ["id,label,patient"]
    for c in make_cases(4):
        (images / f"{c.id}.nii.gz").touch()
        rows.append(f"{c.id},{c.target},{c.group}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    spec = tmp_path / "curve.toml"
    spec.write_text(f'sizes = [1, 2]\nrepetitions = 2\nframeworks = {frameworks}\n'
                    f'[data]\nimages = "{images}"\ntable = "{tmp_path / "labels.csv"}"\n'
                    'group_column = "patient"\n')
    return spec


@pytest.fixture
def fake_step(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    import segfew.jobs.experiment_step

    made: list[Any] = []

    def make(spec: Any, **kwargs: Any) -> Any:
        made.append(spec)
        return fake_trainer

    monkeypatch.setattr(segfew.jobs.experiment_step, "make_train_and_score", make, raising=False)
    return made


def test_experiment_command_runs_and_reports(tmp_path: Path, fake_step: list[Any]) -> None:
    from segfew.cli import app

    spec = _project(tmp_path)
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["experiment", "--spec", str(spec), "--out", str(out),
                                      "--sizes", "1,2,3", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert fake_step[0].sizes == [1, 2, 3] and fake_step[0].train.progress is False
    assert (out / "report" / "report.html").is_file()
    assert "6 of 6 finished" in result.output

    # a different spec in the same RUN_DIR: one-line error, exit 2
    result = CliRunner().invoke(app, ["experiment", "--spec", str(spec), "--out", str(out)])
    assert result.exit_code == 2 and "new RUN_DIR" in result.output


def test_sharded_commands_then_report_merges(tmp_path: Path, fake_step: list[Any]) -> None:
    from segfew.cli import app

    spec = _project(tmp_path)
    for i in (1, 2):
        result = CliRunner().invoke(app, ["experiment", "--spec", str(spec), "--out",
                                          str(tmp_path / f"s{i}"), "--shard", f"{i}/2"])
        assert result.exit_code == 0, result.output
        assert not (tmp_path / f"s{i}" / "report").exists()
    result = CliRunner().invoke(app, ["report", str(tmp_path / "s1"), str(tmp_path / "s2"),
                                      "--out", str(tmp_path / "rep")])
    assert result.exit_code == 0, result.output
    assert "4 of 4 finished" in result.output
    assert (tmp_path / "rep" / "report.md").is_file()


def test_failed_task_makes_the_command_fail(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import segfew.jobs.experiment_step
    from segfew.cli import app

    def broken(task: Task, *args: Any) -> dict[str, Any]:
        if task.size == 2:
            raise RuntimeError("boom")
        return fake_trainer(task, *args)

    monkeypatch.setattr(segfew.jobs.experiment_step, "make_train_and_score",
                        lambda spec, **kw: broken, raising=False)
    spec = _project(tmp_path)
    result = CliRunner().invoke(app, ["experiment", "--spec", str(spec), "--out",
                                      str(tmp_path / "run")])
    assert result.exit_code == 1
    assert "2 failed" in result.output


def test_report_opens_with_a_summary_and_folds_the_settings(run_dir: Path) -> None:
    md, page = write_report([run_dir])
    text = md.read_text()
    verdict, first = text.split("\n\n")[1:3]  # the paragraphs under the title
    assert verdict.startswith("Leakage check:"), verdict
    # manual is right on more test cases at every size (fake_trainer): named best, with CI
    for size in (1, 2, 4):  # 1 labelled patient, 2 labelled patients
        unit = "patient" if size == 1 else "patients"
        assert re.search(rf"with {size} labelled {unit} per class, manual was best "
                         r"at accuracy \d\.\d\d \(95% CI \d\.\d\d–\d\.\d\d\)", first), first
    assert "test patients per repetition, 2 repetitions pooled" in first
    assert re.search(r"^\| manual \| 4 \| 2 \| .* \| \d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\] \| \d+ \|$",
                     text, flags=re.M)
    assert "<details><summary>the experiment's settings (JSON)</summary>" in text
    html_text = page.read_text()
    assert "<details><summary>" in html_text and "Confusion matrix of the best method (manual" \
        in html_text


def test_report_says_cases_without_a_group_column(tmp_path: Path) -> None:
    from segfew.data import Case

    cases = [Case(id=c.id, images=c.images, target=c.target) for c in make_cases()]
    out = tmp_path / "run"
    run_experiment(make_spec(), out, Counting(), cases=cases)
    text = write_report([out])[0].read_text()
    assert "labelled cases per class" in text and "patients per class" not in text



def test_summary_names_every_method_that_ties_for_best() -> None:
    def point(acc: float) -> dict[str, Any]:
        return {"accuracy": acc, "low": 0.49, "high": 0.88, "n": 24, "per_repetition": 8,
                "chance_rate": 0.5, "distinguishable_from_chance": True}

    points = {("measures", 2): point(17 / 24), ("manual", 2): point(0.7083),
              ("scratch", 2): point(0.5), ("measures", 4): point(0.75),
              ("manual", 4): point(0.7)}
    text = _summary(points, [2, 4], "cases", 3)
    assert "with 2 labelled cases per class, measures and manual tied at accuracy 0.71" in text
    assert "with 4 labelled cases per class, measures was best at accuracy 0.75" in text
    assert "scratch" not in text


def test_an_interval_below_the_chance_rate_is_called_below_chance() -> None:
    """An interval that excludes the chance rate from below is "distinguishable from
    chance" and still worse than always answering the largest class: the words say so."""
    low = {"accuracy": 0.46, "low": 0.37, "high": 0.55, "n": 111, "per_repetition": 37,
           "chance_rate": 0.59, "distinguishable_from_chance": True}
    above = {**low, "accuracy": 0.8, "low": 0.7, "high": 0.9}
    text = _summary({("measures", 2): low, ("measures", 4): above}, [2, 4], "patients", 3)
    assert "accuracy 0.46 (95% CI 0.37–0.55), below chance (0.59" in text
    assert "accuracy 0.80 (95% CI 0.70–0.90) —" in text
    assert _ci(low).endswith(" below chance") and not _ci(above).endswith("chance")
