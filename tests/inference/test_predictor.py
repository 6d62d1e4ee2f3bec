"""segfew predict: batched classification with error rows, label maps in the source geometry."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import (
    CLASSES,
    GRID,
    load_nifti,
    make_classifier,
    make_segmenter,
    oblique_affine,
    read_csv,
    save_nifti,
    scan,
)


@pytest.fixture
def classifier(tmp_path: Path) -> Path:
    return make_classifier(tmp_path / "clf.pt")


@pytest.fixture
def scans(tmp_path: Path, rng: np.random.Generator) -> Path:
    """Three good 2D scans, a corrupt file, a 4D NIfTI and a text file, in one folder."""
    folder = tmp_path / "scans"
    for name in ("a", "b", "c"):
        save_nifti(folder / f"{name}.nii.gz", scan(rng))
    (folder / "corrupt.nii.gz").write_bytes(rng.integers(0, 256, 300, dtype=np.uint8).tobytes())
    save_nifti(folder / "fourd.nii.gz", rng.normal(size=(8, 8, 3, 2)).astype(np.float32))
    (folder / "notes.txt").write_text("not a scan\n")
    return folder


# ------------------------------------------------------------------ classification


def test_predict_cli_writes_a_row_per_file_and_fails_on_bad_files(
        classifier: Path, scans: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from segfew.cli import app

    out = tmp_path / "predictions.csv"
    result = CliRunner().invoke(app, ["predict", "--model", str(classifier), "--input",
                                      str(scans), "--out", str(out), "--device", "cpu",
                                      "--no-progress"])
    assert result.exit_code == 1, result.output
    assert "5 cases, 2 failed" in result.output
    rows = {r["id"]: r for r in read_csv(out)}
    assert set(rows) == {"a", "b", "c", "corrupt", "fourd"}  # notes.txt is not a scan
    assert list(read_csv(out)[0]) == ["id", "path", "predicted", "p_cat", "p_dog", "p_fox",
                                      "confidence", "low_confidence",
                                      "status", "error"]
    assert rows["corrupt"]["status"] == "error" and "cannot read" in rows["corrupt"]["error"]
    assert rows["fourd"]["status"] == "error" and "4 dimensions" in rows["fourd"]["error"]
    for bad in ("corrupt", "fourd"):
        assert rows[bad]["predicted"] == "" and rows[bad]["p_cat"] == ""
        assert Path(rows[bad]["path"]).name in rows[bad]["error"]
    for good in ("a", "b", "c"):
        row = rows[good]
        assert row["status"] == "ok" and row["error"] == ""
        p = np.array([float(row[f"p_{c}"]) for c in CLASSES])
        assert p.sum() == pytest.approx(1.0, abs=1e-5)
        assert row["predicted"] == CLASSES[int(np.argmax(p))]


@pytest.mark.parametrize("clash", ["case002.dcm", "a.nii"])
def test_files_sharing_a_case_id_are_error_rows_and_the_rest_is_predicted(
        classifier: Path, tmp_path: Path, rng: np.random.Generator, clash: str) -> None:
    from segfew.inference.paths import predict_paths

    folder = tmp_path / "in"
    for name in ("case000", "case001", "case002", "a"):
        save_nifti(folder / f"{name}.nii.gz", scan(rng))
    (folder / clash).write_bytes(b"\x00" * 64)  # a second file with the same id
    out, failed, _ = predict_paths(classifier, [folder], tmp_path / "p.csv", device="cpu")
    rows = read_csv(out)
    twin = folder / (clash.split(".")[0] + ".nii.gz")
    bad = [r for r in rows if r["status"] == "error"]
    assert failed == 2 and sorted(Path(r["path"]).name for r in bad) == sorted([clash, twin.name])
    for row in bad:
        other = twin if Path(row["path"]) != twin else folder / clash
        assert "duplicate case id" in row["error"] and str(other) in row["error"]
    assert sum(r["status"] == "ok" for r in rows) == 3
    assert (tmp_path / "p.run.json").is_file()


def test_a_named_file_of_unsupported_format_gets_an_error_row(
        classifier: Path, scans: Path, tmp_path: Path) -> None:
    from segfew.inference.paths import predict_paths

    odd = tmp_path / "scan.xyz"
    odd.write_bytes(b"\x00" * 64)
    out, failed, _ = predict_paths(classifier, [scans / "a.nii.gz", odd], tmp_path / "p.csv",
                                device="cpu")
    rows = read_csv(out)
    assert [r["status"] for r in rows] == ["ok", "error"] and failed == 1
    assert "not a supported image file" in rows[1]["error"]


def test_wrong_channel_count_is_an_error_row_not_a_crash(
        classifier: Path, scans: Path) -> None:
    from segfew.data import Case
    from segfew.inference.predictor import Predictor

    predictor = Predictor.open(classifier, device="cpu", batch_size=2)
    cases = [Case("a", (scans / "a.nii.gz",)),
             Case("two", (scans / "b.nii.gz", scans / "c.nii.gz")),
             Case("c", (scans / "c.nii.gz",))]
    done: list[int] = []
    rows = predictor.classify(cases, progress=done.append)
    assert [r.status for r in rows] == ["ok", "error", "ok"]
    assert "2 channel(s), the model expects 1" in rows[1].error
    assert sum(done) == 3


def test_reading_ahead_in_workers_changes_no_row(classifier: Path, scans: Path) -> None:
    from segfew.data import collect_cases
    from segfew.inference.predictor import Predictor

    cases = collect_cases([scans])
    rows = {w: Predictor.open(classifier, device="cpu", batch_size=2, workers=w).classify(cases)
            for w in (0, 2)}
    assert [r.status for r in rows[0]].count("error") == 2
    assert rows[0] == rows[2]


def test_a_model_file_predicts_identically_in_a_fresh_process(
        classifier: Path, scans: Path) -> None:
    from segfew.data import Case
    from segfew.inference.predictor import Predictor

    files = [scans / f"{n}.nii.gz" for n in "abc"]
    here = Predictor.open(classifier, device="cpu").classify([Case(f.name, (f,)) for f in files])
    code = (
        "import json, sys; from pathlib import Path\n"
        "from segfew.data import Case\nfrom segfew.inference.predictor import Predictor\n"
        "files = [Path(a) for a in sys.argv[2:]]\n"
        "rows = Predictor.open(Path(sys.argv[1]), device='cpu').classify("
        "[Case(f.name, (f,)) for f in files])\n"
        "print(json.dumps([r.probabilities for r in rows]))\n")
    proc = subprocess.run([sys.executable, "-c", code, str(classifier), *map(str, files)],
                          capture_output=True, text=True, encoding="utf-8", timeout=300, check=True)
    there = json.loads(proc.stdout.strip().splitlines()[-1])
    assert there == [r.probabilities for r in here]  # bit-identical floats


# ------------------------------------------------------------------ segmentation


def test_slice_wise_segmentation_matches_slice_by_slice(tmp_path: Path) -> None:
    import torch

    from segfew.inference.run import segment_probabilities
    from segfew.modelfile import load_model

    model, _ = load_model(make_segmenter(tmp_path / "seg.pt"), "cpu")
    volume = np.random.default_rng(1).normal(size=(1, GRID, GRID, 5)).astype(np.float32)
    proba = segment_probabilities(model, volume, "cpu", batch_size=2)  # 2 + 2 + 1 slices
    assert proba.shape == (3, GRID, GRID, 5) and proba.dtype == np.float32
    with torch.no_grad():
        one = torch.softmax(model(torch.from_numpy(volume[None, ..., 3])), dim=1)[0].numpy()
    np.testing.assert_allclose(proba[..., 3], one, atol=1e-5)
    np.testing.assert_allclose(proba.sum(0), 1.0, atol=1e-5)



def test_segmentation_is_written_in_the_source_geometry(
        tmp_path: Path, rng: np.random.Generator) -> None:
    from typer.testing import CliRunner

    from segfew.cli import app

    model = make_segmenter(tmp_path / "seg.pt")
    affine = oblique_affine()
    save_nifti(tmp_path / "in" / "vol.nii.gz", scan(rng, (20, 24, 5)), affine)
    out = tmp_path / "masks"
    result = CliRunner().invoke(app, ["predict", "--model", str(model), "--input",
                                      str(tmp_path / "in"), "--out", str(out), "--probabilities",
                                      "--device", "cpu", "--no-progress"])
    assert result.exit_code == 0, result.output
    seg = load_nifti(out / "vol_seg.nii.gz")
    assert seg.shape == (20, 24, 5)
    np.testing.assert_allclose(seg.affine, affine, atol=1e-5)
    labels = np.asarray(seg.dataobj)
    assert labels.dtype.kind in "iu" and set(np.unique(labels)) <= {0, 1, 2}
    prob = load_nifti(out / "vol_prob.nii.gz")
    assert prob.shape == (20, 24, 5, 3)
    p = prob.get_fdata()
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-4)
    np.testing.assert_array_equal(p.argmax(-1), labels)
    rows = read_csv(out / "predictions.csv")
    assert rows[0]["status"] == "ok" and rows[0]["output"].endswith("vol_seg.nii.gz")


def test_a_2d_network_segments_a_stack_stored_with_its_slices_on_any_axis(
        tmp_path: Path, rng: np.random.Generator) -> None:
    # The same short-axis stack, once with its slices along z and once along x (an oblique
    # series after RAS reorientation): the network sees the same slices, the maps agree.
    from segfew.inference.paths import predict_paths

    model = make_segmenter(tmp_path / "seg.pt")
    stack = scan(rng, (20, 24, 5))
    save_nifti(tmp_path / "in" / "z.nii.gz", stack, np.diag([1.5, 1.5, 8.0, 1.0]))
    save_nifti(tmp_path / "in" / "x.nii.gz", np.moveaxis(stack, 2, 0),
               np.diag([8.0, 1.5, 1.5, 1.0]))
    out, failed, _ = predict_paths(model, [tmp_path / "in"], tmp_path / "masks", device="cpu")
    assert failed == 0
    along_z = np.asarray(load_nifti(out / "z_seg.nii.gz").dataobj)
    along_x = np.asarray(load_nifti(out / "x_seg.nii.gz").dataobj)
    assert len(np.unique(along_z)) > 1  # an untrained network still draws structure
    np.testing.assert_array_equal(np.moveaxis(along_x, 0, 2), along_z)


def test_segmenting_a_folder_with_workers_keeps_every_good_case(
        tmp_path: Path, rng: np.random.Generator) -> None:
    from segfew.inference.paths import predict_paths

    model = make_segmenter(tmp_path / "seg.pt")
    for name in ("a", "c"):
        save_nifti(tmp_path / "in" / f"{name}.nii.gz", scan(rng, (20, 24, 5)), np.eye(4))
    (tmp_path / "in" / "b.nii.gz").write_bytes(b"not a nifti")
    out, failed, _ = predict_paths(model, [tmp_path / "in"], tmp_path / "masks", device="cpu",
                                workers=2)
    rows = read_csv(out / "predictions.csv")
    assert [(r["id"], r["status"]) for r in rows] == [("a", "ok"), ("b", "error"), ("c", "ok")]
    assert failed == 1 and "b.nii.gz" in rows[1]["error"]
    assert (out / "a_seg.nii.gz").is_file() and (out / "c_seg.nii.gz").is_file()


# ------------------------------------------------------------------ run spec


def test_predict_from_a_spec_file_with_a_flag_overriding_out(
        classifier: Path, tmp_path: Path, rng: np.random.Generator) -> None:
    from typer.testing import CliRunner

    from segfew.cli import app

    good = tmp_path / "good"
    for name in ("a", "b"):
        save_nifti(good / f"{name}.nii.gz", scan(rng))
    spec = tmp_path / "predict.toml"
    spec.write_text(f"model = {json.dumps(str(classifier))}\n"
                    f"inputs = [{json.dumps(str(good))}]\n"
                    f"out = {json.dumps(str(tmp_path / 'from_file.csv'))}\n"
                    "device = 'cpu'\nbatch_size = 1\n")
    out = tmp_path / "predictions.csv"
    result = CliRunner().invoke(app, ["predict", "--spec", str(spec), "--out", str(out),
                                      "--no-progress"])
    assert result.exit_code == 0, result.output
    assert {r["id"] for r in read_csv(out)} == {"a", "b"}
    assert not (tmp_path / "from_file.csv").exists()
    info = json.loads((tmp_path / "predictions.run.json").read_text())
    assert info["spec"] == {"model": [str(classifier)], "inputs": [str(good)], "out": str(out),
                            "recursive": False, "channels": None, "device": "cpu",
                            "threads": None, "precision": "auto", "batch_size": 1,
                            "workers": None,
                            "probabilities": False, "min_confidence": None, "tta": False,
                            "masks": None, "explain": None}
    classes = sum(k.startswith("p_") for k in read_csv(out)[0])
    assert info["min_confidence"] == pytest.approx((1 + 1 / classes) / 2)  # the one used
    assert info["seed"] is None and info["versions"]["segfew"] and info["threads"] >= 1
    assert {Path(d["path"]).name for d in info["data"]} == {"a.nii.gz", "b.nii.gz",
                                                              classifier.name}  # and the model


def test_an_unknown_key_in_a_predict_spec_is_named(classifier: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from segfew.cli import app

    spec = tmp_path / "predict.yaml"
    spec.write_text(f"model: {classifier}\ninputs: [{tmp_path}]\nout: p.csv\nbatchsize: 4\n")
    result = CliRunner().invoke(app, ["predict", "--spec", str(spec), "--no-progress"])
    assert result.exit_code == 2, result.output
    assert "batchsize: unknown setting" in result.output
    result = CliRunner().invoke(app, ["predict", "--out", "p.csv", "--no-progress"])
    assert result.exit_code == 2
    assert "--model is required (spec key model)" in result.output


@pytest.mark.parametrize("target", ["scan", "folder-file", "not-csv", "inside-input"])
def test_predict_refuses_outputs_that_would_clobber_or_feed_back(
        classifier: Path, scans: Path, tmp_path: Path, target: str) -> None:
    from typer.testing import CliRunner

    from segfew.cli import app

    model = classifier
    if target == "scan":  # an input named as --out (a scan was once overwritten with CSV)
        out = scans / "a.csv"
        out.write_bytes(b"")
        inputs = ["--input", str(scans), "--input", str(out)]
        says = "--out is one of the inputs"
    elif target == "folder-file":
        model = make_segmenter(tmp_path / "seg.pt")
        out = tmp_path / "taken"
        out.write_text("x")
        inputs, says = ["--input", str(scans)], "--out exists and is a file, not a folder"
    elif target == "not-csv":  # the scan itself, as in the issue
        out, inputs = scans / "a.nii.gz", ["--input", str(scans)]
        says = "a classifier writes a table: give --out a name ending in .csv or .tsv"
    else:
        model = make_segmenter(tmp_path / "seg.pt")
        out, inputs = scans / "preds", ["--input", str(scans)]
        says = "--out is inside the input folder"
    before = {p: p.read_bytes() for p in scans.iterdir() if p.is_file()}
    result = CliRunner().invoke(app, ["predict", "--model", str(model), *inputs, "--out",
                                      str(out), "--device", "cpu", "--no-progress"])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and says in errors[0] and str(out) in errors[0], result.output
    assert {p: p.read_bytes() for p in scans.iterdir() if p.is_file()} == before


def test_running_out_of_memory_on_one_case_is_its_error_row(
        tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch) -> None:
    from segfew.inference.paths import predict_paths
    from segfew.inference.segment import Segmenter

    folder = tmp_path / "scans"
    for name in ("a", "big", "c"):
        save_nifti(folder / f"{name}.nii.gz", scan(rng))
    real = Segmenter.segment

    def segment(self: Segmenter, case: object, *args: object, **kwargs: object) -> object:
        if getattr(case, "id", "") == "big":
            raise MemoryError
        return real(self, case, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Segmenter, "segment", segment)
    out, failed, _ = predict_paths(make_segmenter(tmp_path / "seg.pt"), [folder], tmp_path / "out",
                                device="cpu")
    rows = {r["id"]: r for r in read_csv(out / "predictions.csv")}
    assert failed == 1 and rows["big"]["error"] == "not enough memory to process this case"
    assert rows["a"]["status"] == rows["c"]["status"] == "ok"


def test_a_scan_too_large_to_bring_onto_the_grid_is_its_error_row_before_any_work(
        classifier: Path, tmp_path: Path, rng: np.random.Generator,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A grid classifier pre-processes each scan on its own grid first: a legal scan whose
    CLAHE and resize would not fit in free memory is refused, naming it, and the rest of
    the batch is predicted."""
    import segfew.runtime
    from segfew.inference.paths import predict_paths
    from segfew.preprocess.grid import PREPROCESS_BYTES_PER_VOXEL

    folder = tmp_path / "scans"
    save_nifti(folder / "small.nii.gz", scan(rng, (20, 24)))
    save_nifti(folder / "large.nii.gz", scan(rng, (80, 96)))
    free = 20 * 24 * PREPROCESS_BYTES_PER_VOXEL * 2  # the small one fits, the large not
    monkeypatch.setattr(segfew.runtime, "available_bytes", lambda device: free)
    out, failed, count = predict_paths(classifier, [folder], tmp_path / "p.csv", device="cpu",
                                       workers=0)
    rows = {r["id"]: r for r in read_csv(out)}
    assert (count, failed) == (2, 1) and rows["small"]["status"] == "ok"
    assert "large.nii.gz" in rows["large"]["error"]
    assert "onto the network grid" in rows["large"]["error"]


