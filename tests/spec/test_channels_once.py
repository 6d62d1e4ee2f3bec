"""A channel named twice in --channels (``frame01,frame01``) is refused before any work, in
every command: read twice, one channel's outputs overwrite the other's mid-run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import invoke, ramp, save_nifti


@pytest.mark.parametrize("command", ["label", "inspect", "pretrain", "predict"])
def test_a_channel_named_twice_is_refused(tmp_path: Path, command: str) -> None:
    for name in ("p1_ed", "p1_es"):
        save_nifti(tmp_path / "img" / f"{name}.nii.gz", ramp((16, 16, 3)))
    out = tmp_path / "out"
    args = {"label": ["--out", str(out)], "inspect": [],
            "pretrain": ["--labels", str(tmp_path / "img"), "--out", str(tmp_path / "m.pt")],
            "predict": ["--model", str(tmp_path / "m.pt"), "--out", str(out)]}[command]
    where = ["--input" if command == "predict" else "--images", str(tmp_path / "img")]
    said = " ".join(invoke(command, *where, "--channels", "ed,ed", *args, expect=2).split())
    assert "channel ed is named twice" in said
    assert not out.exists() and not (tmp_path / "m.pt").exists()
