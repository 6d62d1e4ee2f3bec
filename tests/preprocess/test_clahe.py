"""segfew.preprocess.clahe gives scikit-image's CLAHE numbers: on random and structured
arrays, 2D and 3D, every clip limit, and on real MR, brain-tumour MR and breast ultrasound
images."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.exposure import equalize_adapthist as skimage_clahe

from segfew.preprocess.clahe import _clip_histograms, equalize_adapthist
from tests.conftest import real_data

# the undecorated function: a 3D array whose last axis has 3 or 4 entries is a volume here
_REFERENCE = getattr(skimage_clahe, "__wrapped__", skimage_clahe)


def unit(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float32)
    return (a - a.min()) / max(float(a.max() - a.min()), 1e-12)


def assert_same(image: np.ndarray, clip: float) -> None:
    expected = _REFERENCE(image, clip_limit=clip)
    got = equalize_adapthist(image, clip_limit=clip)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("shape", [(160, 150), (37, 41), (7, 5), (1, 9), (24, 20, 3),
                                   (20, 18, 4), (33, 30, 12)])
@pytest.mark.parametrize("clip", [0.01, 0.05, 1.0])
def test_equals_scikit_image(shape, clip, rng):
    noise = rng.normal(0.5, 0.12, shape).clip(0, 1)
    assert_same(noise.astype(np.float32), clip)
    # a bright block on a dark background: tiles of one grey level, much excess to spread
    block = np.zeros(shape)
    block[tuple(slice(0, max(1, s // 2)) for s in shape)] = 1.0
    assert_same(unit(block + 0.01 * rng.random(shape)), clip)


def test_clipping_redistributes_like_scikit_image(rng):
    from skimage.exposure._adapthist import clip_histogram

    hist = rng.integers(0, 40, (30, 64)) * (rng.random((30, 64)) < 0.3)
    for clim in (1, 3, 10):
        expected = np.stack([clip_histogram(h.copy(), clim) for h in hist])
        got = _clip_histograms(hist.copy(), clim)
        np.testing.assert_array_equal(got, expected)


@pytest.mark.realdata
def test_equals_scikit_image_on_real_images():
    import nibabel as nib
    from PIL import Image

    acdc = sorted((real_data("acdc") / "images").glob("*.nii.gz"))[:2]
    volumes = [unit(np.asarray(nib.load(str(p)).dataobj)) for p in acdc]
    slices = [v[..., v.shape[-1] // 2] for v in volumes]
    tumour = sorted((real_data("brain-tumor-cheng") / "images").rglob("*.jpg"))[:2]
    photos = [unit(np.asarray(Image.open(p).convert("L"))) for p in tumour]
    breast = np.load(real_data("breastmnist") / "breastmnist.npz")["train_images"][:3]
    for image in [*volumes, *slices, *photos, *(unit(b) for b in breast)]:
        assert_same(image, 0.01)
