"""``evaluate`` of a classifier of another tool's label maps (``--masks``) keeps its good cases
when a table row finds no image: that row is an error row, as for every other model kind."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

from tests.conftest import invoke


def _masks_model(phantoms: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The phantoms' label maps as another tool's (``--masks``), and a measures model of
    them trained on the phantoms' table."""
    masks = shutil.copytree(phantoms / "labels", tmp_path / "masks")
    (masks / "label_names.json").write_text(json.dumps(
        {"label_names": ["background", "wall", "cavity", "blob"]}))
    clf = tmp_path / "clf.pt"
    invoke("train-classifier", "--table", str(phantoms / "labels.csv"), "--images",
           str(phantoms / "images"), "--framework", "measures", "--masks", str(masks),
           "--out", str(clf), "--no-cache", "--threads", "1", "--no-progress")
    return masks, clf


def test_a_table_row_without_an_image_is_an_error_row_not_a_lost_batch(
        phantoms: Path, tmp_path: Path) -> None:
    masks, clf = _masks_model(phantoms, tmp_path)
    rows = (phantoms / "labels.csv").read_text().splitlines()
    typo = tmp_path / "typo.csv"
    typo.write_text("\n".join([rows[0], "nosuchcase," + rows[1].split(",", 1)[1], *rows[2:]]))
    out = tmp_path / "ev"
    invoke("evaluate", "--model", str(clf), "--table", str(typo), "--images",
           str(phantoms / "images"), "--masks", str(masks), "--out", str(out), "--bootstrap",
           "0", "--allow-leakage", "--threads", "1", "--no-progress", expect=1)
    table = list(csv.DictReader((out / "predictions.csv").open()))
    assert len(table) == len(rows) - 1
    failed = [r for r in table if r["status"] == "error"]
    assert [r["id"] for r in failed] == ["nosuchcase"] and "has no image" in failed[0]["error"]
    assert json.loads((out / "metrics.json").read_text())["n_scored"] == len(rows) - 2


def test_the_run_records_list_the_masks_that_decided_the_answers(
        phantoms: Path, tmp_path: Path) -> None:
    """train-classifier's, predict's and evaluate's manifests hold each --masks label map
    with its SHA-256: a mask corrected by hand later shows which version gave the table."""
    masks, clf = _masks_model(phantoms, tmp_path)
    run = ("--threads", "1", "--no-progress")
    maps = sorted(p.name for p in masks.glob("*.nii.gz"))
    invoke("predict", "--model", str(clf), "--input", str(phantoms / "images"), "--masks",
           str(masks), "--out", str(tmp_path / "p.csv"), *run)
    invoke("evaluate", "--model", str(clf), "--table", str(phantoms / "labels.csv"),
           "--images", str(phantoms / "images"), "--masks", str(masks), "--out",
           str(tmp_path / "ev"), "--bootstrap", "0", "--allow-leakage", *run)
    for record in (tmp_path / "clf-run" / "run.json", tmp_path / "p.run.json",
                   tmp_path / "ev" / "run.json"):
        data = json.loads(record.read_text())["data"]
        listed = sorted(Path(d["path"]).name for d in data if Path(d["path"]).parent == masks)
        assert listed == maps and all(len(d["sha256"]) == 64 for d in data), record


def test_every_training_case_that_cannot_be_measured_is_named_at_once(
        phantoms: Path, tmp_path: Path) -> None:
    """Two masks of no structure: the run names both, not the first alone (a second run
    would stop on the next)."""
    import nibabel as nib
    import numpy as np

    masks = shutil.copytree(phantoms / "labels", tmp_path / "masks")
    (masks / "label_names.json").write_text(json.dumps(
        {"label_names": ["background", "wall", "cavity", "blob"]}))
    blank = sorted(masks.glob("*.nii.gz"))[:2]
    for path in blank:
        img = nib.load(path)
        nib.save(nib.Nifti1Image(np.zeros(img.shape, np.uint8), img.affine), path)
    said = " ".join(invoke(
        "train-classifier", "--table", str(phantoms / "labels.csv"), "--images",
        str(phantoms / "images"), "--framework", "measures", "--masks", str(masks), "--out",
        str(tmp_path / "clf.pt"), "--threads", "1", "--no-progress", "--no-cache",
        expect=2).split())
    assert all(p.name in said for p in blank)
    assert "and 1 more of the 12 training cases cannot be measured" in said


def test_network_settings_given_to_a_masks_prediction_are_named_as_unused(
        phantoms: Path, tmp_path: Path) -> None:
    """With --masks no network runs: --batch-size and --precision were taken without a word
    (and recorded as if they had a part in the predictions)."""
    masks, clf = _masks_model(phantoms, tmp_path)
    run = ("--threads", "1", "--no-progress")
    said = " ".join(invoke("predict", "--model", str(clf), "--input", str(phantoms / "images"),
                           "--masks", str(masks), "--out", str(tmp_path / "p.csv"),
                           "--batch-size", "2", "--precision", "fp32", *run).split())
    assert "--batch-size, --precision not used: with --masks no network runs" in said
    quiet = " ".join(invoke("predict", "--model", str(clf), "--input", str(phantoms / "images"),
                            "--masks", str(masks), "--out", str(tmp_path / "q.csv"),
                            *run).split())
    assert "not used" not in quiet
    default = " ".join(invoke("predict", "--model", str(clf), "--input", str(phantoms / "images"),
                              "--masks", str(masks), "--out", str(tmp_path / "r.csv"),
                              "--batch-size", "8", "--device", "cpu", *run).split())
    assert "--device, --batch-size not used" in default  # the default given: said too
