"""Answers that are what the participant meant, in real Chromium: no answer before the images
have been displayed for the trial's minimum time, one answer per trial however fast or long
a key is pressed, Space on a focused image chooses that image, and nothing of one trial's
focus or hover highlight carries into the next."""

from __future__ import annotations

import pytest

from tests.study.conftest import answers_of, through_the_gate

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ACCENT = "rgb(29, 95, 191)"  # style.css --accent: a choice's hover border
STATE = "document.getElementById('trial-app').getAttribute('data-state')"


def _open(browser, server, study, pid: str):
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.goto(f"{server}/s/{study.key}?PROLIFIC_PID={pid}&STUDY_ID=st&SESSION_ID={pid}")
    through_the_gate(page)
    return context, page


def _trial(page) -> str:
    return page.get_attribute("#trial-app", "data-trial")


def _next(page, after: str, *states: str) -> str:
    """Wait for the trial after ``after`` to be displayed (or to reach one of ``states``)."""
    page.wait_for_function(
        f"([id, states]) => document.getElementById('trial-app').getAttribute('data-trial') "
        f"!== id && states.includes({STATE})",
        arg=[after, list(states or ("locked", "ready"))],
        timeout=30_000,
    )
    return _trial(page)


def test_quick_and_held_keys_answer_each_trial_once_and_not_before_the_minimum_time(
    browser, server, make_study, app
):
    study = make_study(trials_per_criterion=5, practice_trials=0, attention={}, min_display_ms=1000)
    context, page = _open(browser, server, study, "PIDkeys")
    page.wait_for_selector("#trial-app[data-state=ready]")
    first = _trial(page)
    for _ in range(3):  # three quick presses: the first answers, the rest reach no trial
        page.keyboard.press("ArrowLeft")
        page.wait_for_timeout(60)
    second = _next(page, first, "ready")
    assert len(answers_of(app, study.key, "PIDkeys")) == 1

    page.keyboard.down("ArrowRight")  # held: auto-repeat keydowns (event.repeat) follow
    for _ in range(25):
        page.wait_for_timeout(40)
        page.keyboard.down("ArrowRight")
    page.keyboard.up("ArrowRight")
    third = _next(page, second)
    assert [a.choice for a in answers_of(app, study.key, "PIDkeys")] == ["left", "right"]

    page.wait_for_function(f"() => {STATE} === 'ready'")
    page.click("#choose-left")
    fourth = _next(page, third, "locked")
    page.keyboard.press("ArrowRight")  # the images are up, but not for 1000 ms yet
    page.click("#choose-left")
    page.wait_for_function(f"() => {STATE} === 'ready'")
    assert _trial(page) == fourth
    assert [a.choice for a in answers_of(app, study.key, "PIDkeys")] == ["left", "right", "left"]
    page.keyboard.press("ArrowRight")
    _next(page, fourth)
    answers = answers_of(app, study.key, "PIDkeys")
    assert [a.choice for a in answers] == ["left", "right", "left", "right"]
    for answer in answers:  # recorded per trial; the client timed from the images' display
        assert answer.min_display_ms == 1000
        assert answer.rt_ms >= 1000 and answer.server_ms >= 1000 and answer.load_ms >= 0
    context.close()


def test_space_on_a_focused_image_chooses_it_and_no_highlight_carries_over(
    browser, server, make_study, app
):
    study = make_study(trials_per_criterion=4, practice_trials=0, attention={})
    context, page = _open(browser, server, study, "PIDspace")
    page.wait_for_selector("#trial-app[data-state=ready]")
    first = _trial(page)
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "choose-left"
    page.keyboard.press(" ")  # the focused button's own key: choose the left image
    second = _next(page, first, "ready")
    assert page.evaluate("document.activeElement.tagName") != "BUTTON"
    page.keyboard.press(" ")  # no button has the focus: no preference
    third = _next(page, second, "ready")
    page.click("#choose-right")  # the pointer stays over the right image
    _next(page, third, "ready")
    right = page.locator("#choose-right")
    assert page.evaluate("document.activeElement.id") != "choose-right"
    assert right.evaluate("b => getComputedStyle(b).borderTopColor") == "rgba(0, 0, 0, 0)"
    box = right.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2 + 12, box["y"] + box["height"] / 2 + 12)
    assert right.evaluate("b => getComputedStyle(b).borderTopColor") == ACCENT  # moved: hover
    assert [a.choice for a in answers_of(app, study.key, "PIDspace")] == ["left", "tie", "right"]
    context.close()
