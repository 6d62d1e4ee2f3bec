"""The experiment's injected steps end to end through the CLI: every framework trained and
scored on one split, per-repetition pre-training, the leakage check."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from segfew.cli import app
from tests.conftest import invoke

runner = CliRunner()


def test_experiment_trains_and_scores_each_framework_on_the_same_split(
        phantoms: Path, seg_model: Path, tmp_path: Path) -> None:
    spec = tmp_path / "curve.toml"
    spec.write_text(
        'sizes = [1, 2]\nrepetitions = 1\nframeworks = ["measures", "scratch"]\nbootstrap = 200\n'
        "allow_leakage = true\n"  # seg_model saw every phantom: only the protocol is tested here
        "[preprocess]\nsize = [32, 32]\n[train]\nepochs = 1\nbatch_size = 4\nval_fraction = 0.0\n"
    )
    out = tmp_path / "run"
    invoke("experiment", "--spec", str(spec), "--out", str(out), "--images",
           str(phantoms / "images"), "--table", str(phantoms / "labels.csv"), "--features",
           str(seg_model), "--no-progress")
    results = {p.stem: json.loads(p.read_text()) for p in (out / "results").glob("*.json")}
    assert sorted(results) == ["size001_rep01_measures", "size001_rep01_scratch",
                               "size002_rep01_measures", "size002_rep01_scratch"]
    for key, result in results.items():
        assert 0.0 <= result["metrics"]["accuracy"] <= 1.0
        assert len(result["predictions"]) == result["n_test"] == 6
        hits = sum(p["predicted"] == p["target"] for p in result["predictions"])
        assert result["metrics"]["accuracy"] == pytest.approx(hits / 6), key
    assert results["size002_rep01_measures"]["test_ids"] == results["size002_rep01_scratch"][
        "test_ids"]
    # the report shows one image per class segmented by the experiment's network
    assert (out / "report" / "examples.png").read_bytes()[:4] == b"\x89PNG"
    report = (out / "report" / "report.md").read_text()
    assert "Example images" in report
    assert "per class, once with a different random choice" in report  # not "1 times"
    assert (out / "report" / "report.html").is_file()


def test_experiment_refuses_a_feature_network_trained_on_its_test_cases(
        phantoms: Path, seg_model: Path, tmp_path: Path) -> None:
    spec = tmp_path / "curve.toml"
    spec.write_text('sizes = [1]\nrepetitions = 1\nframeworks = ["measures"]\n')
    result = runner.invoke(app, [
        "experiment", "--spec", str(spec), "--out", str(tmp_path / "run"), "--images",
        str(phantoms / "images"), "--table", str(phantoms / "labels.csv"), "--features",
        str(seg_model), "--no-progress"])
    assert result.exit_code != 0
    assert "seg.pt" in result.output and "test case(s)" in result.output
    assert not (tmp_path / "run" / "results").exists()


@pytest.mark.parametrize("flag", ["--id-column", "--label-column", "--group-column"])
def test_experiment_takes_the_tables_columns_as_flags(phantoms: Path, seg_model: Path,
                                                      tmp_path: Path, flag: str) -> None:
    spec = tmp_path / "curve.toml"
    spec.write_text('sizes = [1]\nrepetitions = 1\nframeworks = ["measures"]\n')
    result = runner.invoke(app, [
        "experiment", "--spec", str(spec), "--out", str(tmp_path / "run"), "--images",
        str(phantoms / "images"), "--table", str(phantoms / "labels.csv"), "--features",
        str(seg_model), flag, "nosuch", "--no-progress"])
    assert result.exit_code != 0 and "no column 'nosuch'" in result.output
    assert not (tmp_path / "run" / "results").exists()


def test_experiment_pretrains_per_repetition_and_measures_never_fit_on_test_cases(
        phantoms: Path, tmp_path: Path, measures_fits: list[tuple[set[str], Any]]) -> None:
    pre = tmp_path / "pretrain.toml"
    pre.write_text("[network]\ndim = 2\nn_s = 2\n[preprocess]\nsize = [32, 32]\n"
                   "[train]\nepochs = 1\nbatch_size = 4\nval_fraction = 0.0\n")
    spec = tmp_path / "curve.toml"
    spec.write_text('sizes = [1, 2]\nrepetitions = 1\nframeworks = ["measures"]\n'
                    f'pretrain = "{pre.as_posix()}"\nbootstrap = 200\n')
    out = tmp_path / "run"
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # the pre-training must take the experiment's --threads 1
    try:
        invoke("experiment", "--spec", str(spec), "--out", str(out), "--images",
               str(phantoms / "images"), "--table", str(phantoms / "labels.csv"), "--labels",
               str(phantoms / "labels"), "--threads", "1", "--no-progress")
    finally:
        torch.set_num_threads(before)
    results = [json.loads(p.read_text()) for p in (out / "results").glob("*.json")]
    fitted = [ids for ids, _ in measures_fits]
    assert len(results) == 2 and len(fitted) == 2
    test_ids = set(results[0]["test_ids"])
    assert all(not ids & test_ids for ids in fitted)  # no test case reaches model selection
    info = json.loads((out / "pretrain" / "rep01" / "seg-run" / "run.json").read_text())
    assert info["runtime"]["threads"] == 1
    trained = {Path(row["path"]).name.split(".")[0] for row in info["data"]}
    assert trained and not {t.split("_")[0] for t in trained} & test_ids
