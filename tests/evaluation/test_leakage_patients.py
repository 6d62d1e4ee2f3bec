"""The leakage check by patient: a classifier records the patients (the table's group column)
whose cases trained it, and evaluate treats another case of such a patient — another slice or
visit — as leakage, as it does a copied scan; a model file without that record is checked as
before."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch

from segfew.data import Case
from segfew.evaluation.leakage import training_groups
from tests.conftest import invoke


def test_the_training_patients_are_recorded_only_where_a_table_names_them() -> None:
    slices = [Case("P1_z3", (), group="P1"), Case("P1_z4", (), group="P1"),
              Case("P2_z1", (), group="P2")]
    assert training_groups(slices) == {"training_groups": ["P1", "P2"]}
    assert training_groups([Case("a", ()), Case("b", ())]) == {}  # no group column
    # an id column named like a patient's (ACDC's ``patient``): each case is its own
    assert training_groups([Case("patient001", (), group="patient001")]) == {}


def _tables(phantoms: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The phantoms as two slices of each of 6 patients (two per class): one slice of each
    trains, the other is evaluated — no scan shared, every patient shared."""
    rows = list(csv.DictReader((phantoms / "labels.csv").open()))
    by_class: dict[str, list[str]] = {}
    for row in rows:
        by_class.setdefault(row["label"], []).append(row["id"])
    train, test = [], []
    for label, ids in sorted(by_class.items()):
        for i, case in enumerate(sorted(ids)):
            (train if i % 2 == 0 else test).append((case, label, f"pt-{label}-{i // 2}"))
    paths = []
    for name, table in (("train", train), ("test", test)):
        path = tmp_path / f"{name}.csv"
        path.write_text("id,label,patient\n" + "".join(f"{a},{b},{c}\n" for a, b, c in table))
        paths.append(path)
    return paths[0], paths[1]


def test_evaluate_refuses_other_cases_of_the_training_patients(
        phantoms: Path, tmp_path: Path) -> None:
    from segfew.evaluation.leakage import find_leakage
    from segfew.modelfile import read_model_file

    masks = shutil.copytree(phantoms / "labels", tmp_path / "masks")
    (masks / "label_names.json").write_text(json.dumps(
        {"label_names": ["background", "wall", "cavity", "blob"]}))
    train, test = _tables(phantoms, tmp_path)
    clf = tmp_path / "clf.pt"
    invoke("train-classifier", "--table", str(train), "--images", str(phantoms / "images"),
           "--framework", "measures", "--masks", str(masks), "--out", str(clf),
           "--threads", "1", "--no-progress", "--no-cache")
    meta, _ = read_model_file(clf)
    patients = sorted({r["patient"] for r in csv.DictReader(train.open())})
    assert meta.metrics["training_groups"] == patients and len(patients) == 6
    rows = list(csv.DictReader(test.open()))
    for group in ("new-", None):  # other patients, or a table that names none: no leak
        cases = [Case(r["id"], (phantoms / "images" / f"{r['id']}.nii.gz",),
                      group=None if group is None else group + r["patient"]) for r in rows]
        check = find_leakage(clf, cases)
        assert check.checked and check.leaked == [] and check.patients == []

    ev = tmp_path / "ev"
    evaluate = ("evaluate", "--model", str(clf), "--images", str(phantoms / "images"),
                "--table", str(test), "--masks", str(masks), "--out", str(ev),
                "--bootstrap", "200", "--threads", "1", "--no-progress")
    refused = " ".join(invoke(*evaluate, expect=2).split())
    assert "other cases of 6 of the 6 evaluated patients trained the model (e.g. pt-" in refused
    assert "6 evaluated case(s) are theirs" in refused and "--allow-leakage" in refused
    assert "another cohort's, numbered alike" in refused  # the ids alone say it
    assert not ev.exists()
    said = " ".join(invoke(*evaluate, "--allow-leakage").split())
    assert "LEAKAGE: other cases of 6 of the 6 evaluated patients trained the model" in said
    leakage = json.loads((ev / "metrics.json").read_text())["leakage"]
    assert len(leakage["leaked"]) == 6 and leakage["patients"] == patients
    assert {r["leaked"] for r in csv.DictReader((ev / "predictions.csv").open())} == {"yes"}

    # a model file from before the record: checked by its scans as before, no new refusal
    payload = torch.load(clf, map_location="cpu", weights_only=True)
    old = json.loads(payload["metadata"])
    del old["metrics"]["training_groups"]
    payload["metadata"] = json.dumps(old)
    torch.save(payload, clf)
    shutil.rmtree(ev)
    said = " ".join(invoke(*evaluate).split())
    assert "no evaluated case trained" in said and "LEAKAGE" not in said


