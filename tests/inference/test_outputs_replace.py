"""``predict`` never replaces a file segfew did not write, and says which scans trained it."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from segfew.errors import DataError, DataWarning
from segfew.files import check_replace, claim_outputs, outputs_record
from segfew.identity import scan_digest
from segfew.inference.paths import predict_paths
from tests.conftest import make_classifier, make_segmenter, read_csv, save_nifti, scan

MM = np.diag([1.2, 1.2, 3.0, 1.0])  # a real voxel size: no note about it


@pytest.fixture
def scans(tmp_path: Path, rng: np.random.Generator) -> Path:
    for name in ("case000", "case001", "case002"):
        save_nifti(tmp_path / "images" / f"{name}.nii.gz", scan(rng, (16, 16, 3)), MM)
    return tmp_path / "images"


@pytest.fixture
def pictures(tmp_path: Path, rng: np.random.Generator) -> Path:
    """2D scans, for the 2D classifier."""
    for name in ("case000", "case001", "case002"):
        save_nifti(tmp_path / "pictures" / f"{name}.nii.gz", scan(rng), MM)
    return tmp_path / "pictures"


def _expert_labels(folder: Path) -> dict[str, bytes]:
    """A folder of an expert's label maps, named as predict names its own."""
    for name in ("case000", "case001", "case002"):
        save_nifti(folder / f"{name}_seg.nii.gz", np.ones((16, 16, 3), np.uint8))
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_predict_refuses_to_replace_an_experts_label_maps(tmp_path: Path, scans: Path) -> None:
    model = make_segmenter(tmp_path / "seg.pt")
    labels = tmp_path / "labels"
    before = _expert_labels(labels)
    with pytest.raises(DataError, match=r"case000_seg\.nii\.gz: exists and segfew did "
                                       r"not write it: choose another --out, or pass --overwrite"):
        predict_paths(model, [scans], labels, device="cpu")
    assert {p.name: p.read_bytes() for p in labels.iterdir()} == before  # nothing touched
    predict_paths(model, [scans], labels, device="cpu", overwrite=True)  # the user's choice
    assert (labels / "case000_seg.nii.gz").read_bytes() != before["case000_seg.nii.gz"]


def test_predict_reruns_into_its_own_folder(tmp_path: Path, scans: Path) -> None:
    model = make_segmenter(tmp_path / "seg.pt")
    out = tmp_path / "pred"
    predict_paths(model, [scans], out, device="cpu", probabilities=True)
    info = json.loads((out / "run.json").read_text())
    assert "case000_prob.nii.gz" in info["outputs"] and "predictions.csv" in info["outputs"]
    predict_paths(model, [scans / "case000.nii.gz"], out, device="cpu")  # again, fewer
    info = json.loads((out / "run.json").read_text())
    assert info["outputs"] == ["case000_seg.nii.gz", "label_names.json", "predictions.csv"]
    assert "case001_seg.nii.gz" in info["earlier_outputs"]  # still known as segfew's
    predict_paths(model, [scans], out, device="cpu", probabilities=True)
    (out / "case002_seg.nii.gz").write_bytes(b"mine")  # edited by hand: no longer the run's
    with pytest.raises(DataError, match=r"case002_seg\.nii\.gz: changed since segfew wrote it"):
        predict_paths(model, [scans], out, device="cpu")
    (out / "case002_seg.nii.gz").unlink()
    (out / "notes_seg.nii.gz").write_bytes(b"")
    save_nifti(scans.parent / "more" / "notes.nii.gz",
               scan(np.random.default_rng(1), (16, 16, 3)), MM)
    with pytest.raises(DataError, match=r"notes_seg\.nii\.gz"):  # a file no run wrote
        predict_paths(model, [scans, scans.parent / "more"], out, device="cpu")


def test_a_run_stopped_part_way_can_run_again(tmp_path: Path, scans: Path) -> None:
    out = tmp_path / "pred"
    out.mkdir()
    claim_outputs(out / "run.json", ["case000_seg.nii.gz", "predictions.csv"])
    (out / "case000_seg.nii.gz").write_bytes(b"half")
    check_replace(out / "run.json", ["case000_seg.nii.gz", "run.json"])  # no refusal
    (out / "case001_seg.nii.gz").write_bytes(b"")
    with pytest.raises(DataError, match="case001_seg"):
        check_replace(out / "run.json", ["case001_seg.nii.gz"])


