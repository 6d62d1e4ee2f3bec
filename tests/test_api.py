"""The public API: every name of ``segfew.__all__`` resolves (that ``import segfew`` loads no
torch is in ``tests/test_layout.py``)."""

from __future__ import annotations

import segfew


def test_every_public_name_resolves() -> None:
    for name in segfew.__all__:
        assert getattr(segfew, name) is not None, name
    assert segfew.MNet.__module__ == "segfew.models.mnet"
