"""Every way a session ends, asserted exactly: the response that ends it and where it sends the
participant, the end page's code and its link back to Prolific, and what is stored, for a
Prolific participant (the spec's code as it is) and a lab one (the code with a suffix of their
own), on SQLite and PostgreSQL. The browser half is in ``test_browser_outcomes.py``."""

from __future__ import annotations

import html
import re
from datetime import timedelta

import pytest
from sqlalchemy import select

from study.models import Answer, Participant, Study, utcnow
from tests.study.conftest import Participant as Client
from tests.study.conftest import attentive, gold_answer

PROLIFIC_URL = "https://app.prolific.com/submissions/complete?cc="
CODES = {"completed": "DONE123", "failed_attention": "FAIL456", "timed_out": "LATE789"}
HEADINGS = {
    "completed": "Thank you!",
    "failed_attention": "The study has ended",
    "timed_out": "The study has ended",
    "declined": "You did not agree to take part",
}
ARRIVALS = {
    "prolific": {"PROLIFIC_PID": "PID-out", "STUDY_ID": "st", "SESSION_ID": "se"},
    "lab": {"id": "lab-out"},
}
STORED_ID = {"prolific": "PID-out", "lab": "lab:lab-out"}


def end_page(p: Client, key: str) -> dict:
    """What the end page shows: its heading, the code and the link back (None if absent)."""
    response = p.client.get(f"/s/{key}/end")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    code = re.search(r'id="completion-code"[^>]*>([^<]*)<', page)
    link = re.search(r'id="completion-link"[^>]*href="([^"]*)"', page)
    return {
        "heading": html.unescape(re.search(r"<h1>(.*?)</h1>", page, re.S)[1]),
        "code": code[1] if code else None,
        "link": html.unescape(link[1]) if link else None,
        "redirects": "end.js" in page,
    }


def stored(app, key: str, external_id: str) -> tuple:
    """(phase, outcome, completion code, answers) of the participant."""
    with app.extensions["hprune_db"].read() as s:
        person = s.scalar(
            select(Participant)
            .join(Study)
            .where(Study.public_key == key, Participant.external_id == external_id)
        )
        if person is None:
            return None
        n = len(s.scalars(select(Answer.id).where(Answer.participant_id == person.id)).all())
        return person.phase, person.outcome, person.completion_code, n


def expected_code(outcome: str, source: str) -> str:
    """The spec's code for a Prolific participant; with a suffix of their own otherwise."""
    code = CODES[outcome]
    return code if source == "prolific" else rf"{code}-[0-9A-F]{{8}}"


def begin(participant, source: str, **spec) -> tuple[Client, object, dict]:
    p, study = participant(**spec)
    p.consent(**ARRIVALS[source])
    assert p.post("instructions").status_code == 303
    return p, study, p.trial()


def play(p: Client, body: dict, pick) -> tuple[dict, list[str]]:
    """Answer until the session ends: the last response's body and the trials answered."""
    answered = []
    while body["phase"] == "trials":
        answered.append(body["trial"]["id"])
        response = p.answer(body["trial"]["id"], **pick(body["trial"]))
        assert response.status_code == 200, response.get_data(as_text=True)
        body = response.get_json()
    return body, answered


def assert_ended(p, app, study, source: str, outcome: str, answered: int) -> None:
    page = end_page(p, study.key)
    assert page["heading"] == HEADINGS[outcome]
    assert re.fullmatch(expected_code(outcome, source), page["code"]), page
    assert page["link"] == PROLIFIC_URL + page["code"] and page["redirects"]
    external = STORED_ID[source]
    assert stored(app, study.key, external) == ("end", outcome, page["code"], answered)
    again = end_page(p, study.key)  # the same code every time the page is opened
    assert again["code"] == page["code"]


@pytest.mark.parametrize("source", ["prolific", "lab"])
def test_completed(participant, app, source):
    p, study, body = begin(participant, source)
    final, answered = play(p, body, attentive(app))
    assert final["phase"] == "end" and final["redirect"] == f"/s/{study.key}/end"
    assert len(answered) == 9  # 1 practice + 6 main + 1 gold + 1 repeat
    assert_ended(p, app, study, source, "completed", 9)


