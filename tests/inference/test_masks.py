"""Framework measures on label maps from another tool (``--masks``): train-classifier →
predict → evaluate with no network, what the model file records, what is refused; and the
inner cross-validation choosing measurement families from the training rows only."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any
from unittest.mock import patch

import numpy as np
import pytest

from segfew.errors import DataError
from segfew.inference.masks import mask_label_names
from tests.conftest import invoke, load_nifti, make_segmenter, save_nifti


@pytest.fixture
def masks(phantoms: Path, tmp_path: Path) -> Path:
    """The phantoms' label maps as another tool would hand them over, with their names."""
    out = shutil.copytree(phantoms / "labels", tmp_path / "masks")
    (out / "label_names.json").write_text(json.dumps(
        {"label_names": ["background", "wall", "cavity", "blob"]}))  # as segfew label writes
    return out


def test_masks_train_predict_evaluate_end_to_end_without_a_network(
        phantoms: Path, masks: Path, tmp_path: Path) -> None:
    from segfew.modelfile import read_model_file

    clf = tmp_path / "clf.pt"
    invoke("train-classifier", "--table", str(phantoms / "labels.csv"), "--images",
           str(phantoms / "images"), "--framework", "measures", "--masks", str(masks),
           "--out", str(clf), "--threads", "1", "--no-progress", "--no-cache")
    meta, state = read_model_file(clf)
    assert meta.feature_source == {"masks": "external", "classes": [
        "background", "wall", "cavity", "blob"], "structures": {"1": "wall", "2": "cavity",
                                                               "3": "blob"}}
    assert meta.architecture.feature_net is None
    assert not any(k.startswith("feature_net") for k in state)  # no network inside
    names = meta.architecture.args["feature_names"]
    assert {"cavity_area_mm2_0", "cavity_intensity_mean_0", "blob_location_distance_mm_0",
            "wall_texture_cooccurrence_contrast_0"} <= set(names)
    run = json.loads((tmp_path / "clf-run" / "run.json").read_text())
    assert any("case000_seg" in str(entry) for entry in json.dumps(run).split(","))

    out = tmp_path / "p.csv"
    missing = invoke("predict", "--model", str(clf), "--input", str(phantoms / "images"),
                     "--out", str(out), "--no-progress", expect=2)
    assert "--masks" in missing and len(missing.strip().splitlines()) == 1
    assert not out.exists()
    invoke("predict", "--model", str(clf), "--input", str(phantoms / "images"), "--out",
           str(out), "--masks", str(masks), "--threads", "1", "--no-progress")
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 12 and all(r["status"] == "ok" for r in rows)
    assert (tmp_path / "p.measurements.csv").is_file()

    ev = tmp_path / "ev"
    evaluate = ("evaluate", "--model", str(clf), "--images", str(phantoms / "images"),
                "--table", str(phantoms / "labels.csv"), "--out", str(ev), "--bootstrap", "200",
                "--threads", "1", "--no-progress")
    refused = invoke(*evaluate, "--masks", str(masks), expect=2)  # its own training cases
    assert "trained on 12 evaluated case(s)" in " ".join(refused.split())
    assert len(refused.strip().splitlines()) == 1 and not ev.exists()
    invoke(*evaluate, "--masks", str(masks), "--allow-leakage")
    metrics = json.loads((ev / "metrics.json").read_text())
    assert metrics["n_cases"] == 12 and metrics["accuracy"] > 1 / 3  # seen cases: above chance
    assert metrics["leakage"]["leaked"] == sorted(r["id"] for r in rows)
    assert {r["leaked"] for r in csv.DictReader((ev / "predictions.csv").open())} == {"yes"}

    # every case failing writes nothing: no predictions or measurements without a score
    empty = tmp_path / "empty"
    empty.mkdir()
    failed = invoke(*[a if a != str(ev) else str(tmp_path / "ev2") for a in evaluate],
                    "--masks", str(empty), "--allow-leakage", expect=2)
    assert "none of the 12 cases could be predicted" in failed
    assert not (tmp_path / "ev2").exists()
    invoke("predict", "--model", str(clf), "--input", str(phantoms / "images"), "--out",
           str(tmp_path / "q.csv"), "--masks", str(empty), "--threads", "1", "--no-progress",
           expect=1)
    assert (tmp_path / "q.csv").is_file() and not (tmp_path / "q.measurements.csv").exists()
    invoke("predict", "--model", str(clf), "--input", str(phantoms / "images"), "--out",
           str(out), "--masks", str(empty), "--threads", "1", "--no-progress", expect=1)
    assert not (tmp_path / "p.measurements.csv").exists()  # the earlier run's: not this one's


