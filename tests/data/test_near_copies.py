"""Near copies: a scan re-exported with another intensity scale, shifted by a pixel,
cropped by two, with slight noise or mirrored is said by ``split`` (a warning naming both
files), though neither its bytes nor its voxels are those of the original; scans of
different patients are not."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from segfew.data.near_copies import NEAR_COPY_CORRELATION_2D, near_copies, thumbnail
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
    pairs = near_copies(thumbs)  # type: ignore[arg-type]
    linked = {frozenset((c.first.stem, c.second.stem)) for c in pairs}
    for k in copies:
        assert frozenset(("a", k)) in linked, k
    assert not any(n.startswith("other") for c in linked for n in c)
    assert all(c.correlation >= NEAR_COPY_CORRELATION_2D for c in pairs)
    assert thumbnail(np.full((8, 8), 3.0)) is None  # a blank image has no thumbnail
    # one group: no pair (a patient's own scans may look alike)
    assert near_copies([(p, "one", th) for p, _, th in thumbs]) == []  # type: ignore[misc]


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
