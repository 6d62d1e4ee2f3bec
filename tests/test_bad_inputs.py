"""A bad-input corpus: one small dataset per defect kind, and every command run over each.

Every dataset holds three good 2D cases (g0, g1, g2) and one bad one. For each defect and
each command that reads what is defective, the command must: exit non-zero, print (or, in
a batch, write in its error row) one line naming the bad file and the problem — the very
line the door (:func:`segfew.data.read.read_case`) gives — with no traceback, leave nothing
half-written, and keep the good cases of a batch in its output.
"""

from __future__ import annotations

import csv
import gzip
import warnings
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from segfew.cli import app
from tests.conftest import (
    huge_nifti,
    make_classifier,
    make_segmenter,
    save_nifti,
    write_dicom_slice,
)

GOOD = ("g0", "g1", "g2")
SIZE = 32
Writer = Callable[[Path], None]


# ------------------------------------------------------------------ the corpus


def _scan(i: int) -> np.ndarray:
    rng = np.random.default_rng(i)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    blob = np.exp(-((yy - 16) ** 2 + (xx - 14 - i) ** 2) / 40.0)
    return (100 * blob + rng.normal(0, 5, (SIZE, SIZE))).astype(np.float32)


def _mask(i: int) -> np.ndarray:
    out = np.zeros((SIZE, SIZE), np.uint8)
    out[8:20, 8 + i:20 + i] = 1
    out[12:16, 12 + i:16 + i] = 2
    return out


def _good(root: Path, affine: np.ndarray | None = None, channels: tuple[str, ...] = ()) -> None:
    for i, case in enumerate(GOOD):
        for ch in channels or ("",):
            name = f"{case}_{ch}" if ch else case
            save_nifti(root / "images" / f"{name}.nii.gz", _scan(i), affine)
            save_nifti(root / "labels" / f"{name}.nii.gz", _mask(i), affine)
    names = [*GOOD, "bad"]
    rows = "".join(f"{c},{'AB'[i % 2]}\n" for i, c in enumerate(names))
    (root / "table.csv").write_text("id,label\n" + rows, encoding="utf-8")


def _bad_image(write: Callable[[Path], None], name: str = "bad.nii.gz") -> Writer:
    def make(root: Path) -> None:
        _good(root)
        write(root / "images" / name)
        save_nifti(root / "labels" / "bad.nii.gz", _mask(0))
    return make


def _bad_label(array: np.ndarray | None = None, *, png: bool = False, jpeg: bool = False
               ) -> Writer:
    def make(root: Path) -> None:
        png_affine = np.diag([-1.0, -1.0, 1.0, 1.0])  # a PNG's grid, so only colour differs
        _good(root)
        save_nifti(root / "images" / "bad.nii.gz", _scan(3), png_affine if png or jpeg else None)
        if jpeg:  # a binary mask saved as JPEG: 0/255 plus compression noise
            import SimpleITK as sitk

            mask = (_mask(0) > 0).astype(np.uint8).T * 255
            sitk.WriteImage(sitk.GetImageFromArray(mask), str(root / "labels" / "bad.jpg"))
        elif png:
            import SimpleITK as sitk

            rgb = np.zeros((SIZE, SIZE, 3), np.uint8)
            rgb[4:12, 4:12] = (255, 0, 0)
            rgb[16:24, 16:24] = (0, 128, 255)
            sitk.WriteImage(sitk.GetImageFromArray(rgb, isVector=True),
                            str(root / "labels" / "bad.png"))
        else:
            assert array is not None
            save_nifti(root / "labels" / "bad.nii.gz", array)
    return make


def _freesurfer() -> np.ndarray:
    """FreeSurfer-style codes (0, 2, 41, 1035, 1041, 2035): a network would get 2036 outputs."""
    codes = np.array([0, 2, 41, 1035], np.uint16)[_mask(0) + (_scan(0) > 50)]
    return (codes + 1000 * (_mask(1) == 2)).astype(np.uint16)


