"""Layouts as real archives give them: a macOS zip's ``__MACOSX`` folder, an image at the top
of a folder of class sub-folders, and BUSI's numbered second masks (``<id>_mask_1``)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from segfew.data import find_classification_cases, find_image_cases
from segfew.data.label_maps import attach_labels
from segfew.errors import DataError
from tests.conftest import ramp, save_nifti


def _said(call, *args):  # type: ignore[no-untyped-def]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = call(*args)
    return out, [str(w.message) for w in caught]


def test_a_macos_archives_leftovers_are_no_class_and_an_image_at_the_top_is_said(
        tmp_path: Path) -> None:
    """__MACOSX was taken for a class ("no image files found"); an image beside the class
    folders was left out without a word (inspect read it alone)."""
    for cls, base in (("normal", 0), ("oval", 50)):
        for i in range(2):
            save_nifti(tmp_path / cls / f"{cls}{i}.nii.gz", ramp((16, 16), base=base + i))
    leftovers = tmp_path / "__MACOSX" / "normal"
    leftovers.mkdir(parents=True)
    (leftovers / "._normal0.nii.gz").write_bytes(b"\x00\x05\x16\x07Mac OS X")
    save_nifti(tmp_path / "stray.nii.gz", ramp((16, 16), base=99))
    cases, said = _said(find_classification_cases, tmp_path)
    assert sorted({c.target for c in cases}) == ["normal", "oval"] and len(cases) == 4
    assert any("__MACOSX: skipped: a macOS archive's leftovers" in s for s in said)
    assert any("1 image(s) at the top of a folder of class sub-folders (stray.nii.gz): not "
               "read" in s for s in said)


def _png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.full((16, 16), value, np.uint8)
    array[4:8, 4:8] = 255 - value
    PILImage.fromarray(array).save(path)


def test_busi_numbered_second_masks_are_label_maps_not_scans(tmp_path: Path) -> None:
    """``benign (2)_mask_1.png`` was trained as an ultrasound image of class benign."""
    for i in (1, 2):
        _png(tmp_path / "benign" / f"benign ({i}).png", 10 * i)
        _png(tmp_path / "benign" / f"benign ({i})_mask.png", 0)
    _png(tmp_path / "benign" / "benign (2)_mask_1.png", 0)
    cases, _ = _said(find_image_cases, tmp_path / "benign")
    assert sorted(c.id for c in cases) == ["benign (1)", "benign (2)"]
    with pytest.raises(DataError, match=r"several label files for 'benign \(2\)': benign "
                                        r"\(2\)_mask\.png, benign \(2\)_mask_1\.png: keep one, "
                                        r"or merge them"):
        attach_labels(cases, tmp_path / "benign")


def test_inspect_says_when_train_classifier_would_read_other_images(tmp_path: Path) -> None:
    """An image at the top of a class-folder layout: inspect read it alone ("no fatal
    problems") while train-classifier read the class folders — two data sets, no word."""
    from segfew.data.inspect import inspect_dataset

    for cls in ("normal", "oval"):
        save_nifti(tmp_path / cls / f"{cls}0.nii.gz", ramp((16, 16), base=len(cls)))
    save_nifti(tmp_path / "stray.nii.gz", ramp((16, 16), base=99))
    report = inspect_dataset(tmp_path)
    assert any("its sub-folders hold images too: train-classifier reads them as class folders"
               in p for p in report.problems), report.problems
    flat = tmp_path / "flat"
    save_nifti(flat / "a.nii.gz", ramp((16, 16)))
    assert not any("sub-folders hold images" in p for p in inspect_dataset(flat).problems)


def test_a_label_outputs_preview_is_no_class_folder(tmp_path: Path) -> None:
    """``inspect`` of a ``segfew label`` output noted its ``preview/`` as class folders, and
    ``train-classifier`` read the preview picture as a class "preview"."""
    from segfew.data.inspect import inspect_dataset
    from segfew.data.label_names import LABEL_NAMES_FILE, PREVIEW_DIR

    save_nifti(tmp_path / "a_seg.nii.gz", ramp((16, 16)))
    _png(tmp_path / PREVIEW_DIR / "kmeans_preview.png", 30)
    (tmp_path / LABEL_NAMES_FILE).write_text('{"label_names": ["background", "k1"]}')
    assert not any("sub-folders hold images" in p for p in inspect_dataset(tmp_path).problems)
    with pytest.raises(DataError, match="no class sub-folders"):
        find_classification_cases(tmp_path)
    (tmp_path / LABEL_NAMES_FILE).unlink()  # a folder of a user's own named preview: a class
    assert any("sub-folders hold images" in p for p in inspect_dataset(tmp_path).problems)
