"""Cine cavities without an expert (segfew.labelling.cavities, ``segfew label --method
cavities``)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from segfew.labelling.cavities import LABEL_NAMES, LV, MYOCARDIUM, RV, cine_cavities
from tests.conftest import invoke, ramp, real_data, save_nifti


def _heart(lv_radius: float, rv_width: float, rng: np.random.Generator,
           shape: tuple[int, int, int] = (96, 96, 4), grey_below: bool = False
           ) -> tuple[np.ndarray, np.ndarray]:
    """A bSSFP-like short-axis stack: a bright LV disc in a 6-px dark wall, a bright RV
    crescent beside it, lung-dark outside, mid-grey tissue beyond. (image, true labels).
    ``grey_below``: below the heart, tissue as grey as the myocardium touches the wall (the
    liver)."""
    rows, cols = np.indices(shape[:2])
    r_lv = np.hypot(rows - 50, cols - 52)
    r_rv = np.hypot(rows - 50, cols - 52 + lv_radius + 6 + rv_width)
    truth = np.zeros(shape[:2], np.uint8)
    truth[(r_rv < lv_radius + rv_width) & (r_lv > lv_radius + 7)] = RV
    truth[(r_lv >= lv_radius) & (r_lv < lv_radius + 6)] = MYOCARDIUM
    truth[r_lv < lv_radius] = LV
    image = np.choose(truth, [0.08, 0.9, 0.3, 1.0]).astype(np.float32)
    image[np.hypot(rows - 48, cols - 48) > 44] = 0.45  # chest wall
    if grey_below:
        image[(rows > 50 + lv_radius) & (truth == 0)] = 0.3
    stack = np.repeat(image[..., None], shape[2], axis=2)
    noisy = stack + rng.normal(0, 0.02, stack.shape).astype(np.float32)
    return noisy * 300, np.repeat(truth[..., None], shape[2], axis=2)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def test_cavities_of_a_beating_phantom_follow_the_truth(rng: np.random.Generator) -> None:
    ed, ed_truth = _heart(16, 8, rng)
    es, es_truth = _heart(10, 5, rng)
    maps = cine_cavities([ed, es])
    assert [m.shape for m in maps] == [ed.shape, es.shape]
    assert all(m.dtype == np.uint8 and set(np.unique(m)) <= {0, RV, MYOCARDIUM, LV}
               for m in maps)
    for found, truth in zip(maps, (ed_truth, es_truth), strict=True):
        assert _dice(found == LV, truth == LV) > 0.9
        assert _dice(found == MYOCARDIUM, truth == MYOCARDIUM) > 0.6
        assert _dice(found == RV, truth == RV) > 0.6
    # the ejection fraction that measurements would read: 1 − (10/16)² ≈ 0.61
    ef = 1 - (maps[1] == LV).sum() / (maps[0] == LV).sum()
    assert ef == pytest.approx(1 - (10 / 16) ** 2, abs=0.08)


def test_a_wall_beside_grey_tissue_keeps_the_thickness_of_the_rest(rng) -> None:
    # Rays that meet no lung or blood (the liver is as grey as the myocardium) take the
    # slice's typical wall, not the longest a ray may measure.
    ed, ed_truth = _heart(16, 8, rng, grey_below=True)
    es, _ = _heart(10, 5, rng, grey_below=True)
    found = cine_cavities([ed, es])[0] == MYOCARDIUM
    truth = ed_truth == MYOCARDIUM
    assert _dice(found, truth) > 0.75
    assert found.sum() < 1.3 * truth.sum()


def test_the_rv_is_the_cavity_that_empties_not_the_largest_bright_one() -> None:
    from segfew.labelling.cavities import _second_cavity

    lv = np.zeros((64, 64), bool)
    lv[24:40, 24:40] = True
    parts = np.zeros((64, 64), int)
    parts[24:40, 8:18] = 1  # the RV, across a 6-px septum: 160 px, most of it empties
    parts[20:44, 46:58] = 2  # the stomach, as near on the other side: 288 px, still
    emptied = np.zeros((64, 64), bool)
    emptied[24:40, 8:16] = True
    rv = _second_cavity(parts, 2, 0, lv, None, emptied)
    assert rv is not None and (rv == (parts == 1)).all()
    assert (_second_cavity(parts, 2, 0, lv, None, None) == (parts == 2)).all()  # by area


def test_cavities_do_not_depend_on_the_intensity_offset_or_unit(rng) -> None:
    ed, _ = _heart(16, 8, rng)
    es, _ = _heart(10, 5, rng)
    maps = cine_cavities([ed, es])
    for scale, offset in ((1.0, -5000.0), (0.01, -1.5), (3.0, 50.0)):  # shifted, z-scored…
        again = cine_cavities([ed * scale + offset, es * scale + offset])
        for a, b in zip(maps, again, strict=True):
            assert (a == b).mean() > 0.99


def test_no_motion_no_heart_gives_empty_maps() -> None:
    still = np.full((48, 48, 3), 100.0, np.float32)
    assert all(not m.any() for m in cine_cavities([still, still]))


@pytest.mark.parametrize("phases, match", [
    (lambda a: [a], "two or more"),
    (lambda a: [a, a[:-1]], "one shape"),
    (lambda a: [a[..., 0], a[..., 0]], "3D"),
])
def test_cavities_refuse_what_has_no_motion_to_find(phases, match, rng) -> None:
    ed, _ = _heart(12, 6, rng, shape=(64, 64, 2))
    with pytest.raises(ValueError, match=match):
        cine_cavities(phases(ed))


def _cine_folder(root: Path, rng: np.random.Generator, n: int = 2) -> Path:
    images = root / "images"
    images.mkdir(parents=True)
    for i in range(n):
        ed, _ = _heart(14 + i, 7, rng)
        es, _ = _heart(9, 5, rng)
        affine = np.diag([1.5, 1.5, 8.0, 1.0])
        save_nifti(images / f"p{i}_frame01.nii.gz", ed, affine)
        save_nifti(images / f"p{i}_frame02.nii.gz", es, affine)
    return images


def test_cli_label_cavities_writes_maps_names_and_run_info(tmp_path, rng) -> None:
    images = _cine_folder(tmp_path, rng)
    out = tmp_path / "cavities"
    text = invoke("label", "--method", "cavities", "--channels", "frame01,frame02",
                  "--images", str(images), "--out", str(out), "--no-progress")
    assert "4 label maps" in text
    written = sorted(p.name for p in out.glob("*_seg.nii.gz"))
    assert written == [f"p{i}_frame0{f}_seg.nii.gz" for i in range(2) for f in (1, 2)]
    seg = nib.load(out / "p0_frame01_seg.nii.gz")
    assert np.allclose(seg.affine, nib.load(images / "p0_frame01.nii.gz").affine)
    assert (np.asarray(seg.dataobj) == LV).any()
    assert json.loads((out / "label_names.json").read_text())["label_names"] == list(LABEL_NAMES)
    assert (out / "run.json").is_file() and not (out / "centres.json").exists()
    # inspect names the values as the folder declares them
    report = invoke("inspect", "--images", str(images), "--labels", str(out), "--channels",
                    "frame01,frame02")
    assert "myocardium" in report and "LV" in report


def test_pretrain_names_the_labels_from_the_labels_folder(tmp_path, rng) -> None:
    from segfew.jobs.pretrain import declared_label_names
    from segfew.spec import PretrainSpec

    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "label_names.json").write_text(json.dumps({"label_names": list(LABEL_NAMES)}))
    spec = PretrainSpec.model_validate({"data": {"images": str(tmp_path), "labels": str(labels)},
                                        "out": str(tmp_path / "seg.pt"),
                                        "label_names": ["a", "b", "c", "d"]})
    assert declared_label_names(spec) == list(LABEL_NAMES)
    (labels / "label_names.json").write_text("{}")
    with pytest.raises(Exception, match="label names file"):
        declared_label_names(spec)


@pytest.mark.parametrize("extra, problem", [
    (["--channels", "frame01"], "two or more cine phases"),
    ([], "two or more cine phases"),
    (["--channels", "frame01,frame02", "--k", "7"], "--k (k): for method kmeans only"),
    (["--channels", "frame01,frame02", "--seed", "3"], "--seed (seed): for method kmeans only"),
])
def test_cli_label_cavities_without_phases_is_one_line(tmp_path, rng, extra, problem) -> None:
    images = _cine_folder(tmp_path, rng, n=1)
    out = tmp_path / "cavities"
    text = invoke("label", "--method", "cavities", "--images", str(images), "--out", str(out),
                  *extra, expect=2)
    assert problem in text and not out.exists()


def test_cli_label_cavities_names_a_2d_case(tmp_path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for f in ("frame01", "frame02"):
        save_nifti(images / f"flat_{f}.nii.gz", ramp((16, 16)))
    out = tmp_path / "cavities"
    text = invoke("label", "--method", "cavities", "--channels", "frame01,frame02",
                  "--images", str(images), "--out", str(out), expect=2)
    assert "flat_frame01.nii.gz" in text and "need 3D phases" in text and "2D images" in text
    assert not out.exists()  # a refused run leaves no folder


def test_cavities_do_not_depend_on_how_the_file_orders_its_axes(rng) -> None:
    """The slice axis is the widest-spaced one, wherever the array holds it."""
    ed, _ = _heart(16, 8, rng)
    es, _ = _heart(10, 5, rng)
    stored = cine_cavities([ed, es], spacing=(1.5, 1.5, 8.0))
    moved = cine_cavities([np.moveaxis(ed, -1, 0), np.moveaxis(es, -1, 0)],
                          spacing=(8.0, 1.5, 1.5))
    for a, b in zip(stored, moved, strict=True):
        assert np.array_equal(np.moveaxis(b, 0, -1), a) and (a == LV).any()


def test_label_warns_about_a_case_with_no_heart_and_odd_pixels(tmp_path) -> None:
    from segfew.errors import DataWarning
    from segfew.jobs.label import label_images
    from segfew.spec import LabelSpec

    images = tmp_path / "images"
    for f in ("frame01", "frame02"):
        save_nifti(images / f"still_{f}.nii.gz", ramp((48, 48, 3), base=100.0),
                   np.diag([0.5, 0.5, 8.0, 1.0]))
    spec = LabelSpec(images=images, out=tmp_path / "out", method="cavities",
                     channels=["frame01", "frame02"])
    with pytest.warns(DataWarning) as seen:
        label_images(spec)
    said = " ".join(str(w.message) for w in seen)
    assert "still_frame01.nii.gz: no heart found" in said and "0.5 × 0.5 mm" in said


def test_label_refuses_a_folder_holding_another_runs_maps(tmp_path, rng) -> None:
    images = _cine_folder(tmp_path, rng, n=1)
    out = tmp_path / "labels"
    (out / "old_seg.nii.gz").parent.mkdir()
    (out / "old_seg.nii.gz").write_bytes(b"")
    text = invoke("label", "--method", "cavities", "--channels", "frame01,frame02",
                  "--images", str(images), "--out", str(out), expect=2)
    assert "old_seg.nii.gz" in text and "another run" in text
    assert sorted(p.name for p in out.iterdir()) == ["old_seg.nii.gz"]
    (out / "old_seg.nii.gz").unlink()
    (out / "centres.json").write_text("{}")  # k-means centres would name the wrong labels
    text = invoke("label", "--method", "cavities", "--channels", "frame01,frame02",
                  "--images", str(images), "--out", str(out), expect=2)
    assert "centres.json" in text
    (out / "centres.json").unlink()
    for _ in range(2):  # the same run again replaces its own maps
        invoke("label", "--method", "cavities", "--channels", "frame01,frame02",
               "--images", str(images), "--out", str(out), "--no-progress")
    assert len(list(out.glob("*_seg.nii.gz"))) == 2


@pytest.mark.realdata
def test_acdc_cavities_follow_the_expert_masks() -> None:
    """On public ACDC patients the LV found without an expert overlaps the expert's."""
    acdc = real_data("acdc")
    dice = []
    for patient in ("patient009", "patient066", "patient099"):  # DCM, NOR, RV
        phases = [np.asarray(nib.load(acdc / "images" / f"{patient}_{f}.nii.gz").dataobj)
                  for f in ("frame01", "frame02")]
        ed = cine_cavities(phases)[0]
        truth = np.asarray(nib.load(acdc / "labels" / f"{patient}_frame01_gt.nii.gz").dataobj)
        dice.append(_dice(ed == LV, truth == LV))
    assert np.mean(dice) > 0.75, dice

