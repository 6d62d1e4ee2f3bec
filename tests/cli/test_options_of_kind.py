"""An option the model's kind does not use (a classifier's ``--min-confidence`` given with a
segmentation model, ``--tta`` with a classifier) is refused in one line before any work,
not silently ignored; the options of the model's own kind still run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import invoke, make_classifier, make_segmenter, save_nifti, scan

RUN = ("--threads", "1", "--device", "cpu", "--no-progress")


@pytest.fixture
def scans(tmp_path: Path, rng: np.random.Generator) -> Path:
    for i in range(2):
        save_nifti(tmp_path / "img" / f"c{i}.nii.gz", scan(rng, (16, 16, 3)))
        save_nifti(tmp_path / "lab" / f"c{i}.nii.gz", np.eye(16, dtype=np.uint8)[..., None]
                   .repeat(3, axis=2))
    return tmp_path


@pytest.mark.parametrize(("kind", "option", "said"), [
    ("classifier", ("--probabilities",), "--probabilities writes a segmentation model's"),
    ("classifier", ("--tta",), "--tta averages a segmentation model's"),
    ("segmentation", ("--min-confidence", "0.9"), "--min-confidence flags a classifier's"),
])
def test_predict_refuses_an_option_of_the_other_kind(scans: Path, kind: str,
                                                     option: tuple[str, ...], said: str) -> None:
    model = (make_classifier if kind == "classifier" else make_segmenter)(scans / "m.pt")
    out = scans / ("p.csv" if kind == "classifier" else "p")
    output = invoke("predict", "--model", str(model), "--input", str(scans / "img"),
                    "--out", str(out), *option, *RUN, expect=2)
    assert said in " ".join(output.split()) and "m.pt" in output
    assert not out.exists()


def test_predict_keeps_the_options_of_its_kind(scans: Path) -> None:
    model = make_segmenter(scans / "seg.pt")
    invoke("predict", "--model", str(model), "--input", str(scans / "img"), "--out",
           str(scans / "p"), "--tta", "--probabilities", *RUN)
    assert (scans / "p" / "c0_prob.nii.gz").is_file()


@pytest.mark.parametrize(("kind", "option", "said"), [
    ("classifier", ("--label-map", "2:1"), "--label-map remaps the label maps a segmentation"),
    ("segmentation", ("--explain", "ex"), "--explain draws a classifier's evidence"),
    ("segmentation", ("--bootstrap", "500"), "--bootstrap draws a classifier's intervals"),
    ("segmentation", ("--label-column", "label"), "--label-column names the table's class"),
])
def test_evaluate_refuses_an_option_of_the_other_kind(scans: Path, kind: str,
                                                      option: tuple[str, ...], said: str
                                                      ) -> None:
    model = (make_classifier if kind == "classifier" else make_segmenter)(scans / "m.pt")
    (scans / "t.csv").write_text("id,label\nc0,cat\nc1,dog\n")
    truth = ("--table", str(scans / "t.csv")) if kind == "classifier" else (
        "--labels", str(scans / "lab"), "--table", str(scans / "t.csv"))
    output = invoke("evaluate", "--model", str(model), "--images", str(scans / "img"), *truth,
                    "--out", str(scans / "e"), *option, *RUN, expect=2)
    assert said in " ".join(output.split())
    assert not (scans / "e").exists() and not (scans / "ex").exists()


@pytest.mark.parametrize(("framework", "settings", "unused"), [
    ("measures", {"train": {"epochs": 40, "lr": 0.01, "seed": 1}, "preprocess": {"size": [32]}},
     {"train.epochs", "train.lr", "preprocess.size"}),
    ("scratch", {"features": "seg.pt", "head": {"n_c": 8, "r": 2}}, {"features", "head.r"}),
    ("manual", {"tta": True, "finetune": True, "label_names": ["bg", "a"]},
     {"tta", "label_names"}),
    ("manual", {"preprocess": {"size": [64], "intensity": "zscore"}},
     {"preprocess.intensity"}),
    ("vgg", {"vgg_weights": "w.pth", "preprocess": {"size": [64]}, "finetune": True},
     {"preprocess.size", "finetune"}),
    ("measures", {"tta": True, "train": {"seed": 3}}, set()),
    ("measures", {"masks": "maps", "preprocess": {"size": [64]}}, {"preprocess.size"}),
])
def test_settings_a_framework_never_reads_are_named(framework: str, settings: dict,
                                                    unused: set[str]) -> None:
    from segfew.spec import ClassifierSpec, given_keys, merge, unused_settings

    needs = {"measures": {"features": "seg.pt"}, "manual": {"features": "seg.pt"},
             "vgg": {"vgg_weights": "w.pth"}}.get(framework, {})
    if "masks" in settings:
        needs = {}
    spec = ClassifierSpec.model_validate(merge(
        {"data": {"images": "x"}, "out": "o.pt", "framework": framework, **needs}, settings))
    said = unused_settings(spec, given_keys(settings))
    assert set(said) == unused
    if "masks" in settings:  # no network to take it from
        assert "network" not in said["preprocess.size"]


def test_the_example_recipes_give_no_setting_their_framework_ignores() -> None:
    from segfew.spec import ClassifierSpec, given_keys, merge, read_spec_file, unused_settings

    root = Path(__file__).parents[2] / "examples"
    recipes = [p for p in root.glob("*/*.toml") if "framework" in read_spec_file(p)]
    assert len(recipes) >= 5
    for path in recipes:
        source = {"masks": "maps"} if "label_names" in read_spec_file(path) else {
            "features": "seg.pt"}
        spec = ClassifierSpec.model_validate(merge(
            {"data": {"images": "x"}, "out": "o.pt", **source}, read_spec_file(path)))
        assert unused_settings(spec, given_keys(source, path)) == {}, path


def test_train_classifier_says_the_flags_its_framework_ignores(scans: Path) -> None:
    seg = make_segmenter(scans / "seg.pt")
    (scans / "t.csv").write_text("id,label\nc0,A\nc1,B\n")
    output = invoke("train-classifier", "--framework", "measures", "--features", str(seg),
                    "--images", str(scans / "img"), "--table", str(scans / "t.csv"),
                    "--epochs", "40", "--out", str(scans / "m.pt"), *RUN)
    line = next(ln for ln in output.splitlines() if "not used" in ln)
    assert "--epochs (framework measures is fitted in closed form" in line
    assert (scans / "m.pt").is_file()


@pytest.mark.parametrize("command", ["predict-classifier", "predict-segmentation", "evaluate",
                                     "label"])
def test_a_second_run_into_an_output_in_use_is_refused(scans: Path, command: str) -> None:
    """Two runs into one --out at once: the second is refused, not mixed into the first's."""
    from segfew.files import output_lock

    if command == "evaluate":
        out = scans / "e"
        args = ["evaluate", "--model", str(make_segmenter(scans / "m.pt")), "--images",
                str(scans / "img"), "--labels", str(scans / "lab"), "--out", str(out)]
    elif command == "label":
        out = scans / "p"
        args = ["label", "--images", str(scans / "img"), "--k", "2", "--out", str(out)]
    elif command == "predict-segmentation":
        out = scans / "p"
        args = ["predict", "--model", str(make_segmenter(scans / "m.pt")), "--input",
                str(scans / "img"), "--out", str(out)]
    else:
        out = scans / "p.csv"
        args = ["predict", "--model", str(make_classifier(scans / "m.pt")), "--input",
                str(scans / "img"), "--out", str(out)]
    run = [a for a in RUN if a not in ("--device", "cpu")] if command == "label" else RUN
    alias = scans / f"alias{out.suffix}"
    alias.symlink_to(out)  # another name (a link) of the same output: the same lock
    with output_lock(alias):
        output = invoke(*args, *run, expect=2)
    assert f"{out}: is in use by another segfew run" in " ".join(output.split())
    assert not out.exists()
    invoke(*args, *run, expect=1 if command == "predict-classifier" else 0)  # free again


