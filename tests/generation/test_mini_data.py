"""The shapes world and mini-GenEval: captions match images, the checker rejects what does not match."""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageFilter

from generation.mini import EVALUATION_PROMPTS
from generation.shapes_world import shapes
from generation.shapes_world.geneval import (
    detect,
    evaluate,
    evaluate_image,
    ground_truth_detections,
    resolve_metadata,
)
from hprune.cli import main
from hprune.contracts.prompts import read_prompts


@pytest.fixture(scope="module")
def samples() -> list[shapes.Sample]:
    return shapes.training_samples(600, seed=11)


def test_stream_is_deterministic_from_its_seed() -> None:
    a = shapes.training_samples(40, seed=3)
    b = shapes.training_samples(40, seed=3)
    c = shapes.training_samples(40, seed=4)
    assert a == b
    assert a != c
    assert all(
        np.array_equal(np.asarray(x.image()), np.asarray(y.image()))
        for x, y in zip(a, b, strict=True)
    )


def test_every_category_and_colour_is_drawn(samples) -> None:
    assert {s.tag for s in samples} == set(shapes.CATEGORIES)
    drawn = {(shape.kind, shape.color) for s in samples for shape in s.shapes}
    assert drawn == {(k, c) for k in shapes.SHAPES for c in shapes.COLORS}


def test_images_hold_only_background_and_palette_pixels(samples) -> None:
    allowed = {shapes.BACKGROUND, *shapes.COLORS.values()}
    for sample in samples[:50]:
        pixels = {tuple(p) for p in np.asarray(sample.image()).reshape(-1, 3)}
        assert pixels <= allowed


def test_ground_truth_images_satisfy_their_captions(samples) -> None:
    per_category = defaultdict(list)
    for sample in samples:
        correct, reason = evaluate(detect(sample.image()), sample.metadata)
        per_category[sample.tag].append(correct)
        assert correct, (sample.prompt, reason)
    overall = np.mean([np.mean(v) for v in per_category.values()])
    assert overall >= 0.98


def test_checker_agrees_with_the_scene_on_other_prompts(samples) -> None:
    """An image judged against a different prompt passes exactly when its drawn objects would."""
    every_prompt = [row for c in shapes.CATEGORIES for row in shapes.prompt_space(c)]
    rng = np.random.default_rng(0)
    false_positive = []
    for sample in samples:
        other = every_prompt[rng.integers(len(every_prompt))]
        truth, _ = evaluate(ground_truth_detections(sample.shapes), other)
        seen, _ = evaluate(detect(sample.image()), other)
        assert seen == truth, (sample.prompt, other["prompt"])
        if not truth:
            false_positive.append(seen)
    assert len(false_positive) > 400
    assert not any(false_positive)


def test_checker_tolerates_mild_blur_and_noise(samples) -> None:
    rng = np.random.default_rng(1)
    correct = []
    for sample in samples[:200]:
        blurred = np.asarray(sample.image().filter(ImageFilter.GaussianBlur(0.8)), dtype=float)
        noisy = np.clip(blurred + rng.normal(0, 8, blurred.shape), 0, 255).astype(np.uint8)
        correct.append(evaluate(detect(Image.fromarray(noisy)), sample.metadata)[0])
    assert np.mean(correct) >= 0.97


def test_checker_rejects_wrong_colour_count_and_position() -> None:
    red_circle = shapes.Shape("circle", "red", 5, 20, 20)
    blue_square = shapes.Shape("square", "blue", 40, 22, 18)
    image = shapes.draw_scene([red_circle, blue_square])

    def judge(prompt: str) -> bool:
        return evaluate_image(image, prompt)["correct"]

    assert judge("a photo of a red circle")
    assert judge("a photo of a circle left of a square")
    assert judge("a photo of a red circle and a blue square")
    assert not judge("a photo of a blue circle")
    assert not judge("a photo of a circle right of a square")
    assert not judge("a photo of a circle above a square")
    assert not judge("a photo of two circles")
    assert not judge("a photo of a circle and a triangle")
    row = evaluate_image(image, "a photo of a blue circle", filename="x.png")
    assert set(row) == {"filename", "tag", "prompt", "correct", "reason", "metadata", "details"}
    assert row["tag"] == "colors" and "expected blue circle" in row["reason"]


