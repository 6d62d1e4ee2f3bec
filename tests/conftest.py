"""Shared fixtures and helpers: seeded RNGs, tiny images in every format, tiny model files,
tiny phantoms, the CLI runner, and the location of the optional real data."""

from __future__ import annotations

import csv
import os
import random
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

# one CPU thread per test process: the same sums on every machine, whatever its load
os.environ.setdefault("OMP_NUM_THREADS", "1")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    random.seed(0)
    np.random.seed(0)
    try:
        import torch
    except ImportError:  # pragma: no cover
        return
    torch.manual_seed(0)
    torch.set_num_threads(1)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def real_data(name: str) -> Path:
    """Path of ``../shared/data/<name>``; skips the test when it is absent (a user's clone)."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real data {name!r} not present")
    return path


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--device", default="cpu",
                     help="device for the tests that take one (the `device` fixture): cpu, cuda")


@pytest.fixture
def device(request: pytest.FixtureRequest) -> str:
    """The ``--device`` these tests run on; CUDA tests skip where no GPU is present."""
    name = str(request.config.getoption("--device"))
    if name.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            pytest.skip("--device cuda, but CUDA is not available")
    return name


# ------------------------------------------------------------------------- writing images


def save_nifti(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    """``array`` as a NIfTI-1 file (identity affine by default); parent folders are made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), str(path))
    return path


