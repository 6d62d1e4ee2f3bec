"""Ensembles of classifier files and per-case confidence (segfew.inference.ensemble, predict)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import CLASSES, make_classifier, make_segmenter, read_csv, save_nifti, scan


@pytest.fixture
def two_classifiers(tmp_path: Path) -> list[Path]:
    from segfew.modelfile import load_model, save_model

    out = []
    for seed in (1, 2):
        path = make_classifier(tmp_path / f"clf{seed}.pt")
        model, meta = load_model(path)
        torch.manual_seed(seed)
        with torch.no_grad():  # two different networks, far from uniform outputs
            for param in model.parameters():
                param.add_(torch.randn_like(param))
        out.append(save_model(path, model, meta))
    return out


@pytest.fixture
def folder(tmp_path: Path, rng: np.random.Generator) -> Path:
    for name in ("a", "b", "c"):
        save_nifti(tmp_path / "scans" / f"{name}.nii.gz", scan(rng))
    (tmp_path / "scans" / "corrupt.nii.gz").write_bytes(b"\x00" * 100)
    return tmp_path / "scans"


def probabilities(rows: list[dict[str, str]]) -> dict[str, np.ndarray]:
    return {r["id"]: np.array([float(r[f"p_{c}"]) for c in CLASSES]) for r in rows
            if r["status"] == "ok"}


def test_an_ensemble_averages_its_models_and_flags_unsure_cases(
        two_classifiers: list[Path], folder: Path, tmp_path: Path) -> None:
    from segfew.inference.paths import predict_paths

    single = [probabilities(read_csv(predict_paths(m, [folder], tmp_path / f"{i}.csv",
                                                   device="cpu")[0]))
              for i, m in enumerate(two_classifiers)]
    assert not np.allclose(single[0]["a"], single[1]["a"])  # the members differ
    out, failed, count = predict_paths(two_classifiers, [folder], tmp_path / "ens.csv",
                                       device="cpu", min_confidence=0.9)
    rows = {r["id"]: r for r in read_csv(out)}
    assert count == len(rows)  # cases, not cases × models
    assert failed == 1 and rows["corrupt"]["status"] == "error"
    assert rows["corrupt"]["confidence"] == rows["corrupt"]["low_confidence"] == ""
    both = probabilities(list(rows.values()))
    for case in "abc":
        mean = (single[0][case] + single[1][case]) / 2
        np.testing.assert_allclose(both[case], mean, atol=2e-6)
        assert rows[case]["predicted"] == CLASSES[int(np.argmax(mean))]
        assert float(rows[case]["confidence"]) == pytest.approx(mean.max(), abs=2e-6)
        assert rows[case]["low_confidence"] == ("yes" if mean.max() < 0.9 else "no")
    lenient = read_csv(predict_paths(two_classifiers, [folder], tmp_path / "low.csv",
                                     device="cpu", min_confidence=0.0)[0])
    assert {r["low_confidence"] for r in lenient if r["status"] == "ok"} == {"no"}


def test_an_ensemble_refuses_other_classes_and_segmentation_models(
        two_classifiers: list[Path], folder: Path, tmp_path: Path) -> None:
    from segfew.errors import DataError
    from segfew.inference.paths import predict_paths
    from segfew.modelfile import load_model, save_model

    model, meta = load_model(two_classifiers[1])
    other = save_model(tmp_path / "other.pt", model,
                       meta.model_copy(update={"classes": ["x", "y", "z"]}))
    with pytest.raises(DataError, match="differ from the first model's") as err:
        predict_paths([two_classifiers[0], other], [folder], tmp_path / "p.csv", device="cpu")
    assert "other.pt" in str(err.value)
    seg = make_segmenter(tmp_path / "seg.pt")
    with pytest.raises(DataError, match="classifiers only"):
        predict_paths([two_classifiers[0], seg], [folder], tmp_path / "q.csv", device="cpu")
    assert not (tmp_path / "p.csv").exists() and not (tmp_path / "q.csv").exists()


def test_one_reading_of_model_paths_serves_predict_and_evaluate(
        two_classifiers: list[Path], tmp_path: Path, rng: np.random.Generator) -> None:
    """A path or a list of them, the same to every command; none is a one-line error, also
    where evaluate is handed its predictors already open."""
    from segfew.data import Case
    from segfew.errors import DataError
    from segfew.evaluation.evaluate import evaluate_classifier
    from segfew.inference.ensemble import model_paths, open_models

    assert model_paths(str(two_classifiers[0])) == [two_classifiers[0]]
    assert model_paths([str(two_classifiers[0]), two_classifiers[1]]) == two_classifiers
    with pytest.raises(DataError, match="no model file given"):
        model_paths([])
    paths, predictors = open_models(two_classifiers, device="cpu")
    assert paths == two_classifiers and len(predictors) == 2
    case = Case("a", (save_nifti(tmp_path / "a.nii.gz", scan(rng)),),
                target=CLASSES[0])
    with pytest.raises(DataError, match="no model file given"):
        evaluate_classifier([], [case], tmp_path / "eval", predictor=predictors)
    assert not (tmp_path / "eval").exists()


def test_flag_confidence_marks_rows_below_the_threshold() -> None:
    from segfew.inference.batch import PredictionRow
    from segfew.inference.ensemble import flag_confidence

    rows = [PredictionRow("sure", "", "a", {"a": 0.8, "b": 0.2}),
            PredictionRow("unsure", "", "a", {"a": 0.55, "b": 0.45}),
            PredictionRow("bad", "", status="error", error="cannot read")]
    flag_confidence(rows, min_confidence=0.6)
    assert [(r.confidence, r.low_confidence) for r in rows] == [
        (0.8, False), (0.55, True), (None, False)]
    with pytest.raises(ValueError, match="within"):
        flag_confidence(rows, min_confidence=1.5)


def test_the_default_threshold_can_flag_a_two_class_answer() -> None:
    """0.5 could never flag one (its top class holds at least half): halfway from a uniform
    guess to certainty, 0.75 for 2 classes and 0.6 for 5."""
    from segfew.inference.batch import PredictionRow
    from segfew.inference.ensemble import flag_confidence

    two = [PredictionRow("coin", "", "a", {"a": 0.504, "b": 0.496}),
           PredictionRow("sure", "", "a", {"a": 0.9, "b": 0.1})]
    five = [PredictionRow(f"c{i}", "", "a", {"a": top, **{k: (1 - top) / 4 for k in "bcde"}})
            for i, top in enumerate((0.55, 0.65))]
    flag_confidence(two)
    flag_confidence(five)
    assert [r.low_confidence for r in two + five] == [True, False, True, False]


def test_predict_cli_takes_several_models_and_a_confidence_threshold(
        two_classifiers: list[Path], folder: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from segfew.cli import app

    out = tmp_path / "ens.csv"
    result = CliRunner().invoke(app, [
        "predict", "--model", str(two_classifiers[0]), "--model", str(two_classifiers[1]),
        "--input", str(folder), "--out", str(out), "--min-confidence", "1", "--no-progress"])
    assert result.exit_code == 1, result.output  # the corrupt file
    rows = [r for r in read_csv(out) if r["status"] == "ok"]
    assert len(rows) == 3 and {r["low_confidence"] for r in rows} == {"yes"}
    record = (tmp_path / "ens.run.json").read_text()
    assert two_classifiers[0].name in record and two_classifiers[1].name in record
    bad = CliRunner().invoke(app, ["predict", "--model", str(two_classifiers[0]), "--input",
                                   str(folder), "--out", str(out), "--min-confidence", "2"])
    assert bad.exit_code != 0 and "min-confidence" in bad.output
