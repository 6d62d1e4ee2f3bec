"""No door lets a wrong number through silently — evaluate's one door (the table's
cases, the leakage check), chance named beside accuracies, measures' honest estimate, and a
report that opens with the leakage verdict."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import (
    invoke,
    make_classifier,
    make_segmenter,
    save_nifti,
    scan,
)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def with_manifest(model: Path, trained_on: list[Path]) -> Path:
    """Record in a model file that it was trained on ``trained_on`` (as pretrain and
    train-classifier do: ``metrics.training_data``, the SHA-256 of each image)."""
    import torch

    from segfew.files import file_digest

    payload = torch.load(model, map_location="cpu", weights_only=True)
    meta = json.loads(payload["metadata"])
    meta["metrics"]["training_data"] = sorted(file_digest(p) for p in trained_on)
    payload["metadata"] = json.dumps(meta)
    torch.save(payload, model)
    return model


@pytest.fixture
def volumes(tmp_path: Path, rng: np.random.Generator) -> tuple[Path, Path]:
    """Two patients with two frames each, and one more volume: images and label maps."""
    images, labels = tmp_path / "images", tmp_path / "labels"
    for name in ("p1_frame01", "p1_frame02", "p2_frame01", "p2_frame02", "other"):
        save_nifti(images / f"{name}.nii.gz", scan(rng, (20, 24, 4)))
        save_nifti(labels / f"{name}.nii.gz", (scan(rng, (20, 24, 4)) > 0.5).astype(np.uint8))
    return images, labels


# ---------------------------------------------------------------- one evaluation door


def test_evaluate_table_selects_a_segmentation_models_cases(
        tmp_path: Path, volumes: tuple[Path, Path]) -> None:
    """--table was ignored for a segmentation model (Dice over all volumes)."""
    images, labels = volumes
    model = make_segmenter(tmp_path / "seg.pt", num_labels=2)
    table = tmp_path / "test.csv"
    table.write_text("patient,diagnosis\np2,DCM\n")  # a patient: both of its frames
    out = tmp_path / "eval"
    output = invoke("evaluate", "--model", str(model), "--images", str(images), "--labels",
                    str(labels), "--table", str(table), "--out", str(out), "--device", "cpu",
                    "--no-progress")
    rows = read_csv(out / "per_case.csv")
    assert sorted(r["id"] for r in rows) == ["p2_frame01", "p2_frame02"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_cases"] == metrics["n_scored"] == 2
    assert f"scored 2 of 2 cases (the cases of {table})" in " ".join(output.split())
    # another instance: an id per volume, one listed volume without a label map's match
    table.write_text("id\nother\np1_frame02\nghost\n")
    out2 = tmp_path / "eval2"
    invoke("evaluate", "--model", str(model), "--images", str(images), "--labels", str(labels),
           "--table", str(table), "--out", str(out2), "--device", "cpu", "--no-progress",
           expect=1)
    rows = {r["id"]: r for r in read_csv(out2 / "per_case.csv")}
    assert sorted(rows) == ["ghost", "other", "p1_frame02"]
    assert rows["ghost"]["status"] == "error" and "no labelled image" in rows["ghost"]["error"]
    # without a table: every volume found, as before
    invoke("evaluate", "--model", str(model), "--images", str(images), "--labels", str(labels),
           "--out", str(tmp_path / "eval3"), "--device", "cpu", "--no-progress")
    assert len(read_csv(tmp_path / "eval3" / "per_case.csv")) == 5


def test_a_segmentation_model_scored_on_its_training_cases_is_refused(
        tmp_path: Path, volumes: tuple[Path, Path]) -> None:
    images, labels = volumes
    model = with_manifest(make_segmenter(tmp_path / "seg.pt", num_labels=2),
                          [images / "p1_frame01.nii.gz", images / "other.nii.gz"])
    args = ["evaluate", "--model", str(model), "--images", str(images), "--labels",
            str(labels), "--out", str(tmp_path / "eval"), "--device", "cpu", "--no-progress"]
    refused = invoke(*args, expect=2)
    message = " ".join(refused.split())
    assert "trained on 2 evaluated case(s) (other, p1_frame01)" in message
    assert not (tmp_path / "eval").exists()  # nothing half-written
    warned = " ".join(invoke(*args, "--allow-leakage").split())
    assert "leakage check: LEAKAGE: 2 evaluated case(s) trained the model" in warned
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["leakage"]["leaked"] == ["other", "p1_frame01"]
    assert metrics["leakage"]["allowed"] is True
    leaked = {r["id"]: r["leaked"] for r in read_csv(tmp_path / "eval" / "per_case.csv")}
    assert leaked == {"other": "yes", "p1_frame01": "yes", "p1_frame02": "no",
                      "p2_frame01": "no", "p2_frame02": "no"}
    # the test table's cases only: no overlap, no refusal
    table = tmp_path / "test.csv"
    table.write_text("id\np2\n")
    invoke("evaluate", "--model", str(model), "--images", str(images), "--labels", str(labels),
           "--table", str(table), "--out", str(tmp_path / "clean"), "--device", "cpu",
           "--no-progress")
    clean = json.loads((tmp_path / "clean" / "metrics.json").read_text())["leakage"]
    assert clean["checked"] and clean["leaked"] == []


def test_a_classifier_and_an_ensemble_scored_on_training_cases_are_refused(
        tmp_path: Path, labelled: tuple[Path, Path]) -> None:
    images, table = labelled
    clean = with_manifest(make_classifier(tmp_path / "a.pt"), [])
    leaky = with_manifest(make_classifier(tmp_path / "b.pt"), [images / "s4.nii.gz"])
    base = ["evaluate", "--table", str(table), "--images", str(images), "--bootstrap", "200",
            "--device", "cpu", "--no-progress"]
    invoke(*base, "--model", str(clean), "--out", str(tmp_path / "e1"))
    assert json.loads((tmp_path / "e1" / "metrics.json").read_text())["leakage"]["checked"]
    refused = " ".join(invoke(*base, "--model", str(leaky), "--out", str(tmp_path / "e2"),
                              expect=2).split())
    assert "b.pt" in refused and "trained on 1 evaluated case(s) (s4)" in refused
    # an ensemble: one leaky member is enough
    invoke(*base, "--model", str(clean), "--model", str(leaky), "--out", str(tmp_path / "e3"),
           expect=2)
    invoke(*base, "--model", str(clean), "--model", str(leaky), "--out", str(tmp_path / "e3"),
           "--allow-leakage")
    metrics = json.loads((tmp_path / "e3" / "metrics.json").read_text())
    assert metrics["model"] == [str(clean), str(leaky)] and metrics["leakage"]["leaked"] == ["s4"]
    rows = {r["id"]: r["leaked"] for r in read_csv(tmp_path / "e3" / "predictions.csv")}
    assert rows["s4"] == "yes" and sum(v == "yes" for v in rows.values()) == 1


def test_a_model_file_without_a_manifest_says_the_check_could_not_be_made(
        tmp_path: Path, labelled: tuple[Path, Path], volumes: tuple[Path, Path]) -> None:
    images, table = labelled
    model = make_classifier(tmp_path / "clf.pt")  # no training_data, no run folder
    output = " ".join(invoke("evaluate", "--model", str(model), "--table", str(table),
                             "--images", str(images), "--out", str(tmp_path / "e"),
                             "--bootstrap", "0", "--device", "cpu", "--no-progress").split())
    assert "records no training data, so the check that no evaluated case trained it could " \
           "not be made" in output
    assert "Classification metrics" in output and "bootstrap interval" not in output
    leakage = json.loads((tmp_path / "e" / "metrics.json").read_text())["leakage"]
    assert leakage["checked"] is False and leakage["verdict"].startswith("not checked")
    leaked = {r["leaked"] for r in read_csv(tmp_path / "e" / "predictions.csv")}
    assert leaked == {"not checked"}  # never "no" where nothing was compared
    seg_images, labels = volumes
    seg = make_segmenter(tmp_path / "seg.pt", num_labels=2)
    output = " ".join(invoke("evaluate", "--model", str(seg), "--images", str(seg_images),
                             "--labels", str(labels), "--out", str(tmp_path / "s"),
                             "--device", "cpu", "--no-progress").split())
    assert "could not be made" in output


@pytest.mark.parametrize("source", [
    {"masks": "external", "structures": {"1": "wall"}},  # another tool's label maps
    {"nnunet": {"folder": "results", "sha256": {}}, "structures": {"1": "wall"}},
])
def test_a_classifier_of_given_or_nnunet_label_maps_is_checked_on_its_own_manifest(
        tmp_path: Path, labelled: tuple[Path, Path], source: dict) -> None:
    """Its label maps' source records no training data; its own training cases still do."""
    from segfew.data import collect_cases
    from segfew.errors import DataError
    from segfew.evaluation.leakage import check_models, find_leakage
    from segfew.modelfile import read_model_file, save_model
    from segfew.models import build_model

    images, _ = labelled
    clf = with_manifest(make_classifier(tmp_path / "c.pt"), [images / "s0.nii.gz"])
    meta, state = read_model_file(clf)
    model = build_model(meta.architecture.name, **meta.architecture.args)
    model.load_state_dict(state)
    clf = save_model(tmp_path / "m.pt", model, meta.model_copy(update={"feature_source": source}))
    cases = collect_cases([images])
    check = find_leakage(clf, cases)
    assert check.checked and check.leaked == ["s0"] and check.unrecorded
    with pytest.raises(DataError, match=r"trained on 1 evaluated case\(s\) \(s0\)"):
        check_models([clf], cases)
    others = [c for c in cases if c.id != "s0"]
    (clean,) = check_models([clf], others)
    assert clean.checked and clean.leaked == []
    assert "is not recorded" in clean.describe()  # the source's training is not claimed


