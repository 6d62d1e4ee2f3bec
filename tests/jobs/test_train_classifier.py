"""The train-classifier job end to end through the CLI on tiny phantoms: every framework's
model file, what it refuses, measures beside predict and evaluate."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from segfew.cli import app
from tests.conftest import invoke, make_segmenter
from tests.jobs.conftest import tiny_classifier

runner = CliRunner()


@pytest.mark.parametrize("framework", ["manual", "scratch", "measures"])
def test_classifier_file_reloads_with_identical_predictions(
        framework: str, phantoms: Path, seg_model: Path, tmp_path: Path) -> None:
    clf = tiny_classifier(framework, phantoms, seg_model, tmp_path / "clf.pt")
    first = tmp_path / "first.csv"
    invoke("predict", "--model", str(clf), "--input", str(phantoms / "images"),
           "--out", str(first), "--no-progress")
    second = tmp_path / "second.csv"
    subprocess.run([sys.executable, "-m", "segfew", "predict", "--model", str(clf), "--input",
                    str(phantoms / "images"), "--out", str(second), "--no-progress"], check=True,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})  # same threads, same sums
    a = list(csv.DictReader(first.open()))
    b = list(csv.DictReader(second.open()))
    assert len(a) == 12
    assert a == b


def test_compact_head_options_reach_the_model_file_and_predict(
        phantoms: Path, seg_model: Path, tmp_path: Path) -> None:
    """[head] source/pooling (SPEC §7's compact variants of manual) are saved and reloaded."""
    from segfew.modelfile import read_model_file

    spec = tmp_path / "clf.toml"
    spec.write_text('framework = "manual"\n[head]\nn_fc = 8\nsource = "softmax"\n'
                    'pooling = "stats"\n[preprocess]\nsize = [32, 32]\n'
                    '[train]\nepochs = 2\nbatch_size = 4\n')
    clf = tmp_path / "clf.pt"
    invoke("train-classifier", "--spec", str(spec), "--table", str(phantoms / "labels.csv"),
           "--images", str(phantoms / "images"), "--features", str(seg_model), "--out", str(clf),
           "--no-progress", "--no-cache")
    meta, _ = read_model_file(clf)
    assert (meta.architecture.args["source"], meta.architecture.args["pooling"]) == (
        "softmax", "stats")
    out = tmp_path / "p.csv"
    invoke("predict", "--model", str(clf), "--input", str(phantoms / "images"), "--out", str(out),
           "--no-progress")
    assert len(list(csv.DictReader(out.open()))) == 12
    spec.write_text(spec.read_text().replace('"stats"', '"slices"'))  # 2D images: no slices
    result = runner.invoke(app, ["train-classifier", "--spec", str(spec), "--table",
                                 str(phantoms / "labels.csv"), "--images",
                                 str(phantoms / "images"), "--features", str(seg_model),
                                 "--out", str(tmp_path / "c2.pt"), "--no-progress"])
    assert result.exit_code == 2 and "slices" in result.output
    assert not (tmp_path / "c2.pt").exists()


def test_measures_on_a_kmeans_network_needs_no_expert(phantoms: Path, tmp_path: Path) -> None:
    """The no-expert path (examples/acdc/no-expert.toml): label → pretrain on the k-means
    labels → measures of the clusters' structures (named k1…k3), no expert mask anywhere."""
    from segfew.modelfile import read_model_file
    from tests.jobs.conftest import TINY_PRETRAIN

    invoke("label", "--images", str(phantoms / "images"), "--k", "3", "--out",
           str(tmp_path / "km"), "--threads", "1")
    invoke("pretrain", "--images", str(phantoms / "images"), "--labels", str(tmp_path / "km"),
           "--out", str(tmp_path / "km.pt"), *TINY_PRETRAIN)
    invoke("train-classifier", "--table", str(phantoms / "labels.csv"), "--images",
           str(phantoms / "images"), "--framework", "measures", "--features",
           str(tmp_path / "km.pt"), "--out", str(tmp_path / "c.pt"), "--no-progress",
           "--no-cache")
    meta, _ = read_model_file(tmp_path / "c.pt")
    names = meta.architecture.args["feature_names"]
    assert {n.split("_")[0] for n in names} == {"k1", "k2", "k3"}
    assert any(n.startswith("k3_area_mm2") for n in names)  # the brightest cluster's area
    out = tmp_path / "p.csv"
    invoke("predict", "--model", str(tmp_path / "c.pt"), "--input", str(phantoms / "images"),
           "--out", str(out), "--no-progress")
    assert len(list(csv.DictReader(out.open()))) == 12


def test_classifier_count_check_names_the_table(phantoms: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, [
        "train-classifier", "--table", str(phantoms / "labels.csv"), "--images",
        str(phantoms / "images"), "--framework", "scratch", "--out", str(tmp_path / "c.pt"),
        "--size", "32", "--classes", "4", "--no-progress"])
    assert result.exit_code == 2
    assert "labels.csv" in result.output and "expected 4 classes" in result.output
    assert not (tmp_path / "c.pt").exists()


@pytest.mark.parametrize("framework", ["scratch", "manual", "measures"])
def test_a_table_of_one_class_is_refused_by_every_framework(
        phantoms: Path, tmp_path: Path, framework: str) -> None:
    """One class: nothing to tell apart, yet measures would fit and answer p = 1."""
    rows = (phantoms / "labels.csv").read_text().splitlines()
    one = tmp_path / "one.csv"
    first = rows[1].split(",")[1]
    one.write_text("\n".join([rows[0], *(r for r in rows[1:] if r.split(",")[1] == first)]))
    features = [] if framework == "scratch" else [
        "--features", str(make_segmenter(tmp_path / "seg.pt"))]
    result = runner.invoke(app, [
        "train-classifier", "--table", str(one), "--images", str(phantoms / "images"),
        "--framework", framework, *features, "--out", str(tmp_path / "c.pt"), "--size", "32",
        "--no-progress", "--no-cache", "--threads", "1"])
    assert result.exit_code == 2, result.output
    assert f"one.csv: one class only ({first})" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "c.pt").exists()


