"""A training set's classes that look like a slip: names differing only in case or spaces
('Oval' and 'oval') are refused, as evaluate refuses such a truth class; a class of one
case among larger classes is said. A split that cannot take N per class names its table."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import pytest

from segfew.data import Case, split_table
from segfew.data.splits import check_class_names
from segfew.errors import DataError, DataWarning
from tests.conftest import invoke


def _cases(**per_class: int) -> list[Case]:
    return [Case(f"{name}{i}", (), target=name.replace("_", " "))
            for name, n in per_class.items() for i in range(n)]


def _said(cases: list[Case], where: str = "t.csv") -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_class_names(cases, where)
    found = [w.message for w in caught if isinstance(w.message, DataWarning)]
    assert all(str(m.path) == where for m in found)
    return [str(m) for m in found]


def _refused(cases: list[Case]) -> str:
    with pytest.raises(DataError) as err:
        check_class_names(cases, "t.csv")
    assert str(err.value.path) == "t.csv"
    return err.value.message


def test_names_differing_only_in_case_or_spaces_are_refused_with_their_counts() -> None:
    """A grade typed 'g2' among 'G2' trained a 3-class model (exit 0, a warning): the
    one-case class turned off the choice of classifier and its estimate, and moved the
    low_confidence threshold. evaluate refused the same slip."""
    cases = [*_cases(normal=8, oval=7, Oval=1),
             Case("x", (), target="Normal "), Case("y", (), target="Normal ")]
    said = _refused(cases)
    assert "'Normal ' (2 cases) and 'normal' (8 cases)" in said
    assert "'Oval' (1 case) and 'oval' (7 cases)" in said
    assert said.endswith("write each class one way (classes that are truly different need "
                         "names that differ by more)")


def test_a_number_written_two_ways_is_refused_like_case() -> None:
    """A spreadsheet's ``1`` and ``1.0`` (or ``01``) trained as two classes without a word."""
    said = _refused([*_cases(a=0), *(Case(f"n{i}", (), target="1") for i in range(3)),
                     *(Case(f"m{i}", (), target="1.0") for i in range(2)),
                     *(Case(f"k{i}", (), target="2") for i in range(3))])
    assert "'1' (3 cases) and '1.0' (2 cases)" in said
    assert _said([Case("a", (), target="1.5"), Case("b", (), target="15")]) == []


def test_a_class_typed_composed_and_decomposed_is_one_class(tmp_path: Path) -> None:
    """'décalé' in NFC and NFD (a macOS folder, a pasted name) were two classes, shown alike."""
    import unicodedata

    from segfew.data import read_table
    from tests.conftest import ramp, save_nifti

    lines = ["id,label"]
    for i in range(4):
        save_nifti(tmp_path / f"s{i}.nii.gz", ramp((16, 16), base=i))
        lines.append(f"s{i},{unicodedata.normalize('NFD' if i % 2 else 'NFC', 'décalé')}")
    table = tmp_path / "t.csv"
    table.write_text("\n".join(lines) + "\n", encoding="utf-8")
    targets = {c.target for c in read_table(table, tmp_path)}
    assert targets == {unicodedata.normalize("NFC", "décalé")}


def test_inspect_notes_class_names_written_two_ways(phantoms: Path, tmp_path: Path) -> None:
    with (phantoms / "labels.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for row in rows[::2]:
        row["label"] = row["label"].capitalize()
    table = tmp_path / "case.csv"
    with table.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "label", "group"])
        writer.writeheader()
        writer.writerows(rows)
    out = " ".join(invoke("inspect", "--images", str(phantoms / "images"), "--table",
                          str(table), "--no-progress", expect=1).split())
    assert "class names written two ways" in out and "fatal problems found" in out


@pytest.mark.parametrize(("counts", "lone"), [
    ({"normal": 8, "oval": 7, "ovl": 1}, "class 'ovl' has one labelled case while 'normal' has 8"),
    ({"a": 3, "b": 1, "c": 1}, "classes 'b', 'c' have one labelled case while 'a' has 3"),
])
def test_a_class_of_one_case_among_larger_ones_is_said(counts: dict[str, int],
                                                       lone: str) -> None:
    said = _said(_cases(**counts))
    assert len(said) == 1 and lone in said[0]


