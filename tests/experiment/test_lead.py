"""The report's first sentence counts what its results table counts, finished or not."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from segfew.experiment.protocol import run_experiment
from segfew.experiment.report import _summary, write_report
from tests.experiment.test_patients import _spec, by_patient, slices


def _rows(text: str) -> dict[int, tuple[int, int]]:
    """``{size: (repetitions, distinct test patients)}`` from the results table."""
    rows = re.findall(r"^\| manual \| (\d+) \| (\d+) \| (?:[^|]*\|){4} (\d+) \|", text, re.M)
    return {int(size): (int(reps), int(units)) for size, reps, units in rows}


def test_an_unfinished_experiment_leads_with_each_sizes_own_counts(tmp_path: Path) -> None:
    """A shard still running: one result file missing. The lead says so first, and gives
    each size's repetitions and patients as the table below it does."""
    out = tmp_path / "run"
    run_experiment(_spec(), out, by_patient, cases=slices())
    (out / "results" / "size001_rep02_manual.json").unlink()
    text = write_report([out])[0].read_text()
    lead = next(line for line in text.splitlines() if line.startswith("In short"))
    assert lead.startswith("In short, so far (3 of 4 tasks finished, 1 not run yet): "), lead
    rows = _rows(text)
    assert rows[1][0] == 1 and rows[2][0] == 2, rows
    assert f"at 1 per class, 1 repetition on {9 * 6} cases of {rows[1][1]} test patients;" \
           in lead, lead
    assert re.search(rf"at 2 per class, 2 repetitions on {9 * 6} cases of 9 test patients "
                     rf"each, pooled \({rows[2][1]} distinct patients\)\.$", lead), lead
    assert "2 repetitions pooled" not in lead


def _point(units: int, reps: int = 2, per_rep: int = 9) -> dict[str, Any]:
    return {"accuracy": 0.7, "low": 0.5, "high": 0.8, "n": reps * per_rep,
            "repetitions": reps, "per_repetition": per_rep, "units": units,
            "units_per_repetition": per_rep, "chance_rate": 0.34,
            "distinguishable_from_chance": True}


def test_the_lead_gives_each_sizes_distinct_patients_where_they_differ() -> None:
    text = _summary({("manual", 1): _point(12), ("manual", 2): _point(14)}, [1, 2],
                    "patients", 2)
    assert text.endswith("— the counts differ by size: at 1 per class, 2 repetitions on 9 "
                         "test patients each, pooled (12 distinct patients); at 2 per class, "
                         "2 repetitions on 9 test patients each, pooled (14 distinct "
                         "patients)."), text
    same = _summary({("manual", 1): _point(12), ("manual", 2): _point(12)}, [1, 2],
                    "patients", 2)
    assert same.startswith("In short: ")
    assert same.endswith("— each on 9 test patients per repetition, 2 repetitions pooled "
                         "(12 distinct patients)."), same


def test_repetitions_that_tested_different_numbers_give_the_range() -> None:
    point = {**_point(12), "fewest_per_repetition": 8, "fewest_units_per_repetition": 8}
    text = _summary({("manual", 1): point}, [1], "patients", 2)
    assert "each on 8–9 test patients per repetition, 2 repetitions pooled" in text, text


def test_the_lead_says_a_best_method_answered_one_class() -> None:
    """A "best" among classifiers that answered one class is said to be one, not a winner."""
    from segfew.experiment.lead import lead_sentence

    point = {"accuracy": 0.55, "low": 0.42, "high": 0.67, "chance_rate": 0.55,
             "distinguishable_from_chance": False, "repetitions": 2, "per_repetition": 65,
             "units_per_repetition": 65, "units": 69}
    for constant, said in ((2, "in every repetition"), (1, "in 1 of 2 repetitions")):
        lead = lead_sentence({("manual", 2): {**point, "one_class": constant}}, [2],
                             "patients", 2)
        assert f"it answered one class for nearly every test patient {said}" in lead
    assert "one class" not in lead_sentence({("manual", 2): point}, [2], "patients", 2)
