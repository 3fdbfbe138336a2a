"""The participant's pages in real Chromium (Debian's, driven by playwright) against a real
HTTP server: the whole Prolific flow, keyboard and mouse answers, resume, screen refusal."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from study.models import Answer, Participant, Study
from tests.study.conftest import person, through_the_gate

pytestmark = [pytest.mark.browser, pytest.mark.slow]

MOBILE_UA = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
)


def _shot(page, artifacts_dir, name):
    page.screenshot(path=str(artifacts_dir / f"study-{name}.png"), full_page=True)


def _ready(page):
    page.wait_for_selector("#trial-app:not(.busy)", timeout=30_000)
    return page.get_attribute("#img-left", "src"), page.get_attribute("#img-right", "src")


def _answer(page, k: int) -> None:
    """Alternate between the keyboard and clicking the images."""
    if k % 3 == 0:
        page.keyboard.press("ArrowLeft")
    elif k % 3 == 1:
        page.click("#choose-right")
    else:
        page.keyboard.press("ArrowDown")  # no preference


def test_prolific_link_to_completion_redirect(browser, server, make_study, app, artifacts_dir):
    study = make_study(attention={"broken": 1, "repeat": 1, "max_failures": 5})
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.route(
        "https://app.prolific.com/**",
        lambda route: route.fulfill(status=200, content_type="text/html", body="<p>Prolific</p>"),
    )
    page.goto(f"{server}/s/{study.key}?PROLIFIC_PID=PIDbrowser&STUDY_ID=st&SESSION_ID=se")
    _shot(page, artifacts_dir, "consent")
    through_the_gate(page)
    k = 0
    while "/trials" in page.url:
        try:
            _ready(page)
        except Exception:
            if "/trials" not in page.url:
                break
            raise
        if k == 1:
            _shot(page, artifacts_dir, "trial")
            assert not page.is_visible("#img-single")  # a pair trial shows no rating image
            left = page.locator("#img-left").bounding_box()
            right = page.locator("#img-right").bounding_box()
            assert left["width"] == right["width"] > 200  # 24 px stimuli shown at the common size
        _answer(page, k)
        k += 1
        page.wait_for_function(
            "() => !document.getElementById('trial-app') || "
            "!document.getElementById('trial-app').classList.contains('busy') || "
            "!location.pathname.endsWith('/trials')"
        )
    page.wait_for_url(re.compile(r"/end$"))
    assert page.inner_text("#completion-code") == "DONE123"
    _shot(page, artifacts_dir, "end")
    page.wait_for_url("https://app.prolific.com/submissions/complete?cc=DONE123", timeout=30_000)
    with app.extensions["hprune_db"].read() as s:
        answers = s.execute(
            select(Answer.choice, Answer.rt_ms)
            .join(Participant)
            .join(Study)
            .where(Study.public_key == study.key)
        ).all()
    assert len(answers) == 9
    assert {c for c, _ in answers} == {"left", "right", "tie"}
    assert all(rt > 0 for _, rt in answers)
    context.close()


def test_closing_the_tab_or_the_browser_resumes_at_the_same_trial(browser, server, make_study):
    # Answers alternate sides: a gold trial answered wrong must not end the session here.
    study = make_study(attention={"broken": 1, "repeat": 1, "max_failures": 5})
    entry = f"{server}/s/{study.key}?PROLIFIC_PID=PIDresume&STUDY_ID=st&SESSION_ID=se"
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.goto(entry)
    through_the_gate(page)
    for k in range(3):
        _ready(page)
        before = page.inner_text("#progress-text")  # counts up from one trial to the next
        _answer(page, k)
        page.wait_for_function(
            "text => document.getElementById('progress-text').textContent !== text", arg=before
        )
    current = _ready(page)
    page.close()
    again = context.new_page()  # same browser, tab reopened from history
    again.goto(f"{server}/s/{study.key}/trials")
    assert _ready(again) == current
    context.close()
    fresh = browser.new_context(viewport={"width": 1280, "height": 860})  # another browser
    page = fresh.new_page()
    page.goto(entry)
    page.wait_for_url(re.compile(r"/trials$"))
    assert _ready(page) == current
    fresh.close()


def _participants(app, key: str, external_id: str) -> int:
    with app.extensions["hprune_db"].read() as s:
        return len(s.scalars(select(Participant).where(person(key, external_id))).all())


def test_small_windows_and_phones_are_refused_before_consent(
    browser, server, make_study, app, artifacts_dir
):
    study = make_study(refuse_mobile=True, min_viewport={"width": 1000, "height": 600})
    context = browser.new_context(viewport={"width": 700, "height": 500})
    page = context.new_page()
    page.goto(f"{server}/s/{study.key}?PROLIFIC_PID=PIDsmall&STUDY_ID=st&SESSION_ID=se")
    assert not page.get_by_role("button", name="I agree to take part").count()
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.get_by_role("button", name="Continue").click()
    assert posted.value.status == 403
    assert "window is too small (700x500)" in page.inner_text("main")
    advice = page.inner_text("#return-advice")
    assert "return the study on Prolific" in advice and "Cancel participation" in advice
    assert _participants(app, study.key, "PIDsmall") == 0  # refused before consent: nothing stored
    _shot(page, artifacts_dir, "refused-viewport")
    page.set_viewport_size({"width": 1200, "height": 800})
    page.get_by_role("link", name="Try again").click()
    page.get_by_role("button", name="Continue").click()
    page.get_by_role("button", name="I agree to take part").click()
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url(re.compile(r"/trials$"))
    assert _participants(app, study.key, "PIDsmall") == 1
    context.close()

    phone = browser.new_context(
        viewport={"width": 1200, "height": 800}, user_agent=MOBILE_UA, has_touch=True
    )
    page = phone.new_page()
    page.goto(f"{server}/s/{study.key}?PROLIFIC_PID=PIDphone&STUDY_ID=st&SESSION_ID=se")
    page.get_by_role("button", name="Continue").click()
    assert "cannot be done on a phone or tablet" in page.inner_text("main")
    assert "return the study on Prolific" in page.inner_text("#return-advice")
    assert _participants(app, study.key, "PIDphone") == 0
    phone.close()