def test_masks_are_refused_where_they_do_not_belong(phantoms: Path, masks: Path,
                                                    tmp_path: Path) -> None:
    seg_model = make_segmenter(tmp_path / "seg.pt")
    common = ["--table", str(phantoms / "labels.csv"), "--images", str(phantoms / "images"),
              "--masks", str(masks), "--out", str(tmp_path / "c.pt"), "--no-progress"]
    assert "framework measures" in invoke("train-classifier", "--framework", "manual",
                                          "--features", str(seg_model), *common, expect=2)
    assert "not both" in invoke("train-classifier", "--framework", "measures", "--features",
                                str(seg_model), *common, expect=2)
    (masks / "case005_seg.nii.gz").unlink()  # one case without its map: a one-line error
    out = invoke("train-classifier", "--framework", "measures", *common, expect=2)
    assert "case005" in out and not (tmp_path / "c.pt").exists()


def _rewrite(path: Path, change: Any) -> None:
    """The label map at ``path`` with ``change(array)`` applied in place."""
    img = load_nifti(path)
    arr = np.asarray(img.dataobj).copy()
    change(arr)
    save_nifti(path, arr, img.affine)


def test_an_empty_map_or_an_unnamed_value_is_refused_naming_the_file(
        phantoms: Path, masks: Path, tmp_path: Path) -> None:
    """Another tool that found nothing, or wrote a value nobody named, is no measurement: a
    confident answer about nothing, or a structure silently dropped."""
    common = ["--table", str(phantoms / "labels.csv"), "--images", str(phantoms / "images"),
              "--framework", "measures", "--threads", "1", "--no-progress", "--no-cache"]
    fewer = invoke("train-classifier", *common, "--masks", str(masks), "--label-names",
                   "background,wall", "--out", str(tmp_path / "w.pt"), expect=2)
    assert "label values 2, 3 are not in the label names (0–1: background, wall)" in fewer
    assert len(fewer.strip().splitlines()) == 1 and not (tmp_path / "w.pt").exists()

    clf = tmp_path / "clf.pt"
    invoke("train-classifier", *common, "--masks", str(masks), "--out", str(clf))
    bad = Path(shutil.copytree(masks, tmp_path / "bad"))
    empty, seven, nine = (lambda a: a.fill(0), lambda a: a.__setitem__(np.s_[:3, :3], 7),
                          lambda a: a.__setitem__(np.s_[:3, :3], 9))
    for case, change, problem in (
            ("case000", empty, "the label map holds no structure (all background)"),
            ("case001", seven, "label value 7 is not in the label names "
                               "(0–3: background, wall, cavity, blob)")):
        _rewrite(bad / f"{case}_seg.nii.gz", change)
        out = invoke("train-classifier", *common, "--masks", str(bad), "--out",
                     str(tmp_path / "c.pt"), expect=2)
        assert f"{case}_seg.nii.gz: {problem}" in out and not (tmp_path / "c.pt").exists()
        shutil.copy(masks / f"{case}_seg.nii.gz", bad)
    _rewrite(bad / "case000_seg.nii.gz", empty)
    _rewrite(bad / "case001_seg.nii.gz", nine)
    out = tmp_path / "p.csv"
    invoke("predict", "--model", str(clf), "--input", str(phantoms / "images"), "--out",
           str(out), "--masks", str(bad), "--threads", "1", "--no-progress", expect=1)
    rows = {r["id"]: r for r in csv.DictReader(out.open())}
    assert rows["case000"]["status"] == "error" and "all background" in rows["case000"]["error"]
    assert rows["case001"]["status"] == "error" and "label value 9" in rows["case001"]["error"]
    assert sum(r["status"] == "ok" for r in rows.values()) == 10  # the batch keeps the rest


def test_a_classifier_file_given_as_features_is_refused_in_one_line(
        phantoms: Path, masks: Path, tmp_path: Path) -> None:
    """measures segments with ``--features``: a classifier file has no label maps to give."""
    common = ["--table", str(phantoms / "labels.csv"), "--images", str(phantoms / "images"),
              "--framework", "measures", "--threads", "1", "--no-progress", "--no-cache"]
    clf = tmp_path / "clf.pt"
    invoke("train-classifier", *common, "--masks", str(masks), "--out", str(clf))
    out = invoke("train-classifier", *common, "--features", str(clf), "--out",
                 str(tmp_path / "c.pt"), expect=2)
    assert out.strip() == (f"error: {clf}: --features must be a segmentation model "
                           "(from segfew pretrain)")
    assert not (tmp_path / "c.pt").exists()


