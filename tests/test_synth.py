"""The phantom dataset: files and layout, determinism, and classes that differ in structure."""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from segfew.cli import app
from segfew.errors import SpecError
from segfew.synth import make_phantoms


def rows(table: Path) -> list[dict[str, str]]:
    with open(table, newline="") as f:
        return list(csv.DictReader(f))


def load(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj)


def test_layout_and_table(tmp_path):
    table = make_phantoms(tmp_path, dim=2, n_per_class=2, size=32)
    assert table == tmp_path / "labels.csv"
    cases = rows(table)
    assert list(cases[0]) == ["id", "label", "group"]
    assert [r["label"] for r in cases] == ["normal"] * 2 + ["oval"] * 2 + ["shifted"] * 2
    for r in cases:
        image = load(tmp_path / "images" / f"{r['id']}.nii.gz")
        label = load(tmp_path / "labels" / f"{r['id']}_seg.nii.gz")
        assert image.shape == label.shape == (32, 32) and image.dtype == np.float32
        assert set(np.unique(label)) == {0, 1, 2, 3}
    assert (tmp_path / "run.json").is_file()
    # A smaller rerun leaves no stale cases behind.
    make_phantoms(tmp_path, dim=2, n_per_class=1, size=32)
    assert len(list((tmp_path / "images").iterdir())) == 3


def test_deterministic_by_seed(tmp_path):
    a = make_phantoms(tmp_path / "a", dim=3, n_per_class=1, size=16, seed=3).parent
    b = make_phantoms(tmp_path / "b", dim=3, n_per_class=1, size=16, seed=3).parent
    c = make_phantoms(tmp_path / "c", dim=3, n_per_class=1, size=16, seed=4).parent
    name = "images/case001.nii.gz"
    assert load(a / name).shape == (16, 16, 16)
    assert np.array_equal(load(a / name), load(b / name))
    assert not np.array_equal(load(a / name), load(c / name))


def structure_traits(label: np.ndarray) -> tuple[float, float, float]:
    """(ring elongation, blob side, cavity share of the ring) from a 2D label map."""
    ring = np.argwhere((label == 1) | (label == 2))
    cov = np.cov(ring.T)
    elongation = float(np.sqrt(np.linalg.eigvalsh(cov)[-1] / np.linalg.eigvalsh(cov)[0]))
    side = float(np.argwhere(label == 3)[:, 1].mean() - ring[:, 1].mean())
    cavity = float((label == 2).sum() / len(ring))
    return elongation, side, cavity


def test_classes_differ_in_structure_not_mean_intensity(tmp_path):
    table = make_phantoms(tmp_path, dim=2, n_per_class=10, size=48, num_classes=4)
    by_class: dict[str, list[tuple[float, ...]]] = {}
    means: dict[str, list[float]] = {}
    for r in rows(table):
        label = load(tmp_path / "labels" / f"{r['id']}_seg.nii.gz")
        by_class.setdefault(r["label"], []).append(structure_traits(label))
        means.setdefault(r["label"], []).append(
            float(load(tmp_path / "images" / f"{r['id']}.nii.gz").mean()))
    t = {k: np.array(v) for k, v in by_class.items()}
    # Each class is told from "normal" by one structural trait, without overlap.
    assert t["oval"][:, 0].min() > t["normal"][:, 0].max()
    assert t["shifted"][:, 1].min() > 0 > t["normal"][:, 1].max()
    assert t["thick"][:, 2].max() < t["normal"][:, 2].min()
    # ...while the mean intensity of the default classes overlaps heavily.
    for other in ("oval", "shifted"):
        lo = max(min(means["normal"]), min(means[other]))
        hi = min(max(means["normal"]), max(means[other]))
        inside = [m for m in means["normal"] + means[other] if lo <= m <= hi]
        assert len(inside) >= 10


def test_two_channels_contract_differently_per_class(tmp_path):
    table = make_phantoms(tmp_path, dim=2, n_per_class=3, size=48, channels=2)
    ratios: dict[str, list[float]] = {}
    for r in rows(table):
        cav = [(load(tmp_path / "labels" / f"{r['id']}_{ch}_seg.nii.gz") == 2).sum()
               for ch in ("ch1", "ch2")]
        for ch in ("ch1", "ch2"):
            assert (tmp_path / "images" / f"{r['id']}_{ch}.nii.gz").is_file()
        ratios.setdefault(r["label"], []).append(cav[1] / cav[0])
    assert max(ratios["normal"]) < 0.5 < min(ratios["oval"])  # strong vs weak contraction


def test_invalid_settings_and_cli(tmp_path):
    with pytest.raises(SpecError, match="classes"):
        make_phantoms(tmp_path, num_classes=20)
    runner = CliRunner()
    result = runner.invoke(app, ["synth", "--out", str(tmp_path / "d"), "--dim", "3",
                                 "--n-per-class", "1", "--size", "16"])
    assert result.exit_code == 0, result.output
    assert len(rows(tmp_path / "d" / "labels.csv")) == 3
    result = runner.invoke(app, ["synth", "--out", str(tmp_path / "e"), "--dim", "4"])
    assert result.exit_code == 2 and "dim" in result.output


def test_synth_refuses_a_non_empty_out_unless_forced(tmp_path):
    runner = CliRunner()
    args = ["synth", "--out", str(tmp_path / "d"), "--dim", "2", "--n-per-class", "1",
            "--size", "16", "--classes", "2"]
    assert runner.invoke(app, args).exit_code == 0
    label = tmp_path / "d" / "labels" / "case000_seg.nii.gz"
    label.write_bytes(b"an expert's mask")
    result = runner.invoke(app, [*args, "--seed", "1"])
    assert result.exit_code == 2
    assert "--out is not empty" in result.output and "--force" in result.output
    assert label.read_bytes() == b"an expert's mask"
    result = runner.invoke(app, [*args, "--seed", "1", "--force"])  # segfew's phantoms only
    assert result.exit_code != 0 and "changed since segfew wrote it" in result.output
    assert label.read_bytes() == b"an expert's mask"
    result = runner.invoke(app, [*args, "--seed", "1", "--force", "--overwrite"])
    assert result.exit_code == 0, result.output
    assert label.read_bytes() != b"an expert's mask"
