"""Near copies: a scan re-exported with another intensity scale, shifted by a pixel,
cropped by two, with slight noise or mirrored (a 3D scan too) is said by ``split`` (a
warning naming both files; every pair in its run record), though neither its bytes nor its
voxels are those of the original; scans of different patients are not; more images than
are compared are said as not looked for."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from segfew.data import near_copies as near_copies_module
from segfew.data.near_copies import NEAR_COPY_CORRELATION_2D, find_near_copies, thumbnail
from segfew.data.splits import split_table
from tests.conftest import save_nifti


def _scan(rng: np.random.Generator, shape: tuple[int, int] = (96, 96)) -> np.ndarray:
    """A smooth random picture (every patient another): a few blobs placed at random."""
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]]
    out = np.zeros(shape)
    for _ in range(6):
        r, c = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        out += rng.uniform(50, 100) * np.exp(-((rows - r) ** 2 + (cols - c) ** 2) / 200)
    return out.astype(np.float32)


def test_re_exports_correlate_and_other_scans_do_not() -> None:
    rng = np.random.default_rng(0)
    a = _scan(rng)
    t = thumbnail(a)
    assert t is not None and t.shape == (1024,)
    copies = {"x4": a * 4, "shift": np.roll(a, 1, 0), "crop": a[2:-2, 2:-2],
              "noise": a + rng.normal(0, 0.5, a.shape).astype(np.float32), "mirror": a[:, ::-1]}
    others = [_scan(rng) for _ in range(6)]
    thumbs = [(Path("a.nii"), "a", t)] + [
        (Path(f"{k}.nii"), k, thumbnail(v)) for k, v in {**copies, **{
            f"other{i}": o for i, o in enumerate(others)}}.items()]
    pairs = find_near_copies(thumbs).pairs  # type: ignore[arg-type]
    linked = {frozenset((c.first.stem, c.second.stem)) for c in pairs}
    for k in copies:
        assert frozenset(("a", k)) in linked, k
    assert not any(n.startswith("other") for c in linked for n in c)
    assert all(c.correlation >= NEAR_COPY_CORRELATION_2D for c in pairs)
    assert thumbnail(np.full((8, 8), 3.0)) is None  # a blank image has no thumbnail
    # one group: no pair (a patient's own scans may look alike)
    assert find_near_copies([(p, "one", th) for p, _, th in thumbs]).pairs == []  # type: ignore[misc]


def test_split_warns_of_near_copies_of_another_patient_naming_both_files(
        tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    lines = ["id,label,patient"]
    scans = {f"p{k}": _scan(rng) for k in range(8)}
    scans["copy_x4"] = scans["p0"] * 4  # another patient's row: a re-export of p0
    scans["copy_crop"] = scans["p0"][2:-2, 2:-2].copy()
    for k, (cid, a) in enumerate(scans.items()):
        save_nifti(tmp_path / "images" / f"{cid}.nii.gz", a)
        lines.append(f"{cid},{'ab'[k % 2]},{cid}")
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        split_table(tmp_path / "t.csv", tmp_path / "s", test_fraction=0.5,
                    images=tmp_path / "images")
    said = [str(w.message) for w in record if "re-exported" in str(w.message)]
    assert len(said) == 1
    assert "p0.nii.gz" in said[0] and "copy_x4.nii.gz" in said[0] \
        and "copy_crop.nii.gz" in said[0] and "t.csv" in said[0]
    assert "p1.nii.gz" not in said[0] and "give them one patient" in said[0]


def _volume(rng: np.random.Generator, shape: tuple[int, int, int] = (24, 24, 8)) -> np.ndarray:
    """A smooth random 3D scan (RAS as saved: identity affine): blobs placed at random."""
    x, y, z = np.mgrid[0:shape[0], 0:shape[1], 0:shape[2]]
    out = np.zeros(shape)
    for _ in range(6):
        c = [rng.uniform(0, n) for n in shape]
        out += rng.uniform(50, 100) * np.exp(
            -((x - c[0]) ** 2 + (y - c[1]) ** 2 + 4 * (z - c[2]) ** 2) / 40)
    return out.astype(np.float32)


def test_a_volume_mirrored_left_right_or_back_front_is_a_near_copy() -> None:
    rng = np.random.default_rng(2)
    a = _volume(rng)
    copies = {"lr": a[::-1], "ap": a[:, ::-1], "both": a[::-1, ::-1]}
    others = {f"other{i}": _volume(rng) for i in range(6)}
    thumbs = [(Path(f"{k}.nii"), k, thumbnail(np.ascontiguousarray(v)))
              for k, v in {"a": a, **copies, **others}.items()]
    linked = {frozenset((c.first.stem, c.second.stem))
              for c in find_near_copies(thumbs).pairs}  # type: ignore[arg-type]
    for k in copies:
        assert frozenset(("a", k)) in linked, k
    assert not any(n.startswith("other") for c in linked for n in c)


def _table(tmp_path: Path, scans: dict[str, np.ndarray]) -> Path:
    lines = ["id,label,patient"]
    for k, (cid, a) in enumerate(scans.items()):
        save_nifti(tmp_path / "images" / f"{cid}.nii.gz", a)
        lines.append(f"{cid},{'ab'[k % 2]},{cid}")
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    return tmp_path / "t.csv"


def test_more_images_than_compared_is_said_and_recorded(tmp_path: Path,
                                                         monkeypatch: Any) -> None:
    monkeypatch.setattr(near_copies_module, "MOST_COMPARED", 4)
    rng = np.random.default_rng(3)
    scans = {f"p{k}": _scan(rng, (48, 48)) for k in range(5)}
    scans["copy"] = scans["p0"] * 2
    table = _table(tmp_path, scans)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        done = split_table(table, tmp_path / "s", test_fraction=0.5, images=tmp_path / "images")
    said = [str(w.message) for w in record if "not looked for" in str(w.message)]
    assert len(said) == 1 and "6 2D pictures, more than 4" in said[0] and "t.csv" in said[0]
    assert not any("re-exported" in str(w.message) for w in record)
    assert done.record()["near_copies"]["not_looked_for"] == ["6 2D pictures, more than 4"]


def test_split_records_every_near_copy_pair_the_warning_counts(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    scans: dict[str, np.ndarray] = {}
    for k in range(5):  # five patients, each with a re-export under another patient
        scans[f"p{k}"] = _scan(rng, (48, 48))
        scans[f"q{k}"] = scans[f"p{k}"] * 3
    table = _table(tmp_path, scans)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        done = split_table(table, tmp_path / "s", test_fraction=0.5, images=tmp_path / "images")
    said = [str(w.message) for w in record if "re-exported" in str(w.message)]
    assert len(said) == 1 and "and 2 more sets of 4 files" in said[0]
    assert "a one-pixel shift" in said[0] and "run.json" in said[0]
    pairs = done.record()["near_copies"]["pairs"]
    assert sorted((Path(p["first"]).name, Path(p["second"]).name) for p in pairs) == [
        (f"p{k}.nii.gz", f"q{k}.nii.gz") for k in range(5)]
    assert all(p["correlation"] >= NEAR_COPY_CORRELATION_2D for p in pairs)
