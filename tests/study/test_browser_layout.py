"""Layouts in real Chromium: at the demo spec's minimum viewport, both images, the longest demo
prompt and every control are on screen without scrolling (pair and rating trials); a phone
stacks the pair and fits it; key hints only where there is a keyboard."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hprune.contracts.manifest import read_manifest, write_manifest
from tests.study.conftest import import_spec, make_stimuli, through_the_gate

pytestmark = [pytest.mark.browser, pytest.mark.slow]

DEMO = Path(__file__).resolve().parents[2] / "demo"
PHONE_UA = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0 Mobile Safari/537.36"
)


@pytest.fixture(scope="module")
def longest_prompt_stimuli(tmp_path_factory) -> tuple[Path, str]:
    """Stimuli whose every prompt is the demo's longest."""
    prompt = max((r.prompt for r in read_manifest(DEMO / "stimuli")), key=len)
    folder = make_stimuli(tmp_path_factory.mktemp("longest"), size=64)
    write_manifest(
        folder, [r.__class__(**{**r.to_dict(), "prompt": prompt}) for r in read_manifest(folder)]
    )
    return folder, prompt


def _demo_viewport() -> dict:
    viewport = yaml.safe_load((DEMO / "study.yaml").read_text())["min_viewport"]
    return {"width": viewport["width"], "height": viewport["height"]}


def _boxes(page, selectors: list[str]) -> dict:
    return {s: page.locator(s).bounding_box() for s in selectors}


def _assert_on_screen(page, selectors: list[str], viewport: dict) -> dict:
    """Every element visible and wholly inside the viewport, and the page not scrollable."""
    boxes = _boxes(page, selectors)
    for selector, box in boxes.items():
        assert box is not None and page.is_visible(selector), f"{selector} is not shown"
        assert box["x"] >= 0 and box["y"] >= 0, (selector, box)
        assert box["x"] + box["width"] <= viewport["width"] + 0.5, (selector, box, viewport)
        assert box["y"] + box["height"] <= viewport["height"] + 0.5, (selector, box, viewport)
    width, height = page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.scrollHeight]"
    )
    assert width <= viewport["width"] and height <= viewport["height"], (width, height)
    return boxes


def _study(app, stimuli: Path, kind: str, **overrides):
    spec = yaml.safe_load((DEMO / "study.yaml").read_text())
    criteria = [
        {"name": "alignment", "question": spec["criteria"][1]["question"], "show_prompt": True}
    ]
    if kind == "rating":
        criteria[0]["question"] = "How well does this image match the text?"
    settings = {"min_viewport": spec["min_viewport"], **overrides}
    return import_spec(
        app, stimuli, kind=kind, tie=kind == "pair", criteria=criteria, practice_trials=0,
        trials_per_criterion=2, attention={}, **settings,
    )  # fmt: skip


@pytest.mark.parametrize("kind", ["pair", "rating"])
def test_everything_fits_the_minimum_viewport_with_the_longest_prompt(
    browser, server, app, longest_prompt_stimuli, kind, artifacts_dir
):
    stimuli, prompt = longest_prompt_stimuli
    study = _study(app, stimuli, kind)
    viewport = _demo_viewport()
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    page.goto(f"{server}/s/{study.key}?PROLIFIC_PID=PIDfit-{kind}&STUDY_ID=st&SESSION_ID=se")
    through_the_gate(page)
    page.wait_for_selector("#trial-app[data-state=ready]")
    assert page.inner_text("#prompt") == f"\u201c{prompt}\u201d"
    common = ["#progress", "#question", "#prompt"]
    if kind == "pair":
        boxes = _assert_on_screen(
            page, [*common, "#img-left", "#img-right", "#choose-tie", "#key-hint"], viewport
        )
        left, right = boxes["#img-left"], boxes["#img-right"]
        assert left["width"] == right["width"] >= 300 and left["y"] == right["y"]
    else:
        buttons = [f"#scale button[data-rating='{v}']" for v in range(1, 6)]
        boxes = _assert_on_screen(page, [*common, "#img-single", *buttons], viewport)
        assert boxes["#img-single"]["width"] >= 300
    page.screenshot(
        path=str(artifacts_dir / f"study-{kind}-{viewport['width']}x{viewport['height']}.png")
    )
    context.close()


@pytest.mark.parametrize("kind", ["pair", "rating"])
def test_a_phone_gets_the_images_stacked_or_fitted_and_no_key_hints(
    browser, server, app, longest_prompt_stimuli, kind, artifacts_dir
):
    stimuli, _ = longest_prompt_stimuli
    study = _study(app, stimuli, kind, min_viewport={})
    viewport = {"width": 390, "height": 844}
    context = browser.new_context(
        viewport=viewport, is_mobile=True, has_touch=True, user_agent=PHONE_UA
    )
    page = context.new_page()
    page.goto(f"{server}/s/{study.key}?PROLIFIC_PID=PIDphone-{kind}&STUDY_ID=st&SESSION_ID=se")
    page.get_by_role("button", name="Continue").tap()  # screen check
    page.get_by_role("button", name="I agree to take part").tap()
    assert not page.locator(".keys").first.is_visible()  # instructions: no keyboard to speak of
    page.get_by_role("button", name="Continue").tap()
    page.wait_for_selector("#trial-app[data-state=ready]")
    if kind == "pair":
        boxes = _assert_on_screen(
            page, ["#question", "#prompt", "#img-left", "#img-right", "#choose-tie"], viewport
        )
        left, right = boxes["#img-left"], boxes["#img-right"]
        assert right["y"] >= left["y"] + left["height"]  # stacked: larger than side by side
        assert left["width"] == right["width"] >= 240
        assert not page.is_visible("#key-hint")
        assert page.inner_text("#choose-tie") == "No preference"
        page.screenshot(path=str(artifacts_dir / f"study-{kind}-phone.png"))
        page.tap("#choose-right")
    else:
        buttons = [f"#scale button[data-rating='{v}']" for v in range(1, 6)]
        boxes = _assert_on_screen(page, ["#question", "#prompt", "#img-single", *buttons], viewport)
        assert boxes["#img-single"]["width"] >= 240
        page.screenshot(path=str(artifacts_dir / f"study-{kind}-phone.png"))
        page.tap("#scale button[data-rating='3']")
    page.wait_for_function(
        "() => document.getElementById('progress-text').textContent.startsWith('2')"
    )  # the tap answered
    context.close()