def nii(path: Path, shape: tuple[int, ...] = (4, 4, 3), value: int = 1,
        affine: np.ndarray | None = None, dtype: type = np.uint8) -> Path:
    """A NIfTI file whose first half of voxels holds ``value`` (a tiny image or label map)."""
    arr = np.zeros(shape, dtype=dtype)
    arr.flat[: arr.size // 2] = value
    return save_nifti(path, arr, affine)


def ramp(shape: tuple[int, ...], dtype: type = np.float32, base: float = 0.0) -> np.ndarray:
    """A tiny image that is not blank (the door refuses one value everywhere): a ramp."""
    return (np.arange(int(np.prod(shape))).reshape(shape) % 50 + base).astype(dtype)


def save_itk(path: Path, array_xyz: np.ndarray, spacing=None, origin=None, direction=None,
             vector: bool = False) -> Path:
    """Write an array indexed (X, Y[, Z]) with SimpleITK, which wants (Z, Y, X)."""
    import SimpleITK as sitk

    ndim = array_xyz.ndim - int(vector)
    axes = tuple(range(ndim))[::-1] + ((ndim,) if vector else ())
    img = sitk.GetImageFromArray(np.ascontiguousarray(array_xyz.transpose(axes)), isVector=vector)
    if spacing is not None:
        img.SetSpacing(spacing)
    if origin is not None:
        img.SetOrigin(origin)
    if direction is not None:
        img.SetDirection(direction)
    sitk.WriteImage(img, str(path))
    return path


def save_dicom_series(folder: Path, array_xyz: np.ndarray, spacing=(0.8, 0.8, 3.0),
                      origin=(-10.0, 20.0, 5.0), skip: tuple[int, ...] = (),
                      shear: float = 0.0) -> Path:
    """One file per slice; ``skip`` leaves slices out, ``shear`` (mm per slice along y)
    places them as a gantry tilt does."""
    import SimpleITK as sitk

    folder.mkdir(parents=True)
    series_uid = "1.2.826.0.1.3680043.2.1125.1"
    for z in range(array_xyz.shape[2]):
        if z in skip:
            continue
        sl = sitk.GetImageFromArray(np.ascontiguousarray(array_xyz[:, :, z].T.astype(np.int16)))
        sl.SetSpacing(spacing[:2])
        pos = (origin[0], origin[1] + z * shear, origin[2] + z * spacing[2])
        write_dicom_slice(folder / f"slice{z:03d}.dcm", sl, {
            "0008|0060": "MR", "0020|000d": "1.2.826.0.1.3680043.2.1125.2",
            "0020|000e": series_uid, "0020|0013": str(z + 1),
            "0020|0032": "\\".join(f"{p:.4f}" for p in pos),
            "0020|0037": "1\\0\\0\\0\\1\\0", "0018|0050": f"{spacing[2]:.4f}",
            "0028|0030": f"{spacing[1]:.4f}\\{spacing[0]:.4f}",
        })
    return folder


def write_dicom_slice(path: Path, image: Any, tags: dict[str, str]) -> Path:
    """A SimpleITK ``image`` written by GDCM as one DICOM file holding ``tags``
    (``"0020|0032"``: value), its UIDs kept as the tags give them."""
    import SimpleITK as sitk

    for tag, value in tags.items():
        image.SetMetaData(tag, value)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetFileName(str(path))
    writer.Execute(image)
    return path


#: every format segfew reads, as :func:`tiny_images` writes it
IMAGE_FORMATS = ("nii", "nii.gz", "nrrd", "mha", "dicom", "png", "jpg")
TINY_SPACING = (0.8, 0.9, 3.0)  # mm, (X, Y, Z)
TINY_ORIGIN_LPS = (10.0, 20.0, 30.0)  # mm: the world position of the file's first voxel


@dataclass(frozen=True)
class TinyImage:
    """A tiny image on disk and what :func:`segfew.io.read_image` must make of it."""

    path: Path
    array: np.ndarray  # as read: (X, Y[, Z]), 3D reoriented to RAS
    spacing: tuple[float, ...]  # mm
    origin_ras: tuple[float, ...] | None  # the file's first voxel in RAS mm (3D only)
    lossy: bool = False  # JPEG: values within a tolerance


@pytest.fixture
def tiny_images(tmp_path: Path, rng: np.random.Generator) -> dict[str, TinyImage]:
    """The same tiny image in every supported format (:data:`IMAGE_FORMATS`), known geometry.

    The volumes (NIfTI .nii/.nii.gz, NRRD, MHA, a DICOM series) are one 6×5×4 int16 volume,
    spacing :data:`TINY_SPACING`, first voxel at :data:`TINY_ORIGIN_LPS` with ITK's identity
    (LPS) directions, so every reader must return it flipped along X and Y (canonical RAS).
    PNG and JPEG hold one 7×5 uint8 slice.
    """
    vol = rng.integers(0, 1000, size=(6, 5, 4)).astype(np.int16)
    x, y, z = TINY_ORIGIN_LPS
    lps = np.diag([-TINY_SPACING[0], -TINY_SPACING[1], TINY_SPACING[2], 1.0])
    lps[:3, 3] = (-x, -y, z)  # the same geometry as a NIfTI affine (RAS)
    ras = vol[::-1, ::-1, :]
    origin = (-x, -y, z)
    root = tmp_path / "formats"
    out = {
        "nii": TinyImage(save_nifti(root / "a.nii", vol, lps), ras, TINY_SPACING, origin),
        "nii.gz": TinyImage(save_nifti(root / "a.nii.gz", vol, lps), ras, TINY_SPACING, origin),
        "nrrd": TinyImage(save_itk(root / "a.nrrd", vol, TINY_SPACING, TINY_ORIGIN_LPS), ras,
                          TINY_SPACING, origin),
        "mha": TinyImage(save_itk(root / "a.mha", vol, TINY_SPACING, TINY_ORIGIN_LPS), ras,
                         TINY_SPACING, origin),
        "dicom": TinyImage(save_dicom_series(root / "series", vol, TINY_SPACING,
                                             TINY_ORIGIN_LPS), ras, TINY_SPACING, origin),
    }
    flat = np.zeros((7, 5), dtype=np.uint8)
    flat[2:5, 1:3] = 200
    out["png"] = TinyImage(save_itk(root / "a.png", flat), flat, (1.0, 1.0), None)
    out["jpg"] = TinyImage(save_itk(root / "a.jpg", flat), flat, (1.0, 1.0), None, lossy=True)
    assert set(out) == set(IMAGE_FORMATS)
    return out


# ------------------------------------------------------------------------- tiny model files

GRID = 32  # the smallest grid a 5-pool VGG takes
CLASSES = ["cat", "dog", "fox"]


def make_classifier(path: Path, in_channels: int = 1) -> Path:
    """A tiny untrained 2D scratch classifier (SPEC §3b) saved as a real model file."""
    from segfew.jobs.train_classifier import build_classifier
    from segfew.modelfile import Architecture, ModelMeta, save_model
    from segfew.spec import ClassifierSpec, PreprocessConfig

    spec = ClassifierSpec.model_validate({
        "data": {"images": "unused"}, "out": path, "framework": "scratch",
        "head": {"n_c": 2, "n_fc": 8}})
    model, arch = build_classifier(spec, in_channels, len(CLASSES), (GRID, GRID))
    meta = ModelMeta(kind="classifier", architecture=Architecture.model_validate(arch),
                     preprocess=PreprocessConfig(size=(GRID,), intensity="minmax"),
                     classes=CLASSES, framework="scratch")
    return save_model(path, model.eval(), meta)


def make_segmenter(path: Path, num_labels: int = 3) -> Path:
    """A tiny untrained 2D M-Net, slicing a 3D stack along its slice axis (``"auto"``)."""
    from segfew.modelfile import Architecture, ModelMeta, save_model
    from segfew.models import MNet
    from segfew.spec import PreprocessConfig

    args = {"dim": 2, "in_channels": 1, "num_labels": num_labels, "n_s": 2, "dropout": 0.5}
    model = MNet(2, 1, num_labels, n_s=2, dropout=0.5)
    meta = ModelMeta(kind="segmentation", architecture=Architecture(name="mnet", args=args),
                     preprocess=PreprocessConfig(size=(GRID, GRID), intensity="minmax"),
                     classes=["background", *(f"l{i}" for i in range(1, num_labels))])
    return save_model(path, model.eval(), meta)


def dicom_dataset(sop: str, syntax: str = "1.2.840.10008.1.2.1") -> Any:
    """A pydicom ``Dataset`` with its file meta: the SOP class ``sop``, new UIDs, the
    transfer ``syntax`` (explicit VR little endian by default); the caller adds the rest."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop, meta.MediaStorageSOPInstanceUID
    return ds


def huge_nifti(path: Path) -> Path:
    """A NIfTI of 1.4 KB whose header claims 32000×32000×4 voxels (refused before reading)."""
    header = nib.Nifti1Header()
    header.set_data_shape((32000, 32000, 4))
    header.set_data_dtype(np.uint8)
    header["vox_offset"] = 352
    path.write_bytes(header.binaryblock + bytes(1004))
    return path


def load_nifti(path: Path) -> nib.Nifti1Image:
    img = nib.load(str(path))
    assert isinstance(img, nib.Nifti1Image)
    return img

def scan(rng: np.random.Generator, shape: tuple[int, ...] = (20, 24)) -> np.ndarray:
    """A blob on noise, so min-max normalisation has something to scale."""
    grids = np.meshgrid(*(np.linspace(-1, 1, s) for s in shape), indexing="ij")
    blob = np.exp(-sum(g**2 for g in grids) * rng.uniform(2, 6))
    return (100 * blob + rng.normal(0, 5, shape)).astype(np.float32)

def warned(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, list[str]]:
    """``fn(*args, **kwargs)`` and the DataWarnings it gave, as text, in order."""
    from segfew.errors import DataWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn(*args, **kwargs)
    return out, [str(w.message) for w in caught if issubclass(w.category, DataWarning)]


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))

def oblique_affine() -> np.ndarray:
    """Anisotropic spacing, a rotation, a flipped axis and an offset: nothing like eye(4)."""
    c, s = np.cos(0.3), np.sin(0.3)
    rotation = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([-0.8, 1.1, 3.0])
    affine[:3, 3] = [12.0, -40.0, 7.5]
    return affine


@pytest.fixture
def labelled(tmp_path: Path, rng: np.random.Generator) -> tuple[Path, Path]:
    """Six 2D scans and a table giving each a class (two per class)."""
    images = tmp_path / "scans"
    lines = ["id,label"]
    for i in range(6):
        save_nifti(images / f"s{i}.nii.gz", scan(rng))
        lines.append(f"s{i},{CLASSES[i % 3]}")
    table = tmp_path / "labels.csv"
    table.write_text("\n".join(lines) + "\n")
    return images, table


# ------------------------------------------------------------------------- the CLI, phantoms


def invoke(*args: str, expect: int = 0) -> str:
    """Run a segfew command in-process; it must exit with ``expect`` (0: success). Returns
    its output."""
    from typer.testing import CliRunner

    from segfew.cli import app

    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == expect, result.output
    return result.output


@pytest.fixture
def measures_fits(monkeypatch: pytest.MonkeyPatch) -> list[tuple[set[str], Any]]:
    """``(case ids, measurer)`` of every fit of a ``measures`` classifier in this test (the
    fit itself runs): which cases it learnt from, and what measured them."""
    import segfew.jobs.train_classifier

    fits: list[tuple[set[str], Any]] = []
    real = segfew.jobs.train_classifier.fit_measurement_classifier

    def spy(measurer, cases, *args, **kw):  # type: ignore[no-untyped-def]
        fits.append(({c.id for c in cases}, measurer))
        return real(measurer, cases, *args, **kw)

    monkeypatch.setattr(segfew.jobs.train_classifier, "fit_measurement_classifier", spy)
    return fits


@pytest.fixture(scope="session")
def make_phantom_set(tmp_path_factory: pytest.TempPathFactory) -> Callable[[int, int], Path]:
    """``make(n_per_class, num_classes)``: tiny 2D phantoms (32², :mod:`segfew.synth`, seed 1)
    with label maps and ``labels.csv``, made once per session and shared read-only."""
    made: dict[tuple[int, int], Path] = {}

    def make(n_per_class: int, num_classes: int) -> Path:
        if (n_per_class, num_classes) not in made:
            from segfew.synth import make_phantoms

            root = tmp_path_factory.mktemp(f"phantoms-{n_per_class}x{num_classes}")
            make_phantoms(root, dim=2, n_per_class=n_per_class, size=32,
                          num_classes=num_classes, seed=1)
            made[(n_per_class, num_classes)] = root
        return made[(n_per_class, num_classes)]

    return make


@pytest.fixture(scope="session")
def phantoms(make_phantom_set: Callable[[int, int], Path]) -> Path:
    """Twelve phantoms: four of each of three classes."""
    return make_phantom_set(4, 3)
