"""``fidelity``: how close an image stays to a reference image of the same prompt and seed.

No learned weights. Contribution analysis uses it with the unablated model's
image as the reference: the drop of SSIM from 1 is how much removing a part
changes what the model draws.

- ``metric="ssim"`` (default): mean SSIM, Wang et al. 2004; 1 = identical.
- ``metric="psnr"``: PSNR in dB over 8-bit RGB, capped at ``PSNR_CAP_DB`` so identical images
  give a finite number that averages.
- ``metric="mse"``: mean squared error over RGB in [0, 1]; lower is better.
- ``metric="latent-mse"``: mean squared error of the final latents (the denoising loop's
  output, before the VAE decodes it); lower is better. It needs the latents, so it scores
  renders made with ``output_type="latent"`` (``hprune contrib --scorer-option
  metric=latent-mse``, which then skips the VAE), not the images of a stimulus folder.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from generation.measurement.image_metrics import image_array, mse, psnr, ssim
from generation.measurement.scorers.base import Scorer, register_scorer
from hprune.errors import UserError

PSNR_CAP_DB = 100.0
METRICS = ("ssim", "psnr", "mse", "latent-mse")


class FidelityScorer(Scorer):
    needs_reference = True

    def __init__(self, metric: str = "ssim") -> None:
        if metric not in METRICS:
            raise UserError(f"fidelity: unknown metric {metric!r} (choose {', '.join(METRICS)})")
        self.metric = metric
        self.name = f"fidelity-{metric}"
        self.higher_is_better = metric in ("ssim", "psnr")
        self.output_type = "latent" if metric == "latent-mse" else "pil"
        self.version = "1"
        self.scale = {
            "ssim": "mean SSIM vs the reference image (Wang et al. 2004), 1 = identical",
            "psnr": f"PSNR in dB vs the reference image, capped at {PSNR_CAP_DB:g}",
            "mse": "mean squared RGB error in [0, 1] vs the reference image, 0 = identical",
            "latent-mse": "mean squared error of the final latent vs the reference's, 0 = identical",
        }[metric]

    def compare(self, image, reference) -> float:
        if self.output_type == "latent":
            return self.compare_latents(image, reference)
        a, b = image_array(image), image_array(reference)
        if a.shape != b.shape:
            raise UserError(
                f"{self.name}: cannot compare a {a.shape[1]}x{a.shape[0]} image with a "
                f"{b.shape[1]}x{b.shape[0]} reference"
            )
        if self.metric == "ssim":
            return ssim(a, b)
        if self.metric == "psnr":
            return min(psnr(a, b), PSNR_CAP_DB)
        return mse(a, b)

    def compare_latents(self, latent, reference) -> float:
        a = np.asarray(latent, dtype=np.float64)
        b = np.asarray(reference, dtype=np.float64)
        if a.shape != b.shape:
            raise UserError(
                f"{self.name}: cannot compare a latent of shape {a.shape} with one of {b.shape}"
            )
        return float(np.mean((a - b) ** 2))

    def score(
        self, images: Sequence, prompts: Sequence, references: Sequence | None = None
    ) -> np.ndarray:
        self.check_batch(images, prompts, references)
        return np.array(
            [self.compare(i, r) for i, r in zip(images, references, strict=True)], dtype=float
        )


register_scorer("fidelity", FidelityScorer)
