"""The scorer registry and the fidelity scorer."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from generation.measurement.scorers import Scorer, available_scorers, get_scorer, register_scorer
from hprune.contracts.prompts import Prompt
from hprune.errors import UserError


def noisy(image: Image.Image, sigma: float, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    array = np.asarray(image, dtype=float) + rng.normal(0, sigma, (image.height, image.width, 3))
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))


@pytest.fixture()
def images():
    rng = np.random.default_rng(0)
    base = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    prompts = [Prompt(prompt_id=f"p{i}", text="x", category="", metadata={}) for i in range(3)]
    return base, [base, noisy(base, 10, 1), noisy(base, 60, 2)], prompts


def test_fidelity_is_registered_and_orders_by_closeness(images) -> None:
    base, batch, prompts = images
    assert "fidelity" in available_scorers()
    scorer = get_scorer("fidelity")
    assert isinstance(scorer, Scorer) and scorer.needs_reference and scorer.higher_is_better
    assert scorer.name == "fidelity-ssim"
    ssim = scorer.score(batch, prompts, [base] * 3)
    assert ssim[0] == pytest.approx(1.0) and ssim[0] > ssim[1] > ssim[2]
    psnr = get_scorer("fidelity", metric="psnr").score(batch, prompts, [base] * 3)
    assert psnr[0] == 100.0 and psnr[1] > psnr[2]
    mse = get_scorer("fidelity", metric="mse")
    assert not mse.higher_is_better
    errors = mse.score(batch, prompts, [base] * 3)
    assert errors[0] == 0 and errors[1] < errors[2]


def test_fidelity_bad_input(images) -> None:
    base, batch, prompts = images
    scorer = get_scorer("fidelity")
    with pytest.raises(ValueError, match="reference"):
        scorer.score(batch, prompts)
    with pytest.raises(UserError, match="cannot compare a 16x16 image with a 32x32"):
        scorer.score([base.resize((16, 16))], prompts[:1], [base])
    with pytest.raises(UserError, match="unknown metric"):
        get_scorer("fidelity", metric="lpips")


def test_latent_mse_compares_final_latents() -> None:
    scorer = get_scorer("fidelity", metric="latent-mse")
    assert scorer.name == "fidelity-latent-mse" and scorer.output_type == "latent"
    assert not scorer.higher_is_better and scorer.needs_reference
    assert get_scorer("fidelity").output_type == "pil"
    rng = np.random.default_rng(0)
    base = rng.normal(size=(4, 8, 8)).astype(np.float32)
    near, far = base + 0.1, base + rng.normal(size=base.shape).astype(np.float32)
    prompts = [Prompt(prompt_id=f"p{i}", text="x", category="", metadata={}) for i in range(3)]
    errors = scorer.score([base, near, far], prompts, [base] * 3)
    assert errors[0] == 0 and errors[1] == pytest.approx(0.01, rel=1e-5) and errors[2] > errors[1]
    with pytest.raises(UserError, match=r"latent of shape \(4, 8, 8\) with one of \(16, 4\)"):
        scorer.score([base], prompts[:1], [np.zeros((16, 4))])


def test_registry_errors() -> None:
    with pytest.raises(UserError, match="unknown scorer 'nope'"):
        get_scorer("nope")
    with pytest.raises(UserError, match="bad options for scorer 'fidelity'"):
        get_scorer("fidelity", colour=True)
    with pytest.raises(ValueError, match="already registered"):
        register_scorer("fidelity", dict)
