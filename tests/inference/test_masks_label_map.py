"""``--masks`` stored as 0/255: ``train-classifier --label-map 255:1`` (or ``[data] label_map``
in its spec) remaps them, the model file records it, and ``predict`` and ``evaluate`` remap
their ``--masks`` alike; a model that records no remap gets advice its own command can follow."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from segfew.spec import ClassifierSpec, ExperimentSpec, unused_settings
from tests.conftest import invoke, load_nifti, save_nifti


def _binary(labels: Path, out: Path, top: int) -> Path:
    """The phantoms' label maps as one structure stored 0/``top`` (as kaggle_3m's 0/255)."""
    out.mkdir()
    for path in sorted(labels.glob("*.nii.gz")):
        img = load_nifti(path)
        mask = (np.asarray(img.dataobj) > 0).astype(np.uint8) * top
        save_nifti(out / path.name, mask, img.affine)
    return out


def _probabilities(path: Path) -> dict[str, tuple[str, ...]]:
    rows = list(csv.DictReader(path.open()))
    return {r["id"]: (r["status"], r["error"], *(v for k, v in r.items() if k.startswith("p_")))
            for r in rows}


@pytest.fixture
def two(phantoms: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The same masks stored 0/1 and 0/255."""
    return (_binary(phantoms / "labels", tmp_path / "m1", 1),
            _binary(phantoms / "labels", tmp_path / "m255", 255))


def test_train_classifier_label_map_is_recorded_and_applied_by_predict_and_evaluate(
        phantoms: Path, two: tuple[Path, Path], tmp_path: Path) -> None:
    from segfew.modelfile import read_model_file

    m1, m255 = two
    common = ["--table", str(phantoms / "labels.csv"), "--images", str(phantoms / "images"),
              "--framework", "measures", "--label-names", "background,heart", "--threads", "1",
              "--no-progress", "--no-cache"]
    invoke("train-classifier", *common, "--masks", str(m1), "--out", str(tmp_path / "ref.pt"))
    refused = invoke("train-classifier", *common, "--masks", str(m255), "--out",
                     str(tmp_path / "x.pt"), expect=2)
    assert "--label-map 255:1" in refused and not (tmp_path / "x.pt").exists()
    invoke("train-classifier", *common, "--masks", str(m255), "--label-map", "255:1", "--out",
           str(tmp_path / "flag.pt"))
    spec = tmp_path / "spec.toml"
    spec.write_text("[data]\nlabel_map = {255 = 1}\n")
    invoke("train-classifier", *common, "--masks", str(m255), "--spec", str(spec), "--out",
           str(tmp_path / "spec.pt"))
    for name in ("flag", "spec"):
        meta, _ = read_model_file(tmp_path / f"{name}.pt")
        assert meta.feature_source is not None
        assert meta.feature_source["label_map"] == {"255": 1}, meta.feature_source

    predict = ("predict", "--input", str(phantoms / "images"), "--threads", "1",
               "--no-progress")
    invoke(*predict, "--model", str(tmp_path / "ref.pt"), "--masks", str(m1), "--out",
           str(tmp_path / "ref.csv"))
    for name in ("flag", "spec"):  # the 0/255 masks, remapped as the model says: no flag
        invoke(*predict, "--model", str(tmp_path / f"{name}.pt"), "--masks", str(m255),
               "--out", str(tmp_path / f"{name}.csv"))
        assert _probabilities(tmp_path / f"{name}.csv") == _probabilities(
            tmp_path / "ref.csv")
    ev = tmp_path / "ev"
    invoke("evaluate", "--model", str(tmp_path / "flag.pt"), "--images",
           str(phantoms / "images"), "--table", str(phantoms / "labels.csv"), "--masks",
           str(m255), "--out", str(ev), "--bootstrap", "200", "--allow-leakage", "--threads",
           "1", "--no-progress")
    rows = list(csv.DictReader((ev / "predictions.csv").open()))
    assert len(rows) == 12 and {r["status"] for r in rows} == {"ok"}


def test_a_model_without_a_remap_advises_what_predict_and_evaluate_can_do(
        phantoms: Path, two: tuple[Path, Path], tmp_path: Path) -> None:
    m1, m255 = two
    clf = tmp_path / "clf.pt"
    invoke("train-classifier", "--table", str(phantoms / "labels.csv"), "--images",
           str(phantoms / "images"), "--framework", "measures", "--label-names",
           "background,heart", "--masks", str(m1), "--out", str(clf), "--threads", "1",
           "--no-progress", "--no-cache")
    shutil.copy(m1 / "case001_seg.nii.gz", m255 / "case001_seg.nii.gz")  # one good case
    out = tmp_path / "p.csv"
    invoke("predict", "--model", str(clf), "--input", str(phantoms / "images"), "--masks",
           str(m255), "--out", str(out), "--threads", "1", "--no-progress", expect=1)
    rows = {r["id"]: r for r in csv.DictReader(out.open())}
    assert rows["case001"]["status"] == "ok"
    said = rows["case000"]["error"]
    assert "case000_seg.nii.gz: binary mask stored as 0/255" in said, said
    assert "fitted on masks numbered 0/1 (background, heart)" in said, said
    assert "re-save these as 0/1, or retrain it with train-classifier --label-map 255:1" in said
    assert "spec key" not in said and "pretrain" not in said, said


def test_label_map_without_masks_is_named_as_unused(tmp_path: Path) -> None:
    spec = ClassifierSpec.model_validate({
        "data": {"images": tmp_path, "label_map": {255: 1}}, "out": tmp_path / "c.pt",
        "framework": "scratch"})
    for given in ({"data.label_map"}, {"data.label_map.255"}):  # by flag, by spec file
        assert "--masks" in unused_settings(spec, given)["data.label_map"]
    experiment = ExperimentSpec.model_validate({
        "data": {"images": tmp_path, "label_map": {255: 1}}, "frameworks": ["scratch"]})
    assert "data.label_map" in unused_settings(experiment, {"data.label_map"})


def test_tta_with_masks_is_named_as_unused(tmp_path: Path) -> None:
    """Nothing is segmented with --masks: --tta there changed nothing, yet run.json said it
    was used."""
    spec = ClassifierSpec.model_validate({
        "data": {"images": tmp_path}, "out": tmp_path / "c.pt", "framework": "measures",
        "masks": tmp_path, "tta": True})
    assert "nothing is segmented" in unused_settings(spec, {"tta"})["tta"]
    spec = spec.model_copy(update={"masks": None, "features": tmp_path / "seg.pt"})
    assert "tta" not in unused_settings(spec, {"tta"})  # segmented: it is read
