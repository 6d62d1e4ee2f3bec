"""The leakage verdict says what it checked: the same file bytes or the same voxels, and
that a copy altered (rescaled, shifted, cropped) is not found by it."""

from __future__ import annotations

from segfew.evaluation.leakage import LeakageCheck, compared_words, leakage_record


def test_a_passed_check_claims_exact_copies_only() -> None:
    for by_voxels in (True, False):
        words = compared_words(by_voxels)
        assert words.startswith("only the same file bytes") and "not found" in words
    clean = LeakageCheck(model="m.pt", checked=True, by_voxels=True)
    assert "as its scan (only the same file bytes or the same voxels" in clean.describe()
    verdict = leakage_record([clean], allowed=False)["verdict"]
    assert "as its scan" in verdict and "shifted, cropped" in verdict
