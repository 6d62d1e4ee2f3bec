"""One digest per scan, however it is stored (a file, a DICOM series folder, a detached
header with its data), in every manifest and every comparison: leakage, split, experiment."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import pytest

from segfew.data import Case
from segfew.errors import DataError
from segfew.evaluation.leakage import check_leakage, find_leakage, trained_on
from segfew.files import file_digest
from segfew.identity import scan_digest, scan_files
from segfew.runinfo import manifest
from tests.conftest import invoke, save_dicom_series, save_itk, save_nifti

SHAPE = (16, 16, 6)


def _volume(seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random(SHAPE) * 100).astype(np.float32)


def _series(folder: Path, seed: int, uid: str | None = None) -> Path:
    """A series of :data:`SHAPE`; ``uid``: its SeriesInstanceUID (default: conftest's)."""
    save_dicom_series(folder, _volume(seed))
    for f in folder.iterdir() if uid else ():
        ds = pydicom.dcmread(f)
        ds.SeriesInstanceUID = uid
        ds.save_as(f)
    return folder


def _copy_renamed(series: Path, to: Path) -> Path:
    """A byte-identical copy of a series whose slices carry other file names."""
    to.mkdir(parents=True)
    for i, f in enumerate(sorted(series.iterdir())):
        shutil.copyfile(f, to / f"IM{100 - i:04d}")
    return to


def _mhd(header: Path, data: Path, seed: int) -> Path:
    """A MetaImage header naming ``data`` (written with random voxels)."""
    data.write_bytes(_volume(seed).tobytes())
    header.write_text("ObjectType = Image\nNDims = 3\nDimSize = 16 16 6\n"
                      "ElementType = MET_FLOAT\nElementSpacing = 1 1 1\n"
                      f"ElementDataFile = {data.name}\n")
    return header


def _segmenter(path: Path, training_data: list[str], **metrics: Any) -> Path:
    """A tiny M-Net whose file records ``training_data`` (and ``metrics``) as pretrain does."""
    from segfew.modelfile import Architecture, ModelMeta, save_model
    from segfew.models import MNet
    from segfew.spec import PreprocessConfig

    args = {"dim": 2, "in_channels": 1, "num_labels": 2, "n_s": 2}
    meta = ModelMeta(kind="segmentation", architecture=Architecture(name="mnet", args=args),
                     preprocess=PreprocessConfig(size=(32, 32), intensity="minmax"),
                     classes=["background", "l1"],
                     metrics={"training_data": training_data, **metrics})
    return save_model(path, MNet(2, 1, 2, n_s=2), meta)


def _pretrained_on(path: Path, scans: list[Path], **metrics: Any) -> Path:
    """What an older pretrain records: the digests of its run.json manifest."""
    return _segmenter(path, sorted({row["sha256"] for row in manifest(scans)}), **metrics)


# ------------------------------------------------------------------------- the digest


def test_a_series_copy_is_one_scan_and_another_series_is_not(tmp_path: Path) -> None:
    s1 = _series(tmp_path / "s1", 1)
    copy = _copy_renamed(s1, tmp_path / "copy")
    other = _series(tmp_path / "s2", 2)
    assert len(scan_files(s1)) == SHAPE[2]
    assert scan_digest(s1) == scan_digest(copy) != scan_digest(other)
    # a stray single-file series and a non-image file beside it change nothing
    save_dicom_series(tmp_path / "stray", _volume(3)[:, :, :1])
    stray = pydicom.dcmread(tmp_path / "stray" / "slice000.dcm")
    stray.SeriesInstanceUID = "1.2.826.0.1.3680043.2.1125.9"
    stray.save_as(copy / "stray.dcm")
    (copy / "notes.txt").write_text("scanned twice")
    assert scan_digest(copy) == scan_digest(s1)
    with pytest.raises(IsADirectoryError):
        scan_digest(tmp_path)  # a folder of folders holds no series


def test_one_series_of_a_folder_holding_several_is_identified_by_its_files(
        tmp_path: Path) -> None:
    from segfew.data.scan import list_folder

    s1 = _series(tmp_path / "s1", 1)
    exam = Path(shutil.copytree(s1, tmp_path / "exam"))  # a study export: two series
    _series(tmp_path / "other", 2, uid="1.2.826.0.1.3680043.2.1125.7")
    for f in (tmp_path / "other").iterdir():
        shutil.copyfile(f, exam / f"b_{f.name}")
    copy = _copy_renamed(s1, tmp_path / "s1copy")
    parts = [p for p in list_folder(exam).images if not p.exists()]
    assert len(parts) == 2 and scan_files(exam) == []
    digests = {scan_digest(p) for p in parts}
    assert scan_digest(copy) in digests and scan_digest(tmp_path / "other") in digests
    rows = manifest(parts)
    assert {r["sha256"] for r in rows} == digests and all(len(r["files"]) == 6 for r in rows)
    model = _pretrained_on(tmp_path / "seg.pt", [copy])
    assert find_leakage(model, [Case(p.name, (p,)) for p in parts]).leaked == [
        p.name for p in parts if scan_digest(p) == scan_digest(copy)]


@pytest.mark.parametrize("kind", ["mhd", "nhdr", "hdr"])
def test_a_detached_header_is_identified_by_its_data(tmp_path: Path, kind: str) -> None:
    a, b, c = (tmp_path / n for n in "abc")
    for folder in (a, b, c):
        folder.mkdir()
    if kind == "mhd":  # the same header, other voxels; and a copy renamed
        one = _mhd(a / "scan.mhd", a / "scan.raw", 1)
        same_header = _mhd(b / "scan.mhd", b / "scan.raw", 2)
        renamed = _mhd(c / "copy.mhd", c / "copy.raw", 1)
    elif kind == "nhdr":
        one = save_itk(a / "scan.nhdr", _volume(1))
        same_header = save_itk(b / "scan.nhdr", _volume(2))
        renamed = save_itk(c / "copy.nhdr", _volume(1))
    else:  # a NIfTI pair
        def pair(path: Path, seed: int) -> Path:
            nib.save(nib.Nifti1Pair(_volume(seed), np.eye(4)), str(path))
            return path
        one, same_header, renamed = pair(a / "scan.hdr", 1), pair(b / "scan.hdr", 2), \
            pair(c / "copy.hdr", 1)
    assert one.read_bytes() == same_header.read_bytes()  # only the data tells them apart
    assert scan_files(one) != [one]
    assert scan_digest(one) == scan_digest(renamed) != scan_digest(same_header)
    row = manifest([one])[0]
    assert row["sha256"] == scan_digest(one) and row["files"]


def test_a_file_keeps_its_bytes_digest(tmp_path: Path) -> None:
    path = save_nifti(tmp_path / "a.nii.gz", _volume(1))
    assert scan_digest(path) == file_digest(path) == manifest([path])[0]["sha256"]


def test_the_manifest_has_one_row_per_series_and_lists_other_folders(tmp_path: Path) -> None:
    s1 = _series(tmp_path / "in" / "s1", 1)
    nifti = save_nifti(tmp_path / "in" / "a.nii.gz", _volume(2))
    rows = {Path(r["path"]).name: r for r in manifest([tmp_path / "in", s1, nifti])}
    assert set(rows) == {"s1", "a.nii.gz"}
    assert rows["s1"]["sha256"] == scan_digest(s1) and len(rows["s1"]["files"]) == SHAPE[2]


# ------------------------------------------------------------------------- leakage


def test_a_segmentation_network_refuses_a_series_copy_and_a_renamed_mhd(
        tmp_path: Path) -> None:
    s1 = _series(tmp_path / "train" / "s1", 1)
    mhd = _mhd(tmp_path / "train" / "m.mhd", tmp_path / "train" / "m.raw", 3)
    model = _pretrained_on(tmp_path / "seg.pt", [s1, mhd])
    copy = _copy_renamed(s1, tmp_path / "test" / "s1copy")
    renamed = _mhd(tmp_path / "test" / "other.mhd", tmp_path / "test" / "other.raw", 3)
    fresh = _series(tmp_path / "test" / "s9", 9)
    cases = [Case("s1copy", (copy,)), Case("other", (renamed,)), Case("s9", (fresh,))]
    assert find_leakage(model, cases).leaked == ["other", "s1copy"]
    with pytest.raises(DataError, match="2 test case"):
        check_leakage(model, cases)


def test_an_mhd_with_the_same_header_and_other_data_is_not_flagged(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    trained = _mhd(tmp_path / "a" / "scan.mhd", tmp_path / "a" / "scan.raw", 1)
    other = _mhd(tmp_path / "b" / "scan.mhd", tmp_path / "b" / "scan.raw", 2)
    model = _pretrained_on(tmp_path / "seg.pt", [trained])
    check = find_leakage(model, [Case("other", (other,)), Case("same", (trained,))])
    assert check.checked and check.leaked == ["same"]


def test_an_old_per_file_manifest_still_finds_its_scans(tmp_path: Path) -> None:
    """segfew before scan digests recorded each file: a series' slices, a header."""
    s1 = _series(tmp_path / "train" / "s1", 1)
    mhd = _mhd(tmp_path / "train" / "m.mhd", tmp_path / "train" / "m.raw", 3)
    nifti = save_nifti(tmp_path / "train" / "n.nii.gz", _volume(4))
    old = sorted(file_digest(f) for f in [*sorted(s1.iterdir()), mhd, nifti])
    model = _segmenter(tmp_path / "old.pt", old)
    copy = _copy_renamed(s1, tmp_path / "test" / "s1copy")
    partial = _series(tmp_path / "test" / "s5", 5)  # one slice shared, not the series
    shutil.copyfile(sorted(s1.iterdir())[0], sorted(partial.iterdir())[0])
    cases = [Case("s1copy", (copy,)), Case("m", (mhd,)), Case("n", (nifti,)),
             Case("s5", (partial,))]
    assert find_leakage(model, cases).leaked == ["m", "n", "s1copy"]
    assert not trained_on(tmp_path / "absent.nii.gz", set(old))


def _series_table(root: Path) -> tuple[Path, Path]:
    """Four NIfTI cases and one series to train on; a copy of the series to evaluate."""
    images, test = root / "images", root / "test"
    for i in range(4):
        save_nifti(images / f"c{i}.nii.gz", _volume(10 + i))
    _series(images / "s1", 1)
    (root / "labels.csv").write_text("id,label\nc0,a\nc1,b\nc2,a\nc3,b\ns1,b\n")
    save_nifti(test / "e0.nii.gz", _volume(20))
    shutil.copytree(images / "s1", test / "s1copy")
    (root / "test.csv").write_text("id,label\ne0,a\ns1copy,b\n")
    return images, test


def test_evaluate_refuses_a_classifier_on_a_copy_of_its_training_series(
        tmp_path: Path) -> None:
    images, test = _series_table(tmp_path)
    model = tmp_path / "clf.v1.pt"
    invoke("train-classifier", "--table", str(tmp_path / "labels.csv"), "--images",
           str(images), "--framework", "scratch", "--size", "16", "--epochs", "1",
           "--threads", "1", "--no-progress", "--no-cache", "--out", str(model))
    out = invoke("evaluate", "-m", str(model), "--images", str(test), "--table",
                 str(tmp_path / "test.csv"), "--out", str(tmp_path / "ev"), "--threads", "1",
                 "--no-progress", expect=2)
    assert "trained on 1 evaluated case(s) (s1copy)" in " ".join(out.split())


# ------------------------------------------------------------------------- grouping


def _split_scans(root: Path) -> Path:
    """s1 and its renamed copy, m1 and m2 (other headers, one data), six NIfTI."""
    images = root / "images"
    s1 = _series(images / "s1", 1)
    _copy_renamed(s1, images / "s1copy")
    _mhd(images / "m1.mhd", images / "m1.raw", 2)
    _mhd(images / "m2.mhd", images / "m2.raw", 2)
    for i in range(6):
        save_nifti(images / f"n{i}.nii.gz", _volume(30 + i))
    rows = ["id,label", "s1,a", "s1copy,b", "m1,a", "m2,b",
            *(f"n{i},{'ab'[i % 2]}" for i in range(6))]
    (root / "t.csv").write_text("\n".join(rows) + "\n")
    return images


def test_split_keeps_series_and_mhd_copies_on_one_side(tmp_path: Path) -> None:
    images = _split_scans(tmp_path)
    for seed in range(4):
        out = tmp_path / f"s{seed}"
        invoke("split", "--table", str(tmp_path / "t.csv"), "--images", str(images),
               "--test-per-class", "2", "--seed", str(seed), "--out", str(out))
        side = {}
        for name in ("train", "test"):
            with open(out / f"{name}.tsv", encoding="utf-8") as f:
                side.update({r["id"]: name for r in csv.DictReader(f, delimiter="\t")})
        assert side["s1"] == side["s1copy"] and side["m1"] == side["m2"], seed
    info = json.loads((tmp_path / "s0" / "run.json").read_text())
    assert info["grouping"]["identical_scans"] == [["m1", "m2"], ["s1", "s1copy"]]


def test_experiment_groups_series_copies(tmp_path: Path) -> None:
    from segfew.experiment.protocol import Task, run_experiment
    from segfew.metrics import classification_metrics
    from segfew.spec import DataSource, ExperimentSpec

    images = _split_scans(tmp_path)
    with open(tmp_path / "t.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    paths = {p.name.split(".")[0]: p for p in images.iterdir() if not p.name.endswith(".raw")}
    cases = [Case(r["id"], (paths[r["id"]],), target=r["label"]) for r in rows]
    spec = ExperimentSpec(data=DataSource(images=images), sizes=[1], repetitions=4,
                          frameworks=["scratch"], test_per_class=2, seed=3)

    def trainer(task: Task, train: list[Case], test: list[Case], work: Path) -> dict[str, Any]:
        sides = {c.id: "train" for c in train} | {c.id: "test" for c in test}
        assert sides.get("s1copy", "out") == sides.get("s1", "out")
        y = [int(c.target == "b") for c in test]
        return {"metrics": classification_metrics(y, y, None, ["a", "b"], bootstrap=0),
                "seconds": 0.0, "predictions": []}

    run_experiment(spec, tmp_path / "run", trainer, cases=cases)
    assert json.loads((tmp_path / "run" / "data.json").read_text())["grouped"] is True


def test_a_header_whose_data_is_missing_is_recorded_unreadable_never_its_header(
        tmp_path: Path) -> None:
    a = _mhd(tmp_path / "a.mhd", tmp_path / "a.raw", 1)
    (tmp_path / "a.raw").unlink()
    row = manifest([a])[0]
    assert "sha256" not in row and row["unreadable"].endswith("a.raw")
    b = _mhd(tmp_path / "b.mhd", tmp_path / "b.raw", 1)
    assert not trained_on(a, {scan_digest(b), file_digest(b)})


def test_the_preprocessing_cache_keys_a_scan_by_all_of_its_files(tmp_path: Path) -> None:
    """Two scans sharing a detached header's text are two cache entries, and one series of
    a folder holding several (a path on no disk) is keyed by its slices."""
    from segfew.data.scan import list_folder
    from segfew.preprocess.cache import PreprocessCache
    from segfew.preprocess.grid import Preprocessing

    cache, cfg = PreprocessCache(tmp_path / "cache"), Preprocessing(size=(8, 8, 4))
    for name in "ab":
        (tmp_path / name).mkdir()
    a = _mhd(tmp_path / "a" / "scan.mhd", tmp_path / "a" / "scan.raw", 1)
    b = _mhd(tmp_path / "b" / "scan.mhd", tmp_path / "b" / "scan.raw", 2)
    assert a.read_bytes() == b.read_bytes()  # the same header text, other voxels
    assert cache.key(a, cfg, "image") != cache.key(b, cfg, "image")
    assert not np.array_equal(cache.image(a, cfg), cache.image(b, cfg))
    exam = Path(shutil.copytree(_series(tmp_path / "s1", 1), tmp_path / "exam"))
    _series(tmp_path / "other", 2, uid="1.2.826.0.1.3680043.2.1125.7")
    for f in (tmp_path / "other").iterdir():
        shutil.copyfile(f, exam / f"b_{f.name}")
    parts = [p for p in list_folder(exam).images if not p.exists()]
    assert len({cache.key(p, cfg, "image") for p in parts}) == 2


@pytest.mark.parametrize("form", ["pattern", "list"])
def test_a_header_naming_one_file_a_slice_is_identified_by_all_of_them(
        tmp_path: Path, form: str) -> None:
    """MetaImage's ``ElementDataFile = sl%03d.raw 0 5 1`` and ``LIST``: two scans sharing the
    header's text are two scans, and a slice rewritten is another scan."""
    from segfew.io import read_image

    names = [f"sl{i:03d}.raw" for i in range(6)]
    data_file = "sl%03d.raw 0 5 1" if form == "pattern" else "LIST\n" + "\n".join(names)
    headers = []
    for seed, name in enumerate("ab"):
        folder = tmp_path / name
        folder.mkdir()
        for i, slice_name in enumerate(names):
            (folder / slice_name).write_bytes(_volume(seed)[..., i].T.tobytes())
        header = folder / "scan.mhd"
        header.write_text("ObjectType = Image\nNDims = 3\nDimSize = 16 16 6\n"
                          "ElementType = MET_FLOAT\nElementSpacing = 1 1 1\n"
                          f"ElementDataFile = {data_file}\n")
        headers.append(header)
    a, b = headers
    assert a.read_bytes() == b.read_bytes()
    assert [f.name for f in scan_files(a)] == names
    assert scan_digest(a) != scan_digest(b)
    read = read_image(a).array  # every slice read (in RAS order: compare the values)
    assert np.array_equal(np.sort(read.ravel()), np.sort(_volume(0).ravel()))
    before = scan_digest(a)
    (a.parent / names[3]).write_bytes(_volume(5)[..., 3].T.tobytes())
    assert scan_digest(a) != before


# ------------------------------------------------------------------------- the voxels


def _restored(scan: Path, folder: Path) -> dict[str, Path]:
    """``scan`` (a .nii.gz) re-stored without changing a voxel: gunzipped, re-gzipped at
    level 9, written as NRRD by SimpleITK, and stored in the other orientation (LAS: the
    array flipped along x, the affine saying so)."""
    import gzip

    import SimpleITK as sitk

    folder.mkdir(parents=True, exist_ok=True)
    raw = gzip.decompress(scan.read_bytes())
    (folder / "gunzipped.nii").write_bytes(raw)
    with gzip.GzipFile(folder / "regzipped.nii.gz", "wb", compresslevel=9, mtime=12345) as f:
        f.write(raw)
    sitk.WriteImage(sitk.ReadImage(str(scan)), str(folder / "converted.nrrd"))
    img = nib.load(str(scan))
    flip = np.diag([-1.0, 1, 1, 1])
    flip[0, 3] = img.shape[0] - 1
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[::-1], img.affine @ flip),
             str(folder / "las.nii.gz"))
    return {p.name.split(".")[0]: p for p in folder.iterdir()}


def test_a_scan_re_stored_without_changing_a_voxel_has_its_voxel_digest(
        tmp_path: Path) -> None:
    from segfew.identity import voxel_digest

    scan = save_nifti(tmp_path / "a.nii.gz", _volume(1))
    copies = _restored(scan, tmp_path / "copies")
    assert len({scan_digest(p) for p in [scan, *copies.values()]}) == 5  # other bytes
    assert {voxel_digest(p) for p in copies.values()} == {voxel_digest(scan)}
    ints = save_nifti(tmp_path / "i.nii.gz", _volume(2).astype(np.int16))
    as_float = save_nifti(tmp_path / "f.nii.gz", _volume(2).astype(np.int16).astype(np.float32))
    assert voxel_digest(ints) == voxel_digest(as_float)  # the same values in another dtype
    other = save_nifti(tmp_path / "b.nii.gz", _volume(3))
    reshaped = save_nifti(tmp_path / "r.nii.gz", _volume(1).reshape(16, 6, 16))
    assert len({voxel_digest(p) for p in (scan, other, reshaped)}) == 3
    blank = save_nifti(tmp_path / "z.nii.gz", np.zeros(SHAPE, np.float32))
    assert voxel_digest(blank) is None and voxel_digest(tmp_path / "absent.nii") is None
    # float32 is hashed where it holds every value, whatever the dtype; float64 where not
    values = _volume(5)
    assert voxel_digest(other, values.astype(np.float64)) == voxel_digest(other, values)
    assert voxel_digest(other, values.astype(np.float64) + 1e-9) != voxel_digest(other, values)
    big = np.arange(np.prod(SHAPE), dtype=np.int32).reshape(SHAPE) + 2**25 + 1
    assert voxel_digest(other, big) == voxel_digest(other, big.astype(np.float64)) != \
        voxel_digest(other, big.astype(np.float32))


def test_a_2d_picture_written_transposed_or_mirrored_is_the_same_scan(tmp_path: Path) -> None:
    """A PNG from ``Image.fromarray(nifti_array)`` is the transpose of what ITK writes of
    the same image: a picture states no orientation, so any rotation or mirror matches."""
    from PIL import Image as PILImage

    from segfew.identity import voxel_digest

    plane = (np.arange(12 * 9).reshape(12, 9) * 2).astype(np.uint8)
    paths = []
    for name, picture in (("a", plane), ("t", plane.T), ("m", plane[:, ::-1]),
                          ("r", np.rot90(plane))):
        PILImage.fromarray(np.ascontiguousarray(picture)).save(tmp_path / f"{name}.png")
        paths.append(tmp_path / f"{name}.png")
    PILImage.fromarray(plane + 1).save(tmp_path / "other.png")
    assert len({voxel_digest(p) for p in paths}) == 1
    assert voxel_digest(tmp_path / "other.png") != voxel_digest(paths[0])


def test_a_voxel_digest_is_read_once_and_again_when_the_file_changes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from segfew import identity
    from segfew.identity import voxel_digest

    reads: list[Path] = []
    real = identity.read_image
    monkeypatch.setattr(identity, "read_image", lambda p, *a: reads.append(p) or real(p, *a))
    scan = save_nifti(tmp_path / "a.nii.gz", _volume(1))
    first = voxel_digest(scan)
    assert voxel_digest(scan) == first and len(reads) == 1
    save_nifti(scan, _volume(2))
    assert voxel_digest(scan) not in (None, first) and len(reads) == 2


def _recording_voxels(path: Path, scans: list[Path]) -> Path:
    """A model file recording what this segfew's pretrain records: both digests."""
    from segfew.identity import voxel_digests

    return _pretrained_on(path, scans, training_voxels=voxel_digests(scans))


def test_leakage_refuses_a_training_scan_re_stored_naming_it(tmp_path: Path) -> None:
    from segfew.evaluation.leakage import leakage_record

    train = [save_nifti(tmp_path / "train" / f"c{i}.nii.gz", _volume(i)) for i in range(3)]
    model = _recording_voxels(tmp_path / "seg.pt", train)
    copies = _restored(train[0], tmp_path / "test")
    cases = [Case(name, (p,)) for name, p in sorted(copies.items())]
    fresh = [Case("fresh", (save_nifti(tmp_path / "fresh.nii.gz", _volume(9)),))]
    byte_copy = Case("bytes", (Path(shutil.copy(train[1], tmp_path / "b.nii.gz")),))
    check = find_leakage(model, [*cases, *fresh, byte_copy])
    assert check.by_voxels and check.leaked == sorted(["bytes", *copies])
    assert check.restored == sorted(copies)
    with pytest.raises(DataError, match="gunzipped, las, regzipped: the same voxels as "
                                        "training scans, re-stored in other files"):
        check_leakage(model, cases)
    clean = find_leakage(model, fresh)
    assert clean.leaked == [] and "by its voxels" in clean.describe()
    verdict = leakage_record([check], allowed=True)["verdict"]
    assert "4 of them the same voxels as a training scan, re-stored" in verdict


def test_a_model_without_voxel_digests_still_finds_byte_copies_and_says_what_it_cannot(
        tmp_path: Path) -> None:
    from segfew.evaluation.leakage import leakage_record
    from segfew.experiment.verdict import experiment_verdict

    train = [save_nifti(tmp_path / "train" / f"c{i}.nii.gz", _volume(i)) for i in range(2)]
    old = _pretrained_on(tmp_path / "old.pt", train)  # training_data only
    gunzipped = _restored(train[0], tmp_path / "test")["gunzipped"]
    copy = Path(shutil.copy(train[1], tmp_path / "copy.nii.gz"))
    check = find_leakage(old, [Case("g", (gunzipped,)), Case("copy", (copy,))])
    assert check.leaked == ["copy"] and not check.by_voxels
    clean = find_leakage(old, [Case("g", (gunzipped,))])
    words = "can only be found for models that record their training images' voxel digests"
    assert words in clean.describe() and words in leakage_record([clean], False)["verdict"]
    data = {"leakage_check": {"per_repetition": False, "networks": [clean.as_dict()]}}
    alarm, sentence = experiment_verdict(data, "cases")
    assert not alarm and sentence.startswith("Leakage check: passed.") and words in sentence


def test_a_classifier_whose_network_records_no_voxels_is_checked_by_bytes_there(
        tmp_path: Path) -> None:
    """Its own training scans are found re-stored; the network's need its voxel record."""
    from segfew.modelfile import read_model_file, save_model
    from segfew.models import MNet

    own = save_nifti(tmp_path / "own.nii.gz", _volume(1))
    theirs = save_nifti(tmp_path / "theirs.nii.gz", _volume(2))
    network = read_model_file(_pretrained_on(tmp_path / "seg.pt", [theirs]))[0]
    meta = read_model_file(_recording_voxels(tmp_path / "clf.pt", [own]))[0]
    meta = meta.model_copy(update={"feature_source": network.model_dump(mode="json")})
    clf = save_model(tmp_path / "clf.pt", MNet(2, 1, 2, n_s=2), meta)
    a = _restored(own, tmp_path / "a")["gunzipped"]
    b = _restored(theirs, tmp_path / "b")["gunzipped"]
    check = find_leakage(clf, [Case("a", (a,)), Case("b", (b,))])
    assert check.leaked == ["a"] and not check.by_voxels


def test_evaluate_refuses_a_classifier_on_its_training_scan_gunzipped(tmp_path: Path) -> None:
    images = tmp_path / "images"
    for i in range(4):
        save_nifti(images / f"c{i}.nii.gz", _volume(10 + i))
    (tmp_path / "labels.csv").write_text("id,label\nc0,a\nc1,b\nc2,a\nc3,b\n")
    model = tmp_path / "clf.pt"
    invoke("train-classifier", "--table", str(tmp_path / "labels.csv"), "--images",
           str(images), "--framework", "scratch", "--size", "16", "--epochs", "1",
           "--threads", "1", "--no-progress", "--no-cache", "--out", str(model))
    test = tmp_path / "test"
    _restored(images / "c2.nii.gz", test / "x")["gunzipped"].rename(test / "g.nii")
    save_nifti(test / "e0.nii.gz", _volume(20))
    (tmp_path / "test.csv").write_text("id,label\ne0,a\ng,a\n")
    out = invoke("evaluate", "-m", str(model), "--images", str(test), "--table",
                 str(tmp_path / "test.csv"), "--out", str(tmp_path / "ev"), "--threads", "1",
                 "--no-progress", expect=2)
    assert "trained on 1 evaluated case(s) (g: the same voxels" in " ".join(out.split())


def test_pretrain_records_its_images_voxels_and_not_its_label_maps(
        phantoms: Path, tmp_path: Path) -> None:
    from segfew.identity import voxel_digest
    from segfew.modelfile import read_model_file
    from tests.jobs.conftest import TINY_PRETRAIN

    out = tmp_path / "seg.pt"
    invoke("pretrain", "--images", str(phantoms / "images"), "--labels",
           str(phantoms / "labels"), "--out", str(out), *TINY_PRETRAIN, "--epochs", "1")
    recorded = set(read_model_file(out)[0].metrics["training_voxels"])
    images = sorted((phantoms / "images").iterdir())
    assert recorded == {voxel_digest(p) for p in images}
    assert not recorded & {voxel_digest(p) for p in (phantoms / "labels").iterdir()}
    gunzipped = _restored(images[0], tmp_path / "copies")["gunzipped"]
    assert find_leakage(out, [Case("g", (gunzipped,))]).restored == ["g"]


def test_split_inspect_and_experiment_join_a_scan_re_stored(tmp_path: Path) -> None:
    from segfew.data.inspect import inspect_dataset
    from segfew.experiment.splits import split_for
    from segfew.spec import DataSource, ExperimentSpec

    images = tmp_path / "images"
    for i in range(6):
        save_nifti(images / f"n{i}.nii.gz", _volume(40 + i))
    _restored(images / "n0.nii.gz", tmp_path / "x")["converted"].rename(images / "g.nrrd")
    rows = ["id,label", "g,b", *(f"n{i},{'ab'[i % 2]}" for i in range(6))]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    for seed in range(4):
        out = tmp_path / f"s{seed}"
        invoke("split", "--table", str(tmp_path / "t.csv"), "--images", str(images),
               "--test-per-class", "1", "--seed", str(seed), "--out", str(out))
        with open(out / "train.tsv", encoding="utf-8") as f:
            train = {r["id"] for r in csv.DictReader(f, delimiter="\t")}
        assert ("g" in train) == ("n0" in train), seed
    grouping = json.loads((tmp_path / "s0" / "run.json").read_text())["grouping"]
    assert grouping["identical_scans"] == [["g", "n0"]] and "voxels" in grouping["compared_by"]
    report = inspect_dataset(images, table=tmp_path / "t.csv")
    assert any(p.startswith("identical images: g, n0 hold the same scan")
               for p in report.problems)
    paths = {p.name.split(".")[0]: p for p in images.iterdir()}
    cases = [Case(r.split(",")[0], (paths[r.split(",")[0]],), target=r.split(",")[1])
             for r in rows[1:]]
    from segfew.data import group_identical_images

    grouped = group_identical_images(cases)[0]
    spec = ExperimentSpec(data=DataSource(images=images), sizes=[1], repetitions=1,
                          frameworks=["scratch"], test_per_class=1, seed=0)
    for rep in range(1, 5):
        train_cases, test = split_for(grouped, spec, 1, rep)
        sides = {c.id: "train" for c in train_cases} | {c.id: "test" for c in test}
        assert sides.get("g", "out") == sides.get("n0", "out"), rep


@pytest.mark.parametrize("records", [True, False])
def test_an_experiment_pretraining_per_repetition_says_whether_voxels_were_compared(
        tmp_path: Path, records: bool) -> None:
    from segfew.experiment.protocol import run_experiment
    from segfew.experiment.verdict import experiment_verdict
    from segfew.spec import DataSource
    from tests.experiment.test_protocol import Counting, _cases_on_disk, make_spec

    cases = _cases_on_disk(tmp_path / "images")
    spec = make_spec(repetitions=2, sizes=[1], frameworks=["measures"], features=None,
                     pretrain=Path("pretrain.toml"),
                     data=DataSource(images=tmp_path / "images", labels=tmp_path / "labels"))

    def pretrain_step(rep: int, side: list[Case], out: Path) -> None:
        _pretrained_on(out, [c.images[0] for c in side],
                       **({"training_voxels": []} if records or rep == 1 else {}))

    run_experiment(spec, tmp_path / "run", Counting(), cases=cases, pretrain_step=pretrain_step)
    data = json.loads((tmp_path / "run" / "data.json").read_text())
    assert data["leakage_check"]["by_voxels"] is records
    sentence = experiment_verdict(data, "cases")[1]
    assert sentence.startswith("Leakage check: passed.")
    assert ("by its voxels" in sentence) is records
    assert ("can only be found for models that record" in sentence) is not records
