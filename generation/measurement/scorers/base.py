"""The scorer interface and the registry that finds scorers by name.

A scorer turns images (with their prompts, and for full-reference scorers a
reference image of the same prompt and seed) into one float per image.
Scorers register a factory under a name; ``generation.measurement.scorers`` imports the
built-in scorer modules, so every built-in is available once it is imported.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence

import numpy as np

from hprune.errors import UserError


class Scorer(abc.ABC):
    """One automatic metric.

    ``name`` is the metric name as written to metrics.csv (with a version where
    it has one); ``version`` and ``scale`` describe it in metrics.json.
    """

    name: str
    higher_is_better: bool
    needs_reference: bool = (
        False  # compares each image with a reference image of the same prompt and seed
    )
    needs_weights: bool = False  # learned weights from a local folder
    # what it scores, as diffusers' ``output_type`` names it: "pil" images, or "latent" (the
    # final latents, before the VAE: only an analysis that renders, like contrib, has them)
    output_type: str = "pil"
    version: str = ""
    scale: str = ""

    @abc.abstractmethod
    def score(
        self, images: Sequence, prompts: Sequence, references: Sequence | None = None
    ) -> np.ndarray:
        """One float per image."""

    def check_batch(self, images: Sequence, prompts: Sequence, references: Sequence | None) -> None:
        """Lengths agree; references are given exactly when the scorer needs them."""
        if len(images) != len(prompts):
            raise ValueError(f"{self.name}: {len(images)} images but {len(prompts)} prompts")
        if self.needs_reference and (references is None or len(references) != len(images)):
            raise ValueError(f"{self.name}: needs one reference image per image")


_REGISTRY: dict[str, Callable[..., Scorer]] = {}


def register_scorer(name: str, factory: Callable[..., Scorer]) -> None:
    """Make ``factory(**options)`` available as ``get_scorer(name, **options)``."""
    if name in _REGISTRY and _REGISTRY[name] is not factory:
        raise ValueError(f"a different scorer is already registered as {name!r}")
    _REGISTRY[name] = factory


def available_scorers() -> list[str]:
    return sorted(_REGISTRY)


def get_scorer(name: str, **options) -> Scorer:
    """The scorer registered as ``name``, built with ``options``; a UserError for unknown names."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise UserError(
            f"unknown scorer {name!r} (available: {', '.join(available_scorers())})"
        ) from None
    try:
        return factory(**options)
    except TypeError as exc:
        raise UserError(f"bad options for scorer {name!r}: {exc}") from None
