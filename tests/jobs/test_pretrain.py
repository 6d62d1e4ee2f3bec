"""The pretrain job end to end through the CLI on tiny phantoms: its model file, Dice,
run folder, resume, torchrun, and what it refuses."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from segfew.cli import app
from tests.conftest import invoke, save_itk
from tests.jobs.conftest import TINY_PRETRAIN

runner = CliRunner()


def test_pretrain_writes_model_dice_and_run_info(seg_model: Path) -> None:
    from segfew.modelfile import read_model_file

    meta, _ = read_model_file(seg_model)
    assert meta.kind == "segmentation"
    assert meta.architecture.args["n_s"] == 2
    dice = meta.metrics["validation_dice"]
    assert set(dice) == set(meta.classes[1:])
    assert all(v is None or 0.0 <= v <= 1.0 for v in dice.values())
    run_dir = seg_model.parent / "seg-run"
    info = json.loads((run_dir / "run.json").read_text())
    assert info["spec"]["network"]["n_s"] == 2
    assert info["versions"]["segfew"]
    from segfew.runtime import resolve_plan

    assert info["runtime"]["precision"] == resolve_plan(torch.device("cpu")).precision
    assert info["data"] and all(len(row["sha256"]) == 64 for row in info["data"])
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    assert len(rows) == 2


def test_precision_flag_overrides_the_default_and_run_json_says_so(
        phantoms: Path, tmp_path: Path) -> None:
    out = tmp_path / "seg.pt"
    invoke("pretrain", "--images", str(phantoms / "images"), "--labels", str(phantoms / "labels"),
           "--out", str(out), *TINY_PRETRAIN, "--epochs", "1", "--precision", "fp32")
    info = json.loads((tmp_path / "seg-run" / "run.json").read_text())
    assert info["spec"]["train"]["precision"] == "fp32"
    assert info["runtime"]["precision"] == "fp32" and info["runtime"]["autocast"] is None
    result = runner.invoke(app, ["pretrain", "--images", str(phantoms / "images"),
                                 "--precision", "fp8"])
    assert result.exit_code != 0 and "fp8" in result.output


def test_metrics_csv_the_model_file_and_evaluate_share_one_dice(
        seg_model: Path, phantoms: Path, tmp_path: Path) -> None:
    """The model file's validation Dice is metrics.csv's row of the best epoch, and both use
    evaluate's definition (per-case Dice averaged over cases, then over labels)."""
    from segfew.data import find_segmentation_cases
    from segfew.evaluation.evaluate import evaluate_segmentation
    from segfew.modelfile import read_model_file

    meta, _ = read_model_file(seg_model)
    with open(seg_model.parent / "seg-run" / "metrics.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    best = rows[meta.metrics["best_epoch"] - 1]
    assert float(best["val_metric"]) == pytest.approx(meta.metrics["validation_mean_dice"],
                                                      rel=1e-5)
    for i, name in enumerate(meta.classes[1:], start=1):
        value = meta.metrics["validation_dice"][name]
        assert (value is None) == (best[f"val_dice_{i}"] == "nan")
        if value is not None:
            assert float(best[f"val_dice_{i}"]) == pytest.approx(value, rel=1e-5)
    # evaluate on the validation cases gives the same numbers (source grid = network grid
    # here; tolerance for the precision the two runs used)
    val_ids = set(meta.metrics["validation_cases"])
    cases = [c for c in find_segmentation_cases(phantoms / "images", phantoms / "labels")
             if c.id in val_ids]
    metrics = evaluate_segmentation(seg_model, cases, tmp_path / "eval", device="cpu",
                                    allow_leakage=True)  # validation cases are in its manifest
    assert metrics["leakage"]["leaked"] == sorted(val_ids)
    assert metrics["mean_dice"] == pytest.approx(meta.metrics["validation_mean_dice"], abs=0.02)


def _state(path: Path) -> dict:
    from segfew.modelfile import read_model_file

    return read_model_file(path)[1]


def test_pretrain_resumed_after_a_stop_ends_with_the_same_weights(
        phantoms: Path, tmp_path: Path) -> None:
    args = ["pretrain", "--images", str(phantoms / "images"), "--labels",
            str(phantoms / "labels"), "--dim", "2", "--n-s", "2", "--size", "32",
            "--batch-size", "4", "--no-progress", "--no-cache"]
    invoke(*args, "--out", str(tmp_path / "full.pt"), "--epochs", "3")
    invoke(*args, "--out", str(tmp_path / "part.pt"), "--epochs", "1")
    invoke(*args, "--out", str(tmp_path / "part.pt"), "--epochs", "3", "--resume")
    full, resumed = _state(tmp_path / "full.pt"), _state(tmp_path / "part.pt")
    assert full.keys() == resumed.keys()
    assert all(torch.equal(full[k], resumed[k]) for k in full)
    rows = list(csv.DictReader((tmp_path / "part-run" / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]


@pytest.mark.slow
def test_pretrain_under_torchrun_matches_one_process(phantoms: Path, tmp_path: Path) -> None:
    """Two CPU processes (gloo): data sharded, metrics reduced, only rank 0 writes.

    BatchNorm statistics are per process on CPUs (SyncBatchNorm is CUDA-only), so the two
    runs agree within a tolerance rather than exactly (exact agreement without BatchNorm
    is pinned down in test_distributed.py).
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec = tmp_path / "spec.toml"  # no dropout: its masks are drawn per process
    spec.write_text("[network]\ndropout = 0.0\n[train.augment]\nenabled = false\n")
    args = ["pretrain", "--images", str(phantoms / "images"), "--labels",
            str(phantoms / "labels"), "--dim", "2", "--n-s", "2", "--size", "32",
            "--batch-size", "4", "--epochs", "3", "--lr", "0.0005", "--no-progress",
            "--no-cache", "--spec", str(spec)]
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo", PYTHONWARNINGS="ignore")
    subprocess.run([sys.executable, "-m", "segfew", *args, "--out", str(tmp_path / "one.pt")],
                   check=True, env=env, capture_output=True, timeout=300)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
         "--master_addr=127.0.0.1", f"--master_port={port}", "-m", "segfew", *args,
         "--out", str(tmp_path / "two.pt")],
        env=env, capture_output=True, text=True, encoding="utf-8", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("Validation Dice") + proc.stdout.count("Validation Dice") == 1
    one = list(csv.DictReader((tmp_path / "one-run" / "metrics.csv").open()))
    two = list(csv.DictReader((tmp_path / "two-run" / "metrics.csv").open()))
    assert len(one) == len(two) == 3
    for a, b in zip(one, two, strict=True):  # same data, steps and loss scale per epoch
        assert float(b["train_loss"]) == pytest.approx(float(a["train_loss"]), rel=0.2)
        assert float(b["val_metric"]) == pytest.approx(float(a["val_metric"]), abs=0.1)
    assert not list(tmp_path.glob(".*tmp*"))  # rank 1 wrote nothing half-way


def test_a_3d_grid_that_cannot_be_pooled_is_a_spec_error(tmp_path: Path) -> None:
    from segfew.synth import make_phantoms

    make_phantoms(tmp_path / "d", dim=3, n_per_class=2, size=16, num_classes=2, seed=0)
    result = runner.invoke(app, [
        "pretrain", "--images", str(tmp_path / "d" / "images"), "--labels",
        str(tmp_path / "d" / "labels"), "--out", str(tmp_path / "s.pt"), "--dim", "3",
        "--n-s", "2", "--size", "16,16,8", "--epochs", "1", "--no-progress", "--no-cache"])
    assert result.exit_code == 2
    assert "must be a multiple of 16" in result.output
    assert not (tmp_path / "s.pt").exists()


def test_3d_pretrain_and_classifier_on_volumes(tmp_path: Path) -> None:
    from segfew.modelfile import read_model_file
    from segfew.synth import make_phantoms

    data = tmp_path / "d"
    make_phantoms(data, dim=3, n_per_class=3, size=16, num_classes=2, seed=0)
    invoke("pretrain", "--images", str(data / "images"), "--labels", str(data / "labels"),
           "--out", str(tmp_path / "seg3d.pt"), "--dim", "3", "--n-s", "2", "--size", "16",
           "--epochs", "1", "--batch-size", "2", "--no-progress", "--no-cache",
           "--precision", "fp32")  # bf16 on 6 tiny volumes is not deterministic on CPU
    invoke("train-classifier", "--table", str(data / "labels.csv"), "--images",
           str(data / "images"), "--framework", "manual", "--features", str(tmp_path / "seg3d.pt"),
           "--out", str(tmp_path / "clf3d.pt"), "--size", "16", "--epochs", "1",
           "--batch-size", "2", "--no-progress", "--no-cache", "--precision", "fp32")
    meta, _ = read_model_file(tmp_path / "clf3d.pt")
    assert meta.architecture.feature_net is not None
    assert meta.architecture.feature_net.args["dim"] == 3
    assert meta.architecture.args["input_size"] == [16, 16, 16]
    assert meta.feature_source is not None and meta.feature_source["kind"] == "segmentation"


def test_two_labelled_volumes_train_3d_with_the_default_batch_size(tmp_path: Path) -> None:
    """The one training volume of a 1/1 split is a batch of one: it is never dropped."""
    from segfew.synth import make_phantoms

    data = tmp_path / "d"
    make_phantoms(data, dim=3, n_per_class=1, size=32, num_classes=2, seed=0)
    out = tmp_path / "seg3d.pt"
    invoke("pretrain", "--images", str(data / "images"), "--labels", str(data / "labels"),
           "--out", str(out), "--dim", "3", "--n-s", "2", "--size", "32", "--epochs", "1",
           "--no-progress", "--no-cache")
    with open(out.parent / "seg3d-run" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and float(rows[0]["train_loss"]) > 0


def test_too_few_cases_for_validation_is_said(tmp_path: Path) -> None:
    from segfew.synth import make_phantoms

    data = tmp_path / "d"
    make_phantoms(data, dim=2, n_per_class=1, size=32, num_classes=2, seed=0)
    for kind in ("images", "labels"):  # keep one case
        for extra in sorted((data / kind).iterdir())[1:]:
            extra.unlink()
    out = invoke("pretrain", "--images", str(data / "images"), "--labels", str(data / "labels"),
                 "--out", str(tmp_path / "seg.pt"), *TINY_PRETRAIN)
    assert "warning: 1 case(s) are too few for a validation split" in " ".join(out.split())


def test_a_run_folder_in_use_is_refused_naming_the_lock(phantoms: Path, tmp_path: Path) -> None:
    from segfew.files import run_lock

    out = tmp_path / "seg.pt"
    with run_lock(tmp_path / "seg-run") as lock:
        result = runner.invoke(app, ["pretrain", "--images", str(phantoms / "images"),
                                     "--labels", str(phantoms / "labels"), "--out", str(out),
                                     *TINY_PRETRAIN])
    assert result.exit_code == 2 and not out.exists()
    assert "is in use by another segfew run" in result.output, result.output
    assert f"lock file {lock}" in result.output, result.output


def test_batchnorm_on_one_sample_is_said_plainly(tmp_path: Path) -> None:
    """16³ pools to one voxel: one training volume leaves BatchNorm one value per channel."""
    from segfew.synth import make_phantoms

    data = tmp_path / "d"
    make_phantoms(data, dim=3, n_per_class=1, size=16, num_classes=2, seed=0)
    for kind in ("images", "labels"):  # one case: the default holds none out for validation
        for extra in sorted((data / kind).iterdir())[1:]:
            extra.unlink()
    result = runner.invoke(app, ["pretrain", "--images", str(data / "images"), "--labels",
                                 str(data / "labels"), "--out", str(tmp_path / "s.pt"), "--dim",
                                 "3", "--n-s", "2", "--size", "16", "--epochs", "1",
                                 "--no-progress", "--no-cache"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "BatchNorm cannot train on one sample" in result.output
    assert "--batch-size" in result.output and not (tmp_path / "s.pt").exists()


def test_label_names_declare_the_label_set(phantoms: Path, tmp_path: Path) -> None:
    import shutil

    from segfew.errors import DataError
    from segfew.jobs.pretrain import pretrain
    from segfew.preprocess.cache import PreprocessCache
    from segfew.spec import PretrainSpec

    labels = tmp_path / "labels"  # the maps alone: synth's label_names.json would name them
    shutil.copytree(phantoms / "labels", labels, ignore=shutil.ignore_patterns("*.json"))
    spec = PretrainSpec.model_validate({
        "data": {"images": phantoms / "images", "labels": labels},
        "out": tmp_path / "seg.pt", "label_names": ["background", "wall"],
        "preprocess": {"size": [32]}, "network": {"n_s": 2}, "train": {"epochs": 1}})
    with pytest.raises(DataError, match=r"labels.*: label values \[2, 3\] outside the declared "
                                        r"set \[0, 1\]"):
        pretrain(spec, cache=PreprocessCache(None))
    assert not (tmp_path / "seg.pt").exists()


def test_jpeg_masks_are_refused_in_one_line_before_any_other(
        make_phantom_set: Callable[[int, int], Path], tmp_path: Path) -> None:
    """Four cases would warn that they are too few for a validation split, and the masks'
    grid differs from the scans': neither is said, only the refusal the names alone give."""
    phantoms = make_phantom_set(2, 2)
    masks = tmp_path / "masks"
    masks.mkdir()
    for label in sorted((phantoms / "labels").glob("*.nii.gz")):
        array = np.asarray(nib.load(label).dataobj).squeeze().astype(np.uint8)
        save_itk(masks / label.name.replace(".nii.gz", ".jpg"), array)
    out = tmp_path / "seg.pt"
    result = runner.invoke(app, ["pretrain", "--images", str(phantoms / "images"), "--labels",
                                 str(masks), "--out", str(out), *TINY_PRETRAIN])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "case000_seg.jpg: label map stored as JPEG" in lines[0]
    assert not out.exists()


@pytest.mark.parametrize(("patch", "says"), [("[24, 32]", "multiple of 16"),
                                             ("[80, 80]", "no larger than it")])
def test_a_patch_the_network_cannot_pool_is_a_spec_error_before_any_reading(
        tmp_path: Path, patch: str, says: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import segfew.jobs.pretrain
    from segfew.synth import make_phantoms

    make_phantoms(tmp_path / "d", dim=2, n_per_class=2, size=32, num_classes=2, seed=0)
    spec = tmp_path / "p.toml"
    spec.write_text(f"[train]\npatch_size = {patch}\n", encoding="utf-8")

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("images read before the refusal")

    monkeypatch.setattr(segfew.jobs.pretrain, "_segmentation_samples", never)
    result = runner.invoke(app, [
        "pretrain", "--spec", str(spec), "--images", str(tmp_path / "d" / "images"),
        "--labels", str(tmp_path / "d" / "labels"), "--out", str(tmp_path / "s.pt"),
        "--n-s", "2", "--size", "32", "--epochs", "1", "--no-progress", "--no-cache"])
    assert result.exit_code == 2, result.output
    assert f"patch_size {patch}" in result.output and says in result.output
    assert not (tmp_path / "s.pt").exists()
