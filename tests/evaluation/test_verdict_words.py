"""The experiment's leakage verdict in words claims what was compared, no more."""

from __future__ import annotations

from pathlib import Path

from segfew.experiment.verdict import experiment_verdict


def _data(*networks: dict) -> dict:
    return {"leakage": {}, "leakage_check": {"networks": list(networks)}}


def test_a_passed_check_says_it_compared_scans(tmp_path: Path) -> None:
    seg = {"model": str(tmp_path / "seg.pt"), "checked": True, "by_voxels": True}
    alarm, said = experiment_verdict(_data(seg), "patients")
    assert not alarm and "No test patients' image is one that trained" in said
    assert "could not be looked for" not in said
    alarm, said = experiment_verdict(_data({**seg, "patients_unknown": True}), "patients")
    assert not alarm and "Other cases of its training patients could not be looked for" in said


def test_a_network_recording_patients_beside_a_test_table_naming_none_is_not_passed(
        tmp_path: Path) -> None:
    seg = {"model": str(tmp_path / "seg.pt"), "checked": True, "by_voxels": True,
           "patients_unnamed": True, "training_patients": 14}
    alarm, said = experiment_verdict(_data(seg), "patients")
    assert alarm and "passed" not in said, said
    assert "other cases (slices, visits) of its 14 training patient(s) could not be looked " \
        "for: the test table names no patients" in said


def test_label_maps_of_another_tool_are_not_called_a_network(tmp_path: Path) -> None:
    (tmp_path / "labels").mkdir()
    alarm, said = experiment_verdict(
        _data({"model": str(tmp_path / "labels"), "checked": False}), "patients")
    assert alarm and "labels holds label maps of another tool or an expert (--masks)" in said
    assert "network" not in said
    alarm, said = experiment_verdict(
        _data({"model": str(tmp_path / "old.pt"), "checked": False}), "patients")
    assert alarm and "old.pt: no record of what trained the network" in said
