"""segfew evaluate: classification metrics that match the predictions, Dice on the source grid."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import (
    CLASSES,
    invoke,
    load_nifti,
    make_classifier,
    make_segmenter,
    oblique_affine,
    read_csv,
    save_nifti,
    scan,
)

REQUIRED = {"accuracy", "balanced_accuracy", "kappa", "macro_f1", "per_class",
            "confusion_matrix", "ci", "n_cases", "n_failed", "model"}


def test_evaluate_cli_metrics_agree_with_the_predictions(
        tmp_path: Path, labelled: tuple[Path, Path]) -> None:
    images, table = labelled
    model = make_classifier(tmp_path / "clf.pt")
    out = tmp_path / "eval"
    said = invoke("evaluate", "--model", str(model), "--table", str(table), "--images",
                  str(images), "--out", str(out), "--bootstrap", "200", "--device", "cpu",
                  "--no-progress")
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) >= REQUIRED
    assert "measurements" not in metrics and not (out / "measurements.csv").exists()
    assert str(out / "predictions.csv") in said and "measurements.csv" not in said
    assert metrics["n_cases"] == 6 and metrics["n_failed"] == 0
    rows = read_csv(out / "predictions.csv")
    assert len(rows) == 6 and all(r["status"] == "ok" for r in rows)
    matching = sum(r["predicted"] == r["target"] for r in rows)
    assert metrics["accuracy"] == pytest.approx(matching / len(rows))
    assert np.asarray(metrics["confusion_matrix"]).sum() == 6
    assert (out / "confusion_matrix.png").stat().st_size > 0
    info = json.loads((out / "run.json").read_text())
    assert info["spec"] == {  # the resolved EvaluateSpec
        "model": [str(model)], "images": str(images), "out": str(out), "table": str(table),
        "labels": None, "channels": None, "id_column": None, "label_column": None,
        "group_column": None, "label_map": None, "device": "cpu", "threads": None,
        "batch_size": 8,
        "bootstrap": 200, "seed": 0, "allow_leakage": False,
        "masks": None, "explain": None}
    assert info["seed"] == 0


def test_a_table_id_without_an_image_is_an_error_row(
        tmp_path: Path, labelled: tuple[Path, Path]) -> None:
    """A batch keeps its good cases: the missing one is a row, the others are scored."""
    images, table = labelled
    table.write_text(table.read_text() + f"ghost,{CLASSES[0]}\n")
    model = make_classifier(tmp_path / "clf.pt")
    out = tmp_path / "eval"
    invoke("evaluate", "--model", str(model), "--table", str(table), "--images", str(images),
           "--out", str(out), "--bootstrap", "0", "--device", "cpu", "--no-progress", expect=1)
    rows = {r["id"]: r for r in read_csv(out / "predictions.csv")}
    assert len(rows) == 7 and rows["ghost"]["status"] == "error"
    assert "id 'ghost' has no image ghost.*" in rows["ghost"]["error"]
    assert sum(r["status"] == "ok" for r in rows.values()) == 6
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_cases"] == 7 and metrics["n_failed"] == 1
    info = json.loads((out / "run.json").read_text())  # the table and the model are listed
    assert {Path(d["path"]).name for d in info["data"]} >= {"labels.csv", "clf.pt"}


def test_evaluate_reads_class_sub_folders_without_a_table(
        tmp_path: Path, labelled: tuple[Path, Path], rng: np.random.Generator) -> None:
    folders = tmp_path / "by-class"
    for i in range(4):
        save_nifti(folders / CLASSES[i % 3] / f"c{i}.nii.gz", scan(rng))
    model = make_classifier(tmp_path / "clf.pt")
    out = tmp_path / "eval"
    invoke("evaluate", "--model", str(model), "--images", str(folders), "--out", str(out),
           "--bootstrap", "0", "--device", "cpu", "--no-progress")
    rows = read_csv(out / "predictions.csv")
    assert sorted(r["target"] for r in rows) == sorted(CLASSES[i % 3] for i in range(4))


@pytest.mark.parametrize("with_table", [False, True])
def test_labels_given_to_a_classifier_is_a_one_line_error(
        tmp_path: Path, labelled: tuple[Path, Path], with_table: bool) -> None:
    images, table = labelled
    model = make_classifier(tmp_path / "clf.pt")
    out = tmp_path / "eval"
    output = invoke("evaluate", "--model", str(model), "--images", str(images),
                    "--labels", str(images), *(("--table", str(table)) if with_table else ()),
                    "--out", str(out), "--bootstrap", "0", "--device", "cpu", "--no-progress",
                    expect=2)
    assert "--labels holds the label maps a segmentation model is scored against" in " ".join(
        output.split())
    assert "no class sub-folders" not in output and not out.exists()


def test_class_folders_with_clashing_case_ids_keep_the_good_cases(
        tmp_path: Path, rng: np.random.Generator) -> None:
    folders = tmp_path / "by-class"
    for i in range(4):
        save_nifti(folders / CLASSES[i % 3] / f"c{i}.nii.gz", scan(rng))
    save_nifti(folders / CLASSES[0] / "c1.nii", scan(rng))  # c1 in two class folders
    save_nifti(folders / CLASSES[2] / "c2.nii", scan(rng))  # c2 twice in one folder
    model = make_classifier(tmp_path / "clf.pt")
    out = tmp_path / "eval"
    invoke("evaluate", "--model", str(model), "--images", str(folders), "--out", str(out),
           "--bootstrap", "0", "--device", "cpu", "--no-progress", expect=1)
    rows = read_csv(out / "predictions.csv")
    bad = sorted(Path(r["path"]).name for r in rows if r["status"] == "error")
    assert bad == ["c1.nii", "c1.nii.gz", "c2.nii", "c2.nii.gz"]
    assert all("duplicate case id" in r["error"] for r in rows if r["status"] == "error")
    assert sorted(r["id"] for r in rows if r["status"] == "ok") == ["c0", "c3"]
    assert (out / "run.json").is_file()


def test_a_class_the_model_does_not_know_is_a_one_line_error(
        tmp_path: Path, labelled: tuple[Path, Path]) -> None:
    from segfew.data import find_classification_cases
    from segfew.errors import DataError
    from segfew.evaluation.evaluate import evaluate_classifier

    images, table = labelled
    table.write_text(table.read_text().replace("s4,dog", "s4,zebra"))
    model = make_classifier(tmp_path / "clf.pt")
    cases = find_classification_cases(images, table)
    with pytest.raises(DataError) as err:
        evaluate_classifier(model, cases, tmp_path / "eval", device="cpu", table=table)
    message = str(err.value)
    assert "\n" not in message
    assert "'zebra'" in message and "'s4'" in message and str(table) in message
    assert not (tmp_path / "eval" / "metrics.json").exists()


def test_segmentation_dice_is_scored_on_the_source_grid(
        tmp_path: Path, rng: np.random.Generator) -> None:
    from segfew.data import find_segmentation_cases
    from segfew.evaluation.evaluate import evaluate_segmentation
    from segfew.inference.paths import predict_paths

    model = make_segmenter(tmp_path / "seg.pt")
    images, labels = tmp_path / "images", tmp_path / "labels"
    for name in ("v1", "v2"):
        save_nifti(images / f"{name}.nii.gz", scan(rng, (20, 24, 5)), oblique_affine())
    masks, failed, _ = predict_paths(model, [images], tmp_path / "pred", device="cpu")
    assert failed == 0
    assert json.loads((masks / "run.json").read_text())["spec"]["task"] == "predict"
    expected: dict[str, list[float]] = {"l1": [], "l2": []}
    for k, name in enumerate(("v1", "v2")):
        # truth: the model's own label map with two blocks overwritten, so the expected Dice
        # is known exactly on the source grid (and is 1 nowhere by accident)
        pred = np.asarray(load_nifti(masks / f"{name}_seg.nii.gz").dataobj).astype(np.int16)
        truth = pred.copy()
        truth[2 + k:9, 3:12, :3] = 1
        truth[12:18, 10 + k:20, 2:] = 2
        save_nifti(labels / f"{name}.nii.gz", truth, oblique_affine())
        for label, key in ((1, "l1"), (2, "l2")):
            a, b = pred == label, truth == label
            expected[key].append(2 * (a & b).sum() / (a.sum() + b.sum()))

    metrics = evaluate_segmentation(model, find_segmentation_cases(images, labels),
                                    tmp_path / "eval", device="cpu")
    for key in ("l1", "l2"):
        assert [c["dice"][key] for c in metrics["per_case"]] == pytest.approx(expected[key])
        assert metrics["dice"][key] == pytest.approx(np.mean(expected[key]))
    assert metrics["mean_dice"] == pytest.approx(np.mean([np.mean(v) for v in expected.values()]))
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["mean_dice"] == pytest.approx(metrics["mean_dice"])
    assert saved["dice_cases"] == {"l1": 2, "l2": 2}
    assert len(read_csv(tmp_path / "eval" / "per_case.csv")) == 2


def test_the_dice_table_says_how_many_cases_each_mean_holds() -> None:
    """12 slices, 6 with neither truth nor prediction of the tumour: "6 of 12", not "12"."""
    from rich.console import Console

    from segfew.cli.evaluate import dice_table

    console = Console(width=200, record=True)
    console.print(dice_table({"n_cases": 12, "n_failed": 0, "dice": {"tumour": 0.103},
                              "mean_dice": 0.103, "dice_cases": {"tumour": 6}}))
    text = console.export_text()
    assert "6 of 12" in text and "neither truth nor prediction" in " ".join(text.split())


def test_a_truth_value_the_model_cannot_predict_is_an_error_row_not_a_zero_dice(
        tmp_path: Path, rng: np.random.Generator) -> None:
    """A structure relabelled 3, or a map whose scl_slope doubles every value, scored
    against a model of labels 0–2 would read as missed structures, silently. A code book
    (0, 2, 41) was refused with the advice of ``--label-map consecutive``, which evaluate
    then refused for this model, and a count of "network outputs"."""
    import nibabel as nib

    from segfew.data import find_segmentation_cases
    from segfew.evaluation.evaluate import evaluate_segmentation

    model = make_segmenter(tmp_path / "seg.pt")  # background, l1, l2
    images, labels = tmp_path / "images", tmp_path / "labels"
    truth = np.zeros((20, 24, 5), np.uint8)
    truth[2:9, 3:12, :3], truth[12:18, 10:20, 2:] = 1, 2
    for name in ("good", "extra", "slope", "codes"):
        save_nifti(images / f"{name}.nii.gz", scan(rng, (20, 24, 5)), oblique_affine())
    save_nifti(labels / "good.nii.gz", truth, oblique_affine())
    save_nifti(labels / "extra.nii.gz", np.where(truth == 2, 3, truth), oblique_affine())
    save_nifti(labels / "codes.nii.gz", np.where(truth == 2, 41, truth * 2), oblique_affine())
    scaled = nib.Nifti1Image(truth, oblique_affine())
    scaled.header.set_slope_inter(2.0, 0.0)  # reads 0, 2, 4
    nib.save(scaled, labels / "slope.nii.gz")

    metrics = evaluate_segmentation(model, find_segmentation_cases(images, labels),
                                    tmp_path / "eval", device="cpu")
    rows = {c["id"]: c for c in metrics["per_case"]}
    assert rows["good"]["status"] == "ok" and metrics["n_scored"] == 1
    for name, values in (("extra", "value 3 is not among the model's labels"),
                         ("slope", "value 4 is not among the model's labels (0 background, "
                                   "1 l1, 2 l2)")):
        assert rows[name]["status"] == "error"
        assert f"{name}.nii.gz" in rows[name]["error"] and values in rows[name]["error"]
    codes = rows["codes"]["error"]
    assert "remap them with --label-map OLD:NEW pairs (this map alone: 2:1,41:2)" in codes
    assert "consecutive" not in codes and "network" not in codes, codes


def test_an_evaluation_neither_writes_into_a_model_run_nor_leaves_another_ones_table(
        tmp_path: Path, labelled: tuple[Path, Path], rng: np.random.Generator) -> None:
    from segfew.data import find_classification_cases, find_segmentation_cases
    from segfew.errors import DataError
    from segfew.evaluation.evaluate import evaluate_classifier, evaluate_segmentation

    images, table = labelled
    model = make_classifier(tmp_path / "clf.pt")
    run = tmp_path / "clf-run"
    run.mkdir()
    (run / "run.json").write_text('{"status": "completed"}')
    cases = find_classification_cases(images, table)
    with pytest.raises(DataError, match="clf-run"):
        evaluate_classifier(model, cases, run, device="cpu", table=table, bootstrap=10)
    assert (run / "run.json").read_text() == '{"status": "completed"}'

    out = tmp_path / "eval"  # first a segmentation model's Dice, then a classifier's scores
    seg = make_segmenter(tmp_path / "seg.pt")
    (tmp_path / "vol").mkdir()
    save_nifti(tmp_path / "vol" / "v.nii.gz", scan(rng, (20, 24, 5)))
    save_nifti(tmp_path / "lab" / "v.nii.gz", np.ones((20, 24, 5), np.uint8))
    evaluate_segmentation(seg, find_segmentation_cases(tmp_path / "vol", tmp_path / "lab"),
                          out, device="cpu")
    assert (out / "per_case.csv").is_file()
    evaluate_classifier(model, cases, out, device="cpu", table=table, bootstrap=10)
    assert (out / "predictions.csv").is_file() and not (out / "per_case.csv").exists()


def test_label_map_consecutive_at_evaluate_is_the_table_the_model_was_trained_with(
        tmp_path: Path, rng: np.random.Generator) -> None:
    """Codes 0, 2, 17, 41 pre-trained as 0–3: a test map without 17, numbered afresh, would
    compare code 41 with the model's code-17 output. The model's table is applied (by
    default and for ``consecutive``); other pairs are warned."""
    from segfew.errors import DataError, SpecError
    from segfew.evaluation.evaluate import evaluate_paths
    from segfew.modelfile import read_model_file, save_model
    from segfew.models import MNet

    seg = make_segmenter(tmp_path / "seg.pt", num_labels=4)
    meta, _ = read_model_file(seg)
    net = MNet(2, 1, 4, n_s=2, dropout=0.5)
    spec = {"data": {"label_map": {"2": 1, "17": 2, "41": 3}}}
    model = save_model(tmp_path / "fs.pt", net.eval(), meta.model_copy(update={"spec": spec}))
    images, labels = tmp_path / "images", tmp_path / "labels"
    save_nifti(images / "v.nii.gz", scan(rng, (20, 24, 5)))
    truth = np.zeros((20, 24, 5), np.uint8)
    truth[2:9, 3:12], truth[12:18, 10:20] = 2, 41  # no 17 in this map
    save_nifti(labels / "v.nii.gz", truth)

    def dice(label_map: Any, out: str) -> dict[str, Any]:
        return evaluate_paths(model, images, tmp_path / out, labels=labels,
                              label_map=label_map, device="cpu")[1]["per_case"][0]

    as_trained = dice("consecutive", "a")
    assert as_trained["status"] == "ok"
    assert as_trained == {**dice({2: 1, 17: 2, 41: 3}, "b"), "path": as_trained["path"]}
    assert as_trained == dice(None, "e")  # by default, as the model was pre-trained
    with pytest.warns(Warning, match=r"otherwise than the table the model was pre-trained "
                                     r"with \(2:1,17:2,41:3\)"):
        dice({2: 1, 41: 2}, "c")
    with pytest.raises(SpecError, match="records no label table"):
        evaluate_paths(seg, images, tmp_path / "d", labels=labels, label_map="consecutive",
                       device="cpu")

    # truths already numbered as the model's outputs: scored as they are, by default
    save_nifti(labels / "v.nii.gz", np.where(truth == 41, 3, truth == 2).astype(np.uint8))
    assert dice(None, "f") == dice("consecutive", "g") == as_trained
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pairs that move no code of the table: no word
        dice({1: 1, 3: 3}, "h")
    every = np.where(truth == 41, 3, truth == 2).astype(np.uint8)
    every[10:12, 2:5] = 2  # 2 is also a code of the table, but 1 and 3 are none of its
    save_nifti(labels / "v.nii.gz", every)
    assert dice(None, "j")["status"] == "ok"
    # only values that are both codes of the table and outputs: which, it cannot tell
    save_nifti(labels / "v.nii.gz", (truth == 2).astype(np.uint8) * 2)
    with pytest.raises(DataError, match=r"truth maps hold 2: codes of the table .* also its "
                                        r"own outputs"):
        dice(None, "i")