def test_a_classifier_carries_its_feature_networks_manifest(tmp_path: Path) -> None:
    """A case that trained the frozen segmentation network inside a classifier leaks too;
    a feature network without a record makes the classifier's check impossible."""
    from segfew.evaluation.leakage import trained_digests
    from segfew.modelfile import read_model_file, save_model
    from segfew.models import build_model

    clf = with_manifest(make_classifier(tmp_path / "clf.pt"), [])
    meta, state = read_model_file(clf)
    seg_meta = {"kind": "segmentation", "metrics": {"training_data": ["abc"]}}
    model = build_model(meta.architecture.name, **meta.architecture.args)
    model.load_state_dict(state)
    with_source = meta.model_copy(update={"feature_source": seg_meta})
    assert trained_digests(save_model(tmp_path / "a.pt", model, with_source)) == {"abc"}
    without = meta.model_copy(update={"feature_source": {"kind": "segmentation"}})
    assert trained_digests(save_model(tmp_path / "b.pt", model, without)) is None


# ---------------------------------------------------------------- chance


@pytest.mark.parametrize(("y_true", "y_pred", "rate"), [
    ([0, 1] * 10, [0, 0, 1, 1] * 5, 0.5),  # two classes, accuracy 0.5
    ([0] * 10 + [1] * 6 + [2] * 4, [0] * 20, 0.5),  # three classes: always the largest
])
def test_an_accuracy_whose_interval_holds_chance_says_so(
        y_true: list[int], y_pred: list[int], rate: float) -> None:
    from segfew.metrics import chance_words, classification_metrics

    names = [str(i) for i in range(max(y_true) + 1)]
    m = classification_metrics(y_true, y_pred, None, names, bootstrap=500)
    assert m["chance_rate"] == pytest.approx(rate)
    assert m["distinguishable_from_chance"] is False
    assert chance_words(m).startswith("not distinguishable from chance")
    right = classification_metrics(y_true, y_true, None, names, bootstrap=500)
    assert right["distinguishable_from_chance"] is True and chance_words(right) == ""


