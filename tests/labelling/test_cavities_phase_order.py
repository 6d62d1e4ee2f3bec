"""``label --method cavities`` with the phases given ES first (most cases' LV larger in the
second phase) is refused, naming the order to give; a few such cases are warned about."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.conftest import invoke, save_nifti
from tests.labelling.test_cavities import _heart

AFFINE = np.diag([1.5, 1.5, 8.0, 1.0])


def _cine(images: Path, rng: np.random.Generator, swapped: set[int], n: int = 3) -> Path:
    """n cases whose frame01 is end-diastole, except those in ``swapped`` (ES in frame01)."""
    for i in range(n):
        ed, _ = _heart(14 + i % 2, 7, rng)
        es, _ = _heart(9, 5, rng)
        first, second = (es, ed) if i in swapped else (ed, es)
        save_nifti(images / f"p{i}_frame01.nii.gz", first, AFFINE)
        save_nifti(images / f"p{i}_frame02.nii.gz", second, AFFINE)
    return images


def test_most_cases_es_first_is_refused_and_a_few_are_warned_about(
        tmp_path: Path, rng: np.random.Generator) -> None:
    images = _cine(tmp_path / "images", rng, swapped=set())
    out = tmp_path / "out"
    text = " ".join(invoke("label", "--method", "cavities", "--channels", "frame02,frame01",
                           "--images", str(images), "--out", str(out), "--no-progress",
                           expect=2).split())
    assert (f"{images}: --channels frame02,frame01: the channels look to be in the order ES, "
            "ED for 3 of 3 cases") in text
    assert "give --channels frame01,frame02, end-diastole first" in text
    assert "is the first channel end-diastole?" not in text  # one line, not one per case
    assert not out.exists()
    # one case of three in the other order: labelled, with a warning naming it
    mixed = _cine(tmp_path / "mixed", rng, swapped={1})
    text = invoke("label", "--method", "cavities", "--channels", "frame01,frame02",
                  "--images", str(mixed), "--out", str(out), "--no-progress")
    assert "6 label maps" in text
    assert "p1_frame01.nii.gz: the LV is larger in a later phase" in " ".join(text.split())
