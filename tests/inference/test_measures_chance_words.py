"""What train-classifier and predict say of a measures model's scores against chance: an
interval that holds chance is "not distinguishable from chance" (its point may well be above
it), every inner score says so too, and an interval wholly under chance is "below chance"."""

from __future__ import annotations

from segfew.inference.fit_measures import describe_selection, estimate_caveat

NESTED = {"balanced_accuracy": 0.70, "ci": [0.38, 0.94], "chance_rate": 0.5,
          "distinguishable_from_chance": False, "folds": 3, "n": 10}


def _entry(name: str, score: float, ci: list[float], chosen: bool = False,
           **chance: object) -> dict[str, object]:
    return {"candidate": name, "balanced_accuracy": score, "ci": ci, "chosen": chosen,
            **chance}


def test_an_estimate_above_chance_whose_interval_holds_it_is_not_called_not_above() -> None:
    lines = describe_selection({"measures_selection": [_entry("forest on all", 0.9, [0.7, 1.0],
                                                              True)],
                                "measures_nested": NESTED})
    said = " ".join(lines)
    assert "not above chance" not in said
    assert any(line.startswith("WARNING: the nested estimate is not distinguishable from "
                               "chance (0.50") for line in lines), lines
    caveat = estimate_caveat({"measures_model": "m", "measures_nested": NESTED})
    assert caveat is not None and "not above chance" not in caveat
    assert "0.70 [0.38, 0.94], is not distinguishable from chance (0.50)" in caveat
    below = {**NESTED, "balanced_accuracy": 0.1, "ci": [0.0, 0.3],
             "distinguishable_from_chance": True}
    caveat = estimate_caveat({"measures_model": "m", "measures_nested": below})
    assert caveat is not None and "is below chance (0.50)" in caveat


def test_every_inner_score_whose_interval_holds_chance_says_so() -> None:
    five = {**NESTED, "chance_rate": 0.2, "balanced_accuracy": 0.5, "ci": [0.35, 0.65],
            "distinguishable_from_chance": True}
    selection = [
        _entry("forest on volumes", 0.27, [0.12, 0.40], True, chance_rate=0.2,
               distinguishable_from_chance=False),
        _entry("logistic on volumes, C=0.1", 0.05, [0.0, 0.15], chance_rate=0.2),
        _entry("forest on all", 0.6, [0.45, 0.75], chance_rate=0.2),
        _entry("logistic on all, C=0.1", 0.3, [0.1, 0.5]),  # an older file: the nested rate
    ]
    lines = describe_selection({"measures_selection": selection, "measures_nested": five})
    assert lines[0] == ("→ forest on volumes: inner balanced accuracy 0.27 [0.12, 0.40], "
                        "not distinguishable from chance (0.20)")
    assert lines[1].endswith("0.05 [0.00, 0.15], below chance (0.20)")
    assert lines[2].endswith("inner balanced accuracy 0.60 [0.45, 0.75]")  # above: nothing
    assert lines[3].endswith("0.30 [0.10, 0.50], not distinguishable from chance (0.20)")
    assert not any("WARNING" in line for line in lines)  # the nested estimate is above chance