def _huge_header(path: Path) -> None:
    huge_nifti(path.with_name("bad.nii"))


def _gzip_bomb(path: Path) -> None:
    """A .nii.gz whose stream holds far more than its header's 32×32 voxels."""
    img = nib.Nifti1Image(_scan(3), np.eye(4))
    raw = img.header.binaryblock + b"\0" * 4 + _scan(3).tobytes(order="F")
    with gzip.open(path, "wb") as f:
        f.write(raw)
        f.write(bytes(16 << 20))


def _truncated(path: Path) -> None:
    path = path.with_name("bad.nii")
    save_nifti(path, _scan(3))
    path.write_bytes(path.read_bytes()[:-2000])


def _missing_channel(root: Path) -> None:
    _good(root, channels=("ed", "es"))
    save_nifti(root / "images" / "bad_ed.nii.gz", _scan(3))
    save_nifti(root / "labels" / "bad_ed.nii.gz", _mask(0))


def _latin1_table(root: Path) -> None:
    _good(root)
    save_nifti(root / "images" / "bad.nii.gz", _scan(3))
    save_nifti(root / "labels" / "bad.nii.gz", _mask(0))
    rows = "".join(f"{c},{'AB'[i % 2]}\n" for i, c in enumerate(GOOD)) + "bad,Bénin\n"
    (root / "table.csv").write_bytes(("id,label\n" + rows).encode("latin-1"))


def _dicom_gap(root: Path) -> None:
    """A DICOM series with one slice missing, as the bad case of a 3D dataset."""
    import SimpleITK as sitk

    for i, case in enumerate(GOOD):
        vol = np.stack([_scan(i)] * 4, axis=-1)
        save_nifti(root / "images" / f"{case}.nii.gz", vol)
        save_nifti(root / "labels" / f"{case}.nii.gz", np.stack([_mask(i)] * 4, axis=-1))
    folder = root / "images" / "bad"
    folder.mkdir(parents=True)
    for k in (0, 1, 3, 4):  # slice 2 is missing
        img = sitk.GetImageFromArray(_scan(3).astype(np.int16))
        img.SetSpacing((1.0, 1.0))
        write_dicom_slice(folder / f"IM{k:04d}.dcm", img, {
            "0008|0060": "MR", "0020|000d": "1.2.3", "0020|000e": "1.2.3.4",
            "0020|0013": str(k + 1), "0020|0032": f"0\\0\\{2.0 * k}",
            "0020|0037": "1\\0\\0\\0\\1\\0", "0028|0030": "1\\1", "0018|0050": "2"})
    save_nifti(root / "labels" / "bad.nii.gz", np.stack([_mask(0)] * 4, axis=-1))
    (root / "table.csv").write_text(
        "id,label\n" + "".join(f"{c},{'AB'[i % 2]}\n" for i, c in enumerate([*GOOD, "bad"])),
        encoding="utf-8")


#: defect → (how to write it, what reads it: "image", "label", "table", "channels")
DEFECTS: dict[str, tuple[Writer, str]] = {
    "header-32000x32000x4": (_bad_image(_huge_header), "image"),
    "gzip-bomb": (_bad_image(_gzip_bomb), "image"),
    "truncated": (_bad_image(_truncated), "image"),
    "all-nan": (_bad_image(lambda p: save_nifti(p, np.full((SIZE, SIZE), np.nan, np.float32))),
                "image"),
    "dicom-missing-slice": (_dicom_gap, "image"),
    "missing-channel": (_missing_channel, "channels"),
    "latin1-table": (_latin1_table, "table"),
    "mask-other-shape": (_bad_label(np.zeros((SIZE, SIZE - 2), np.uint8)), "label"),
    "mask-0-255": (_bad_label(_mask(0).clip(0, 1) * 255), "label"),
    "mask-colour-png": (_bad_label(png=True), "label"),
    "mask-negative": (_bad_label(_mask(0).astype(np.int16) - 1), "label"),
    "mask-float": (_bad_label(_mask(0).astype(np.float32) * 0.5), "label"),
    "mask-freesurfer-codes": (_bad_label(_freesurfer()), "label"),
    "mask-jpeg": (_bad_label(jpeg=True), "label"),
}