# ------------------------------------------------------------------ kinds


def test_open_gives_each_kind_its_predictor_and_refuses_another_kinds_method(
        phantoms: Path, tmp_path: Path, rng: np.random.Generator) -> None:
    import shutil

    import segfew
    from segfew.data import Case
    from segfew.errors import DataError
    from segfew.inference.classify import ImageClassifier, MeasuresClassifier
    from segfew.inference.predictor import Predictor
    from segfew.inference.segment import Segmenter
    from tests.conftest import invoke

    masks = shutil.copytree(phantoms / "labels", tmp_path / "masks")  # another tool's maps
    (masks / "label_names.json").write_text(json.dumps(
        {"label_names": ["background", "wall", "cavity", "blob"]}))
    invoke("train-classifier", "--table", str(phantoms / "labels.csv"), "--images",
           str(phantoms / "images"), "--framework", "measures", "--masks", str(masks),
           "--out", str(tmp_path / "measures.pt"), "--threads", "1", "--no-progress",
           "--no-cache")
    files = {ImageClassifier: make_classifier(tmp_path / "clf.pt"),
             MeasuresClassifier: tmp_path / "measures.pt",
             Segmenter: make_segmenter(tmp_path / "seg.pt")}
    opened = {kind: segfew.Predictor.open(path, device="cpu") for kind, path in files.items()}
    assert segfew.Predictor is Predictor
    assert {kind: type(p) for kind, p in opened.items()} == {kind: kind for kind in files}

    case = Case("a", (save_nifti(tmp_path / "a.nii.gz", scan(rng)),))
    refused = [(opened[Segmenter], lambda p: p.classify([case]),
                "this is a segmentation model; it writes label maps, not classes")]
    for kind in (ImageClassifier, MeasuresClassifier):
        refused += [(opened[kind], call, "this is a classifier; it predicts classes, not label "
                     "maps") for call in (lambda p: p.segment_case(case),
                                          lambda p: p.read_images(case),
                                          lambda p: p.segment(case, tmp_path / "out"))]
    for kind in (ImageClassifier, Segmenter):
        refused.append((opened[kind], lambda p: p.measurements(case),
                        "only a measures classifier measures cases"))
        assert opened[kind].measurer is None
    for predictor, call, words in refused:
        with pytest.raises(DataError) as err:
            call(predictor)
        assert str(err.value) == f"{predictor.model_path}: {words}"
    assert not (tmp_path / "out").exists()