def test_manual_without_features_is_a_spec_error(phantoms: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, [
        "train-classifier", "--table", str(phantoms / "labels.csv"), "--images",
        str(phantoms / "images"), "--framework", "manual", "--out", str(tmp_path / "c.pt"),
        "--no-progress"])
    assert result.exit_code == 2
    assert "--features" in result.output


def test_vgg_with_a_bad_weights_file_names_it(phantoms: Path, tmp_path: Path) -> None:
    weights = tmp_path / "vgg16.pth"
    torch.save({"features.0.weight": torch.zeros(3, 3)}, weights)
    result = runner.invoke(app, [
        "train-classifier", "--table", str(phantoms / "labels.csv"), "--images",
        str(phantoms / "images"), "--framework", "vgg", "--vgg-weights", str(weights),
        "--out", str(tmp_path / "c.pt"), "--no-progress", "--no-cache"])
    assert result.exit_code != 0
    assert "vgg16.pth" in result.output and "not VGG-16 weights" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "c.pt").exists()


def test_measures_writes_every_case_measurements_from_predict_and_evaluate(
        phantoms: Path, seg_model: Path, tmp_path: Path) -> None:
    from segfew.modelfile import read_model_file

    clf = tmp_path / "clf.pt"
    trained = invoke("train-classifier", "--table", str(phantoms / "labels.csv"), "--images",
                     str(phantoms / "images"), "--framework", "measures", "--features",
                     str(seg_model), "--out", str(clf), "--no-progress", "--no-cache")
    meta, _ = read_model_file(clf)
    names = meta.architecture.args["feature_names"]
    assert "wall_area_mm2_0" in names and "wall_to_cavity_volume_ratio_0" in names
    assert meta.metrics["measures_model"] and meta.metrics["top_measurements"]
    # its choice is shown and kept: with 4 cases per class the default, nothing chosen, and
    # why; its inner score; the nested estimate of the whole procedure
    selection = meta.metrics["measures_selection"]
    assert [e["candidate"] for e in selection if e["chosen"]] == [meta.metrics["measures_model"]]
    assert len(selection) == 1 and all(len(e["ci"]) == 2 for e in selection)
    assert meta.metrics["measures_chosen_by"].startswith("the default: 4 case(s) in a class")
    nested = meta.metrics["measures_nested"]
    assert nested["n"] == 12 and 0 <= nested["balanced_accuracy"] <= 1
    output = " ".join(trained.split())
    assert f"model: {meta.metrics['measures_model']}, the default: 4 case(s)" in output
    assert f"→ {meta.metrics['measures_model']}: inner balanced accuracy" in output
    assert "nested estimate of the whole selection" in output
    assert meta.metrics["training_data"]  # the manifest evaluate checks
    invoke("predict", "--model", str(clf), "--input", str(phantoms / "images"),
           "--out", str(tmp_path / "pred.csv"), "--no-progress")
    rows = list(csv.DictReader((tmp_path / "pred.measurements.csv").open()))
    assert len(rows) == 12 and list(rows[0]) == ["id", *names]
    args = ["evaluate", "--model", str(clf), "--images", str(phantoms / "images"), "--table",
            str(phantoms / "labels.csv"), "--out", str(tmp_path / "eval"), "--no-progress"]
    refused = invoke(*args, expect=2)  # its own training cases: not a test
    assert "trained on 12 evaluated case(s)" in refused
    said = invoke(*args, "--allow-leakage")
    assert str(tmp_path / "eval" / "measurements.csv") in said  # named in what it wrote
    evaluated = list(csv.DictReader((tmp_path / "eval" / "measurements.csv").open()))
    assert evaluated == rows  # the same measurements whichever command reads the case
    predictions = list(csv.DictReader((tmp_path / "eval" / "predictions.csv").open()))
    assert {r["leaked"] for r in predictions} == {"yes"}