def test_predict_says_when_the_models_own_estimate_gives_its_answers_no_weight(
        phantoms: Path, masks: Path, tmp_path: Path) -> None:
    """Confidences of 0.9 from a model trained on one case per class, or whose nested
    estimate holds chance, read as knowledge: predict says so before its answers. It was
    said on the terminal only: the table's run record, the evidence sheets and their index
    carried confident answers without it."""
    from matplotlib.figure import Figure

    from segfew.inference.fit_measures import estimate_caveat
    from segfew.inference.sheet import Evidence, _verdict, write_sheet

    one_each = tmp_path / "one.csv"
    rows = list(csv.DictReader((phantoms / "labels.csv").open()))
    seen: set[str] = set()
    kept = [r for r in rows if not (r["label"] in seen or seen.add(r["label"]))]
    with one_each.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(kept)
    clf = tmp_path / "clf.pt"
    invoke("train-classifier", "--table", str(one_each), "--images", str(phantoms / "images"),
           "--framework", "measures", "--masks", str(masks), "--out", str(clf),
           "--threads", "1", "--no-progress", "--no-cache")
    out = invoke("predict", "--model", str(clf), "--input", str(phantoms / "images"), "--out",
                 str(tmp_path / "p.csv"), "--masks", str(masks), "--threads", "1",
                 "--no-progress", "--explain", str(tmp_path / "sheets"))
    said = "the model records no estimate of its accuracy"
    assert f"warning: {clf}: {said}" in " ".join(out.split())
    record = json.loads((tmp_path / "p.run.json").read_text())
    assert said in record["caveats"][str(clf)]
    assert said in json.loads((tmp_path / "sheets" / "index.run.json").read_text())["caveat"]
    assert f"The model: {said}" in (tmp_path / "sheets" / "index.html").read_text()
    sheet = Evidence("c", "a", {"a": 0.9, "b": 0.1}, 0.9, 0.75, ["scan"],
                     [np.zeros((8, 8))], caveat=said)
    assert _verdict(sheet).endswith(f"\nMODEL: {said}")
    titles: list[str] = []
    real = Figure.suptitle
    with patch.object(Figure, "suptitle", lambda fig, t, **kw: titles.append(t) or real(
            fig, t, **kw)):
        write_sheet(sheet, tmp_path / "c.png")
    assert titles == ["case c · predicted a (confidence 0.90) · read it as a guess (MODEL, "
                      "below)"]
    nested = {"balanced_accuracy": 0.55, "ci": [0.3, 0.8], "chance_rate": 0.5,
              "distinguishable_from_chance": False}
    held = estimate_caveat({"measures_model": "m", "measures_nested": nested})
    assert held is not None and "0.55 [0.30, 0.80], is not distinguishable from chance" in held
    above = {**nested, "balanced_accuracy": 0.9, "ci": [0.7, 1.0],
             "distinguishable_from_chance": True}
    assert estimate_caveat({"measures_model": "m", "measures_nested": above}) is None
    assert estimate_caveat({}) is None  # not a measures model: nothing said here


def test_label_names_come_from_the_option_or_the_folder(tmp_path: Path) -> None:
    given = ["background", "liver", "spleen"]  # values 0, 1, … as everywhere in segfew
    assert mask_label_names(tmp_path, given) == {1: "liver", 2: "spleen"}
    with pytest.raises(DataError, match="--label-names") as refused:
        mask_label_names(tmp_path)
    assert 'label_names = ["background", "tumour"] in the spec' in str(refused.value)  # experiment
    names = tmp_path / "label_names.json"
    names.write_text(json.dumps({"label_names": ["background", "tumour"]}))
    assert mask_label_names(tmp_path) == {1: "tumour"}
    for bad in (["background"], ["background", "two words"]):
        with pytest.raises(DataError, match="one word"):
            mask_label_names(tmp_path, bad)
    names.write_text("not json")
    with pytest.raises(DataError, match="label names file"):
        mask_label_names(tmp_path)


def _families_data(seed: int = 0, per_class: int = 12
                   ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """2 classes of ``per_class`` cases (enough for a choice: SELECT_FROM): only the
    intensity family tells them apart."""
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], per_class)
    names = ["t_volume_ml_0", "t_thickness_mean_mm_0", "t_intensity_mean_0",
             "t_intensity_sd_0", "t_texture_cooccurrence_contrast_0", "t_location_right_fraction_0"]
    x = rng.normal(size=(2 * per_class, len(names)))
    x[:, 0] = np.exp(x[:, 0])
    x[:, 2] += 4 * y
    return x, y, names


