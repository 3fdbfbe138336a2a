"""``fidelity``: how close an image stays to a reference image of the same prompt and seed.

No learned weights. Contribution analysis uses it with the unablated model's
image as the reference: the drop of SSIM from 1 is how much removing a part
changes what the model draws.

- ``metric="ssim"`` (default): mean SSIM, Wang et al. 2004; 1 = identical.
- ``metric="psnr"``: PSNR in dB over 8-bit RGB, capped at ``PSNR_CAP_DB`` so identical images
  give a finite number that averages.
- ``metric="mse"``: mean squared error over RGB in [0, 1]; lower is better.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from generation.image_metrics import image_array, mse, psnr, ssim
from generation.scorers.base import Scorer, register_scorer
from hprune.errors import UserError

PSNR_CAP_DB = 100.0
METRICS = ("ssim", "psnr", "mse")


class FidelityScorer(Scorer):
    needs_reference = True

    def __init__(self, metric: str = "ssim") -> None:
        if metric not in METRICS:
            raise UserError(f"fidelity: unknown metric {metric!r} (choose {', '.join(METRICS)})")
        self.metric = metric
        self.name = f"fidelity-{metric}"
        self.higher_is_better = metric != "mse"
        self.version = "1"
        self.scale = {
            "ssim": "mean SSIM vs the reference image (Wang et al. 2004), 1 = identical",
            "psnr": f"PSNR in dB vs the reference image, capped at {PSNR_CAP_DB:g}",
            "mse": "mean squared RGB error in [0, 1] vs the reference image, 0 = identical",
        }[metric]

    def compare(self, image, reference) -> float:
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

    def score(
        self, images: Sequence, prompts: Sequence, references: Sequence | None = None
    ) -> np.ndarray:
        self.check_batch(images, prompts, references)
        return np.array(
            [self.compare(i, r) for i, r in zip(images, references, strict=True)], dtype=float
        )


register_scorer("fidelity", FidelityScorer)