def test_measures_fits_on_every_training_case(tmp_path: Path) -> None:
    from segfew.modelfile import read_model_file
    from segfew.synth import make_phantoms

    make_phantoms(tmp_path / "d", dim=2, n_per_class=3, size=32, num_classes=2, seed=0)
    d = tmp_path / "d"
    seg = tmp_path / "seg.pt"
    for argv in (["pretrain", "--images", str(d / "images"), "--labels", str(d / "labels"),
                  "--out", str(seg), "--dim", "2", "--n-s", "2", "--size", "32",
                  "--epochs", "1", "--threads", "1", "--no-cache"],
                 ["train-classifier", "--spec", str(_spec(tmp_path)), "--table",
                  str(d / "labels.csv"), "--images", str(d / "images"), "--framework",
                  "measures", "--features", str(seg), "--out", str(tmp_path / "m.pt"),
                  "--size", "32", "--threads", "1", "--no-cache"]):
        result = runner.invoke(app, argv)
        assert result.exit_code == 0, result.output
    meta, _ = read_model_file(tmp_path / "m.pt")
    assert len(meta.metrics["train_cases"]) == 6 and meta.metrics["validation_cases"] == []


def _spec(tmp_path: Path) -> Path:
    spec = tmp_path / "clf.toml"
    spec.write_text("[train]\nval_fraction = 0.5\n", encoding="utf-8")  # ignored by measures
    return spec


def test_measures_with_tta_records_it_and_predict_measures_the_same_way(
        phantoms: Path, seg_model: Path, tmp_path: Path) -> None:
    from segfew.inference.predictor import Predictor
    from segfew.modelfile import read_model_file

    clf = tmp_path / "clf.pt"
    invoke("train-classifier", "--table", str(phantoms / "labels.csv"), "--images",
           str(phantoms / "images"), "--framework", "measures", "--features", str(seg_model),
           "--tta", "--out", str(clf), "--no-progress", "--no-cache")
    meta, _ = read_model_file(clf)
    assert meta.architecture.args["tta"] is True and meta.spec["tta"] is True
    measurer = Predictor.open(clf, device="cpu").measurer
    assert measurer is not None and measurer.tta


@pytest.mark.parametrize("size, warns", [((32, 32, 8), False), ((64, 64, 8), True), ((32,), False)])
def test_a_classifier_grid_other_than_the_networks_is_said(tmp_path: Path, size, warns) -> None:
    """Features of a network run at another in-plane scale than it learnt are not the
    features it learnt: train-classifier says so (the network here learnt at 32 × 32)."""
    import warnings

    from segfew.errors import DataWarning
    from segfew.jobs.train_classifier import classifier_preprocess
    from segfew.modelfile import read_model_file
    from segfew.spec import ClassifierSpec
    from tests.conftest import make_segmenter

    features = make_segmenter(tmp_path / "seg.pt")
    spec = ClassifierSpec.model_validate({
        "framework": "manual", "features": str(features), "out": str(tmp_path / "c.pt"),
        "data": {"images": str(tmp_path)}, "preprocess": {"size": list(size)}})
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        cfg = classifier_preprocess(spec, read_model_file(features)[0])
    said = [w for w in seen if issubclass(w.category, DataWarning)]
    assert bool(said) == warns
    if warns:
        assert "32×32" in str(said[0].message) and "64×64" in str(said[0].message)
    assert cfg.intensity == "minmax"  # the network's, whatever the grid


def test_a_class_column_found_by_its_name_is_recorded_and_scored_against(
        phantoms: Path, seg_model: Path, tmp_path: Path) -> None:
    # no --label-column: the model records the column it found (``label``), so that a test
    # table holding a second reading (``diagnosis``) is scored against the trained column
    from segfew.modelfile import read_model_file

    clf = tmp_path / "clf.pt"
    invoke("train-classifier", "--table", str(phantoms / "labels.csv"), "--images",
           str(phantoms / "images"), "--framework", "measures", "--features", str(seg_model),
           "--out", str(clf), "--no-progress", "--no-cache")
    meta, _ = read_model_file(clf)
    assert meta.spec["data"]["label_column"] == "label"
    with (phantoms / "labels.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    table = tmp_path / "two.csv"
    with table.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, [*rows[0], "diagnosis"])
        w.writeheader()
        w.writerows({**r, "diagnosis": "other"} for r in rows)
    said = " ".join(invoke("evaluate", "--model", str(clf), "--table", str(table), "--images",
                           str(phantoms / "images"), "--out", str(tmp_path / "ev"),
                           "--bootstrap", "0", "--no-progress", "--allow-leakage").split())
    assert "truth: column 'label' of two.csv (the column the model was trained on)" in said