def test_the_inner_cross_validation_chooses_the_family_that_tells_the_classes_apart() -> None:
    from segfew.models.measures_selection import family_of, select_classifier

    x, y, names = _families_data()
    choice = select_classifier(x, y, names, num_classes=2, seed=0)
    used = {family_of(n) for n, m in zip(names, choice.mask, strict=True) if m}
    assert "intensity" in used and choice.cv_scores[choice.candidate.label] == 1.0
    shape_only = max(s for label, s in choice.cv_scores.items() if "volumes" in label)
    assert shape_only < 1.0


def test_with_few_cases_per_class_the_default_is_fitted_and_nothing_chosen() -> None:
    """Below SELECT_FROM cases in a class the inner CV's winner is mostly luck: the first
    candidate is fitted whatever the others score, and the model says why."""
    from segfew.models.measures_selection import CANDIDATES, SELECT_FROM, select_classifier

    x, y, names = _families_data()  # intensity alone tells the classes apart
    few = np.concatenate([np.flatnonzero(y == k)[:SELECT_FROM - 1] for k in (0, 1)])
    choice = select_classifier(x[few], y[few], names, num_classes=2, seed=0)
    assert choice.candidate == CANDIDATES[0] and choice.chosen_by.startswith("the default")
    assert list(choice.cv_summary) == [CANDIDATES[0].label]  # scored, for its temperature
    chosen = select_classifier(x, y, names, num_classes=2, seed=0)
    assert chosen.candidate != CANDIDATES[0] and chosen.chosen_by == "inner cross-validation"


def test_the_nested_estimate_repeats_the_choice_the_whole_training_set_makes() -> None:
    """From SELECT_FROM cases per class the model is chosen among the candidates; the
    nested estimate's folds hold fewer, yet must choose too: else it estimates the default,
    another procedure (here one that cannot tell the classes apart)."""
    from segfew.models.measures_selection import CANDIDATES, SELECT_FROM, nested_estimate

    x, y, names = _families_data(per_class=SELECT_FROM + 2)  # folds of 8 per class
    told = nested_estimate(x, y, names, num_classes=2, seed=0)
    assert told is not None and told["balanced_accuracy"] > 0.9
    default = nested_estimate(x, y, names, num_classes=2, seed=0, candidates=CANDIDATES[:1])
    assert default is not None and default["balanced_accuracy"] < 0.8


