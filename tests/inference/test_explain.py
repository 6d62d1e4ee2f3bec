"""Per-case evidence: sheets for good cases only, saliency on the deciding structure, exact
contributions of a measures model, an index sorted by confidence, readable names."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.conftest import GRID, make_classifier, read_csv, save_nifti, scan

# ------------------------------------------------------------------ sheets and index


@pytest.fixture
def scans(tmp_path: Path, rng: np.random.Generator) -> Path:
    """Four good 2D scans and a corrupt file."""
    folder = tmp_path / "scans"
    for name in ("a", "b", "c", "d"):
        save_nifti(folder / f"{name}.nii.gz", scan(rng))
    (folder / "corrupt.nii.gz").write_bytes(rng.integers(0, 256, 300, dtype=np.uint8).tobytes())
    return folder


def _index_rows(index: Path) -> list[tuple[str, float, str]]:
    """(case, confidence, linked sheet) of each row of an index that links a sheet."""
    text = index.read_text(encoding="utf-8")
    header = re.findall(r"<th>([^<]+)</th>", text)
    out = []
    for row in re.findall(r"<tr[^>]*>(<td>.*?)</tr>", text):
        cells = dict(zip(header, re.findall(r"<td>(.*?)</td>", row), strict=False))
        link = re.search(r'href="([^"]+)"', cells.get("sheet", ""))
        if link:
            out.append((cells["case"], float(cells["confidence"]), link[1]))
    return out


def test_a_sheet_for_each_good_case_none_for_a_failed_one_and_an_index_by_confidence(
        scans: Path, tmp_path: Path) -> None:
    from segfew.inference.paths import predict_paths

    model = make_classifier(tmp_path / "clf.pt")
    out, failed, _ = predict_paths(model, [scans], tmp_path / "p.csv", device="cpu", workers=0,
                                explain=tmp_path / "explain")
    assert failed == 1
    sheets = tmp_path / "explain" / "sheets"
    assert sorted(p.name for p in sheets.iterdir()) == ["a.png", "b.png", "c.png", "d.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in sheets.iterdir())
    index = tmp_path / "explain" / "index.html"
    rows = _index_rows(index)
    assert sorted(r[2] for r in rows) == [f"sheets/{c}.png" for c in "abcd"]
    confidence = [r[1] for r in rows]
    assert confidence == sorted(confidence)  # lowest first
    table = {r["id"]: float(r["confidence"]) for r in read_csv(out) if r["status"] == "ok"}
    assert {r[0]: r[1] for r in rows} == pytest.approx(table, abs=1e-3)
    text = index.read_text(encoding="utf-8")
    assert "corrupt" in text and "Failed cases (1)" in text

    fewer = tmp_path / "fewer"  # the same folder for a smaller batch: no earlier sheet stays
    fewer.mkdir()
    (fewer / "a.nii.gz").write_bytes((scans / "a.nii.gz").read_bytes())
    predict_paths(model, [fewer], tmp_path / "q.csv", device="cpu", workers=0,
                  explain=tmp_path / "explain")
    assert [p.name for p in sheets.iterdir()] == ["a.png"]


def test_a_sheet_that_fails_to_draw_leaves_no_file_and_an_error_row(
        scans: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from matplotlib.figure import Figure

    from segfew.inference.paths import predict_paths

    def broken(self: Figure, fname: Any, **kwargs: Any) -> None:
        Path(fname).write_bytes(b"\x89PNG half")  # a partial write, then the disk is full
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", broken)
    model = make_classifier(tmp_path / "clf.pt")
    _, failed, _ = predict_paths(model, [scans], tmp_path / "p.csv", device="cpu", workers=0,
                              explain=tmp_path / "explain")
    assert failed == 1  # the predictions stand; only the sheets are missing
    assert list((tmp_path / "explain" / "sheets").iterdir()) == []
    text = (tmp_path / "explain" / "index.html").read_text(encoding="utf-8")
    assert text.count("no sheet: ") == 4 and "Failed cases (5)" in text


def test_explain_refuses_a_segmentation_model_before_any_work(tmp_path: Path,
                                                               scans: Path) -> None:
    from segfew.errors import DataError
    from segfew.inference.paths import predict_paths
    from tests.conftest import make_segmenter

    with pytest.raises(DataError, match="segmentation model"):
        predict_paths(make_segmenter(tmp_path / "seg.pt"), [scans], tmp_path / "out",
                      device="cpu", explain=tmp_path / "explain")
    assert not (tmp_path / "explain").exists() and not (tmp_path / "out").exists()


def test_index_links_every_sheet_lowest_confidence_first_with_true_classes(
        tmp_path: Path) -> None:
    from segfew.inference.sheet import write_index

    records = [{"id": f"c{i}", "predicted": "DCM", "target": "NOR" if i % 2 else "DCM",
                "confidence": c, "low_confidence": c < 0.5, "sheet": f"sheets/c{i}.png",
                "error": ""} for i, c in enumerate([0.9, 0.3, 0.6, 0.45])]
    records.append({"id": "bad", "predicted": "", "target": "DCM", "confidence": None,
                    "low_confidence": False, "sheet": None, "error": "cannot read <x>"})
    text = write_index(records, tmp_path / "index.html", "t").read_text(encoding="utf-8")
    links = re.findall(r'href="(sheets/c\d\.png)"', text)
    assert links == ["sheets/c1.png", "sheets/c3.png", "sheets/c2.png", "sheets/c0.png"]
    assert text.count('class="low"') == 2 and "cannot read &lt;x&gt;" in text
    assert text.count("✗") == 2  # the two cases whose true class differs


# ------------------------------------------------------------------ saliency


def _two_squares(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Phantoms whose class is decided by one structure: square A (top left) is bright in
    class 1 and dim in class 0; square B (bottom right) is of a random middle brightness in
    both."""
    x = rng.normal(0, 0.05, (n, 1, GRID, GRID)).astype(np.float32)
    y = np.arange(n) % 2
    x[:, 0, 4:11, 4:11] += np.where(y == 1, 1.0, 0.3)[:, None, None]
    x[:, 0, 21:28, 21:28] += rng.uniform(0.3, 0.6, n)[:, None, None]
    return x, y


