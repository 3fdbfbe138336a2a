"""``ssim-vs-original`` and ``psnr-vs-original``: each image against the reference variant's.

The reference is the variant marked ``reference: true`` in variants.yaml (usually the
uncompressed original); ``hprune score`` pairs every other variant's image with the
reference's image of the same prompt and seed, which started from the same noise. No
learned weights: the maths is :mod:`generation.measurement.image_metrics`, through the ``fidelity`` scorer.
"""

from __future__ import annotations

from generation.measurement.scorers.base import register_scorer
from generation.measurement.scorers.fidelity import FidelityScorer


class _VsOriginal(FidelityScorer):
    metric: str

    def __init__(self) -> None:
        super().__init__(self.metric)
        self.name = f"{self.metric}-vs-original"
        self.scale = self.scale.replace(
            "the reference image", "the reference variant's image of the same prompt and seed"
        )


class SsimVsOriginal(_VsOriginal):
    """Mean SSIM (Wang et al. 2004) against the reference variant; 1 = identical."""

    metric = "ssim"


class PsnrVsOriginal(_VsOriginal):
    """PSNR in dB against the reference variant, capped so identical images stay finite."""

    metric = "psnr"


register_scorer("ssim-vs-original", SsimVsOriginal)
register_scorer("psnr-vs-original", PsnrVsOriginal)
