"""k-means pseudo-labels: one labelling shared by all images, saved centres, the command."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from segfew.cli import app
from segfew.errors import DataError, DataWarning
from segfew.jobs.label import label_images
from segfew.labelling.kmeans import KMeansLabeller, fit_kmeans
from segfew.spec import LabelSpec
from tests.conftest import real_data


def phantom(rng: np.random.Generator, scale: float, offset: float = 0.0) -> np.ndarray:
    """Zero background, a dim ring and a bright core (plus a mid blob), mild noise."""
    shape = (48, 40)
    yy, xx = np.indices(shape)
    r = np.hypot(yy - 24, xx - 18)
    image = np.zeros(shape)
    image[r < 14] = 0.3
    image[r < 7] = 0.9
    image[np.hypot(yy - 8, xx - 34) < 4] = 0.6
    inside = image > 0
    image[inside] += rng.normal(0, 0.015, inside.sum())
    return (image * scale + offset).astype(np.float32)


def test_same_structure_gets_same_label_across_intensity_scales(rng):
    a, b = phantom(rng, 100.0), phantom(rng, 2500.0)  # 25× apart
    km = fit_kmeans([a, b], k=3, seed=0)
    assert np.all(np.diff(km.centres) > 0)
    la, lb = km.label(a), km.label(b)
    assert la.dtype == np.uint8 and la.shape == a.shape
    assert np.array_equal(la, lb)
    assert la[24, 18] == 3 and la[24, 28] == 1 and la[8, 34] == 2  # ordered by intensity
    assert la[0, 0] == 0 and lb[0, 0] == 0  # background kept


def test_pooled_not_per_image(rng):
    # One image holds only the dark ring: per-image clustering would call it "1..3";
    # pooled centres keep it the dark label it is in the full image.
    full = phantom(rng, 1.0)
    ring_only = np.where((full > 0) & (full < 0.45), full, 0).astype(np.float32)
    ring_only[:2] = 1.0  # the full image's minmax range (two rows: too many for a spike)
    km = fit_kmeans([full, ring_only], k=3, seed=0)
    assert set(np.unique(km.label(ring_only)[2:, 2:])) <= {0, 1}


def test_without_background_and_with_threshold(rng):
    image = phantom(rng, 10.0)
    km = fit_kmeans([image], k=4, keep_background=False)
    labels = km.label(image)
    assert labels.min() == 0 and labels.max() == 3 and labels[0, 0] == 0
    km = fit_kmeans([image], k=2, background_threshold=0.45)
    labels = km.label(image)
    assert labels[24, 28] == 0 and labels[8, 34] == 1 and labels[24, 18] == 2


def test_too_few_intensities():
    """Binary masks were told "only 1 distinct foreground intensities": that no --k can
    split them was left to the reader. Grey levels fewer than k name the --k that fits."""
    masks = [np.zeros((8, 8)), np.zeros((8, 8))]
    masks[0][2:5, 2:5], masks[1][3:7, 1:4] = 1, 255
    with pytest.raises(DataError, match=r"hold 1 foreground intensity, so no --k can split "
                                        r"them \(binary masks\? give them to pretrain as --labels"):
        fit_kmeans(masks, k=3)
    levels = np.repeat(np.arange(4.0), 16).reshape(8, 8)  # 0 and 3 grey levels
    with pytest.raises(DataError, match="only 3 distinct foreground intensities: give --k 3"):
        fit_kmeans([levels], k=4)
    assert fit_kmeans([levels], k=3).k == 3


def test_centres_json_round_trip(tmp_path, rng):
    image = phantom(rng, 10.0)
    km = fit_kmeans([image], k=3, background_threshold=0.01, intensity="zscore")
    km.save(tmp_path / "centres.json")
    again = KMeansLabeller.from_file(tmp_path / "centres.json")
    assert np.array_equal(again.centres, km.centres)
    assert (again.keep_background, again.background_threshold, again.intensity) == (
        True, 0.01, "zscore")
    assert np.array_equal(again.label(image), km.label(image))


@pytest.mark.parametrize(
    "text", ["{not json", "[1, 2]", '{"format": "other"}',
             '{"format": "segfew-kmeans", "centres": [0.1]}',
             '{"format": "segfew-kmeans", "centres": [], "keep_background": true, '
             '"background_threshold": null, "intensity": "minmax"}',
             '{"format": "segfew-kmeans", "centres": [0.1], "keep_background": true, '
             '"background_threshold": null, "intensity": "fancy"}'])
def test_bad_centres_file(tmp_path, text):
    path = tmp_path / "c.json"
    path.write_text(text)
    with pytest.raises(DataError) as err:
        KMeansLabeller.from_file(path)
    assert str(err.value).startswith(str(path))
    with pytest.raises(DataError, match="cannot read"):
        KMeansLabeller.from_file(tmp_path / "missing.json")


def write_folder(folder: Path, rng: np.random.Generator, scales=(1.0, 40.0, 900.0)) -> None:
    folder.mkdir(parents=True)
    for i, s in enumerate(scales):
        affine = np.diag([-1.5, 0.8, 1.0, 1.0])  # LAS on disk: reoriented on reading
        affine[:3, 3] = (10, -5, i)
        volume = np.stack([phantom(rng, s)] * 3, axis=-1)[::-1]  # 3D, flipped first axis
        nib.save(nib.Nifti1Image(volume, affine), str(folder / f"p{i}.nii.gz"))


def test_label_images_writes_maps_in_source_geometry(tmp_path, rng):
    write_folder(tmp_path / "images", rng)
    out = tmp_path / "out"
    written = label_images(LabelSpec(images=tmp_path / "images", out=out, k=3))
    assert sorted(p.name for p in written) == ["p0_seg.nii.gz", "p1_seg.nii.gz", "p2_seg.nii.gz"]
    maps = []
    for p in written:
        src = nib.load(str(tmp_path / "images" / p.name.replace("_seg", "")))
        lab = nib.load(str(p))
        assert lab.shape == src.shape and np.allclose(lab.affine, src.affine)
        maps.append(np.asarray(lab.dataobj))
    assert np.array_equal(maps[0], maps[2]) and maps[0][-25, 18, 1] == 3  # flipped back
    assert json.loads((out / "run.json").read_text())["spec"]["k"] == 3
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_label_images_skips_a_bad_image(tmp_path, rng):
    write_folder(tmp_path / "images", rng)
    (tmp_path / "images" / "p9.nii.gz").write_bytes(b"broken")
    out = tmp_path / "out"
    with pytest.warns(DataWarning, match="p9"):
        written = label_images(LabelSpec(images=tmp_path / "images", out=out, k=3))
    assert sorted(p.name for p in written) == ["p0_seg.nii.gz", "p1_seg.nii.gz", "p2_seg.nii.gz"]
    assert not (out / "p9_seg.nii.gz").exists()


def test_label_from_a_table_keeps_the_rows_whose_images_exist(tmp_path, rng):
    """One table row without its image stopped the run: no image was labelled."""
    write_folder(tmp_path / "images", rng)
    table = tmp_path / "ids.csv"
    table.write_text("id\np0\ngone\np2\n")
    out = tmp_path / "out"
    with pytest.warns(DataWarning, match=r"row 3: id 'gone' has no image .*; skipped: no label"):
        written = label_images(LabelSpec(images=tmp_path / "images", table=table, out=out, k=3))
    assert sorted(p.name for p in written) == ["p0_seg.nii.gz", "p2_seg.nii.gz"]
    failed = json.loads((out / "run.json").read_text())["failed"]
    assert [f["path"] for f in failed] == [str(table)] and "'gone'" in failed[0]["error"]
    table.write_text("id\ngone\nlost\n")
    with pytest.raises(DataError, match=r"none of its 2 rows has its image \(the first: row 2"):
        label_images(LabelSpec(images=tmp_path / "images", table=table, out=tmp_path / "o2",
                               k=3))
    assert not (tmp_path / "o2").exists()


def test_cli_label_and_centres_reuse(tmp_path, rng):
    write_folder(tmp_path / "images", rng)
    runner = CliRunner()
    first = runner.invoke(app, ["label", "--images", str(tmp_path / "images"),
                                "--out", str(tmp_path / "a"), "--k", "3", "--no-progress"])
    assert first.exit_code == 0, first.output
    assert "3 label maps" in first.output
    write_folder(tmp_path / "new", rng, scales=(7.0,))
    second = runner.invoke(app, ["label", "--images", str(tmp_path / "new"),
                                 "--out", str(tmp_path / "b"), "--no-progress",
                                 "--centres", str(tmp_path / "a" / "centres.json")])
    assert second.exit_code == 0, second.output
    a = json.loads((tmp_path / "a" / "centres.json").read_text())
    b = json.loads((tmp_path / "b" / "centres.json").read_text())
    assert a["centres"] == b["centres"]  # reused, not refitted
    reused = np.asarray(nib.load(str(tmp_path / "b" / "p0_seg.nii.gz")).dataobj)
    fitted = np.asarray(nib.load(str(tmp_path / "a" / "p0_seg.nii.gz")).dataobj)
    assert np.array_equal(reused, fitted)
    bad = runner.invoke(app, ["label", "--images", str(tmp_path / "new"), "--out",
                              str(tmp_path / "c"), "--k", "1"])
    assert bad.exit_code == 2 and "k" in bad.output


@pytest.mark.realdata
def test_acdc_labels_match_image_geometry(tmp_path):
    acdc = real_data("acdc")
    images = tmp_path / "images"
    images.mkdir()
    for p in sorted((acdc / "images").glob("*.nii.gz"))[:3]:
        (images / p.name).symlink_to(p)
    written = label_images(LabelSpec(images=images, out=tmp_path / "out", k=4))
    assert len(written) == 3
    for p in written:
        src = nib.load(str(acdc / "images" / p.name.replace("_seg", "")))
        lab = nib.load(str(p))
        assert lab.shape == src.shape and np.array_equal(lab.affine, src.affine)
        assert set(np.unique(np.asarray(lab.dataobj))) <= {0, 1, 2, 3, 4}


def test_label_refuses_an_out_folder_inside_its_images(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((8, 8)).astype(np.float32),
                             np.eye(4)), str(images / "a.nii.gz"))
    result = CliRunner().invoke(app, ["label", "--images", str(images), "--out",
                                      str(images / "labels"), "--k", "2"])
    assert result.exit_code == 2, result.output
    assert "--out is inside the input folder" in " ".join(result.output.split())
    assert not (images / "labels").exists()


def test_label_on_binary_masks_names_their_folder(tmp_path: Path) -> None:
    """The refusal named no file or folder: a batch script's log could not say which."""
    for i in range(2):
        mask = np.zeros((8, 8, 3), np.uint8)
        mask[2:5, 2:5] = 255
        nib.save(nib.Nifti1Image(mask, np.eye(4)), str(tmp_path / f"m{i}.nii.gz"))
    out = CliRunner().invoke(app, ["label", "--images", str(tmp_path), "--out",
                                   str(tmp_path.parent / "km"), "--no-progress"])
    assert out.exit_code == 2
    said = " ".join(out.output.split())
    assert f"error: {tmp_path}: cannot fit" in said and "no --k can split them" in said
    assert not (tmp_path.parent / "km").exists()
