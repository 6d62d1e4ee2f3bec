"""``segfew split``: stratified, group-aware train and test tables with a seed."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
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


def _scans(folder: Path, ids: list[str], copy_of: dict[str, str]) -> None:
    """One tiny NIfTI per id; ``copy_of[a] = b``: a's file is a byte copy of b's."""
    import shutil

    import numpy as np

    from tests.conftest import ramp, save_nifti

    for k, cid in enumerate(ids):
        if cid not in copy_of:
            save_nifti(folder / f"{cid}.nii.gz", ramp((4, 4, 3), np.int16, base=100 * k))
    for cid, original in copy_of.items():
        shutil.copyfile(folder / f"{original}.nii.gz", folder / f"{cid}.nii.gz")


def test_byte_identical_scans_under_two_patients_land_on_one_side(tmp_path: Path) -> None:
    # two patients (different ids, different patient column values) holding one scan
    ids = [f"c{i}" for i in range(12)]
    _scans(tmp_path / "images", ids, {"c7": "c2"})
    lines = ["id\tpatient\tlabel"] + [f"{cid}\tp{i}\t{'AB'[i % 2]}" for i, cid in enumerate(ids)]
    lines[8] = "c7\tp7\tA"  # c7 (a copy of c2, class A) filed under its own patient
    table = tmp_path / "t.tsv"
    table.write_text("\n".join(lines) + "\n", encoding="utf-8")
    for seed in range(6):
        out = tmp_path / f"s{seed}"
        result = runner.invoke(app, ["split", "--table", str(table), "--images",
                                     str(tmp_path / "images"), "--test-per-class", "2",
                                     "--seed", str(seed), "--out", str(out)])
        assert result.exit_code == 0, result.output
        train, test = _rows(out / "train.tsv"), _rows(out / "test.tsv")
        sides = {r["id"]: side for side, rows in (("train", train), ("test", test))
                 for r in rows}
        assert sides["c2"] == sides["c7"], seed
    assert "p2, p7 hold the same scan" in " ".join(result.output.split())
    info = json.loads((out / "run.json").read_text())
    assert info["grouping"]["identical_scans"] == [["p2", "p7"]]
    assert info["grouping"]["group_column"] == "patient"


def test_a_split_of_a_split_finds_the_scans_through_the_parents_run_json(
        tmp_path: Path) -> None:
    ids = [f"c{i}" for i in range(12)]
    _scans(tmp_path / "images", ids, {"c7": "c2"})
    lines = ["id\tpatient\tlabel"] + [f"{cid}\tp{i}\t{'AB'[i % 2]}" for i, cid in enumerate(ids)]
    lines[8] = "c7\tp7\tA"
    table = tmp_path / "t.tsv"
    table.write_text("\n".join(lines) + "\n", encoding="utf-8")
    _split(table, tmp_path / "s1", "--images", str(tmp_path / "images"), "--test-per-class", "1")
    n_train = len(_rows(tmp_path / "s1" / "train.tsv"))
    result = runner.invoke(app, ["split", "--table", str(tmp_path / "s1" / "train.tsv"),
                                 "--train-per-class", "2", "--out", str(tmp_path / "k2")])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert f"{n_train} of {n_train} rows' scans compared" in said and "give --images" not in said
    info = json.loads((tmp_path / "k2" / "run.json").read_text())
    assert info["grouping"]["images"] == str(tmp_path / "images")
    (tmp_path / "s1" / "run.json").unlink()  # no parent record: said, not silent
    result = runner.invoke(app, ["split", "--table", str(tmp_path / "s1" / "train.tsv"),
                                 "--train-per-class", "2", "--out", str(tmp_path / "k2b")])
    assert result.exit_code == 0 and "give --images" in " ".join(result.output.split())


def test_a_slice_table_without_group_column_says_each_row_is_a_patient(tmp_path: Path) -> None:
    lines = ["file,class"] + [f"slices/{k}.png,{'ab'[k % 2]}" for k in range(8)]
    table = tmp_path / "slices.csv"
    table.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = runner.invoke(app, ["split", "--table", str(table), "--test-per-class", "1",
                                 "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    line = " ".join(result.output.split())
    assert "each row is taken as its own patient" in line and "--group-column" in line
    assert "no image file found" in line  # copies could not be looked for: said
    # a table of patients (the id column is the patient) is no such case
    acdc = tmp_path / "acdc.csv"
    acdc.write_text("patient,diagnosis\n" + "".join(f"p{k},{'ab'[k % 2]}\n" for k in range(6)),
                    encoding="utf-8")
    result = runner.invoke(app, ["split", "--table", str(acdc), "--test-per-class", "1",
                                 "--out", str(tmp_path / "a")])
    assert result.exit_code == 0 and "own patient" not in result.output, result.output
    grouped = runner.invoke(app, ["split", "--table", str(table), "--test-per-class", "1",
                                  "--group-column", "class", "--out", str(tmp_path / "g")])
    assert grouped.exit_code == 2  # one group per class: no training rows left


def test_train_per_class_draws_nested_group_aware_sets(tmp_path: Path) -> None:
    table = _table(tmp_path / "participants.tsv")  # 3 classes × 4 patients × 2 sessions
    drawn: dict[int, set[str]] = {}
    for n in (1, 2, 3):
        train, rest = _split_per_class(table, tmp_path / f"n{n}", n, seed=4)
        for diagnosis in ("AD", "CN", "MCI"):
            assert len({r["participant_id"] for r in train if r["diagnosis"] == diagnosis}) == n
        assert len(train) == 6 * n and len(train) + len(rest) == 24  # both sessions
        assert not {r["participant_id"] for r in train} & {r["participant_id"] for r in rest}
        drawn[n] = {r["participant_id"] for r in train}
    assert drawn[1] < drawn[2] < drawn[3]  # one seed: nested
    assert _split_per_class(table, tmp_path / "again", 2, seed=4)[0] == \
        _rows(tmp_path / "n2" / "train.tsv")
    result = runner.invoke(app, ["split", "--table", str(table), "--train-per-class", "5",
                                 "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "cannot take 5 per class" in result.output


def _split_per_class(table: Path, out: Path, n: int, seed: int
                     ) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    result = runner.invoke(app, ["split", "--table", str(table), "--train-per-class", str(n),
                                 "--seed", str(seed), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return _rows(out / "train.tsv"), _rows(out / "rest.tsv")


@pytest.mark.realdata
def test_acdc_copies_074_and_076_stay_together(tmp_path: Path) -> None:
    from tests.conftest import real_data

    acdc = real_data("acdc")
    for seed in range(3):
        train, test = _split(acdc / "labels.csv", tmp_path / f"s{seed}", "--test-per-class",
                             "4", "--seed", str(seed))
        side = {r["patient"]: "test" for r in test} | {r["patient"]: "train" for r in train}
        assert side["patient074"] == side["patient076"]
