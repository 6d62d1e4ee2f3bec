"""``label --centres``: the centres file fixes k, the intensity normalisation and the
background; a setting given otherwise is refused, one that agrees is accepted, and the run
record holds what labelled."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import invoke, save_nifti, scan


@pytest.fixture
def fitted(tmp_path: Path, rng: np.random.Generator) -> tuple[Path, Path]:
    """An images folder and the centres.json of a k = 3, zscore fit on it."""
    images = tmp_path / "images"
    for name in ("a", "b"):
        save_nifti(images / f"{name}.nii.gz", scan(rng, (16, 16, 3)) * 100)
    invoke("label", "--images", str(images), "--out", str(tmp_path / "fit"), "--k", "3",
           "--intensity", "zscore", "--no-progress")
    return images, tmp_path / "fit" / "centres.json"


@pytest.mark.parametrize("option, said", [
    (["--k", "4"], "--k 4: these centres were fitted with k = 3; drop --k, or fit anew "
                   "without --centres"),
    (["--intensity", "minmax"], "--intensity minmax: these centres were fitted with "
                                "intensity = zscore"),
    (["--no-keep-background"], "--no-keep-background: these centres were fitted with "
                               "keep_background = true; drop --no-keep-background"),
    (["--background-threshold", "0.2"], "--background-threshold 0.2: these centres were "
                                        "fitted with background_threshold = none"),
    (["--seed", "4"], "--seed 4: these centres are used as they are, not fitted again"),
], ids=["k", "intensity", "background", "threshold", "seed"])
def test_a_setting_the_centres_fix_otherwise_is_refused(
        tmp_path: Path, fitted: tuple[Path, Path], option: list[str], said: str) -> None:
    images, centres = fitted
    out = tmp_path / "out"
    text = " ".join(invoke("label", "--images", str(images), "--centres", str(centres),
                           *option, "--out", str(out), "--no-progress", expect=2).split())
    assert f"{centres}: {said}" in text
    assert not out.exists()


def test_settings_that_agree_are_accepted_and_the_record_holds_what_labelled(
        tmp_path: Path, fitted: tuple[Path, Path]) -> None:
    images, centres = fitted
    for option in ([], ["--k", "3", "--intensity", "zscore", "--keep-background"]):
        out = tmp_path / f"out{len(option)}"
        invoke("label", "--images", str(images), "--centres", str(centres), *option,
               "--out", str(out), "--no-progress")
        spec = json.loads((out / "run.json").read_text())["spec"]
        assert (spec["k"], spec["intensity"], spec["keep_background"]) == (3, "zscore", True)