def test_predict_refuses_to_replace_a_table_it_did_not_write(tmp_path: Path,
                                                              pictures: Path) -> None:
    scans = pictures
    model = make_classifier(tmp_path / "clf.pt")
    table = tmp_path / "labels.csv"
    table.write_text("id,label\ncase000,cat\n")
    with pytest.raises(DataError, match=r"labels\.csv: exists and segfew did not write it"):
        predict_paths(model, [scans], table, device="cpu")
    assert table.read_text() == "id,label\ncase000,cat\n"
    out, failed, _ = predict_paths(model, [scans], tmp_path / "p.csv", device="cpu")
    assert failed == 0
    predict_paths(model, [scans], out, device="cpu")  # its own table: replaced
    assert json.loads((tmp_path / "p.run.json").read_text())["outputs"] == ["p.csv"]
    (tmp_path / "q.run.json").write_text("not a run record")
    with pytest.raises(DataError, match=r"q\.run\.json: exists"):
        predict_paths(model, [scans], tmp_path / "q.csv", device="cpu")


def test_an_older_segfews_outputs_are_its_own(tmp_path: Path) -> None:
    """A run record from before ``outputs`` were recorded names its ``--out``."""
    out = tmp_path / "pred"
    out.mkdir()
    (out / "a_seg.nii.gz").write_bytes(b"")
    (out / "run.json").write_text(json.dumps({"command": "segfew predict", "versions": {},
                                              "spec": {"out": str(out)}}))
    check_replace(out / "run.json", ["a_seg.nii.gz", "run.json"])
    assert outputs_record(out / "run.json", [])["earlier_outputs"] == ["a_seg.nii.gz"]
    (tmp_path / "p.csv").write_text("")
    (tmp_path / "p.run.json").write_text(json.dumps({"command": "segfew predict",
                                                     "versions": {},
                                                     "spec": {"out": "elsewhere/p.csv"}}))
    check_replace(tmp_path / "p.run.json", ["p.csv"])
    (tmp_path / "other.csv").write_text("")
    with pytest.raises(DataError, match=r"other\.csv"):
        check_replace(tmp_path / "p.run.json", ["other.csv"])


def test_predict_says_which_scans_trained_the_model(tmp_path: Path, scans: Path) -> None:
    import torch

    from segfew.modelfile import read_model_file, save_model
    from segfew.models import MNet

    path = make_segmenter(tmp_path / "seg.pt")
    meta, state = read_model_file(path)
    meta.metrics = {"training_data": [scan_digest(scans / "case001.nii.gz")]}
    network = MNet(2, 1, 3, n_s=2, dropout=0.5)
    network.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()})
    save_model(path, network.eval(), meta)
    with pytest.warns(DataWarning, match=r"1 of these 3 scans trained the model \(case001\): "
                                         "their predictions are no test of it"):
        out, failed, _ = predict_paths(path, [scans], tmp_path / "pred", device="cpu")
    assert failed == 0 and len(read_csv(out / "predictions.csv")) == 3  # not refused
    trained = json.loads((out / "run.json").read_text())["trained_on"]
    assert trained == {"checked": True, "cases": ["case001"], "network_only": False}
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)  # other scans: nothing said
        predict_paths(path, [scans / "case000.nii.gz"], tmp_path / "other", device="cpu")


def test_the_predict_command_refuses_in_one_line_and_overwrites_when_told(
        tmp_path: Path, pictures: Path) -> None:
    from typer.testing import CliRunner

    from segfew.cli import app

    model = make_classifier(tmp_path / "clf.pt")
    table = tmp_path / "labels.csv"
    table.write_text("id,label\ncase000,cat\n")
    args = ["predict", "--model", str(model), "--input", str(pictures), "--out", str(table),
            "--device", "cpu", "--no-progress"]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 2 and refused.output.count("error:") == 1, refused.output
    assert "labels.csv: exists and segfew did not write it" in " ".join(refused.output.split())
    assert table.read_text() == "id,label\ncase000,cat\n"
    told = CliRunner().invoke(app, [*args, "--overwrite"])
    assert told.exit_code == 0, told.output
    assert read_csv(table)[0]["predicted"]