def test_selection_inside_the_folds_never_sees_a_held_out_row(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``top`` narrows the columns inside each fit, on that fit's rows: a column that
    separates the classes only among the held-out rows is never the one chosen."""
    from segfew.models import measures_selection as measures

    x, y, names = _families_data(per_class=6)
    held_out = np.arange(12) % 3 == 0
    noise = np.random.default_rng(1).normal(size=12)
    x[:, 3] = np.where(held_out, 100 * y, noise)  # perfect on held-out rows, noise elsewhere
    monkeypatch.setattr(measures, "SELECT_K", 1)
    top = measures.Candidate("logistic", "top", 0.1)
    choice = measures.select_classifier(x[~held_out], y[~held_out], names, 2, candidates=[top])
    assert choice.mask.tolist() == [False, False, True, False, False, False]


def test_an_experiment_on_unnamed_masks_stops_once_before_any_task(
        phantoms: Path, tmp_path: Path) -> None:
    """Label maps nobody named fail every task alike: one line before the first, no run."""
    unnamed = shutil.copytree(phantoms / "labels", tmp_path / "unnamed")
    (unnamed / "label_names.json").unlink(missing_ok=True)  # as another tool writes them
    spec = tmp_path / "curve.toml"
    spec.write_text('sizes = [2]\nrepetitions = 1\nframeworks = ["measures"]\n')
    out = tmp_path / "run"
    said = invoke("experiment", "--spec", str(spec), "--out", str(out), "--images",
                  str(phantoms / "images"), "--table", str(phantoms / "labels.csv"),
                  "--masks", str(unnamed), "--threads", "1", "--no-progress", expect=2)
    assert "label_names" in said and len(said.strip().splitlines()) == 1
    assert not out.exists()


def test_an_experiment_measures_given_masks_and_never_fits_on_its_test_cases(
        phantoms: Path, masks: Path, tmp_path: Path,
        measures_fits: list[tuple[set[str], Any]]) -> None:
    """The learning curve of measures on another tool's masks: no network anywhere, each
    task's classifier (family choice included) fitted on its training side only."""
    spec = tmp_path / "curve.toml"
    spec.write_text('sizes = [2]\nrepetitions = 2\nframeworks = ["measures"]\nbootstrap = 200\n')
    out = tmp_path / "run"
    invoke("experiment", "--spec", str(spec), "--out", str(out), "--images",
           str(phantoms / "images"), "--table", str(phantoms / "labels.csv"), "--masks",
           str(masks), "--threads", "1", "--no-progress")
    results = [json.loads(p.read_text()) for p in (out / "results").glob("*.json")]
    check = json.loads((out / "data.json").read_text())["leakage_check"]
    assert [(n["model"], n["checked"]) for n in check["networks"]] == [(str(masks), False)]
    fitted = [ids for ids, _ in measures_fits]
    assert len(results) == 2 and len(fitted) == 2
    # measured from the masks, nothing segments
    assert all(measurer.model is None for _, measurer in measures_fits)
    for result in results:
        ids = next(f for f in fitted if f == set(result["train_ids"]))
        assert len(ids) == 6 and not ids & set(result["test_ids"])  # 2 per class


def test_a_two_channel_case_keeps_the_mask_layout_it_was_trained_on(tmp_path: Path) -> None:
    """One map copied to both channels of an ED/ES case reads as no change between them:
    a classifier measured on one map per channel refuses it, naming the file, and a case
    missing one channel's map is told which."""
    from segfew.data import attach_labels, find_classification_cases
    from segfew.inference.masks import MaskMeasurer

    images, masks = tmp_path / "images", tmp_path / "masks"
    base = np.zeros((24, 24, 4), np.uint8)
    base[6:18, 6:18, 1:3] = 1
    for case in ("a", "b", "c"):
        for ch, grow in (("ed", 0), ("es", 3)):
            save_nifti(images / f"{case}_{ch}.nii.gz", base.astype(np.float32) * 100 + 10)
            label = base.copy()
            label[:6 + grow] = 0  # ES smaller than ED
            if case == "a" or (case == "c" and ch == "ed"):
                save_nifti(masks / f"{case}_{ch}_seg.nii.gz", label)
    save_nifti(masks / "b_seg.nii.gz", base)  # one map for both channels
    (tmp_path / "t.csv").write_text("id,label\na,x\nb,y\nc,x\n")
    cases = {c.id: c for c in find_classification_cases(images, tmp_path / "t.csv",
                                                         channels=["ed", "es"])}

    measure = MaskMeasurer(masks, {1: "cavity"})
    assert measure(cases["a"])  # trains on one map per channel
    assert measure.source["per_channel"] is True
    with pytest.raises(DataError, match=r"b_seg\.nii\.gz: .*one label map for each channel"):
        measure(cases["b"])
    reopened = MaskMeasurer.for_model(measure.source, masks, tmp_path / "clf.pt")
    with pytest.raises(DataError, match="one label map for each channel"):
        reopened(cases["b"])
    with pytest.raises(DataError, match=r"label map of channel c_es missing .*found "
                                        r"c_ed_seg\.nii\.gz"):
        attach_labels([cases["c"]], masks)
    # a classifier trained on one map for the case keeps that layout too
    single = MaskMeasurer(masks, {1: "cavity"})
    assert single(cases["b"]) and single.source["per_channel"] is False
    with pytest.raises(DataError, match="one label map for all channels"):
        single(cases["a"])


@pytest.mark.parametrize(("values", "said"), [
    ([0, 1, 2], "a_seg.nii.gz holds 0, 1, 2: 3 names, background first"),
    ([0, 2, 41], "a_seg.nii.gz holds 0, 2, 41: codes — remap them first (--label-map "
                 "2:1,41:2), then name them"),
])
def test_unnamed_masks_say_what_a_map_holds(tmp_path: Path, values: list[int],
                                            said: str) -> None:
    """A four-value FreeSurfer-like map was asked for two names ("background, tumour"),
    and told of its codes only after they were given."""
    from tests.conftest import save_nifti

    save_nifti(tmp_path / "a_seg.nii.gz", np.repeat(np.array(values, np.int16), 4).reshape(
        len(values), 4))
    with pytest.raises(DataError) as refused:
        mask_label_names(tmp_path)
    assert str(refused.value).endswith(said), refused.value
