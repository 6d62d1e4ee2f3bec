"""A table's header names each column once: two columns whose names are equal once
surrounding spaces and case are set aside are refused by every command that reads a table,
naming the table and both columns (before, the last of them was read silently)."""

from __future__ import annotations

from pathlib import Path

import pytest

from segfew.data import find_classification_cases, read_table, split_table, table_ids
from segfew.data.table_rows import read_table_rows
from segfew.errors import DataError
from tests.conftest import invoke, make_classifier, ramp, save_nifti

#: (header, what the refusal says): a name twice, with a trailing space, id and ID, two more
HEADERS = [
    ("id,label,label", "columns 2 and 3 are both named 'label'"),
    ("id,label,label ", "columns 2 and 3 ('label' and 'label ')"),
    ("id,label,ID", "columns 1 and 3 ('id' and 'ID')"),
    ("id\tLabel\tlabel", "columns 2 and 3 ('Label' and 'label')"),
    ("id,label,age,AGE ", "columns 3 and 4 ('age' and 'AGE ')"),  # a column segfew never reads
]


def _table(folder: Path, header: str, rows: int = 4) -> Path:
    """A table of ``header`` whose rows name images case0…; the images are written."""
    sep = "\t" if "\t" in header else ","
    width = len(header.split(sep))
    lines = [header]
    for i in range(rows):
        save_nifti(folder / f"case{i}.nii.gz", ramp((16, 16), base=i))
        values = [f"case{i}", "a" if i % 2 else "b"] + [f"case{(i + 1) % rows}"] * (width - 2)
        lines.append(sep.join(values))
    path = folder / ("t.tsv" if sep == "\t" else "t.csv")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(("header", "said"), HEADERS)
def test_every_table_reader_refuses_two_columns_of_one_name(tmp_path: Path, header: str,
                                                            said: str) -> None:
    table = _table(tmp_path, header)
    for read in (lambda: read_table_rows(table),
                 lambda: read_table(table, tmp_path),
                 lambda: find_classification_cases(tmp_path, table),
                 lambda: table_ids(table),
                 lambda: split_table(table, tmp_path / "split", test_per_class=1)):
        with pytest.raises(DataError, match="rename one") as err:
            read()
        assert said in str(err.value) and err.value.path == table
    assert not (tmp_path / "split").exists()


@pytest.mark.parametrize(("header", "said"), HEADERS[:3])
def test_split_and_evaluate_commands_refuse_it_in_one_line(tmp_path: Path, header: str,
                                                           said: str) -> None:
    table = _table(tmp_path, header)
    out = invoke("split", "--table", str(table), "--test-per-class", "1", "--out",
                 str(tmp_path / "split"), expect=2)
    assert said in out and str(table) in out and not (tmp_path / "split").exists()
    model = make_classifier(tmp_path / "clf.pt")
    out = invoke("evaluate", "--model", str(model), "--table", str(table), "--images",
                 str(tmp_path), "--out", str(tmp_path / "eval"), expect=2)
    assert said in out and str(table) in out and not (tmp_path / "eval").exists()


def test_empty_trailing_column_names_are_no_duplicates(tmp_path: Path) -> None:
    """A spreadsheet's trailing separators (``id,label,,``) name no column."""
    table = tmp_path / "t.csv"
    table.write_text("id,label,,\ncase0,a,,\ncase1,b,,\n", encoding="utf-8")
    for i in range(2):
        save_nifti(tmp_path / f"case{i}.nii.gz", ramp((16, 16), base=i))
    assert [c.target for c in read_table(table, tmp_path)] == ["a", "b"]


def test_a_row_with_more_values_than_columns_is_said_naming_the_row(tmp_path: Path) -> None:
    table = tmp_path / "t.csv"
    table.write_text("id,label\ncase0,a\ncase1,b,63,5\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"row 3 has 4 values but the header names 2") as err:
        read_table_rows(table)
    assert err.value.path == table