def test_patient_values_written_another_way_are_the_same_patient() -> None:
    """A spreadsheet drops leading zeros and a hand changes case: P007 is p7."""
    from segfew.data.case import patient_key

    assert patient_key("P007") == patient_key(" p7 ") == patient_key("P7")
    assert patient_key("0012") == patient_key("12") != patient_key("120")
    assert patient_key("TCGA_CS_4943") == patient_key("tcga_cs_4943")


def test_a_network_pretrained_on_a_tables_patients_records_them(
        phantoms: Path, tmp_path: Path) -> None:
    """``pretrain --table`` with a patient column records its patients; a classifier on that
    network is refused on other slices of them, the network named as what they trained."""
    from segfew.modelfile import read_model_file

    train, test = _tables(phantoms, tmp_path)
    tiny = ("--n-s", "2", "--size", "32", "--epochs", "1", "--threads", "1", "--no-progress",
            "--no-cache")
    seg = tmp_path / "seg.pt"
    invoke("pretrain", "--images", str(phantoms / "images"), "--labels",
           str(phantoms / "labels"), "--table", str(train), "--out", str(seg), *tiny)
    patients = sorted({r["patient"] for r in csv.DictReader(train.open())})
    assert read_model_file(seg)[0].metrics["training_groups"] == patients
    bare = tmp_path / "bare.pt"  # no table: file names are no patients
    invoke("pretrain", "--images", str(phantoms / "images"), "--labels",
           str(phantoms / "labels"), "--out", str(bare), *tiny)
    assert "training_groups" not in read_model_file(bare)[0].metrics

    ids_only = tmp_path / "ids.csv"  # the classifier's own table names no patient
    ids_only.write_text("".join(",".join(r[:2]) + "\n" for r in csv.reader(train.open())))
    clf = tmp_path / "clf.pt"
    invoke("train-classifier", "--table", str(ids_only), "--images", str(phantoms / "images"),
           "--framework", "measures", "--features", str(seg), "--out", str(clf),
           "--threads", "1", "--no-progress", "--no-cache")
    refused = " ".join(invoke(
        "evaluate", "--model", str(clf), "--images", str(phantoms / "images"), "--table",
        str(test), "--out", str(tmp_path / "ev"), "--bootstrap", "200", "--threads", "1",
        "--no-progress", expect=2).split())
    assert ("other cases of 6 of the 6 evaluated patients trained the segmentation network "
            "inside the classifier") in refused
    # an experiment's shared network: the same check of its test patients
    from segfew.errors import DataError
    from segfew.evaluation.leakage import check_leakage

    cases = [Case(r["id"], (phantoms / "images" / f"{r['id']}.nii.gz",), group=r["patient"])
             for r in csv.DictReader(test.open())]
    with pytest.raises(DataError, match="other cases of 6 of the 6 test patients trained"):
        check_leakage(seg, cases)
    # and the network's own Dice on them: its table's patients are compared too
    dice = " ".join(invoke(
        "evaluate", "--model", str(seg), "--images", str(phantoms / "images"), "--labels",
        str(phantoms / "labels"), "--table", str(test), "--out", str(tmp_path / "dice"),
        "--threads", "1", "--no-progress", expect=2).split())
    assert "other cases of 6 of the 6 evaluated patients trained the model" in dice


def test_a_network_recording_no_patients_says_they_were_not_looked_for(
        phantoms: Path, tmp_path: Path) -> None:
    """A pre-training table whose patient column segfew does not recognise records no
    patients: the verdict says other cases of them were not looked for (not a bare
    "passed"), and ``pretrain --group-column`` names the column."""
    from segfew.modelfile import read_model_file

    train, test = _tables(phantoms, tmp_path)
    pid = tmp_path / "pid.csv"
    pid.write_text(train.read_text().replace("id,label,patient", "id,label,pid", 1))
    tiny = ("--n-s", "2", "--size", "32", "--epochs", "1", "--threads", "1", "--no-progress",
            "--no-cache")
    images, labels = str(phantoms / "images"), str(phantoms / "labels")
    seg = tmp_path / "seg.pt"
    invoke("pretrain", "--images", images, "--labels", labels, "--table", str(pid), "--out",
           str(seg), *tiny)
    dice = ("evaluate", "--model", str(seg), "--images", images, "--labels", labels,
            "--table", str(test), "--threads", "1", "--no-progress")
    said = " ".join(invoke(*dice, "--out", str(tmp_path / "d1")).split())
    assert "no evaluated case trained the model as its scan" in said
    assert "could not be looked for: the model file records no patients" in said
    named = tmp_path / "named.pt"
    invoke("pretrain", "--images", images, "--labels", labels, "--table", str(pid),
           "--group-column", "pid", "--out", str(named), *tiny)
    assert read_model_file(named)[0].metrics["training_groups"]
    dice = tuple(str(named) if a == str(seg) else a for a in dice)
    refused = " ".join(invoke(*dice, "--out", str(tmp_path / "d2"), expect=2).split())
    assert "other cases of 6 of the 6 evaluated patients trained the model" in refused
