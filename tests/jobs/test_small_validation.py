"""Small validation sets said for what they are: the epoch kept, one-class classifiers, and
what a 3D network costs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from segfew.errors import DataWarning
from tests.conftest import invoke

TINY = ["--framework", "scratch", "--size", "32", "--epochs", "3", "--no-progress",
        "--no-cache"]


def _spec(tmp_path: Path, extra: str = "") -> list[str]:
    """Half of the twelve phantoms held out: 6 validation cases."""
    path = tmp_path / "spec.toml"
    path.write_text(f"[train]\nval_fraction = 0.5\n{extra}", encoding="utf-8")
    return ["--spec", str(path)]


def test_a_few_validation_cases_keep_the_last_epoch_and_say_so(phantoms: Path,
                                                               tmp_path: Path) -> None:
    from segfew.modelfile import read_model_file

    out = invoke("train-classifier", "--images", str(phantoms / "images"), "--table",
                 str(phantoms / "labels.csv"), "--out", str(tmp_path / "c.pt"), *TINY,
                 *_spec(tmp_path))
    line = " ".join(out.split())
    assert "6 validation cases are too few to pick an epoch on" in line
    assert "the last epoch is kept" in line
    info = json.loads((tmp_path / "c-run" / "run.json").read_text())
    assert info["validation"] == {"cases": 6, "epoch_choice": "last", "small": True,
                                  "note": info["validation"]["note"]}
    meta, _ = read_model_file(tmp_path / "c.pt")
    assert meta.metrics["epoch_choice"] == "last" and meta.metrics["kept_epoch"] == 3
    assert "one_class_validation" in meta.metrics
    finished = json.loads((tmp_path / "c-run" / "run.json").read_text())
    assert finished["one_class_validation"] == meta.metrics["one_class_validation"]
    # the weights are those of the last epoch, not of best.pt
    last = torch.load(tmp_path / "c-run" / "last.pt", weights_only=True)["model"]
    from segfew.modelfile import load_model

    model, _ = load_model(tmp_path / "c.pt")
    kept = model.state_dict()
    assert all(torch.equal(kept[k].cpu(), last[k]) for k in last)


def test_picking_the_best_on_a_few_cases_is_allowed_but_said(phantoms: Path,
                                                             tmp_path: Path) -> None:
    from segfew.jobs.common import epoch_choice
    from segfew.spec import ClassifierTrainConfig

    out = invoke("train-classifier", "--images", str(phantoms / "images"), "--table",
                 str(phantoms / "labels.csv"), "--out", str(tmp_path / "b.pt"), *TINY,
                 *_spec(tmp_path, 'select_epoch = "best"\n'))
    assert "expect it to be the luckiest" in " ".join(out.split())
    cfg = ClassifierTrainConfig()
    assert epoch_choice(20, cfg) == ("best", "")  # enough cases: picked on them, silently
    assert epoch_choice(19, cfg)[0] == "last"
    assert epoch_choice(40, cfg.model_copy(update={"select_epoch": "last"}))[0] == "last"


def test_one_class_predictions_are_flagged() -> None:
    from segfew.evaluation.evaluate import score_predictions
    from segfew.inference.batch import PredictionRow
    from segfew.metrics import classification_metrics, one_class, one_class_share
    from segfew.train.validation import scores_from_confusion

    names = ["G2", "G3"]
    truth = [0] * 20 + [1] * 20
    flagged = one_class(truth, [1] * 37 + [0] * 3, names)
    assert flagged == {"class": "G3", "share": 0.925, "truth_share": 0.5, "cases": 40,
                       "truth_majority": False}  # a tie is no majority
    assert one_class(truth, [0] * 10 + [1] * 30, names) is None  # 75 %: a bias, not one class
    assert one_class([1] * 40, [1] * 40, names) is None  # the truth is one class: right
    assert classification_metrics(truth, [1] * 40, None, names, bootstrap=0)["one_class"]
    rows = [PredictionRow(id=f"c{i}", path="", predicted="G3", status="ok",
                          probabilities={"G2": 0.2, "G3": 0.8}) for i in range(40)]
    with pytest.warns(DataWarning, match="predicts 'G3' for 100% of the 40 cases .* whatever"):
        metrics = score_predictions(truth, rows, names, bootstrap=0)
    assert metrics["one_class"]["share"] == 1.0
    # validation: the confusion matrices of 6 cases, all predicted as class 1
    conf = torch.zeros(6, 2, 2)
    for i in range(6):
        conf[i, i % 2, 1] = 1
    row = scores_from_confusion(conf, "classification")
    assert row["val_top_class"] == 1 and row["val_top_share"] == 1.0
    assert one_class_share(row["val_top_class"], row["val_top_share"], 6, names) == {
        "class": "G3", "share": 1.0, "cases": 6}
    assert one_class_share(0.0, 0.5, 6, names) is None


def test_a_3d_network_says_its_size_and_time_per_epoch(tmp_path: Path) -> None:
    from segfew.synth import make_phantoms

    data = tmp_path / "d"
    make_phantoms(data, dim=3, n_per_class=2, size=16, num_classes=2, seed=0)
    out = invoke("train-classifier", "--table", str(data / "labels.csv"), "--images",
                 str(data / "images"), "--framework", "scratch", "--size", "16", "--epochs",
                 "1", "--batch-size", "2", "--no-progress", "--no-cache", "--precision", "fp32",
                 "--out", str(tmp_path / "v.pt"))
    line = " ".join(out.split())
    assert "network: a 3D vgg on a 16×16×16 grid" in line
    assert "M parameters" in line and "s per epoch of 4 cases" in line


def test_timing_the_network_leaves_training_unchanged() -> None:
    from segfew.models import build_model
    from segfew.runtime import resolve_plan
    from segfew.train.memory import network_cost

    torch.manual_seed(3)
    model = build_model("vgg", dim=3, in_channels=1, num_classes=2, input_size=(16, 16, 16),
                        n_c=2, n_fc=4, dropout=0.5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = torch.get_rng_state()
    cost = network_cost(model, (1, 16, 16, 16), 2, 8, torch.device("cpu"),
                        resolve_plan(torch.device("cpu"), "fp32", None))
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert cost["parameters"] == sum(p.numel() for p in model.parameters())
    assert cost["epoch_s"] is not None and cost["memory_gib"] is not None
    assert np.isclose(cost["epoch_s"], cost["step_s"] * 4, atol=0.1)


@pytest.mark.parametrize(("truth", "answer", "words"), [
    ([0] * 5 + [1], 1, "it answers one class whatever the case"),  # the minority, always
    ([0] * 4 + [1] * 2, 0, "it answers the largest class of these cases"),
    ([0] * 3 + [1] * 3 + [2] * 4, 0, "it answers one class whatever the case"),
])
def test_the_one_class_warning_says_which_class_it_answers(truth: list[int], answer: int,
                                                            words: str) -> None:
    from segfew.metrics import one_class, one_class_words

    names = ["a", "b", "c"]
    flag = one_class(truth, [answer] * len(truth), names)
    assert flag is not None and flag["class"] == names[answer]
    assert one_class_words(flag).endswith(words + ", not the classes")
    # a validation flag carries no truth: it never claims a majority
    assert "whatever the case" in one_class_words({"class": "a", "share": 1.0, "cases": 6})


def test_predict_flags_a_batch_answered_with_one_class() -> None:
    from segfew.inference.paths import one_class_batch

    assert one_class_batch(["b"] * 6, ["a", "b"]) == {"class": "b", "share": 1.0, "cases": 6}
    assert one_class_batch(["b"] * 9 + ["a"], ["a", "b"])["share"] == 0.9
    assert one_class_batch(["b"] * 8 + ["a"] * 2, ["a", "b"]) is None  # 80 %: a bias
    assert one_class_batch(["b"] * 4, ["a", "b"]) is None  # too few to say
    assert one_class_batch(["a"] * 6, ["a"]) is None  # a one-class model answers one class
