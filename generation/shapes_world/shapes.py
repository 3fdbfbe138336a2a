"""The shapes world: 64x64 scenes of flat-coloured circles, squares and triangles with exact captions.

Every caption is phrased like a GenEval prompt (Ghosh et al., "GenEval: An Object-Focused
Framework for Evaluating Text-to-Image Alignment", NeurIPS 2023) and carries GenEval's
metadata: a task ``tag`` and ``include``/``exclude`` clauses with ``class``, ``count``,
``color`` and ``position``. A scene is drawn to satisfy its caption exactly: the objects the
caption names and no others, the attributes it leaves open (colour, size, place) drawn at
random. Everything is a pure function of a seed (numpy's PCG64), so the same seed gives the
same images on every machine.

The six task categories and their phrasing::

    single_object  a photo of a circle
    two_object     a photo of a circle and a square
    counting       a photo of three triangles          (exactly three: exclude four)
    colors         a photo of a blue square
    position       a photo of a triangle left of a circle
    color_attr     a photo of a red circle and a green triangle

Images are drawn without anti-aliasing, so every pixel is either the background or exactly
one palette colour: the checker (``generation.shapes_world.geneval``) then reads them unambiguously.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

IMAGE_SIZE = 64
BACKGROUND = (236, 236, 236)
# Six hues spread around the colour wheel, at least 47 apart in CIELAB (the checker's space).
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 30, 35),
    "orange": (250, 145, 10),
    "yellow": (240, 220, 30),
    "green": (30, 165, 60),
    "blue": (30, 110, 235),
    "purple": (165, 40, 195),
}
SHAPES = ("circle", "square", "triangle")
RELATIONS = ("left of", "right of", "above", "below")
NUMBERS = {1: "one", 2: "two", 3: "three", 4: "four"}
CATEGORIES = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
# GenEval's relative-position margin: each box's extent times this is discounted from the
# centre offset before a relation counts.
POSITION_THRESHOLD = 0.1
# Object sides in pixels, by the number of objects in the scene.
SIZE_RANGE = {1: (16, 30), 2: (13, 24), 3: (12, 20), 4: (11, 18)}
GAP = 3  # minimum free pixels between two objects' boxes
MARGIN = 2  # minimum free pixels between an object and the image border
HELDOUT_COLOR_ATTR = 24  # color_attr prompts kept out of training, for the evaluation set

# Every word a caption can contain (the tokenizers of the mini teacher are built over it).
VOCABULARY: tuple[str, ...] = (
    "a",
    "an",
    "photo",
    "of",
    "and",
    *NUMBERS.values(),
    *COLORS,
    *SHAPES,
    *(shape + "s" for shape in SHAPES),
    "left",
    "right",
    "above",
    "below",
)


@dataclass(frozen=True)
class Shape:
    """One object of a scene: its class, palette colour and square bounding box (pixels)."""

    kind: str
    color: str
    x0: int
    y0: int
    size: int

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) with x1, y1 exclusive, the same convention as the checker's boxes."""
        return (self.x0, self.y0, self.x0 + self.size, self.y0 + self.size)


@dataclass(frozen=True)
class Sample:
    """A caption, its GenEval metadata and the scene drawn for it."""

    prompt: str
    metadata: dict
    shapes: tuple[Shape, ...]

    @property
    def tag(self) -> str:
        return self.metadata["tag"]

    def image(self):
        return draw_scene(self.shapes)


# ---------------------------------------------------------------------------- captions


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _noun(kind: str, color: str | None = None) -> str:
    words = f"{color} {kind}" if color else kind
    return f"{_article(words)} {words}"


def _row(tag: str, prompt: str, include: list[dict], exclude: list[dict] | None = None) -> dict:
    row: dict = {"tag": tag, "include": include}
    if exclude:
        row["exclude"] = exclude
    row["prompt"] = prompt
    return row