@pytest.mark.parametrize(("y_true", "y_pred"), [
    ([0] * 5 + [1], [1] * 6),  # always the minority: accuracy 1/6, chance 5/6
    ([0, 1] * 10, [1, 0] * 10),  # two classes learnt the wrong way round
])
def test_an_accuracy_below_chance_says_so(y_true: list[int], y_pred: list[int]) -> None:
    from segfew.metrics import chance_words, classification_metrics

    m = classification_metrics(y_true, y_pred, None, ["0", "1"], bootstrap=500)
    assert m["ci"]["accuracy"][1] < m["chance_rate"]
    assert m["distinguishable_from_chance"] is True and m["below_chance"] is True
    assert chance_words(m).startswith("below chance: its 95% CI")
    right = classification_metrics(y_true, y_true, None, ["0", "1"], bootstrap=500)
    assert right["below_chance"] is False
    assert not chance_words(right).startswith("below")


def test_validation_accuracy_carries_its_interval_and_chance() -> None:
    from segfew.cli.train_classifier import trust_lines
    from segfew.metrics import accuracy_summary

    few = accuracy_summary([True, True, False, True, False, False], [0, 0, 0, 1, 1, 1])
    assert few["n"] == 6 and few["ci"][0] <= 0.5 <= few["ci"][1]
    text = " ".join(trust_lines({"validation_accuracy": few}))
    assert "validation accuracy (kept epoch): 0.50 [95% CI" in text
    assert "not distinguishable from chance" in text
    many = accuracy_summary([True] * 40, [0, 1] * 20)
    assert many["distinguishable_from_chance"] is True
    assert "chance" not in " ".join(trust_lines({"validation_accuracy": many}))
    # a network trained with val_fraction = 0 (or one case per class) says it has no estimate
    assert trust_lines({})[0].startswith("no estimate of accuracy")


