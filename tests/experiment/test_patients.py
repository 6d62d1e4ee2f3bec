"""An experiment's intervals and counts are over test patients, not cases (slices, frames)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from segfew.data import Case
from segfew.experiment.protocol import Task, run_experiment
from segfew.experiment.report import pooled_accuracy, write_report
from segfew.metrics import accuracy_summary, cases_from_confusion, classification_metrics
from tests.experiment.test_protocol import CLASSES, make_spec

SLICES = 6


def slices(patients_per_class: int = 5, per_patient: int = SLICES) -> list[Case]:
    """``per_patient`` slices of each patient, the patient in the group column."""
    return [Case(id=f"{c}{p}_z{z}", images=(Path(f"{c}{p}_z{z}.nii.gz"),), target=c,
                 group=f"{c}{p}")
            for c in CLASSES for p in range(patients_per_class) for z in range(per_patient)]


def by_patient(task: Task, train: list[Case], test: list[Case], work: Path) -> dict[str, Any]:
    """Right or wrong on every slice of a patient together (odd patient numbers wrong), as a
    classifier is on one patient's similar slices; scored over cases, as a step may do."""
    y_true = [CLASSES.index(str(c.target)) for c in test]
    y_pred = [t if int(c.id.split("_z")[0][-1]) % 2 == 0 else (t + 1) % 3
              for c, t in zip(test, y_true, strict=True)]
    metrics = classification_metrics(y_true, y_pred, None, CLASSES, bootstrap=200, seed=7)
    return {"metrics": metrics,
            "predictions": [{"id": c.id, "target": c.target, "predicted": CLASSES[p],
                             "status": "ok"} for c, p in zip(test, y_pred, strict=True)]}


def _spec(**kw: Any) -> Any:
    return make_spec(**{"frameworks": ["manual"], "sizes": [1, 2], "bootstrap": 200, **kw})


def _results(out: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((out / "results").glob("*.json"))]


def test_each_task_records_its_test_patients_and_resamples_them(tmp_path: Path) -> None:
    out = tmp_path / "run"
    run_experiment(_spec(), out, by_patient, cases=slices())
    for r in _results(out):
        groups = [i.rsplit("_z", 1)[0] for i in r["test_ids"]]
        assert r["test_groups"] == groups
        assert r["test_targets"] == [g[:3] for g in groups]
        m = r["metrics"]
        assert m["n"] == len(groups) == SLICES * m["n_groups"]
        y_true = [CLASSES.index(t) for t in r["test_targets"]]
        y_pred = [CLASSES.index(p["predicted"]) for p in r["predictions"]]
        grouped = classification_metrics(y_true, y_pred, None, CLASSES, bootstrap=200, seed=7,
                                         groups=groups)
        assert m["ci"]["accuracy"] == grouped["ci"]["accuracy"]
        assert m["ci"]["kappa"] == grouped["ci"]["kappa"]
        assert m["distinguishable_from_chance"] == grouped["distinguishable_from_chance"]


def test_report_counts_and_resamples_patients_of_a_slice_table(tmp_path: Path) -> None:
    out = tmp_path / "run"
    run_experiment(_spec(), out, by_patient, cases=slices())
    results = _results(out)
    here = [r for r in results if r["size"] == 2]
    point = pooled_accuracy(here, CLASSES)
    patients = {g for r in here for g in r["test_groups"]}
    assert point["units"] == len(patients) < point["n"]
    assert point["units_per_repetition"] == 3 * 3  # 5 per class, 2 trained on
    # the pooled interval draws patients, with their slices of both repetitions
    cases = [(CLASSES.index(t), CLASSES.index(p["predicted"]), g) for r in here
             for t, p, g in zip(r["test_targets"], r["predictions"], r["test_groups"],
                                strict=True)]
    old = accuracy_summary([t == p for t, p, _ in cases], [t for t, _, _ in cases])
    assert point["high"] - point["low"] > 1.5 * (old["ci"][1] - old["ci"][0])

    text = write_report([out])[0].read_text()
    assert f"each on {9 * SLICES} cases of 9 test patients per repetition, 2 repetitions " \
           f"pooled ({len(patients)} distinct patients)" in text
    assert "that resample patients: a patient is drawn as one" in text
    assert re.search(rf"^\| manual \| 2 \| 2 \| .* \| {len(patients)} \| \d\.\d{{3}} "
                     rf"\[\d\.\d{{3}}, \d\.\d{{3}}\].* \| {2 * 9 * SLICES} \|$", text,
                     flags=re.M), text