def prompt_space(category: str) -> list[dict]:
    """Every caption of a category, as GenEval metadata rows (``tag``, ``include``, ``exclude``, ``prompt``)."""
    if category == "single_object":
        return [
            _row(category, f"a photo of {_noun(k)}", [{"class": k, "count": 1}]) for k in SHAPES
        ]
    if category == "two_object":
        return [
            _row(
                category,
                f"a photo of {_noun(a)} and {_noun(b)}",
                [{"class": a, "count": 1}, {"class": b, "count": 1}],
            )
            for a, b in itertools.permutations(SHAPES, 2)
        ]
    if category == "counting":
        return [
            _row(
                category,
                f"a photo of {NUMBERS[n]} {k}s",
                [{"class": k, "count": n}],
                [{"class": k, "count": n + 1}],
            )
            for k in SHAPES
            for n in (2, 3, 4)
        ]
    if category == "colors":
        return [
            _row(category, f"a photo of {_noun(k, c)}", [{"class": k, "count": 1, "color": c}])
            for k in SHAPES
            for c in COLORS
        ]
    if category == "position":
        # GenEval's form: "A <relation> B"; B is include[0], A refers to it by index 0.
        return [
            _row(
                category,
                f"a photo of {_noun(a)} {rel} {_noun(b)}",
                [{"class": b, "count": 1}, {"class": a, "count": 1, "position": [rel, 0]}],
            )
            for a, b in itertools.permutations(SHAPES, 2)
            for rel in RELATIONS
        ]
    if category == "color_attr":
        return [
            _row(
                category,
                f"a photo of {_noun(a, ca)} and {_noun(b, cb)}",
                [{"class": a, "count": 1, "color": ca}, {"class": b, "count": 1, "color": cb}],
            )
            for a, b in itertools.permutations(SHAPES, 2)
            for ca, cb in itertools.permutations(COLORS, 2)
        ]
    raise ValueError(f"unknown category {category!r}; known: {', '.join(CATEGORIES)}")


def evaluation_prompts(seed: int = 0) -> list[dict]:
    """The held-out evaluation set, in GenEval's ``evaluation_metadata.jsonl`` row format.

    All prompts of the five small categories (3 + 6 + 9 + 18 + 24) and a seeded sample of
    ``HELDOUT_COLOR_ATTR`` colour-attribute pairs. Those pairs are never drawn for training
    (``training_prompts``), so color_attr measures binding colours to shapes in combinations
    the model has not seen; the other categories are finite and fully seen in training, as a
    real model has seen GenEval's 80 object classes.
    """
    rows = []
    for category in CATEGORIES:
        space = prompt_space(category)
        if category == "color_attr":
            picked = np.random.default_rng([seed, 7]).choice(
                len(space), HELDOUT_COLOR_ATTR, replace=False
            )
            space = [space[i] for i in sorted(picked)]
        rows.extend(space)
    return rows


def training_prompts(seed: int = 0) -> dict[str, list[dict]]:
    """The captions training draws from, per category: all but the held-out color_attr pairs."""
    heldout = {row["prompt"] for row in evaluation_prompts(seed) if row["tag"] == "color_attr"}
    return {
        category: [row for row in prompt_space(category) if row["prompt"] not in heldout]
        for category in CATEGORIES
    }


# ---------------------------------------------------------------------------- geometry


def relative_position(a: Sequence[float], b: Sequence[float]) -> set[str]:
    """The relations of box ``a`` to box ``b`` ("left of", "right of", "above", "below") by GenEval's rule.

    Boxes are (x0, y0, x1, y1) in image coordinates (y grows downwards). The offset between
    the centres is shrunk on each axis by ``POSITION_THRESHOLD`` times the two boxes' extents
    on that axis; a relation holds when the shrunk offset, divided by the length of the
    original offset, exceeds 0.5 along it. Boxes whose shrunk offset vanishes have no relation.
    """
    boxes = np.asarray([a, b], dtype=float).reshape(2, 2, 2)  # box, corner, axis
    centre_a, centre_b = boxes.mean(axis=1)
    extent_a, extent_b = boxes[:, 1] - boxes[:, 0]
    offset = centre_a - centre_b
    shrunk = np.maximum(np.abs(offset) - POSITION_THRESHOLD * (extent_a + extent_b), 0)
    shrunk *= np.sign(offset)
    if np.all(np.abs(shrunk) < 1e-3):
        return set()
    dx, dy = shrunk / np.linalg.norm(offset)
    relations = set()
    if dx < -0.5:
        relations.add("left of")
    if dx > 0.5:
        relations.add("right of")
    if dy < -0.5:
        relations.add("above")
    if dy > 0.5:
        relations.add("below")
    return relations


def _apart(a: Shape, b: Shape) -> bool:
    ax0, ay0, ax1, ay1 = a.bbox
    bx0, by0, bx1, by1 = b.bbox
    return ax1 + GAP <= bx0 or bx1 + GAP <= ax0 or ay1 + GAP <= by0 or by1 + GAP <= ay0


def _place(rng: np.random.Generator, kind: str, color: str, size: int) -> Shape:
    high = IMAGE_SIZE - MARGIN - size
    return Shape(
        kind, color, int(rng.integers(MARGIN, high + 1)), int(rng.integers(MARGIN, high + 1)), size
    )


_OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


