"""mini-GenEval: does an image of the shapes world show what its prompt asks for?

A rule-based stand-in for GenEval (Ghosh et al., NeurIPS 2023) with no learned weights.
GenEval detects objects with Mask2Former, classifies their colour with CLIP and applies
rules per prompt; here the detector is colour segmentation and shape geometry, the rules
are GenEval's:

1. **Segment by colour.** Every pixel goes to the nearest palette colour or the background
   in CIELAB (perceptual distance); pixels far from all of them stay unassigned. Each
   colour's mask (holes filled) splits into 8-connected components; components smaller
   than ``MIN_AREA`` or with no solid interior (slivers along other objects' edges) are noise.
2. **Classify the shape** of each component from three numbers of its mask inside its
   bounding box: the fill ratio (square 1, circle π/4, triangle 1/2), the share of its area
   in the top half (an upright triangle has 1/4) and the mean occupancy of the four corner
   cells (a square fills them, a circle leaves them mostly empty). The nearest prototype
   wins; a component too far from all of them, or far from square in aspect, is no shape.
3. **Apply GenEval's rules** to the detections, ordered by area (GenEval orders by detector
   confidence): each ``include`` clause needs at least ``count`` objects of its class, the
   first ``count`` of them in its ``color`` and in its ``position`` relative to every
   object of the clause it refers to (``generation.shapes_world.shapes.relative_position``); each
   ``exclude`` clause fails the image when ``count`` or more objects of its class are seen.

The result rows have GenEval's ``results.jsonl`` fields (filename, tag, prompt, correct,
reason, metadata, details).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from generation.shapes_world.shapes import (
    BACKGROUND,
    CATEGORIES,
    COLORS,
    IMAGE_SIZE,
    Shape,
    prompt_space,
    relative_position,
)

MIN_AREA = 24  # pixels at 64x64; the smallest drawn object (an 11-pixel triangle) has ~60
MAX_COLOR_DISTANCE = 45.0  # CIELAB ΔE beyond which a pixel belongs to no palette colour
MAX_SHAPE_DISTANCE = 0.3  # feature-space distance beyond which a component is no shape
# (fill ratio, top-half share, corner occupancy), measured on drawn shapes of every size.
PROTOTYPES: dict[str, tuple[float, float, float]] = {
    "square": (1.0, 0.5, 1.0),
    "circle": (0.78, 0.5, 0.28),
    "triangle": (0.51, 0.26, 0.39),
}
# Corners are the first thing a decoder rounds off: they count half in the distance.
FEATURE_WEIGHTS = np.array([1.0, 1.0, 0.5])


@dataclass(frozen=True)
class Detection:
    """One coloured object found in an image; ``shape`` is None for a region that is no shape."""

    shape: str | None
    color: str
    bbox: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)
    area: int
    distance: float = 0.0  # to the nearest shape prototype; smaller is surer


# ---------------------------------------------------------------------------- segmentation


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (D65) of sRGB values in 0..255, any leading shape, last axis RGB."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    c = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    to_xyz = np.array(
        [[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]
    )
    xyz = c @ to_xyz.T / np.array([0.95047, 1.0, 1.08883])
    delta = 6 / 29
    f = np.where(xyz > delta**3, np.cbrt(xyz), xyz / (3 * delta**2) + 4 / 29)
    return np.stack(
        [116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])],
        axis=-1,
    )


_PALETTE_NAMES = ("background", *COLORS)
_PALETTE_LAB = srgb_to_lab(np.array([BACKGROUND, *COLORS.values()]))


def palette_labels(image) -> np.ndarray:
    """Per pixel: 0 for the background, k >= 1 for the k-th palette colour, -1 for none."""
    lab = srgb_to_lab(np.asarray(_as_rgb(image)))
    distance = np.linalg.norm(lab[:, :, None, :] - _PALETTE_LAB[None, None], axis=-1)
    labels = distance.argmin(axis=-1)
    labels[distance.min(axis=-1) > MAX_COLOR_DISTANCE] = -1
    return labels


def _as_rgb(image):
    image = image.convert("RGB")
    if image.size != (IMAGE_SIZE, IMAGE_SIZE):
        from PIL import Image

        image = image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
    return image


# ---------------------------------------------------------------------------- shapes


def shape_features(mask: np.ndarray) -> tuple[float, float, float]:
    """(fill ratio, share of area in the top half, mean occupancy of the corner cells) of a box-cropped mask."""
    h, w = mask.shape
    area = mask.sum()
    fill = area / (h * w)
    top = mask[: h // 2].sum() + (mask[h // 2].sum() / 2 if h % 2 else 0)
    ch, cw = max(1, round(h / 4)), max(1, round(w / 4))
    corners = [mask[:ch, :cw], mask[:ch, -cw:], mask[-ch:, :cw], mask[-ch:, -cw:]]
    return float(fill), float(top / area), float(np.mean([c.mean() for c in corners]))


def classify(mask: np.ndarray) -> tuple[str | None, float]:
    """The shape a box-cropped mask is nearest to, and the distance; None when it is none."""
    h, w = mask.shape
    if not 0.6 <= w / h <= 1.7:
        return None, float("inf")
    features = np.array(shape_features(mask))
    distances = {
        name: float(np.linalg.norm(FEATURE_WEIGHTS * (features - np.array(proto))))
        for name, proto in PROTOTYPES.items()
    }
    best = min(distances, key=distances.get)
    if distances[best] > MAX_SHAPE_DISTANCE:
        return None, distances[best]
    return best, distances[best]


def detect(image) -> list[Detection]:
    """The objects of an image, largest first."""
    from scipy import ndimage

    labels = palette_labels(image)
    eight = np.ones((3, 3), dtype=bool)
    found = []
    for index, color in enumerate(_PALETTE_NAMES[1:], start=1):
        mask = ndimage.binary_fill_holes(labels == index)
        if not mask.any():
            continue
        interior = ndimage.binary_erosion(mask, structure=eight)
        components, _ = ndimage.label(mask, structure=eight)
        for k, box in enumerate(ndimage.find_objects(components), start=1):
            component = components[box] == k
            area = int(component.sum())
            if area < MIN_AREA or not interior[box][component].any():
                continue
            shape, distance = classify(component)
            ys, xs = box
            found.append(
                Detection(shape, color, (xs.start, ys.start, xs.stop, ys.stop), area, distance)
            )
    found.sort(key=lambda d: (-d.area, d.bbox))
    return found


def ground_truth_detections(shapes: Sequence[Shape]) -> list[Detection]:
    """What a perfect detector would report for a drawn scene (for symbolic checks)."""
    found = [Detection(s.kind, s.color, s.bbox, s.size * s.size) for s in shapes]
    found.sort(key=lambda d: (-d.area, d.bbox))
    return found


# ---------------------------------------------------------------------------- GenEval's rules


def evaluate(detections: Sequence[Detection], metadata: dict) -> tuple[bool, str]:
    """Whether detections satisfy a prompt's ``include``/``exclude`` clauses, and why not."""
    by_class: dict[str, list[Detection]] = {}
    for detection in detections:
        if detection.shape is not None:
            by_class.setdefault(detection.shape, []).append(detection)
    correct = True
    reasons: list[str] = []
    matched: list[list[Detection] | None] = []
    for clause in metadata.get("include", []):
        name, count = clause["class"], clause["count"]
        found = by_class.get(name, [])[:count]
        ok = len(found) >= count
        if not ok:
            reasons.append(f"expected {name}>={count}, found {len(found)}")
        if ok and "color" in clause:
            colors = [d.color for d in found]
            if colors.count(clause["color"]) < count:
                ok = False
                seen = ", ".join(f"{colors.count(c)} {c}" for c in COLORS if c in colors)
                reasons.append(
                    f"expected {clause['color']} {name}>={count}, found "
                    f"{colors.count(clause['color'])} {clause['color']}; and {seen}"
                )
        if ok and "position" in clause:
            relation, target = clause["position"]
            targets = matched[target]
            if targets is None:
                ok = False
                reasons.append(f"no target for {name} to be {relation}")
            else:
                for detection in found:
                    for other in targets:
                        actual = relative_position(detection.bbox, other.bbox)
                        if relation not in actual:
                            ok = False
                            got = " and ".join(sorted(actual)) or "no relation to"
                            reasons.append(f"expected {name} {relation} target, found {got} target")
                            break
                    if not ok:
                        break
        correct = correct and ok
        matched.append(found if ok else None)
    for clause in metadata.get("exclude", []):
        name, count = clause["class"], clause["count"]
        n = len(by_class.get(name, []))
        if n >= count:
            correct = False
            reasons.append(f"expected {name}<{count}, found {n}")
    return correct, "\n".join(reasons)