def test_counting_excludes_one_more() -> None:
    three = [shapes.Shape("triangle", "green", 4 + 20 * i, 20, 14) for i in range(3)]
    image = shapes.draw_scene(three)
    assert evaluate_image(image, "a photo of three triangles")["correct"]
    assert evaluate_image(image, "a photo of two triangles")["correct"] is False
    assert evaluate_image(image, "a photo of four triangles")["correct"] is False


def test_blank_and_noise_images_show_no_objects() -> None:
    blank = Image.new("RGB", (64, 64), shapes.BACKGROUND)
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    assert [d for d in detect(blank)] == []
    assert all(d.shape is None or d.area < 64 for d in detect(noise))
    assert not evaluate_image(noise, "a photo of a circle")["correct"]


def test_unknown_prompt_without_clauses_is_refused() -> None:
    with pytest.raises(ValueError, match="not a shapes-world prompt"):
        resolve_metadata("a photo of a cat")


def test_shipped_heldout_prompts_load_with_the_prompt_reader() -> None:
    prompts = read_prompts(EVALUATION_PROMPTS)
    assert [p.metadata["tag"] for p in prompts] == [p.category for p in prompts]
    assert {p.category for p in prompts} == set(shapes.CATEGORIES)
    rows = [json.loads(line) for line in EVALUATION_PROMPTS.read_text().splitlines()]
    assert rows == shapes.evaluation_prompts(0)
    heldout = {p.text for p in prompts if p.category == "color_attr"}
    trained = {row["prompt"] for row in shapes.training_prompts(0)["color_attr"]}
    assert heldout and not heldout & trained


def test_position_scenes_hold_only_the_named_relation(samples) -> None:
    for sample in samples:
        if sample.tag != "position":
            continue
        reference, positioned = sample.metadata["include"]
        relation = positioned["position"][0]
        (a,) = [s for s in sample.shapes if s.kind == positioned["class"]]
        (b,) = [s for s in sample.shapes if s.kind == reference["class"]]
        assert shapes.relative_position(a.bbox, b.bbox) == {relation}


def test_mini_data_command_writes_images_captions_and_heldout_prompts(tmp_path) -> None:
    out = tmp_path / "shapes"
    result = CliRunner().invoke(main, ["mini", "data", "--out", str(out), "-n", "12"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert len(records) == 12
    for record in records:
        image = Image.open(out / record["file"])
        assert image.size == (64, 64)
        assert evaluate_image(image, record["prompt"], record)["correct"]
    assert len(read_prompts(out / "evaluation_metadata.jsonl")) == 84
    again = CliRunner().invoke(main, ["mini", "data", "--out", str(out), "-n", "3"])
    assert again.exit_code != 0 and "already exists" in again.output
    assert len((out / "metadata.jsonl").read_text().splitlines()) == 12


def test_mini_geneval_scorer_is_registered_and_scores_ground_truth(samples) -> None:
    from generation.measurement.scorers import available_scorers, get_scorer
    from hprune.contracts.prompts import Prompt
    from hprune.errors import UserError

    assert "mini-geneval" in available_scorers()
    scorer = get_scorer("mini-geneval")
    assert scorer.higher_is_better and not scorer.needs_reference
    chosen = samples[:12]
    prompts = [Prompt(f"p{i}", s.prompt, s.tag) for i, s in enumerate(chosen)]
    images = [s.image() for s in chosen]
    assert scorer.score(images, prompts).tolist() == [1.0] * 12
    blank = Image.new("RGB", (64, 64), shapes.BACKGROUND)
    assert scorer.score([blank], prompts[:1]).tolist() == [0.0]
    with pytest.raises(UserError, match="not a shapes-world prompt"):
        scorer.score([blank], [Prompt("x", "a photo of a cat")])