def scene_for(
    metadata: dict, rng: np.random.Generator, *, max_tries: int = 10_000
) -> tuple[Shape, ...]:
    """Objects satisfying a caption exactly: what ``include`` names, nothing else.

    Unnamed colours are drawn uniformly from the palette (repeats allowed), sizes from
    ``SIZE_RANGE`` for the scene's object count, places uniformly with ``GAP`` pixels between
    boxes. A position clause is satisfied with that relation alone (no diagonal scenes), so
    the caption is the only reading of the picture.
    """
    wanted: list[tuple[str, str | None, int]] = []  # (kind, colour, include index)
    for index, clause in enumerate(metadata["include"]):
        wanted.extend((clause["class"], clause.get("color"), index) for _ in range(clause["count"]))
    clauses = metadata["include"]
    low, high = SIZE_RANGE[len(wanted)]
    palette = list(COLORS)
    for _ in range(max_tries):
        shapes: list[Shape] = []
        for kind, color, _index in wanted:
            color = color or palette[rng.integers(len(palette))]
            shapes.append(_place(rng, kind, color, int(rng.integers(low, high + 1))))
        if not all(_apart(a, b) for a, b in itertools.combinations(shapes, 2)):
            continue
        ok = True
        for (_kind, _color, index), shape in zip(wanted, shapes, strict=True):
            if "position" in clauses[index]:
                relation, target = clauses[index]["position"]
                targets = [s for (_, _, i), s in zip(wanted, shapes, strict=True) if i == target]
                ok = ok and all(
                    relative_position(shape.bbox, t.bbox) == {relation}
                    and relative_position(t.bbox, shape.bbox) == {_OPPOSITE[relation]}
                    for t in targets
                )
        if ok:
            order = rng.permutation(len(shapes))
            return tuple(shapes[i] for i in order)
    raise RuntimeError(f"could not place a scene for {metadata['prompt']!r} in {max_tries} tries")


# ---------------------------------------------------------------------------- drawing


def draw_scene(shapes: Sequence[Shape], size: int = IMAGE_SIZE):
    """Render objects on the plain background, without anti-aliasing (crisp palette pixels)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for shape in shapes:
        x0, y0, x1, y1 = shape.bbox
        fill = COLORS[shape.color]
        if shape.kind == "circle":
            draw.ellipse([x0, y0, x1 - 1, y1 - 1], fill=fill)
        elif shape.kind == "square":
            draw.rectangle([x0, y0, x1 - 1, y1 - 1], fill=fill)
        elif shape.kind == "triangle":
            draw.polygon([((x0 + x1 - 1) / 2, y0), (x0, y1 - 1), (x1 - 1, y1 - 1)], fill=fill)
        else:
            raise ValueError(f"unknown shape {shape.kind!r}")
    return image


# ---------------------------------------------------------------------------- datasets


def iter_samples(
    seed: int, *, weights: dict[str, float] | None = None, holdout_seed: int = 0
) -> Iterator[Sample]:
    """An endless, seeded stream of training samples: category by ``weights``, caption uniform within it."""
    weights = weights or {category: 1.0 for category in CATEGORIES}
    unknown = set(weights) - set(CATEGORIES)
    if unknown:
        raise ValueError(f"unknown categories {sorted(unknown)}; known: {', '.join(CATEGORIES)}")
    categories = [c for c in CATEGORIES if weights.get(c, 0) > 0]
    p = np.array([weights[c] for c in categories], dtype=float)
    p /= p.sum()
    spaces = training_prompts(holdout_seed)
    rng = np.random.default_rng(seed)
    while True:
        category = categories[rng.choice(len(categories), p=p)]
        space = spaces[category]
        row = space[rng.integers(len(space))]
        yield Sample(row["prompt"], row, scene_for(row, rng))


def training_samples(n: int, seed: int, **options) -> list[Sample]:
    """The first ``n`` samples of ``iter_samples(seed)``."""
    return list(itertools.islice(iter_samples(seed, **options), n))


def sample_record(sample: Sample, file: str) -> dict:
    """The JSON line ``hprune mini data`` writes for one training image."""
    return {
        "file": file,
        **{k: v for k, v in sample.metadata.items() if k != "prompt"},
        "prompt": sample.prompt,
        "objects": [asdict(shape) for shape in sample.shapes],
    }


def write_evaluation_metadata(path: str | Path, seed: int = 0) -> None:
    """Write the held-out prompts as GenEval's ``evaluation_metadata.jsonl``."""
    from hprune.fileio import atomic_write_text

    lines = [json.dumps(row) for row in evaluation_prompts(seed)]
    atomic_write_text(path, "\n".join(lines) + "\n")