_KNOWN_PROMPTS = {row["prompt"]: row for category in CATEGORIES for row in prompt_space(category)}


def resolve_metadata(prompt: str, metadata: dict | None = None) -> dict:
    """GenEval clauses for a prompt: its own metadata when it has them, else looked up by text."""
    if metadata and "include" in metadata:
        return {"tag": metadata.get("tag", ""), **metadata, "prompt": prompt}
    text = " ".join(prompt.split()).lower()
    if text not in _KNOWN_PROMPTS:
        raise ValueError(
            f"{prompt!r} is not a shapes-world prompt and has no GenEval include clauses"
        )
    return dict(_KNOWN_PROMPTS[text])


def evaluate_image(image, prompt: str, metadata: dict | None = None, *, filename: str = "") -> dict:
    """One GenEval ``results.jsonl`` row for an image and its prompt."""
    metadata = resolve_metadata(prompt, metadata)
    detections = detect(image)
    correct, reason = evaluate(detections, metadata)
    details: dict[str, list] = {}
    for d in detections:
        details.setdefault(d.shape or "unknown", []).append([*d.bbox, d.color])
    clauses = {k: v for k, v in metadata.items() if k in ("tag", "include", "exclude", "prompt")}
    return {
        "filename": filename,
        "tag": metadata.get("tag", ""),
        "prompt": prompt,
        "correct": bool(correct),
        "reason": reason,
        "metadata": json.dumps(clauses),
        "details": json.dumps(details),
    }