def test_an_experiment_names_a_setting_none_of_its_frameworks_reads() -> None:
    """[head] r with measures and scratch: read by neither (framework manual reads it)."""
    from segfew.spec import ExperimentSpec, unused_settings

    given = {"head.r", "head.n_c", "train.epochs", "features"}
    spec = ExperimentSpec.model_validate({
        "data": {"images": "x", "table": "t.csv"}, "frameworks": ["measures", "scratch"],
        "features": "seg.pt", "head": {"r": 2, "n_c": 8}, "train": {"epochs": 5}})
    assert set(unused_settings(spec, given)) == {"head.r"}
    with_manual = spec.model_copy(update={"frameworks": ["measures", "manual"]})
    assert unused_settings(with_manual, given) == {}


def test_the_example_curves_give_no_setting_their_frameworks_ignore() -> None:
    from segfew.spec import ExperimentSpec, given_keys, merge, read_spec_file, unused_settings

    root = Path(__file__).parents[2] / "examples"
    curves = [p for p in root.glob("*/*.toml") if "frameworks" in read_spec_file(p)]
    assert len(curves) >= 5
    for path in curves:
        spec = ExperimentSpec.model_validate(merge(
            {"data": {"images": "x", "labels": "y"}, "features": "seg.pt",
             "threshold_features": "k.pt"}, read_spec_file(path)))
        assert unused_settings(spec, given_keys({}, path)) == {}, path
