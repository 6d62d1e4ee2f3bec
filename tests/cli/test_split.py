"""``segfew split``: stratified, group-aware train and test tables with a seed."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from typer.testing import CliRunner

from segfew.cli import app

runner = CliRunner()


def _table(path: Path) -> Path:
    # 3 classes × 4 patients, two scans each; ClinicaDL columns (participant, session).
    lines = ["participant_id\tsession_id\tdiagnosis\tage"]
    for k, diagnosis in enumerate(("AD", "CN", "MCI")):
        for p in range(4):
            for session in ("M00", "M12"):
                lines.append(f"sub-{k}{p}\tses-{session}\t{diagnosis}\t{60 + p}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def _split(table: Path, out: Path, *flags: str) -> tuple[list[dict[str, str]], ...]:
    result = runner.invoke(app, ["split", "--table", str(table), "--out", str(out), *flags])
    assert result.exit_code == 0, result.output
    return _rows(out / "train.tsv"), _rows(out / "test.tsv")


def test_split_is_stratified_group_aware_and_seeded(tmp_path: Path) -> None:
    table = _table(tmp_path / "participants.tsv")
    train, test = _split(table, tmp_path / "a", "--test-per-class", "1", "--seed", "3")
    assert len(train) + len(test) == 24
    assert list(test[0]) == ["participant_id", "session_id", "diagnosis", "age"]  # same columns
    for diagnosis in ("AD", "CN", "MCI"):  # one patient (both sessions) per class in test
        assert len({r["participant_id"] for r in test if r["diagnosis"] == diagnosis}) == 1
        assert sum(r["diagnosis"] == diagnosis for r in test) == 2
    assert not {r["participant_id"] for r in train} & {r["participant_id"] for r in test}
    again = _split(table, tmp_path / "b", "--test-per-class", "1", "--seed", "3")
    assert again == (train, test)
    other = {_split(table, tmp_path / f"s{seed}", "--test-per-class", "1", "--seed", str(seed))
             [1][0]["participant_id"] for seed in range(6)}
    assert len(other) > 1  # the seed chooses the patients
    info = json.loads((tmp_path / "a" / "run.json").read_text())
    assert info["spec"]["seed"] == 3 and info["data"][0]["path"] == str(table)


def test_split_by_fraction_and_its_errors(tmp_path: Path) -> None:
    table = _table(tmp_path / "participants.tsv")
    train, test = _split(table, tmp_path / "f", "--test-fraction", "0.5")
    assert len(test) == 12 and len(train) == 12
    result = runner.invoke(app, ["split", "--table", str(table), "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "--test-per-class" in result.output
    result = runner.invoke(app, ["split", "--table", str(table), "--out", str(tmp_path / "y"),
                                 "--test-per-class", "4"])
    assert result.exit_code == 2 and "no training case is left" in result.output
    assert not (tmp_path / "y" / "train.tsv").exists()
