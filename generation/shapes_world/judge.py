"""What an image of the shapes world is worth to a viewer: the pixel side of image-aware simulated
participants (``hprune study simulate --observer image-aware``).

:class:`ShapesJudge` turns an image's bytes, and the prompt when the trial shows one, into
named features in [0, 1], read from the pixels by mini-GenEval's detector
(``generation.shapes_world.geneval``) and nothing else:

- ``form``: how well drawn the objects are, prompt or not: the area-weighted share of coloured
  regions that are clean shapes (1 at a shape prototype, falling to 0 at the checker's
  ``MAX_SHAPE_DISTANCE``; 0 for a blob that is no shape), less the share of the image in no
  palette colour (smears, mixed colours);
- ``correct`` (prompt shown): mini-GenEval's verdict, 1 or 0;
- ``fidelity`` (prompt shown): partial credit per ``include`` clause (the share of the objects
  asked for that are there, in the colour and the position asked for), 0 when an ``exclude``
  clause is broken: an image that misses by one object is better than one that misses all.

The study's simulator weighs the features per participant (``study.simulate.observer``); the
judge itself is deterministic, has no weights and never sees a variant name.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from generation.shapes_world.geneval import (
    MAX_SHAPE_DISTANCE,
    Detection,
    detect,
    evaluate,
    palette_labels,
    resolve_metadata,
)
from generation.shapes_world.shapes import relative_position


def form_score(detections: list[Detection], unassigned_share: float) -> float:
    """``form`` of the module docstring, from an image's detections."""
    total = sum(d.area for d in detections)
    if total == 0:
        return 0.0
    clean = sum(
        d.area * max(0.0, 1.0 - d.distance / MAX_SHAPE_DISTANCE)
        for d in detections
        if d.shape is not None
    )
    return float(np.clip(clean / total - unassigned_share, 0.0, 1.0))


def fidelity_score(detections: list[Detection], metadata: dict) -> float:
    """``fidelity`` of the module docstring: mean partial credit over ``include`` clauses."""
    by_class: dict[str, list[Detection]] = {}
    for d in detections:
        if d.shape is not None:
            by_class.setdefault(d.shape, []).append(d)
    for clause in metadata.get("exclude", []):
        if len(by_class.get(clause["class"], [])) >= clause["count"]:
            return 0.0
    credits, matched = [], []
    for clause in metadata.get("include", []):
        count = clause["count"]
        candidates = by_class.get(clause["class"], [])
        if "color" in clause:  # the right colour first, as a viewer would look for it
            candidates = sorted(candidates, key=lambda d: d.color != clause["color"])
        found = candidates[:count]
        parts = [len(found) / count]
        if "color" in clause:
            parts.append(sum(d.color == clause["color"] for d in found) / count)
        if "position" in clause:
            relation, target = clause["position"]
            targets = matched[target]
            pairs = [(d, t) for d in found for t in targets]
            hits = sum(relation in relative_position(d.bbox, t.bbox) for d, t in pairs)
            parts.append(hits / len(pairs) if pairs else 0.0)
        credits.append(float(np.mean(parts)))
        matched.append(found)
    return float(np.mean(credits)) if credits else 0.0


class ShapesJudge:
    """Features of a shapes-world image for a simulated viewer (see the module docstring).

    Callable as ``judge(image_bytes, prompt_or_None) -> {name: value in [0, 1]}``: the
    interface ``study.simulate.observer.ImageJudge`` that the command line injects. Raises
    ``ValueError`` for bytes that are no image or a prompt the shapes world does not know.
    """

    def feature_names(self, with_prompt: bool) -> tuple[str, ...]:
        return ("correct", "fidelity", "form") if with_prompt else ("form",)

    def __call__(self, image: bytes, prompt: str | None) -> dict[str, float]:
        try:
            with Image.open(io.BytesIO(image)) as opened:
                pixels = opened.convert("RGB")
        except (OSError, Image.DecompressionBombError) as exc:
            raise ValueError(f"not an image: {exc}") from None
        detections = detect(pixels)
        unassigned = float(np.mean(palette_labels(pixels) < 0))
        features = {"form": form_score(detections, unassigned)}
        if prompt is not None:
            metadata = resolve_metadata(prompt)
            correct, _ = evaluate(detections, metadata)
            features["correct"] = float(correct)
            features["fidelity"] = fidelity_score(detections, metadata)
        return features
