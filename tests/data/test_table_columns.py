"""Tables as the commands need them: no class column for pretrain and label, and
--label-column (or [data] label_column) wherever a table is read."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from typer.testing import CliRunner

from segfew.cli import app
from tests.conftest import invoke
from tests.jobs.conftest import TINY_PRETRAIN

runner = CliRunner()


def _write(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([header, *rows])
    return path


def _phantom_ids(phantoms: Path) -> list[dict[str, str]]:
    with (phantoms / "labels.csv").open(encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_pretrain_takes_a_table_of_ids_groups_and_no_class(phantoms: Path,
                                                           tmp_path: Path) -> None:
    # the LGG table's shape: id, grade, patient, histology — no column named like a class
    rows = [[r["id"], "G2", r["group"], "astro"] for r in _phantom_ids(phantoms)][:6]
    table = _write(tmp_path / "pool.csv", ["id", "grade", "patient", "histology"], rows)
    out = tmp_path / "seg.pt"
    invoke("pretrain", "--images", str(phantoms / "images"), "--labels",
           str(phantoms / "labels"), "--table", str(table), "--out", str(out), *TINY_PRETRAIN,
           "--epochs", "1")
    assert out.exists()
    from segfew.modelfile import read_model_file

    meta, _ = read_model_file(out)
    assert 6 <= len(meta.metrics["training_data"]) <= 13  # the 6 cases of the table, not 12


def test_label_takes_a_table_of_paths_only(phantoms: Path, tmp_path: Path) -> None:
    rows = [[f"{r['id']}.nii.gz"] for r in _phantom_ids(phantoms)][:3]  # relative to --images
    table = _write(tmp_path / "paths.csv", ["path"], rows)
    invoke("label", "--images", str(phantoms / "images"), "--table", str(table), "--out",
           str(tmp_path / "lab"), "--k", "2", "--no-progress")
    assert len(list((tmp_path / "lab").glob("*_seg.nii.gz"))) == 3


def test_two_class_columns_need_label_column_on_every_command(phantoms: Path,
                                                               tmp_path: Path) -> None:
    from segfew.data import read_table

    ids = _phantom_ids(phantoms)
    rows = [[r["id"], r["label"], "x" if k % 2 else "y", r["group"]]
            for k, r in enumerate(ids)]
    table = _write(tmp_path / "two.csv", ["id", "diagnosis", "label", "group"], rows)
    args = ["train-classifier", "--images", str(phantoms / "images"), "--table", str(table),
            "--framework", "scratch", "--size", "32", "--epochs", "1", "--no-progress",
            "--no-cache"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "a.pt")])
    assert result.exit_code == 2
    assert "several class columns (diagnosis, label)" in result.output
    assert "--label-column" in result.output
    invoke(*args, "--out", str(tmp_path / "b.pt"), "--label-column", "diagnosis")
    from segfew.modelfile import read_model_file

    assert read_model_file(tmp_path / "b.pt")[0].classes == sorted({r["label"] for r in ids})
    # split and the spec key of pretrain read the same way
    result = runner.invoke(app, ["split", "--table", str(table), "--test-per-class", "1",
                                 "--out", str(tmp_path / "s")])
    assert result.exit_code == 2 and "--label-column" in result.output
    invoke("split", "--table", str(table), "--test-per-class", "1", "--label-column", "label",
           "--out", str(tmp_path / "s2"))
    cases = read_table(table, phantoms / "images", label_column="label")
    assert {c.target for c in cases} == {"x", "y"}


def test_pretrain_spec_label_column_is_used_not_ignored(phantoms: Path, tmp_path: Path) -> None:
    ids = _phantom_ids(phantoms)
    table = _write(tmp_path / "t.csv", ["id", "class", "diagnosis"],
                   [[r["id"], "a", "b"] for r in ids][:6])
    spec = tmp_path / "pretrain.toml"
    spec.write_text(f'out = "{tmp_path / "seg.pt"}"\n[data]\nimages = "{phantoms / "images"}"\n'
                    f'labels = "{phantoms / "labels"}"\ntable = "{table}"\n'
                    'label_column = "nosuch"\n', encoding="utf-8")
    result = runner.invoke(app, ["pretrain", "--spec", str(spec), *TINY_PRETRAIN])
    assert result.exit_code == 2 and "no column 'nosuch'" in result.output, result.output


@pytest.mark.parametrize("command", ["pretrain", "label", "experiment", "inspect", "evaluate",
                                     "train-classifier", "split"])
def test_every_command_that_reads_a_table_has_label_column(command: str) -> None:
    assert "--label-column" in invoke(command, "--help")


@pytest.mark.realdata
def test_the_lgg_table_needs_no_class_for_pretraining_and_names_one_for_training() -> None:
    from segfew.data import find_cases, read_table
    from segfew.errors import DataError
    from tests.conftest import real_data

    lgg = real_data("lgg")
    cases = find_cases(lgg / "images", lgg / "labels.csv")  # id, grade, patient, histology
    assert cases and all(c.target is None for c in cases)
    with pytest.raises(DataError, match="--label-column"):
        read_table(lgg / "labels.csv", lgg / "images")
    graded = read_table(lgg / "labels.csv", lgg / "images", label_column="grade")
    assert {c.target for c in graded} >= {"G2", "G3"}


def test_inspect_takes_a_table_of_ids_and_still_checks_a_class_column(phantoms: Path,
                                                                      tmp_path: Path) -> None:
    from segfew.data.inspect import inspect_dataset

    ids = _phantom_ids(phantoms)
    only_ids = _write(tmp_path / "ids.csv", ["id", "patient"], [[r["id"], r["group"]]
                                                                for r in ids])
    report = inspect_dataset(phantoms / "images", table=only_ids)
    assert not report.fatal and report.n_cases == len(ids) and report.class_counts == {}
    gap = _write(tmp_path / "gap.csv", ["id", "label"], [[r["id"], "" if k == 0 else r["label"]]
                                                         for k, r in enumerate(ids)])
    report = inspect_dataset(phantoms / "images", table=gap)
    assert any("has no 'label'" in p for p in report.fatal_problems), report.problems