@pytest.mark.parametrize("counts", [
    {"normal": 1, "oval": 1, "shifted": 1},  # a few-shot draw: one case of every class
    {"normal": 2, "oval": 1},  # no class large enough for one case to stand out
    {"normal": 5, "oval": 4},
])
def test_nothing_is_said_of_ordinary_class_counts(counts: dict[str, int]) -> None:
    assert _said(_cases(**counts)) == []


def test_train_classifier_refuses_a_spelling_and_says_a_lone_class(phantoms: Path,
                                                                    tmp_path: Path) -> None:
    """An 'Oval'/'oval' table is refused naming the table, nothing written; a one-case typo
    is said."""
    with (phantoms / "labels.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    rows[4]["label"], rows[0]["label"] = "Oval", "nromal"
    table = tmp_path / "typo.csv"
    with table.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "label", "group"])
        writer.writeheader()
        writer.writerows(rows)
    run = ("--images", str(phantoms / "images"), "--framework", "scratch", "--size", "32",
           "--epochs", "1", "--batch-size", "4", "--no-progress", "--no-cache")
    out = invoke("train-classifier", "--table", str(table), *run, "--out",
                 str(tmp_path / "clf.pt"), expect=2)
    lines = " ".join(out.split())
    assert f"error: {table}: class names written two ways" in lines
    assert "'Oval' (1 case) and 'oval' (3 cases)" in lines
    assert not (tmp_path / "clf.pt").exists() and not (tmp_path / "clf-run").exists()
    rows[4]["label"] = "oval"
    with table.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "label", "group"])
        writer.writeheader()
        writer.writerows(rows)
    lines = " ".join(invoke("train-classifier", "--table", str(table), *run, "--out",
                            str(tmp_path / "clf.pt")).split())
    assert f"{table}: class 'nromal' has one labelled case while 'oval' has 4" in lines


def test_split_that_cannot_take_n_per_class_names_the_table(phantoms: Path,
                                                            tmp_path: Path) -> None:
    table = phantoms / "labels.csv"
    with pytest.raises(DataError, match=r"class 'normal' has 4 groups .*cannot take 5") as err:
        split_table(table, tmp_path / "k5", train_per_class=5)
    assert err.value.path == table and not (tmp_path / "k5").exists()
    out = invoke("split", "--table", str(table), "--test-per-class", "9", "--out",
                 str(tmp_path / "t9"), expect=2)
    assert f"{table}: class 'normal' has 4 groups" in " ".join(out.split())


def test_experiment_at_size_one_says_neither_per_task(phantoms: Path, tmp_path: Path) -> None:
    """An experiment's training sets hold one case per class on purpose: no task says it;
    a spelling slip in the table is refused once, for the whole table, before any task."""
    with (phantoms / "labels.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for row in rows[4:6]:
        row["label"] = "Oval"  # two 'Oval', two 'oval': each a class of two patients
    table = tmp_path / "labels.csv"
    with table.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "label", "group"])
        writer.writeheader()
        writer.writerows(rows)
    spec = tmp_path / "curve.toml"
    spec.write_text('sizes = [1]\nrepetitions = 2\nframeworks = ["scratch"]\nbootstrap = 0\n'
                    "[preprocess]\nsize = [32, 32]\n"
                    "[train]\nepochs = 1\nbatch_size = 4\nval_fraction = 0.0\n")
    run = ("--spec", str(spec), "--out", str(tmp_path / "run"), "--images",
           str(phantoms / "images"), "--no-progress")
    out = invoke("experiment", *run, "--table", str(table), expect=2)
    assert out.count("written two ways") == 1 and "[1/" not in out
    assert not (tmp_path / "run" / "results").exists()
    out = invoke("experiment", *run, "--table", str(phantoms / "labels.csv"))
    assert "2 of 2 finished" in out and "one labelled case" not in out


def test_split_refuses_a_class_written_two_ways(tmp_path: Path) -> None:
    """split drew 'Normal' and 'normal' as two classes (each its own test quota) and wrote
    tables that training then refused."""
    table = tmp_path / "t.csv"
    table.write_text("id,label\n" + "".join(f"c{i},{'Normal' if i < 3 else 'normal'}\n"
                                            for i in range(10))
                     + "".join(f"o{i},oval\n" for i in range(10)))
    with pytest.raises(DataError, match=r"'Normal' \(3 cases\) and 'normal' \(7 cases\)"):
        split_table(table, tmp_path / "sp", test_per_class=2)
    assert not (tmp_path / "sp").exists()
