"""The report's first sentence: the best framework at each training size, its accuracy and
95% interval (:func:`segfew.experiment.pooling.pooled_accuracy`), and the test counts behind
it — each size's own where they differ (a task not yet finished, a failed one), with the
unfinished tasks said first. Every count in it is one the results table shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from segfew.experiment.results import TaskStatus
from segfew.metrics import below_chance

__all__ = ["lead_sentence", "unfinished_words"]


def _span(most: int, fewest: int | None) -> str:
    """``most``, or ``fewest–most`` where repetitions tested different numbers."""
    return str(most) if fewest is None or fewest == most else f"{fewest}–{most}"


def _counts(point: dict[str, Any], unit: str, repetitions: int) -> tuple[int, str, str]:
    """``(repetitions pooled, test cases or patients per repetition, " (N distinct ...)")``
    of one point, as its row in the results table counts them."""
    reps = int(point.get("repetitions", repetitions))
    cases = _span(point["per_repetition"], point.get("fewest_per_repetition"))
    units = point.get("units_per_repetition")
    if units is None:  # an older segfew recorded no patients: its cases are the unit
        return reps, f"{cases} test cases", ""
    units_text = _span(units, point.get("fewest_units_per_repetition"))
    test = (f"{units_text} test {unit}" if units_text == cases
            else f"{cases} cases of {units_text} test {unit}")
    return reps, test, f" ({point['units']} distinct {unit})" if point.get("units") else ""


def _count_words(quoted: dict[int, dict[str, Any]], unit: str, repetitions: int) -> str:
    """The test counts behind the quoted point of each size: one phrase where every size
    pooled as many repetitions of as many test cases, else each size's own."""
    counts = {size: _counts(p, unit, repetitions) for size, p in quoted.items()}
    if len(set(counts.values())) == 1:
        reps, test, distinct = next(iter(counts.values()))
        if reps == 1:  # its distinct patients are its test patients
            return f"each on {test}, 1 repetition"
        return f"each on {test} per repetition, {reps} repetitions pooled{distinct}"
    sizes = [f"at {size} per class, 1 repetition on {test}" if reps == 1 else
             f"at {size} per class, {reps} repetitions on {test} each, pooled{distinct}"
             for size, (reps, test, distinct) in counts.items()]
    return "the counts differ by size: " + "; ".join(sizes)


def lead_sentence(points: dict[tuple[str, int], dict[str, Any]], sizes: Sequence[int],
                  unit: str, repetitions: int, unfinished: str = "") -> str:
    """One sentence: the best framework at each size (all that tie at 3 decimals), its
    accuracy, CI and the test counts behind it (each size's own where they differ, as where
    a task has not finished). ``repetitions``: the count of a point that records none;
    ``unfinished``: words on the tasks not finished (empty when all are), said first."""
    parts = []
    quoted: dict[int, dict[str, Any]] = {}
    for size in sizes:
        here = [(fw, p) for (fw, sz), p in points.items() if sz == size
                and p["accuracy"] is not None]
        if not here:
            continue
        fw, p = max(here, key=lambda item: item[1]["accuracy"])
        quoted[size] = p
        best = [f for f, q in here if round(q["accuracy"], 3) == round(p["accuracy"], 3)]
        who = (f"{', '.join(best[:-1])} and {best[-1]} tied" if len(best) > 1
               else f"{fw} was best")
        ci = (f" (95% CI {p['low']:.2f}–{p['high']:.2f})" if p["low"] is not None else "")
        chance = (f", not distinguishable from chance ({p['chance_rate']:.2f}, the share of "
                  "the largest class)" if p.get("distinguishable_from_chance") is False
                  else f", below chance ({p['chance_rate']:.2f}, the share of the largest "
                  "class)" if below_chance(p.get("high"), p.get("chance_rate")) else "")
        one = unit.removesuffix("s") if size == 1 else unit  # 1 labelled patient
        constant = int(p.get("one_class") or 0)  # answered one class, whatever the case
        same = (f"; it answered one class for nearly every test {unit.removesuffix('s')} in "
                + ("every repetition" if constant == p.get("repetitions") else
                   f"{constant} of {p.get('repetitions')} repetitions")
                + ", not the classes") if constant else ""
        parts.append(f"with {size} labelled {one} per class, {who} at accuracy "
                     f"{p['accuracy']:.2f}{ci}{chance}{same}")
    if not parts:
        return "No task has finished yet."
    lead = f"In short, so far ({unfinished}): " if unfinished else "In short: "
    return lead + "; ".join(parts) + f" — {_count_words(quoted, unit, repetitions)}."


def unfinished_words(status: TaskStatus) -> str:
    """``"3 of 4 tasks finished, 1 not run yet"``; empty when every task has finished."""
    if not status.missing and not status.failed:
        return ""
    return ", ".join([f"{len(status.finished)} of {status.total} tasks finished"]
                     + ([f"{len(status.missing)} not run yet"] if status.missing else [])
                     + ([f"{len(status.failed)} failed"] if status.failed else []))
