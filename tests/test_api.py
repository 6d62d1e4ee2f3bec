"""The public API: every name of ``segfew.__all__`` resolves, and ``import segfew`` is cheap."""

from __future__ import annotations

import subprocess
import sys

import segfew


def test_every_public_name_resolves() -> None:
    for name in segfew.__all__:
        assert getattr(segfew, name) is not None, name
    assert segfew.MNet.__module__ == "segfew.models.mnet"


def test_import_segfew_loads_no_torch() -> None:
    code = "import sys, segfew; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"