def test_a_case_tested_in_several_repetitions_is_drawn_once(tmp_path: Path) -> None:
    """One volume per patient, no group column: a case in both repetitions' test sets is one
    unit with its two predictions, not two independent cases."""
    cases = [Case(id=c.id, images=c.images, target=c.target) for c in slices(7, 1)]
    out = tmp_path / "run"
    run_experiment(_spec(), out, by_patient, cases=cases)
    here = [r for r in _results(out) if r["size"] == 1]
    ids = [i for r in here for i in r["test_ids"]]
    assert len(set(ids)) < len(ids)  # some case is in both test sets
    point = pooled_accuracy(here, CLASSES)
    assert (point["n"], point["units"]) == (len(ids), len(set(ids)))
    text = write_report([out])[0].read_text()
    assert f"each on 15 test cases per repetition, 2 repetitions pooled ({len(set(ids))} " \
           "distinct cases)" in text


def test_one_case_per_patient_in_one_repetition_keeps_the_figures(tmp_path: Path) -> None:
    """Every prediction its own patient: the pooled interval is the one over cases, as
    before."""
    out = tmp_path / "run"
    run_experiment(_spec(repetitions=1, sizes=[1]), out, by_patient, cases=slices(7, 1))
    results = _results(out)
    assert results[0]["metrics"]["n_groups"] == results[0]["metrics"]["n"] == 18
    point = pooled_accuracy(results, CLASSES)
    y_true, y_pred = cases_from_confusion(results[0]["metrics"]["confusion_matrix"])
    old = accuracy_summary(y_true == y_pred, y_true)
    assert point["units"] == point["n"] == 18
    assert [point["low"], point["high"]] == old["ci"]
    assert point["distinguishable_from_chance"] == old["distinguishable_from_chance"]


def test_results_of_an_older_segfew_report_cases(tmp_path: Path) -> None:
    out = tmp_path / "run"
    run_experiment(_spec(), out, by_patient, cases=slices())
    for path in (out / "results").glob("*.json"):  # as an older segfew wrote them
        r = json.loads(path.read_text())
        for key in ("test_groups", "test_targets"):
            r.pop(key, None)
        r["metrics"].pop("n_groups", None)
        path.write_text(json.dumps(r))
    text = write_report([out])[0].read_text()
    assert f"each on {9 * SLICES} test cases per repetition, 2 repetitions pooled." in text
    assert "resample the pooled test cases: this run folder records no patients" in text
    assert "test patients per repetition" not in text


@pytest.mark.parametrize(("names", "said", "unsaid"), [
    (["tumour_volume_vox_0", "tumour_area_vox_0"], "tumour volume", " at 0"),
    (["LV_volume_ml_frame01", "RV_volume_ml_frame02", "myocardium_volume_ml_frame01"],
     "at ED", "frame01"),
])
def test_the_reports_measurements_name_channels_as_a_reader_says_them(
        names: list[str], said: str, unsaid: str) -> None:
    """One image: no "tumour volume at 0"; two cine phases: ED and ES, not file names."""
    from segfew.experiment.report import measurement_blocks

    results = [{"top_measurements": [{"measurement": n, "importance": 0.5} for n in names],
                "measures_model": "forest"}]
    table = next(b for b in measurement_blocks(results) if b.kind == "table")
    text = " ".join(str(cell) for row in table.items for cell in row)
    assert said in text and unsaid not in text


@pytest.mark.parametrize("channels", [["frame01", "frame02"], None])
def test_the_reports_phases_follow_the_channels_not_the_importance_order(
        channels: list[str] | None) -> None:
    """The most important measurement at ES (frame02) made frame02 "ED" and frame01 "ES"
    in every row of the table."""
    from segfew.experiment.report import measurement_blocks

    names = ["myocardium_volume_vox_frame02", "LV_volume_vox_frame01", "RV_volume_vox_frame02"]
    results = [{"top_measurements": [{"measurement": n, "importance": w}
                                     for n, w in zip(names, (0.5, 0.3, 0.2), strict=True)],
                "measures_model": "forest"}]
    table = next(b for b in measurement_blocks(results, "patients", channels)
                 if b.kind == "table")
    rows = [str(row[0]) for row in table.items]
    assert rows == ["myocardium volume at ES (voxels)", "LV volume at ED (voxels)",
                    "RV volume at ES (voxels)"]
