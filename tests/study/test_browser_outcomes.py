"""The two common endings in real Chromium against a real server: a participant who answers
the gold trials as the images show gets the completed code and is sent back to Prolific with
it; one who answers a gold trial wrongly gets the failed-attention code and its link, at once.
Each on SQLite and PostgreSQL (``test_outcomes.py`` has every ending through the API)."""

from __future__ import annotations

import re

import pytest

from tests.study.conftest import gold_answer, through_the_gate
from tests.study.test_outcomes import PROLIFIC_URL, stored

pytestmark = [pytest.mark.browser, pytest.mark.slow]

FLIP = {"left": "right", "right": "left"}


@pytest.mark.parametrize(
    ("attentive", "outcome", "code"),
    [(True, "completed", "DONE123"), (False, "failed_attention", "FAIL456")],
    ids=["completed", "failed-attention"],
)
def test_the_end_page_shows_the_outcomes_code_and_returns_to_prolific(
    browser, server, make_study, app, artifacts_dir, attentive, outcome, code
):
    study = make_study(attention={"broken": 1, "repeat": 1, "max_failures": 0})
    pid = f"PIDend-{outcome}"
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.route(
        "https://app.prolific.com/**",
        lambda route: route.fulfill(status=200, content_type="text/html", body="<p>Prolific</p>"),
    )
    page.goto(f"{server}/s/{study.key}?PROLIFIC_PID={pid}&STUDY_ID=st&SESSION_ID=se")
    through_the_gate(page)
    answered = 0
    while "/trials" in page.url:
        try:
            page.wait_for_selector("#trial-app:not(.busy)[data-trial]", timeout=30_000)
        except Exception:
            if "/trials" not in page.url:
                break
            raise
        trial_id = page.get_attribute("#trial-app", "data-trial")
        expected = gold_answer(app, trial_id)
        side = "left" if expected is None else (expected if attentive else FLIP[expected])
        page.keyboard.press("ArrowLeft" if side == "left" else "ArrowRight")
        answered += 1
        page.wait_for_function(
            "id => !location.pathname.endsWith('/trials') || "
            "document.getElementById('trial-app').getAttribute('data-trial') !== id",
            arg=trial_id,
        )
    page.wait_for_url(re.compile(r"/end$"))
    assert page.inner_text("#completion-code") == code
    assert page.get_attribute("#completion-link", "href") == PROLIFIC_URL + code
    page.screenshot(path=str(artifacts_dir / f"study-end-{outcome}.png"), full_page=True)
    page.wait_for_url(PROLIFIC_URL + code, timeout=30_000)
    assert stored(app, study.key, pid) == ("end", outcome, code, answered)
    if attentive:
        assert answered == 9
    else:
        assert gold_answer(app, trial_id) is not None  # the last answer was the failed gold one
    context.close()