#: what each defect must say (the door's words)
SAYS = {
    "header-32000x32000x4": "32000×32000×4 = 4,096,000,000 voxels, over the limit",
    "gzip-bomb": "compressed stream expands to",
    "truncated": "file is truncated",
    "all-nan": "image has no finite voxel",
    "dicom-missing-slice": "DICOM slice spacing is uneven",
    "missing-channel": "case 'bad' has no file for channel(s) es",
    "latin1-table": "table is not UTF-8 text",
    "mask-other-shape": "shape (32, 30) differs from",
    "mask-0-255": "binary mask stored as 0/255: remap it with --label-map 255:1",
    "mask-colour-png": "colour label map: give one integer label per pixel",
    "mask-negative": "label map has negative values (-1)",
    "mask-float": "label map has non-integer values (e.g. 0.5)",
    "mask-freesurfer-codes": "far sparser than their range",
    "mask-jpeg": "masks must be stored losslessly: PNG, NIfTI, NRRD",
}

#: where a table names the cases, the table's row is named instead
SAYS_WITH_TABLE = {("missing-channel", "train-classifier"): ("id 'bad' has no image bad_es.*",
                                                             "table.csv")}

#: commands and what they read
READS = {
    "inspect": {"image", "label", "table", "channels"},
    "label": {"image"},
    "pretrain": {"image", "label", "channels"},
    "train-classifier": {"image", "table", "channels"},
    "evaluate": {"image", "label"},
    "predict": {"image", "channels"},
    "experiment": {"image", "table"},
}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {"segmenter": make_segmenter(root / "seg.pt"),
            "classifier": make_classifier(root / "clf.pt")}


def _args(command: str, root: Path, kind: str, models: dict[str, Path]) -> list[str]:
    images, labels, table = str(root / "images"), str(root / "labels"), str(root / "table.csv")
    channels = ["--channels", "ed,es"] if kind == "channels" else []
    train = ["--epochs", "1", "--size", "32", "--no-progress", "--device", "cpu"]
    if command == "inspect":
        extra = ["--table", table] if kind == "table" else ["--labels", labels]
        return ["inspect", "--images", images, *extra, *channels, "--no-progress"]
    if command == "label":
        return ["label", "--images", images, "--out", str(root / "out-label"), "--k", "2"]
    if command == "pretrain":
        return ["pretrain", "--images", images, "--labels", labels, *channels, "--dim", "2",
                "--n-s", "2", "--out", str(root / "out" / "seg.pt"), *train]
    if command == "train-classifier":
        return ["train-classifier", "--images", images, "--table", table, *channels,
                "--framework", "scratch", "--out", str(root / "out" / "clf.pt"), *train]
    if command == "evaluate":
        return ["evaluate", "--model", str(models["segmenter"]), "--images", images,
                "--labels", labels, "--out", str(root / "out-eval"), "--no-progress",
                "--device", "cpu"]
    if command == "predict":
        model = models["classifier" if _classifies(root, kind) else "segmenter"]
        out = root / ("pred.csv" if _classifies(root, kind) else "out-pred")
        return ["predict", "--model", str(model), "--input", images, *channels, "--out",
                str(out), "--no-progress", "--device", "cpu"]
    spec = root / "curve.toml"
    spec.write_text(
        f'frameworks = ["scratch"]\nsizes = [1]\nrepetitions = 1\nbootstrap = 0\n'
        f'[data]\nimages = "{images}"\ntable = "{table}"\n'
        '[preprocess]\nsize = [32]\n[head]\nn_c = 2\nn_fc = 8\n'
        '[train]\nepochs = 1\ndevice = "cpu"\nprogress = false\n', encoding="utf-8")
    return ["experiment", "--spec", str(spec), "--out", str(root / "out-curve"),
            "--no-progress"]


