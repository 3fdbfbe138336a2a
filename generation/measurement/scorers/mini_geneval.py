"""``mini-geneval``: does a shapes-world image show what its prompt asks for? (1 or 0 per image)

The rule-based checker of ``generation.shapes_world.geneval``: no learned weights, no reference
image. A prompt's GenEval clauses come from its metadata (prompt files in GenEval's
``evaluation_metadata.jsonl`` format carry them); a prompt without them is looked up by its
text among the shapes-world captions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from generation.measurement.scorers.base import Scorer, register_scorer
from generation.shapes_world.geneval import evaluate_image, resolve_metadata
from hprune.errors import UserError


class MiniGenEvalScorer(Scorer):
    name = "mini-geneval"
    higher_is_better = True
    version = "1"
    scale = (
        "per image: 1 if it satisfies its prompt by GenEval's rules (colour segmentation, "
        "shape geometry, counting, relative position), else 0; summary = mean of the task means"
    )

    def score(
        self, images: Sequence, prompts: Sequence, references: Sequence | None = None
    ) -> np.ndarray:
        self.check_batch(images, prompts, references)
        values = []
        for image, prompt in zip(images, prompts, strict=True):
            try:
                metadata = resolve_metadata(prompt.text, prompt.metadata)
            except ValueError as exc:
                raise UserError(f"mini-geneval: {exc}") from None
            values.append(float(evaluate_image(image, prompt.text, metadata)["correct"]))
        return np.array(values, dtype=float)


register_scorer("mini-geneval", MiniGenEvalScorer)
