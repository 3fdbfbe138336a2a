"""SSIM / PSNR / MSE against their definitions."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from generation.measurement.image_metrics import image_array, mse, psnr, ssim, ssim_map


def gaussian_window(sigma: float = 1.5, radius: int = 5) -> np.ndarray:
    x = np.arange(-radius, radius + 1)
    g = np.exp(-(x**2) / (2 * sigma**2))
    w = np.outer(g, g)
    return w / w.sum()


def ssim_by_definition(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    """Wang et al. 2004, eq. 13 evaluated window by window over the interior (no filtering library)."""
    w = gaussian_window()
    r = 5
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    values = []
    for i in range(r, a.shape[0] - r):
        for j in range(r, a.shape[1] - r):
            pa = a[i - r : i + r + 1, j - r : j + r + 1]
            pb = b[i - r : i + r + 1, j - r : j + r + 1]
            ma, mb = (w * pa).sum(), (w * pb).sum()
            va = (w * (pa - ma) ** 2).sum()
            vb = (w * (pb - mb) ** 2).sum()
            cov = (w * (pa - ma) * (pb - mb)).sum()
            values.append(
                ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2))
            )
    return float(np.mean(values))


def test_ssim_matches_the_windowed_definition() -> None:
    rng = np.random.default_rng(0)
    a = rng.random((24, 20))
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1)
    assert ssim(a, b) == pytest.approx(ssim_by_definition(a, b), abs=1e-10)
    assert ssim(a * 255, b * 255, data_range=255) == pytest.approx(ssim(a, b), abs=1e-10)


def test_ssim_properties() -> None:
    rng = np.random.default_rng(1)
    a = rng.random((32, 32, 3))
    assert ssim(a, a) == pytest.approx(1.0)
    b = np.clip(a + rng.normal(0, 0.05, a.shape), 0, 1)
    c = np.clip(a + rng.normal(0, 0.2, a.shape), 0, 1)
    assert ssim(a, b) == pytest.approx(ssim(b, a))
    assert 1 > ssim(a, b) > ssim(a, c)
    assert ssim_map(a[..., 0], b[..., 0]).shape == (32, 32)
    tiny = rng.random((6, 6))
    assert ssim(tiny, tiny) == pytest.approx(1.0)  # smaller than the window: no border to cut
    with pytest.raises(ValueError, match="differ in shape"):
        ssim(a, a[:-1])


def test_psnr_and_mse() -> None:
    a = np.zeros((4, 4))
    b = np.full((4, 4), 0.1)
    assert mse(a, b) == pytest.approx(0.01)
    assert psnr(a, b) == pytest.approx(20.0)
    assert psnr(a * 255, b * 255, data_range=255) == pytest.approx(20.0)
    assert psnr(a, a) == float("inf")


def test_image_array_is_rgb_in_unit_range() -> None:
    image = Image.new("L", (3, 2), color=255)
    array = image_array(image)
    assert array.shape == (2, 3, 3) and array.max() == 1.0
