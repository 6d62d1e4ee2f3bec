"""--explain with each kind of classifier on tiny phantoms: frozen features (Grad-CAM over
the segmentation) and measures (measurements against the training classes), through the CLI;
and the experiment report's gallery of misclassified cases."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import invoke, make_classifier
from tests.jobs.conftest import tiny_classifier


@pytest.mark.parametrize("framework", ["manual", "measures"])
def test_predict_and_evaluate_explain_write_a_sheet_per_case(
        framework: str, phantoms: Path, seg_model: Path, tmp_path: Path) -> None:
    clf = tiny_classifier(framework, phantoms, seg_model, tmp_path / "clf.pt")
    if framework == "measures":  # the training cases' values per class travel in the file
        from segfew.modelfile import read_model_file

        meta, _ = read_model_file(clf)
        top = meta.metrics["top_measurements"][0]
        assert len(top["by_class"]) == 3 and sum(map(len, top["by_class"])) == 12
    invoke("predict", "--model", str(clf), "--input", str(phantoms / "images"), "--out",
           str(tmp_path / "p.csv"), "--explain", str(tmp_path / "ex"), "--no-progress")
    assert len(list((tmp_path / "ex" / "sheets").glob("*.png"))) == 12
    invoke("evaluate", "--model", str(clf), "--table", str(phantoms / "labels.csv"),
           "--images", str(phantoms / "images"), "--out", str(tmp_path / "ev"), "--explain",
           str(tmp_path / "ev-sheets"), "--bootstrap", "0", "--no-progress",
           "--allow-leakage")  # the training cases: the sheets, not a score
    index = (tmp_path / "ev-sheets" / "index.html").read_text(encoding="utf-8")
    assert "true class" in index and index.count('href="sheets/') == 12


def test_report_gallery_shows_the_best_methods_misclassified_cases(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    from segfew.data import Case
    from segfew.experiment.gallery import misclassified_sheets
    from tests.conftest import save_nifti, scan

    rng = np.random.default_rng(0)
    cases = [Case(n, (save_nifti(tmp_path / "img" / f"{n}.nii.gz", scan(rng)),), (), "dog")
             for n in ("a", "b", "c")]
    run = tmp_path / "run"
    make_classifier(run / "work" / "size001_rep01_scratch" / "model.pt")
    predicted = {"a": "cat", "b": "dog", "c": "fox"}
    results = [{"key": "size001_rep01_scratch", "framework": "scratch", "size": 1,
                "repetition": 1, "predictions": [
                    {"id": c.id, "target": "dog", "predicted": predicted[c.id],
                     "status": "ok", "error": ""} for c in cases]},
               {"key": "size001_rep01_manual", "framework": "manual", "size": 1,
                "repetition": 1, "predictions": []}]
    points = {("scratch", 1): {"accuracy": 0.4}, ("manual", 1): {"accuracy": 0.3}}
    monkeypatch.setattr("segfew.experiment.gallery.load_cases", lambda spec: cases)
    shown = misclassified_sheets([run], results, points, None, tmp_path / "gallery")
    assert [caption.split(":")[0] for caption, _ in shown] == ["a", "c"]  # b was right
    assert all(png.is_file() for _, png in shown)
