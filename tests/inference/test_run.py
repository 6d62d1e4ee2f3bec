"""segfew.inference.run: batched softmax probabilities under an execution plan."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from segfew.inference.run import classify_probabilities, predict_batches
from segfew.runtime import Capabilities, choose_plan
from tests.conftest import make_segmenter, save_nifti, scan


def _model() -> nn.Module:
    torch.manual_seed(11)
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6),
                         nn.ReLU(), nn.Dropout2d(0.2), nn.Conv2d(6, 2, 1))


def test_predict_batches_gives_probabilities_and_restores_mode(device: str) -> None:
    model = _model().train().to(device)
    x = torch.randn(5, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    data = TensorDataset(x, torch.zeros(5, 16, 16, dtype=torch.long))
    probs = predict_batches(model, data, device, batch_size=2)
    assert probs.shape == (5, 2, 16, 16) and model.training
    assert torch.allclose(probs.sum(1), torch.ones(5, 16, 16), atol=1e-5)
    again = predict_batches(model, [x[:3], x[3:]], device)
    assert torch.allclose(again, probs, atol=1e-6)


@pytest.mark.cpu_dependent
def test_bf16_plan_is_close_to_fp32_and_returns_float32() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 16 * 16, 3)).eval()
    x = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(1)).numpy()
    fp32 = classify_probabilities(model, x, "cpu", batch_size=3)
    plan = choose_plan("bf16", Capabilities("cpu", bf16=True, fp16=False))
    bf16 = classify_probabilities(model, x, "cpu", batch_size=3, plan=plan)
    assert bf16.dtype == fp32.dtype == "float32" and bf16.shape == (4, 3)
    assert abs(bf16 - fp32).max() < 0.05


def _square_or_fail(n: int) -> int:
    if n == 3:
        raise ValueError(f"bad item {n}")
    return n * n


def test_read_ahead_keeps_order_and_turns_failures_into_messages() -> None:
    from segfew.inference.run import read_ahead

    items = list(range(7))
    here = list(read_ahead(items, _square_or_fail, workers=0))
    assert [i for i, _, _ in here] == items
    assert here[3] == (3, None, "bad item 3") and here[4] == (4, 16, "")
    assert list(read_ahead(items, _square_or_fail, workers=2)) == here


def test_test_time_augmentation_shifts_back_what_it_shifts() -> None:
    import numpy as np

    from segfew.inference.run import TTA_SHIFTS, segment_probabilities

    torch.manual_seed(3)
    # circular padding: the network commutes with rolling, so shifted-and-restored copies
    # agree with the plain pass exactly when each shift is undone correctly
    circular = nn.Conv2d(1, 3, 5, padding=2, padding_mode="circular").eval()
    volume = torch.randn(1, 16, 16, 3, generator=torch.Generator().manual_seed(2)).numpy()
    plain = segment_probabilities(circular, volume, "cpu")
    tta = segment_probabilities(circular, volume, "cpu", tta=True)
    assert tta.shape == plain.shape == (3, 16, 16, 3) and tta.dtype == np.float32
    np.testing.assert_allclose(tta, plain, atol=1e-5)
    # zero padding breaks that symmetry at the edges: the mean of the shifted passes differs
    zero = nn.Conv2d(1, 3, 5, padding=2).eval()
    zero.load_state_dict(circular.state_dict())
    one = segment_probabilities(zero, volume, "cpu")
    averaged = segment_probabilities(zero, volume, "cpu", tta=True)
    assert len(TTA_SHIFTS) == 5 and np.abs(averaged - one).max() > 1e-3
    np.testing.assert_allclose(averaged.sum(0), 1.0, atol=1e-5)


def test_no_reading_worker_on_two_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    from segfew.inference import run as inference

    for cores, workers in ((1, 0), (2, 0), (3, 2), (8, 4)):
        monkeypatch.setattr(inference.os, "cpu_count", lambda c=cores: c)
        assert inference.default_workers() == workers


def test_a_scan_too_large_to_segment_in_free_memory_is_an_error_row_the_batch_goes_on(
        tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch) -> None:
    """A scan legal to read can still need more memory than is free on its own grid: it is
    refused before any work, naming it, and the batch's other scans are segmented."""
    import segfew.runtime
    from segfew.inference.paths import predict_paths
    from segfew.inference.run import SOURCE_BYTES_PER_VOXEL

    model = make_segmenter(tmp_path / "seg.pt")
    images = tmp_path / "images"
    save_nifti(images / "small.nii.gz", scan(rng, (20, 24, 5)))
    save_nifti(images / "large.nii.gz", scan(rng, (40, 48, 10)))
    free = 20 * 24 * 5 * SOURCE_BYTES_PER_VOXEL * 2  # the small one fits, the large not
    monkeypatch.setattr(segfew.runtime, "available_bytes", lambda device: free)
    out, failed, count = predict_paths(model, [images], tmp_path / "pred", device="cpu")
    assert (count, failed) == (2, 1)
    assert (out / "small_seg.nii.gz").is_file() and not (out / "large_seg.nii.gz").exists()
    rows = {r["id"]: r for r in csv.DictReader((out / "predictions.csv").open())}
    assert rows["large"]["status"] == "error"
    assert "large.nii.gz" in rows["large"]["error"] and "KiB is free" in rows["large"]["error"]


def _warn_and_double(item: int) -> int:
    import warnings as w

    from segfew.errors import DataWarning

    w.warn(DataWarning("RGB image converted to grey", f"slices/s{item:02d}.png"), stacklevel=1)
    return 2 * item


def test_a_reading_processs_warnings_are_said_in_the_main_process() -> None:
    """Said in a reading process, a warning would be folded there and its count never said
    (--workers on more than two cores): each comes back, path and all, to be folded here."""
    import warnings as w

    from segfew.errors import DataWarning
    from segfew.inference.run import read_ahead

    with w.catch_warnings(record=True) as caught:
        w.simplefilter("always")
        out = [(i, r) for i, r, _ in read_ahead(list(range(6)), _warn_and_double, workers=2)]
    assert out == [(i, 2 * i) for i in range(6)]
    said = [c.message for c in caught if isinstance(c.message, DataWarning)]
    assert sorted(str(m.path) for m in said) == [f"slices/s{i:02d}.png" for i in range(6)]