A, B = (slice(4, 11), slice(4, 11)), (slice(21, 28), slice(21, 28))


class _SmallCNN(torch.nn.Module):
    """Two convolutions, then the mean of each map and a linear layer: a classifier split
    into features and head as segfew's are (forward_features / forward_head)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.c2 = torch.nn.Conv2d(4, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 2)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.c2(torch.relu(self.c1(x))))

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        return self.fc(f.mean((2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def test_grad_cam_of_a_phantom_is_highest_on_the_structure_that_decides_its_class(
        rng: np.random.Generator) -> None:
    from segfew.inference.saliency import grad_cam

    torch.manual_seed(0)
    x, y = _two_squares(rng, 24)
    model = _SmallCNN()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(80):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(torch.from_numpy(x)),
                                          torch.from_numpy(y)).backward()
        opt.step()
    test_x, test_y = _two_squares(np.random.default_rng(7), 8)
    with torch.no_grad():
        assert (model(torch.from_numpy(test_x)).argmax(1).numpy() == test_y).all()
    for image in test_x[test_y == 1]:
        cam = grad_cam(model, image, target=1)
        assert cam.shape == (GRID, GRID) and cam[A].max() == pytest.approx(1.0)  # its peak
        assert cam[A].mean() > 1.5 * cam[B].mean()


def test_grad_cam_reaches_a_frozen_feature_network_for_every_pooling() -> None:
    from segfew.inference.saliency import grad_cam
    from segfew.models import FeatureClassifier, MNet

    torch.manual_seed(0)
    net = MNet(2, 1, 3, n_s=2)
    image = np.random.default_rng(0).random((2, GRID, GRID, 4)).astype(np.float32)
    for pooling in ("volume", "slices", "stats"):
        clf = FeatureClassifier(net, 2, 3, (GRID, GRID, 4), n_c=2, n_fc=8, source="softmax",
                                pooling=pooling).eval()
        cam = grad_cam(clf, image, target=1)
        assert cam.shape == (GRID, GRID, 4) and np.isfinite(cam).all()
        assert cam.min() >= 0 and cam.max() <= 1


# ------------------------------------------------------------------ measures


def _measures_model(model: str, rng: np.random.Generator) -> tuple[Any, np.ndarray]:
    from segfew.models import MNet
    from segfew.models.measures import MeasurementClassifier
    from segfew.models.measures_selection import Candidate, _fit, transform

    names = ["LV_volume_ml_ED", "LV_volume_ml_ES", "RV_to_LV_volume_ratio_ED",
             "LV_ejection_fraction_ED_ES"]
    x = np.abs(rng.normal(50, 20, (30, 4)))
    x[:, 3] = rng.uniform(0.1, 0.7, 30)
    x[3, 1] = np.nan
    y = np.arange(30) % 3
    choice = _fit(Candidate(model, "all", 1.0), transform(x, names), y, names, 3, 0)
    choice.temperature = 1.7
    clf = MeasurementClassifier(MNet(2, 1, 3, n_s=2), names, 3, **choice.shape_args)
    clf.load_choice(choice)
    return clf, x


def test_linear_contributions_sum_to_the_decision_score(rng: np.random.Generator) -> None:
    from segfew.models.measures import contributions

    clf, x = _measures_model("logistic", rng)
    for case in x[:6]:
        out = clf(torch.from_numpy(case[None])).double().numpy()[0]  # log-softmax / T
        scores = []
        for k in range(3):
            share, base, score, method = contributions(clf, case, k)
            assert base + share.sum() == pytest.approx(score, abs=1e-9)
            assert "coefficient" in method
            scores.append(score)
        # the scores are the logits: their differences are T × those of the model's output
        t = float(clf.temperature)
        assert np.diff(scores) == pytest.approx(t * np.diff(out), abs=1e-4)


def test_forest_path_contributions_sum_to_its_probability(rng: np.random.Generator) -> None:
    from segfew.models.measures import contributions

    clf, x = _measures_model("forest", rng)
    for case in x[:4]:
        p = np.exp(clf(torch.from_numpy(case[None])).double().numpy()[0]
                   * float(clf.temperature))
        for k in range(3):
            share, base, score, _ = contributions(clf, case, k)
            assert base + share.sum() == pytest.approx(score, abs=1e-9)
            assert score == pytest.approx(p[k], abs=1e-4)


# ------------------------------------------------------------------ names


def test_measurement_names_in_words_and_units() -> None:
    from segfew.inference.measure_names import cine_channel_words, describe, label

    ed = {"frame01": "ED", "frame02": "ES"}
    assert label("LV_volume_ml_frame01", ed) == "LV volume at ED (mL)"
    ef = describe("LV_ejection_fraction_frame01_frame02", ed)
    assert ef.label == "LV ejection fraction (ED→ES) (%)" and ef.factor == 100
    assert label("RV_to_LV_volume_ratio_frame02", ed) == "RV/LV volume ratio at ES"
    assert label("myocardium_thickness_max_mm_frame01") == (
        "myocardium maximum thickness at frame01 (mm)")
    assert label("wall_area_mm2_0", {"0": ""}) == "wall area (mm²)"
    assert label("LV_volume_ml_all") == "LV volume (mL)"
    assert label("something_else") == "something_else"
    assert cine_channel_words(["frame01", "frame02"], ["background", "RV", "myocardium",
                                                       "LV"]) == ed
    assert cine_channel_words(["a", "b"], ["background", "wall"]) == {}


def test_contribution_caption_names_the_measurements_left_out_and_what_they_add() -> None:
    from segfew.inference.sheet import Evidence, Measured, contribution_caption

    measured = [Measured(f"m{i}", 1.0, contribution=0.05) for i in range(8)]
    ev = Evidence("a", "MINF", {"MINF": 0.6, "DCM": 0.4}, 0.6, 0.5, ["ED"], [],
                  measured=measured, decision="d", n_measurements=20, rest=1.11)
    caption = contribution_caption(ev)
    assert "top 8 of 20 measurements shown" in caption and "the other 12 add +1.11" in caption
    ev.n_measurements = 8
    assert "other" not in contribution_caption(ev)
    ev.decision = ("random forest (mean decrease in impurity); +0.50 + contributions = "
                   "probability 0.63 before calibration (the confidence above is after)")
    assert max(map(len, contribution_caption(ev).splitlines())) <= 90  # was clipped


def test_a_case_value_far_outside_every_class_is_marked_with_its_value() -> None:
    from matplotlib.figure import Figure

    from segfew.inference.sheet import Measured, _box

    by_class = {"DCM": [900.0, 1000.0], "NOR": [500.0, 700.0]}
    ax = Figure().subplots()
    _box(ax, Measured("size (mm)", 2790.0, by_class, unit="mm"))
    texts = [t.get_text() for t in ax.texts]
    assert any("2.79e+03" in t and "↑" in t for t in texts)
    assert ax.get_ylim()[1] < 2790.0 and ax.get_ylabel() == "mm"
    ax = Figure().subplots()
    _box(ax, Measured("size (mm)", 800.0, by_class))  # inside: a line, no mark
    assert not ax.texts and any(line.get_color() == "tab:red" for line in ax.lines)


def test_unnamed_structures_and_texture_measurements_read_as_words() -> None:
    from segfew.inference.measure_names import describe, structure_names

    names = structure_names(["background", "label1", "label2"])
    assert names == {1: "structure 1", 2: "structure 2"}
    assert describe("label2_texture_cooccurrence_contrast_frame01", {"frame01": "ED"},
                    names).label == "structure 2 texture cooccurrence contrast at ED"


def test_voxel_sizes_and_volume_changes_are_named_in_words() -> None:
    """A file without a real spacing is measured in voxels (pixels in 2D), and a wall's
    emptying is a volume change: both read as words, with their unit."""
    from segfew.inference.measure_names import describe, label

    ed = {"frame01": "ED", "frame02": "ES"}
    assert label("LV_volume_vox_frame01", ed) == "LV volume at ED (voxels)"
    assert label("blob_area_px_0", {"0": ""}) == "blob area (pixels)"
    change = describe("myocardium_volume_change_frame01_frame02", ed)
    assert change.label == "myocardium volume decrease (ED→ES) (%)" and change.factor == 100.0
