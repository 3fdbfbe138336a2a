"""Full-reference image similarity: SSIM, PSNR and MSE as small pure numpy functions.

Images are float arrays of shape (H, W) or (H, W, C) on a common scale
(``data_range``: 1.0 for [0, 1] floats, 255 for 8-bit values).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

# Wang et al. 2004: an 11x11 circular-symmetric Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03.
SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5  # radius int(3.5 * 1.5 + 0.5) = 5, i.e. an 11-tap window
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def image_array(image) -> np.ndarray:
    """A PIL image (any mode) as an (H, W, 3) float64 array in [0, 1]."""
    return np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0


def _check_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    if a.ndim not in (2, 3):
        raise ValueError(f"expected an (H, W) or (H, W, C) array, got shape {a.shape}")
    return a, b


def mse(a: np.ndarray, b: np.ndarray) -> float:
    """Mean squared error."""
    a, b = _check_pair(a, b)
    return float(np.mean((a - b) ** 2))


def psnr(a: np.ndarray, b: np.ndarray, *, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB, ``10 log10(R^2 / MSE)``; ``inf`` for identical images."""
    error = mse(a, b)
    if error == 0:
        return float("inf")
    return float(10.0 * np.log10(data_range**2 / error))


def ssim_map(a: np.ndarray, b: np.ndarray, *, data_range: float = 1.0) -> np.ndarray:
    """The local SSIM of two single-channel images (Wang, Bovik, Sheikh & Simoncelli 2004, eq. 13).

    ``SSIM = ((2 mu_a mu_b + C1)(2 sigma_ab + C2)) / ((mu_a^2 + mu_b^2 + C1)(sigma_a^2 + sigma_b^2 + C2))``
    with Gaussian-weighted local means, variances and covariance, ``C1 = (K1 R)^2``, ``C2 = (K2 R)^2``.
    """
    a, b = _check_pair(a, b)
    if a.ndim != 2:
        raise ValueError("ssim_map takes single-channel images")

    def blur(x: np.ndarray) -> np.ndarray:
        return gaussian_filter(x, SSIM_SIGMA, truncate=SSIM_TRUNCATE, mode="reflect")

    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )


def ssim(a: np.ndarray, b: np.ndarray, *, data_range: float = 1.0) -> float:
    """Mean SSIM over the image (and over channels for colour images); 1.0 for identical images.

    Like Wang et al., the mean leaves out a border as wide as the window radius,
    where the window would reach outside the image, unless the image is too small
    to have an interior.
    """
    a, b = _check_pair(a, b)
    channels = [(a, b)] if a.ndim == 2 else [(a[..., c], b[..., c]) for c in range(a.shape[-1])]
    radius = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)
    values = []
    for x, y in channels:
        local = ssim_map(x, y, data_range=data_range)
        if min(local.shape) > 2 * radius:
            local = local[radius:-radius, radius:-radius]
        values.append(local.mean())
    return float(np.mean(values))
