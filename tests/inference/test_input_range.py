"""Measurements in arbitrary units against a re-export: a measures model whose sizes are in
pixels, or whose intensities are read as stored, records its training images' grid and range
of values; ``predict`` warns of a case exported at another grid or bit depth, naming its
file, and flags it ``low_confidence``. A model file without the record predicts as before."""

from __future__ import annotations

import csv
import functools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segfew.inference.input_range import KEY
from tests.conftest import invoke


def _disc(size: int, radius: float) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return (yy - size / 2 + 0.5) ** 2 + (xx - size / 2 + 0.5) ** 2 <= radius**2


def _cases(root: Path, bright: bool) -> Path:
    """Eight 32 × 32 8-bit PNG slices (no real pixel size) with their masks and a table:
    the class is the disc's size, or (``bright``) its brightness, the size alike."""
    rng = np.random.default_rng(0)
    lines = ["id,label"]
    for i in range(8):
        big = i % 2 == 1
        disc = _disc(32, 7 if bright else (10 if big else 5) + 0.3 * (i // 2))
        level = (200 if big else 90) if bright else 120
        image = rng.integers(20, 40, (32, 32)) + disc * (level + rng.integers(0, 10, (32, 32)))
        Image.fromarray(image.astype(np.uint8)).save(root / "images" / f"c{i}.png")
        Image.fromarray(disc.astype(np.uint8)).save(root / "masks" / f"c{i}_seg.png")
        lines.append(f"c{i},{'big' if big else 'small'}")
    (root / "t.csv").write_text("\n".join(lines) + "\n")
    return root


def _folders(tmp: Path) -> Path:
    for sub in ("images", "masks"):
        (tmp / sub).mkdir(parents=True)
    return tmp


def _train(root: Path) -> Path:
    clf = root / "clf.pt"
    invoke("train-classifier", "--table", str(root / "t.csv"), "--images", str(root / "images"),
           "--framework", "measures", "--masks", str(root / "masks"), "--label-names",
           "background,disc", "--out", str(clf), "--threads", "1", "--no-progress",
           "--no-cache")
    return clf


def _predict(clf: Path, images: Path, masks: Path, out: Path) -> tuple[str, list[dict]]:
    said = invoke("predict", "--model", str(clf), "--input", str(images), "--masks",
                  str(masks), "--out", str(out), "--threads", "1", "--no-progress",
                  "--workers", "0")
    return " ".join(said.split()), list(csv.DictReader(out.open()))


def _export(root: Path, out: Path, change: str) -> Path:
    """The same slices written again: ``half`` (16 × 16, masks by nearest) or ``16bit``
    (stored values × 257)."""
    _folders(out)
    for png in sorted((root / "images").glob("*.png")):
        image, mask = Image.open(png), Image.open(root / "masks" / f"{png.stem}_seg.png")
        if change == "half":
            image, mask = image.resize((16, 16), Image.BILINEAR), mask.resize((16, 16),
                                                                               Image.NEAREST)
        else:
            image = Image.fromarray(np.asarray(image).astype(np.uint16) * 257)
        image.save(out / "images" / png.name)
        mask.save(out / "masks" / f"{png.stem}_seg.png")
    return out


@pytest.fixture(scope="module")
def px_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A measures model on the discs' areas in pixels (32 × 32 slices), and its data."""
    root = _cases(_folders(tmp_path_factory.mktemp("px")), bright=False)
    return _train(root), root


def test_sizes_in_pixels_on_another_grid_are_said_and_flagged(
        px_model: tuple[Path, Path], tmp_path: Path) -> None:
    from segfew.modelfile import read_model_file

    clf, root = px_model
    meta, _ = read_model_file(clf)
    assert meta.metrics[KEY]["grid"] == {"unit": "pixels", "channels": {
        "0": {"smallest": [32, 32], "largest": [32, 32]}}}
    same, rows = _predict(clf, root / "images", root / "masks", tmp_path / "same.csv")
    assert "sizes are in pixels and" not in same and len(rows) == 8
    half = _export(root, tmp_path / "half", "half")
    said, rows = _predict(clf, half / "images", half / "masks", tmp_path / "half.csv")
    assert (f"{half / 'images' / 'c0.png'}: sizes are in pixels and this image is 16 × 16 "
            "where the model was fitted on 32 × 32 images") in said
    assert "re-export at the training grid or give real voxel sizes" in said
    assert {r["status"] for r in rows} == {"ok"}
    assert {r["low_confidence"] for r in rows} == {"yes"}
    assert "8 cases, 0 failed, 8 low_confidence" in said


def test_intensities_as_stored_at_another_bit_depth_are_said_and_flagged(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import segfew.inference.fit_measures as fit
    from segfew.models.measures_selection import Candidate

    # the model that reads the discs' brightness as stored (eight cases choose nothing)
    monkeypatch.setattr(fit, "select_classifier", functools.partial(
        fit.select_classifier, candidates=(Candidate("logistic", "intensity", 0.1),)))
    root = _cases(_folders(tmp_path / "data"), bright=True)
    clf = _train(root)
    same, rows = _predict(clf, root / "images", root / "masks", tmp_path / "same.csv")
    assert "intensities as stored" not in same and {r["status"] for r in rows} == {"ok"}
    wide = _export(root, tmp_path / "wide", "16bit")
    said, rows = _predict(clf, wide / "images", wide / "masks", tmp_path / "wide.csv")
    assert (f"{wide / 'images' / 'c0.png'}: the model reads intensities as stored, and this "
            "image's values span") in said
    assert "times wider than the training images'" in said and "bit depth" in said
    assert {r["low_confidence"] for r in rows} == {"yes"}


def test_a_model_file_without_the_record_predicts_as_before(
        px_model: tuple[Path, Path], tmp_path: Path) -> None:
    clf, root = px_model
    payload = torch.load(clf, weights_only=False)
    meta = json.loads(payload["metadata"])
    assert KEY in meta["metrics"]
    del meta["metrics"][KEY]  # as a segfew before the record wrote it
    payload["metadata"] = json.dumps(meta)
    older = tmp_path / "older.pt"
    torch.save(payload, older)
    half = _export(root, tmp_path / "half", "half")
    said, rows = _predict(older, half / "images", half / "masks", tmp_path / "p.csv")
    assert "sizes are in pixels and" not in said and "fitted on 32 × 32" not in said
    assert {r["status"] for r in rows} == {"ok"} and len(rows) == 8
