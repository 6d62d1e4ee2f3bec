"""A trained nnU-Net v2 model's maps feeding the paper's head (``--framework manual
--features FOLDER``): per-case statistics of its softmax or its encoder's bottleneck, the
head trained by the engine, train-classifier → predict end to end, and the refusals in one
line. The tiny nnU-Net is test_nnunet's fixture (untrained weights: plumbing, not
accuracy)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import invoke
from tests.inference.test_nnunet import LABELS, make_nnunet_folder

pytest.importorskip("nnunetv2")

#: channels of the fixture's bottleneck (features_per_stage[-1])
BOTTLENECK = 8


@pytest.fixture
def nnunet(tmp_path: Path) -> Path:
    return make_nnunet_folder(tmp_path / "nnUNet_results")


def _spec(tmp_path: Path, head: str) -> Path:
    spec = tmp_path / "head.toml"
    spec.write_text(f"[head]\n{head}\nn_fc = 8\n\n[train]\nepochs = 2\nbatch_size = 4\n")
    return spec


def _train(data: Path, features: Path, out: Path, spec: Path, *extra: str,
           expect: int = 0) -> str:
    return invoke("train-classifier", "--spec", str(spec), "--table", str(data / "labels.csv"),
                  "--images", str(data / "images"), "--framework", "manual", "--features",
                  str(features), "--out", str(out), "--threads", "1", "--no-progress",
                  "--no-cache", *extra, expect=expect)


@pytest.mark.parametrize(("source", "width"), [("softmax", len(LABELS)),
                                               ("features", BOTTLENECK)])
def test_an_nnunet_folder_feeds_the_head_from_train_classifier_to_predict(
        phantoms: Path, nnunet: Path, tmp_path: Path, source: str, width: int) -> None:
    from segfew.modelfile import read_model_file

    clf = tmp_path / "clf.pt"
    _train(phantoms, nnunet, clf, _spec(tmp_path, f'source = "{source}"'))
    meta, state = read_model_file(clf)  # torch.load(weights_only=True) inside
    assert meta.framework == "manual" and meta.architecture.name == "stats_head"
    assert meta.architecture.args["num_features"] == width  # one channel: F maps
    assert meta.spec["head"]["pooling"] == "stats"  # the default with an nnU-Net folder
    source_record = meta.feature_source or {}
    assert source_record["reads"] == source
    record = source_record["nnunet"]
    assert record["folder"] == str(nnunet.resolve()) and record["folds"] == ["0"]
    assert set(record["sha256"]) == {"plans.json", "dataset.json", "fold_0/checkpoint_final.pth"}
    assert {k.split(".")[0] for k in state} == {"norm", "classifier"}  # nnU-Net stays put
    run = json.loads((tmp_path / "clf-run" / "run.json").read_text())
    assert "checkpoint_final.pth" in json.dumps(run["data"])  # in the data manifest
    assert len(list(csv.DictReader((tmp_path / "clf-run" / "metrics.csv").open()))) == 2

    out = tmp_path / "p.csv"
    invoke("predict", "--model", str(clf), "--input", str(phantoms / "images"), "--out",
           str(out), "--threads", "1", "--no-progress")
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 12 and all(r["status"] == "ok" for r in rows)
    p = np.array([[float(r[f"p_{c}"]) for c in meta.classes] for r in rows])
    np.testing.assert_allclose(p.sum(1), 1, atol=1e-5)
    said = invoke("predict", "--model", str(clf), "--input", str(phantoms / "images"), "--out",
                  str(tmp_path / "q.csv"), "--explain", str(tmp_path / "ex"), expect=2)
    assert "--explain draws a map on the image or named measurements" in said
    assert len(said.strip().splitlines()) == 1 and not (tmp_path / "q.csv").exists()
    assert not (tmp_path / "ex").exists()

    ev = tmp_path / "ev"
    invoke("evaluate", "--model", str(clf), "--images", str(phantoms / "images"), "--table",
           str(phantoms / "labels.csv"), "--out", str(ev), "--bootstrap", "200", "--threads",
           "1", "--no-progress", "--allow-leakage")
    metrics = json.loads((ev / "metrics.json").read_text())
    assert metrics["n_cases"] == 12 and len(metrics["leakage"]["leaked"]) == 12
    assert metrics["leakage"]["models"][0]["unrecorded"] == "the nnU-Net it reads"


@pytest.mark.parametrize("reads", ["softmax", "features"])
def test_the_statistics_are_a_fixed_length_deterministic_function_of_the_image(
        phantoms: Path, nnunet: Path, tmp_path: Path, reads: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import nibabel as nib

    from segfew.data import Case
    from segfew.inference import nnunet_stats
    from segfew.inference.nnunet_stats import NnUNetStats

    # larger than one 32² patch: several tiles of the sliding window
    image = np.random.default_rng(0).normal(size=(50, 41, 1)).astype(np.float32)
    path = tmp_path / "big.nii.gz"
    nib.save(nib.Nifti1Image(image, np.diag([1.25, 1.25, 8.0, 1.0])), str(path))
    case = Case(id="big", images=(path,))
    first = NnUNetStats(nnunet, reads=reads)(case)
    again = NnUNetStats(nnunet, reads=reads)(case)  # a fresh network, the same numbers
    width = len(LABELS) if reads == "softmax" else BOTTLENECK
    assert first.shape == (2 * width,) and first.dtype == np.float32
    np.testing.assert_array_equal(first, again)
    monkeypatch.setattr(nnunet_stats, "CHUNK", 1)  # summed one channel at a time
    np.testing.assert_allclose(NnUNetStats(nnunet, reads=reads)(case), first, rtol=1e-6)
    assert (first[width:] >= 0).all() and np.isfinite(first).all()
    small = NnUNetStats(nnunet, reads=reads)(Case(id="c", images=(phantoms / "images" /
                                                                  "case000.nii.gz",)))
    assert small.shape == first.shape and not np.array_equal(small, first)  # any size
    if reads == "softmax":  # class probabilities: their means over the image sum to one
        assert first[:width].sum() == pytest.approx(1, abs=1e-5)


@pytest.mark.parametrize("configuration", ["2d", "3d_fullres"])
def test_the_bottleneck_statistics_are_those_of_every_tile_together(
        tmp_path: Path, configuration: str) -> None:
    """Sums and sums of squares accumulated tile by tile give the mean and std of all the
    tiles' bottleneck voxels at once, 2D (each slice's tiles) and 3D (16³ patches over a
    volume of anisotropic voxels)."""
    import nibabel as nib

    from segfew.data import Case
    from segfew.data.read import read_case
    from segfew.inference.nnunet_stats import NnUNetStats

    three = configuration != "2d"
    shape, zooms = ((20, 24, 10), [1.5, 1.5, 3.0]) if three else ((45, 60, 1), [1.25, 1.25, 8.0])
    image = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    path = tmp_path / "image.nii.gz"
    nib.save(nib.Nifti1Image(image, np.diag([*zooms, 1.0])), str(path))
    case = Case(id="image", images=(path,))
    stats = NnUNetStats(make_nnunet_folder(tmp_path / "results", configuration),
                        reads="features")
    got = stats(case)
    assert got.shape == (2 * BOTTLENECK,)
    data = torch.from_numpy(stats.preprocessed(read_case(case)[0], case)[0])
    tiles = list(stats.tiles(data))
    patch = (1, 1, 16, 16, 16) if three else (1, 1, 32, 32)
    assert len(tiles) > 1 and all(t.shape == patch for t in tiles)
    with torch.no_grad():
        maps = torch.cat([stats.encoder(t)[-1].flatten(2) for t in tiles], 2)[0].double()
    np.testing.assert_allclose(got[:BOTTLENECK], maps.mean(1).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[BOTTLENECK:], maps.std(1, correction=0).numpy(),
                               rtol=1e-4, atol=1e-6)


def test_a_one_channel_nnunet_reads_each_channel_and_concatenates(
        nnunet: Path, tmp_path: Path) -> None:
    """ED + ES through a one-channel model: each channel's statistics, channel 0's first
    (means, then standard deviations, as FeatureClassifier orders them); a head trained on
    two channels."""
    from segfew.data import Case
    from segfew.inference.nnunet_stats import NnUNetStats
    from segfew.modelfile import read_model_file
    from segfew.synth import make_phantoms

    data = tmp_path / "two"
    make_phantoms(data, dim=2, n_per_class=3, size=32, num_classes=2, channels=2, seed=3)
    ed, es = (data / "images" / f"case000_ch{k}.nii.gz" for k in (1, 2))
    stats = NnUNetStats(nnunet, reads="softmax")
    both = stats(Case(id="case000", images=(ed, es)))
    one, two = (stats(Case(id=p.stem, images=(p,))) for p in (ed, es))
    f = len(LABELS)
    np.testing.assert_array_equal(both, np.concatenate([one[:f], two[:f], one[f:], two[f:]]))

    clf = tmp_path / "clf.pt"
    _train(data, nnunet, clf, _spec(tmp_path, 'source = "softmax"'), "--channels", "ch1,ch2")
    meta, _ = read_model_file(clf)
    assert meta.architecture.args["num_features"] == 2 * f
    assert meta.architecture.args["in_channels"] == 2
    out = tmp_path / "p.csv"
    invoke("predict", "--model", str(clf), "--input", str(data / "images"), "--out", str(out),
           "--threads", "1", "--no-progress")
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 6 and all(r["status"] == "ok" for r in rows)


def test_pooling_other_than_stats_and_finetune_are_refused_in_one_line(
        phantoms: Path, nnunet: Path, tmp_path: Path) -> None:
    for head in ('pooling = "volume"', 'pooling = "slices"'):
        said = _train(phantoms, nnunet, tmp_path / "c.pt", _spec(tmp_path, head), expect=2)
        assert "pooling" in said and 'pooling = "stats"' in said and "spacing" in said
        assert len(said.strip().splitlines()) == 1 and not (tmp_path / "c.pt").exists()
    said = _train(phantoms, nnunet, tmp_path / "c.pt", _spec(tmp_path, ""), "--finetune",
                  expect=2)
    assert "stays frozen" in said and len(said.strip().splitlines()) == 1
    assert not (tmp_path / "c.pt").exists()


def test_a_changed_or_missing_folder_is_refused_before_any_case(
        phantoms: Path, nnunet: Path, tmp_path: Path) -> None:
    clf = tmp_path / "clf.pt"
    _train(phantoms, nnunet, clf, _spec(tmp_path, 'source = "features"'))
    out = tmp_path / "p.csv"
    predict = ("predict", "--model", str(clf), "--input", str(phantoms / "images"), "--out",
               str(out), "--threads", "1", "--no-progress")
    plans = nnunet / "plans.json"
    plans.write_text(plans.read_text() + " ")  # re-planned, say
    said = invoke(*predict, expect=2)
    assert "the nnU-Net folder changed since training (plans.json)" in said
    assert str(clf) in said and len(said.strip().splitlines()) == 1 and not out.exists()
    moved = nnunet.with_name("elsewhere")
    nnunet.rename(moved)
    said = invoke(*predict, expect=2)
    assert "the nnU-Net folder of this classifier is not found" in said
    assert len(said.strip().splitlines()) == 1 and not out.exists()


def test_an_experiment_trains_the_head_on_an_nnunet_and_measures_it_too(
        phantoms: Path, nnunet: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``experiment`` with an nnU-Net folder as ``features``: manual (the head, on
    per-case statistics shared by every task: each case's computed once) and measures (its
    label maps) side by side."""
    from segfew.inference.nnunet_stats import NnUNetStats

    computed: list[str] = []
    real = NnUNetStats._moments

    def spy(self, images, case):  # type: ignore[no-untyped-def]
        computed.append(case.id)
        return real(self, images, case)

    monkeypatch.setattr(NnUNetStats, "_moments", spy)
    spec = tmp_path / "curve.toml"
    spec.write_text('sizes = [2]\nrepetitions = 2\nframeworks = ["manual", "measures"]\n'
                    'bootstrap = 0\n\n[head]\nsource = "softmax"\nn_fc = 8\n\n'
                    "[train]\nepochs = 2\nbatch_size = 4\n")
    out = tmp_path / "run"
    invoke("experiment", "--spec", str(spec), "--out", str(out), "--images",
           str(phantoms / "images"), "--table", str(phantoms / "labels.csv"), "--features",
           str(nnunet), "--threads", "1", "--no-progress")
    results = [json.loads(p.read_text()) for p in (out / "results").glob("*.json")]
    assert len(results) == 4
    assert sorted(computed) == sorted(set(computed)) and len(computed) == 12  # once each
    assert all(r["predictions"] and all(row["status"] == "ok" for row in r["predictions"])
               for r in results)