@pytest.mark.parametrize("source", ["prolific", "lab"])
def test_failed_attention_ends_at_the_first_failed_gold_trial(participant, app, source):
    p, study, body = begin(participant, source)
    final, answered = play(p, body, attentive(app, correct=False))
    assert final["phase"] == "end" and final["redirect"] == f"/s/{study.key}/end"
    gold = [gold_answer(app, trial_id) is not None for trial_id in answered]
    assert gold.index(True) == len(answered) - 1  # the gold trial answered wrongly was the last
    assert_ended(p, app, study, source, "failed_attention", len(answered))
    assert p.client.get(f"/s/{study.key}/trials").location == f"/s/{study.key}/end"


@pytest.mark.parametrize("source", ["prolific", "lab"])
def test_timed_out(participant, app, source):
    p, study, body = begin(participant, source)
    first = p.answer(body["trial"]["id"], choice="left")
    assert first.status_code == 200
    with app.extensions["hprune_db"].write() as s:
        person = s.scalar(
            select(Participant).where(Participant.external_id == STORED_ID[source]).join(Study)
            .where(Study.public_key == study.key)
        )  # fmt: skip
        person.deadline_at = utcnow() - timedelta(seconds=1)
    late = p.answer(first.get_json()["trial"]["id"], choice="left")
    assert late.status_code == 410
    assert late.get_json() == {
        "error": "The time limit for this study has passed.",
        "redirect": f"/s/{study.key}/end",
    }
    assert_ended(p, app, study, source, "timed_out", 1)


@pytest.mark.parametrize("source", ["prolific", "lab"])
def test_declined_consent_gets_no_code(participant, app, source):
    p, study = participant()
    p.enter(**ARRIVALS[source])
    assert p.post("check", width=1280, height=900, touch=0).status_code == 303
    response = p.post("consent", decision="decline")
    assert (response.status_code, response.location) == (303, f"/s/{study.key}/end")
    page = end_page(p, study.key)
    assert page == {
        "heading": HEADINGS["declined"], "code": None, "link": None, "redirects": False
    }  # fmt: skip
    assert stored(app, study.key, STORED_ID[source]) == ("declined", "declined", None, 0)
    assert p.client.get(f"/s/{study.key}/trials").location == f"/s/{study.key}/end"


@pytest.mark.parametrize("source", ["prolific", "lab"])
def test_a_refused_screen_stores_nobody_and_says_what_to_do(participant, app, source):
    p, study = participant(refuse_mobile=True)
    p.enter(**ARRIVALS[source])
    for form, reason in (
        ({"width": 700, "height": 400, "touch": 0}, "window is too small (700x400)"),
        ({"width": 1280, "height": 900, "touch": 1}, "cannot be done on a phone or tablet"),
    ):
        response = p.post("check", **form)
        assert response.status_code == 403
        page = response.get_data(as_text=True)
        assert reason in page and "completion-code" not in page
        advice = re.search(r'id="return-advice">(.*?)</p>', page, re.S)[1]
        if source == "prolific":
            assert "return the study on" in advice and "Cancel participation" in advice
        else:
            assert (
                advice
                == "If you cannot take part on a suitable screen, you may simply close this page."
            )
        assert stored(app, study.key, STORED_ID[source]) is None
    # the same browser, a suitable window: on to consent
    response = p.post("check", width=1280, height=900, touch=0)
    assert (response.status_code, response.location) == (303, f"/s/{study.key}/consent")


def test_without_a_completion_url_the_code_is_shown_and_nobody_is_sent_on(participant, app):
    p, study, body = begin(participant, "prolific", completion_url=None)
    play(p, body, attentive(app))
    page = end_page(p, study.key)
    assert page == {"heading": "Thank you!", "code": "DONE123", "link": None, "redirects": False}
