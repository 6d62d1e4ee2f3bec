"""Doors that write beside a user's files (report, experiment, predict --explain, synth, a
segmentation predict into a labelled folder) replace only what segfew recorded writing, and
a file edited since segfew wrote it is not segfew's any more."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from segfew.errors import DataError, SpecError
from segfew.experiment.report import check_report
from segfew.files import check_replace, is_recorded, outputs_record, write_json
from segfew.inference.paths import predict_paths
from segfew.synth import SynthSpec, write_phantoms
from tests.conftest import make_classifier, make_segmenter, save_nifti, scan

MM = np.diag([1.2, 1.2, 3.0, 1.0])


def test_a_recorded_output_edited_by_hand_is_not_replaced(tmp_path: Path) -> None:
    (tmp_path / "a_seg.nii.gz").write_bytes(b"segfew's")
    write_json(tmp_path / "run.json", outputs_record(tmp_path / "run.json", ["a_seg.nii.gz"]))
    check_replace(tmp_path / "run.json", ["a_seg.nii.gz"])  # unchanged: segfew's
    (tmp_path / "a_seg.nii.gz").write_bytes(b"fixed by hand")
    with pytest.raises(DataError, match=r"a_seg\.nii\.gz.*changed since segfew wrote it"):
        check_replace(tmp_path / "run.json", ["a_seg.nii.gz"])
    assert not is_recorded(tmp_path / "run.json", "a_seg.nii.gz")
    check_replace(tmp_path / "run.json", ["a_seg.nii.gz"], overwrite=True)
    write_json(tmp_path / "old.run.json", {"outputs": ["a_seg.nii.gz"]})  # names only: older
    check_replace(tmp_path / "old.run.json", ["a_seg.nii.gz"])


def test_report_refuses_a_users_report(tmp_path: Path) -> None:
    (tmp_path / "rep").mkdir()
    (tmp_path / "rep" / "report.md").write_text("# my paper draft")
    with pytest.raises(DataError, match=r"report\.md.*segfew did not write it"):
        check_report([tmp_path / "run"], tmp_path / "rep")
    (tmp_path / "rep" / "report.md").unlink()
    (tmp_path / "rep" / "misclassified").mkdir()
    (tmp_path / "rep" / "misclassified" / "fig1.png").write_bytes(b"mine")
    with pytest.raises(DataError, match=r"fig1\.png"):
        check_report([tmp_path / "run"], tmp_path / "rep")


def test_synth_force_replaces_only_its_phantoms(tmp_path: Path) -> None:
    spec = SynthSpec(out=tmp_path / "syn", n_per_class=1, size=16)
    write_phantoms(spec)
    write_phantoms(spec.model_copy(update={"force": True}))  # its own: replaced
    (tmp_path / "syn" / "labels.csv").write_text("my table\n")
    with pytest.raises(DataError, match=r"labels\.csv"):
        write_phantoms(spec.model_copy(update={"force": True}))
    assert (tmp_path / "syn" / "labels.csv").read_text() == "my table\n"
    write_phantoms(spec.model_copy(update={"force": True}), overwrite=True)
    save_nifti(tmp_path / "other" / "images" / "case000.nii.gz", np.ones((16, 16)), MM)
    with pytest.raises(DataError, match=r"case000\.nii\.gz"):
        write_phantoms(spec.model_copy(update={"out": tmp_path / "other", "force": True}))
    with pytest.raises(SpecError, match="not empty"):
        write_phantoms(spec)


def test_segmentation_predict_describes_the_folder_it_writes(tmp_path: Path,
                                                             rng: np.random.Generator) -> None:
    for name in ("case000", "case001"):
        save_nifti(tmp_path / "images" / f"{name}.nii.gz", scan(rng, (16, 16, 3)), MM)
    model = make_segmenter(tmp_path / "seg.pt")
    out = tmp_path / "lab"
    out.mkdir()
    labelled = {"method": "kmeans", "label_names": ["background", "k1", "k2", "k3"]}
    write_json(out / "label_names.json", labelled)
    write_json(out / "centres.json", {"k": 3, "keep_background": True})
    (out / "preview").mkdir()
    (out / "preview" / "kmeans_preview.png").write_bytes(b"k-means maps")
    write_json(out / "run.json", outputs_record(out / "run.json", [
        "label_names.json", "centres.json", "preview/kmeans_preview.png"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        predict_paths(model, [tmp_path / "images"], out, device="cpu")
    names = json.loads((out / "label_names.json").read_text())["label_names"]
    assert names != labelled["label_names"] and names[0] == "background"
    assert not (out / "centres.json").exists() and not (out / "preview").exists()
    assert "label_names.json" in json.loads((out / "run.json").read_text())["output_sha256"]
    (out / "centres.json").write_text("{}")  # not segfew's: refused, kept
    with pytest.raises(DataError, match=r"centres\.json"):
        predict_paths(model, [tmp_path / "images"], out, device="cpu")


def test_label_into_a_segmentation_predicts_folder_removes_its_table(
        tmp_path: Path, rng: np.random.Generator) -> None:
    """predict's predictions.csv would list the model's maps that label has just replaced."""
    from segfew.jobs.label import label_images
    from segfew.spec import LabelSpec

    for name in ("case000", "case001"):
        save_nifti(tmp_path / "images" / f"{name}.nii.gz", scan(rng, (16, 16, 3)), MM)
    out = tmp_path / "maps"
    spec = LabelSpec(images=tmp_path / "images", out=out, k=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        predict_paths(make_segmenter(tmp_path / "seg.pt"), [tmp_path / "images"], out,
                      device="cpu")
        assert (out / "predictions.csv").is_file()
        label_images(spec)
        assert not (out / "predictions.csv").exists()
        (out / "predictions.csv").write_text("id,my notes\n")  # not segfew's: refused, kept
        with pytest.raises(DataError, match=r"predictions\.csv"):
            label_images(spec)
    assert (out / "predictions.csv").read_text() == "id,my notes\n"


def test_explain_keeps_a_users_files(tmp_path: Path, rng: np.random.Generator) -> None:
    for name in ("case000", "case001"):
        save_nifti(tmp_path / "pictures" / f"{name}.nii.gz", scan(rng), MM)
    model = make_classifier(tmp_path / "clf.pt")
    explain = tmp_path / "explain"
    (explain / "sheets").mkdir(parents=True)
    (explain / "index.html").write_text("<p>my site</p>")
    (explain / "sheets" / "fig1.png").write_bytes(b"mine")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataError, match=r"index\.html"):
            predict_paths(model, [tmp_path / "pictures"], tmp_path / "p.csv", device="cpu",
                          explain=explain)
        (explain / "index.html").unlink()
        predict_paths(model, [tmp_path / "pictures"], tmp_path / "p.csv", device="cpu",
                      explain=explain)
        assert (explain / "sheets" / "case000.png").is_file()
        predict_paths(model, [tmp_path / "pictures" / "case001.nii.gz"], tmp_path / "p.csv",
                      device="cpu", explain=explain)  # again, fewer: its own stale sheet goes
    assert not (explain / "sheets" / "case000.png").exists()
    assert (explain / "sheets" / "fig1.png").read_bytes() == b"mine"