# ---------------------------------------------------------------- measures' honest estimate


def test_the_nested_estimate_warns_when_at_chance() -> None:
    from segfew.inference.fit_measures import describe_selection
    from segfew.models.measures_selection import CANDIDATES, nested_estimate
    from tests.models.test_models import _measurements

    x, y, names = _measurements(n_per_class=6)
    few = CANDIDATES[1:3]  # two logistic regressions: fast
    told = nested_estimate(x, y, names, 3, candidates=few)
    assert told is not None and told["distinguishable_from_chance"] is True
    assert told["n"] == 18 and told["folds"] == 3 and told["chance_rate"] == pytest.approx(1 / 3)
    noise = np.random.default_rng(1).normal(size=x.shape)
    blind = nested_estimate(noise, y, names, 3, candidates=few)
    assert blind is not None and blind["distinguishable_from_chance"] is False
    selection = [{"candidate": c.label, "balanced_accuracy": 0.9, "ci": [0.7, 1.0],
                  "chosen": i == 0} for i, c in enumerate(few)]
    lines = describe_selection({"measures_selection": selection, "measures_nested": blind,
                                "measures_model": few[0].label})
    assert lines[0].startswith(f"→ {few[0].label}: inner balanced accuracy 0.90 [0.70, 1.00]")
    assert any(line.startswith("WARNING: the nested estimate is not distinguishable from chance")
               for line in lines)
    lines = describe_selection({"measures_selection": selection, "measures_nested": told})
    assert not any("WARNING" in line for line in lines)
    # one case in a class: no outer folds, said so
    assert nested_estimate(x[:7], y[:7], names, 3, candidates=few) is None