def _door_says(root: Path) -> str:
    """What :func:`segfew.data.read.read_case` says about the bad case of a label defect."""
    from segfew.data import Case
    from segfew.data.read import read_case
    from segfew.errors import DataError

    (label,) = (root / "labels").glob("bad.*")
    with pytest.raises(DataError) as err, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the colour PNG's conversion note
        read_case(Case("bad", (root / "images" / "bad.nii.gz",), (label,)))
    return str(err.value)


def _classifies(root: Path, kind: str) -> bool:
    """predict runs the 2D classifier, except on volumes and channels (the segmenter)."""
    return kind != "channels" and not root.name.startswith("dicom")


CASES = [(defect, command) for defect, (_, kind) in DEFECTS.items()
         for command, reads in READS.items() if kind in reads]


@pytest.mark.parametrize(("defect", "command"), CASES, ids=[f"{d}-{c}" for d, c in CASES])
def test_every_command_refuses_every_defect_in_one_line(
    defect: str, command: str, tmp_path: Path, models: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = tmp_path / defect
    write, kind = DEFECTS[defect]
    write(root)
    monkeypatch.chdir(tmp_path)  # the pre-processing cache lands here
    monkeypatch.setenv("COLUMNS", "2000")  # rich tables keep each problem on one line
    result = CliRunner().invoke(app, _args(command, root, kind, models))
    output = result.output
    assert result.exit_code != 0, output
    assert "Traceback" not in output, output
    assert result.exception is None or isinstance(result.exception, SystemExit), output

    skipped = [line for line in output.splitlines()
               if line.startswith("warning:") and "skipped: no label map" in line]
    batch = {"evaluate": root / "out-eval" / "per_case.csv",
             "predict": root / "pred.csv" if _classifies(root, kind)
             else root / "out-pred" / "predictions.csv"}.get(command)
    if batch is not None:  # a batch: an error row for the bad case, the good ones kept
        with open(batch, newline="", encoding="utf-8") as f:
            rows = {r["id"].split("_")[0]: r for r in csv.DictReader(f)}
        assert {rows[c]["status"] for c in GOOD} == {"ok"}, rows
        said = rows["bad"]["error"]
        assert rows["bad"]["status"] == "error"
    elif command == "label" and skipped:  # a batch: the bad image skipped, the others labelled
        assert len(skipped) == 1 and result.exit_code == 1, output
        said = skipped[0]
    elif command == "inspect":  # its table of problems: the row of the bad case
        rows = [line for line in output.splitlines() if "│ error" in line]
        assert rows, output
        said = "".join(rows)
    else:
        errors = [line for line in output.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, output
        said = errors[0]
    bad_name = {"missing-channel": "images", "latin1-table": "table.csv",
                "dicom-missing-slice": "bad", "mask-colour-png": "bad.png",
                "mask-jpeg": "bad.jpg"}.get(defect, "bad.")
    says, bad_name = SAYS_WITH_TABLE.get((defect, command), (SAYS[defect], bad_name))
    assert "".join(says.split()) in "".join(said.split()), said
    if kind == "label":  # the very line the door gives, whatever the command
        assert "".join(_door_says(root).split()) in "".join(said.split()), said
    assert bad_name in said, said

    leftovers = [p for p in root.rglob("*") if ".tmp" in p.name]
    assert not leftovers, leftovers  # nothing half-written
    if command in ("pretrain", "train-classifier"):
        assert not list((root / "out").glob("*.pt"))
    if command == "label":  # the good images' maps, or none where the run was refused
        maps = sorted(p.name for p in (root / "out-label").glob("*_seg.nii.gz"))
        assert maps == ([f"{g}_seg.nii.gz" for g in GOOD] if skipped else []), maps
