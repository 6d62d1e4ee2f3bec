"""The leakage check of an experiment in words, for the first screen of its report.

:func:`segfew.experiment.protocol.run_experiment` records the check in ``data.json``
(``leakage``, ``leakage_check``; :mod:`segfew.evaluation.leakage` makes it); a reader of
the report must see before any figure whether those figures are a test (SPEC §6).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from segfew.evaluation.leakage import compared_words, lacking_words, restored_note
from segfew.inference.nnunet import holds_nnunet_plans

__all__ = ["experiment_verdict"]


def experiment_verdict(data: dict[str, Any], unit: str) -> tuple[bool, str]:
    """The leakage check of an experiment (its ``data.json``) in words, for the report's
    first screen: ``(alarm, sentence)``; ``alarm`` when a network was trained on test cases
    (every score is then optimistic) or nothing could be checked."""
    check = data.get("leakage_check")
    if data.get("leakage"):
        names = "; ".join(f"{Path(p).name} on {len(ids)} test {unit} ({', '.join(ids[:6])}"
                          f"{' …' if len(ids) > 6 else ''})" for p, ids in data["leakage"].items())
        restored = sorted({i for n in (check or {}).get("networks") or []
                           for i in n.get("restored") or []})
        note = f" ({restored_note(restored)[2:]})" if restored else ""
        return True, (f"LEAKAGE — these curves are not a test: the segmentation network was "
                      f"trained on test {unit} ({names}){note}. Every score below is "
                      "optimistic. "
                      "Pre-train per repetition (pretrain = <spec>) or on a pool disjoint "
                      "from every test set.")
    if check is None:
        return False, "Leakage check: not recorded in this run folder."
    networks = check.get("networks") or []
    unchecked = [Path(n["model"]) for n in networks if not n.get("checked")]
    maps = [p.name for p in unchecked if p.is_dir() and not holds_nnunet_plans(p)]  # --masks
    others = [p.name for p in unchecked if p.name not in maps]
    if maps and not others:  # another tool's (or an expert's) label maps: no network
        return True, (f"Leakage check not made: {', '.join(maps)} holds label maps of another "
                      f"tool or an expert (--masks): whether test {unit} trained the tool that "
                      "made them is not recorded (none, for an expert's own masks).")
    if unchecked:  # a model file with no record, or an nnU-Net folder
        return True, (f"Leakage check not made: {', '.join(p.name for p in unchecked)}: no "
                      f"record of what trained the network (or the tool that made the label "
                      f"maps), so whether test {unit} trained it is unknown.")
    if check.get("per_repetition"):
        how = compared_words(bool(check.get("by_voxels")), "those networks record none")
        return False, ("Leakage check: passed. The segmentation network was pre-trained anew "
                       f"in each repetition on its training {unit} only, and checked against "
                       f"its test set ({how}).")
    if networks:
        shown = ", ".join(Path(n["model"]).name for n in networks)
        lacking = [Path(n["model"]).name for n in networks if not n.get("by_voxels")]
        how = compared_words(not lacking, lacking_words(lacking))
        unknown = [Path(n["model"]).name for n in networks if n.get("patients_unknown")]
        unnamed = [n for n in networks if n.get("patients_unnamed")]
        images = (f"No test {unit}' image is one that trained the segmentation network "
                  f"({shown}; {how}).")
        if unnamed:  # the network records patients; the test cases name none
            return True, (f"Leakage check not complete: {images} But other cases (slices, "
                          f"visits) of its {unnamed[0].get('training_patients')} training "
                          "patient(s) could not be looked for: the test table names no "
                          "patients (give its --group-column).")
        return False, (f"Leakage check: passed. {images}" + (
                           f" Other cases of its training patients could not be looked for: "
                           f"{', '.join(unknown)} records no patients (pre-train with the "
                           "table's --group-column to record them)." if unknown else ""))
    return False, "Leakage check: no pre-trained network is shared by the repetitions."