def test_a_nested_estimate_below_chance_or_none_at_all_is_said_plainly() -> None:
    from segfew.inference.fit_measures import describe_selection

    selection = [{"candidate": "forest on volumes", "balanced_accuracy": 0.3,
                  "ci": [0.1, 0.6], "chosen": True}]
    below = {"balanced_accuracy": 0.0, "ci": [0.0, 0.39], "chance_rate": 0.5,
             "distinguishable_from_chance": True, "folds": 3, "n": 6}
    lines = describe_selection({"measures_selection": selection, "measures_nested": below})
    assert any(line.startswith("WARNING: the nested estimate is below chance (0.50)")
               for line in lines)
    above = {**below, "balanced_accuracy": 0.9, "ci": [0.61, 1.0]}
    lines = describe_selection({"measures_selection": selection, "measures_nested": above})
    assert not any("WARNING" in line for line in lines)
    one_each = {"measures_selection": selection, "measures_nested": None,
                "measures_model": "forest on volumes"}
    for metrics in (one_each, {**one_each, "measures_selection": []}):
        assert "no estimate of accuracy is possible" in describe_selection(metrics)[-1]


# ---------------------------------------------------------------- the report's first screen


def test_the_report_opens_with_the_leakage_verdict(tmp_path: Path) -> None:
    from segfew.experiment.protocol import run_experiment, split_for
    from segfew.experiment.report import write_report
    from tests.experiment.test_protocol import Counting, _cases_on_disk, _feature_net, make_spec

    cases = _cases_on_disk(tmp_path / "images")
    spec = make_spec(repetitions=1, sizes=[1, 2], frameworks=["manual", "scratch"])
    train, test = split_for(cases, spec, 2, 1)
    leaky = _feature_net(tmp_path / "seg.pt", [c.images[0] for c in [*train, test[0]]])
    with pytest.warns(UserWarning, match="LEAKAGE"):
        run_experiment(spec.model_copy(update={"features": leaky, "allow_leakage": True}),
                       tmp_path / "leaky", Counting(), cases=cases)
    md, page = write_report([tmp_path / "leaky"])
    first = md.read_text().split("\n\n")[1]  # before any figure or number
    assert first.startswith("> **LEAKAGE — these curves are not a test") and test[0].id in first
    assert page.read_text().index('class="banner"') < page.read_text().index("<img")
    clean = _feature_net(tmp_path / "clean.pt", [c.images[0] for c in train])
    run_experiment(spec.model_copy(update={"features": clean}), tmp_path / "clean", Counting(),
                   cases=cases)
    first = write_report([tmp_path / "clean"])[0].read_text().split("\n\n")[1]
    assert first.startswith("Leakage check: passed.") and "clean.pt" in first


@pytest.mark.parametrize("own", [False, True])
def test_a_leak_through_the_classifiers_segmentation_network_names_the_network(
        tmp_path: Path, labelled: tuple[Path, Path], own: bool) -> None:
    """The classifier trained on other patients, its feature network on the evaluated one:
    the refusal says which was trained on it, not that the classifier was."""
    import torch

    from segfew.data import find_classification_cases
    from segfew.errors import DataError
    from segfew.evaluation.leakage import check_models, find_leakage
    from segfew.files import file_digest

    images, table = labelled
    scan = images / "s4.nii.gz"
    model = with_manifest(make_classifier(tmp_path / "c.pt"), [scan] if own else [])
    payload = torch.load(model, map_location="cpu", weights_only=True)
    meta = json.loads(payload["metadata"])
    meta["feature_source"] = {"metrics": {"training_data": [file_digest(scan)]}}
    payload["metadata"] = json.dumps(meta)
    torch.save(payload, model)
    cases = find_classification_cases(images, table)
    check = find_leakage(model, cases)
    assert check.leaked == ["s4"] and check.network_only == ([] if own else ["s4"])
    said = ("the model was trained" if own else
            "the segmentation network inside the classifier was pre-trained")
    with pytest.raises(DataError, match=f"{said} on 1 evaluated case\\(s\\) \\(s4\\)"):
        check_models([model], cases)
