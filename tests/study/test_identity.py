"""Who may take over a participant's session: nobody is created by opening a link, and a
known id binds another browser only with proof (the same Prolific STUDY_ID and SESSION_ID, or
the resume secret); on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import func, select

from study.models import Participant, Study
from tests.study.conftest import Participant as Client
from tests.study.conftest import person

PROLIFIC = {"PROLIFIC_PID": "PID-owner", "STUDY_ID": "st-1", "SESSION_ID": "se-owner"}


def _people(app, key: str) -> int:
    with app.extensions["hprune_db"].read() as s:
        return s.scalar(
            select(func.count(Participant.id))
            .join(Study, Study.id == Participant.study_id)
            .where(Study.public_key == key)
        )


def _page_text(response) -> str:
    return response.get_data(as_text=True)


def test_opening_the_link_creates_nobody_until_consent(app, make_study):
    study = make_study()
    for _ in range(5):  # link previews, crawlers, a participant who looks and leaves
        assert app.test_client().get(f"/s/{study.key}").status_code == 303
        fresh = app.test_client()
        assert fresh.get(f"/s/{study.key}", query_string=PROLIFIC).status_code == 303
        assert fresh.get(f"/s/{study.key}/check").status_code == 200
    p = Client(app.test_client(), study.key)
    p.enter(**PROLIFIC)
    assert p.post("check", width=1280, height=900, touch=0).status_code == 303
    assert p.client.get(f"/s/{study.key}/consent").status_code == 200
    assert _people(app, study.key) == 0
    assert p.post("consent", decision="agree").status_code == 303
    assert _people(app, study.key) == 1


def test_consent_before_the_screen_check_goes_back_to_it(app, make_study):
    study = make_study()
    p = Client(app.test_client(), study.key)
    p.enter()
    response = p.client.get(f"/s/{study.key}/consent")
    assert response.status_code == 303 and response.location.endswith("/check")
    assert p.post("consent", decision="agree").location.endswith("/check")
    assert _people(app, study.key) == 0


def test_a_prolific_id_binds_another_browser_only_with_its_study_and_session_ids(app, make_study):
    study = make_study(attention={})
    owner = Client(app.test_client(), study.key)
    owner.consent(**PROLIFIC)
    assert owner.post("instructions").status_code == 303
    body = owner.trial()
    for wrong in ({"SESSION_ID": "se-guess"}, {"STUDY_ID": "st-2"}):
        thief = app.test_client()
        response = thief.get(f"/s/{study.key}", query_string={**PROLIFIC, **wrong})
        assert response.status_code == 403
        assert "already started this study in another session" in _page_text(response)
        assert thief.get(f"/api/s/{study.key}/trial").status_code == 403  # bound to nobody
    incomplete = app.test_client().get(
        f"/s/{study.key}", query_string={"PROLIFIC_PID": "PID-owner"}
    )
    assert incomplete.status_code == 400 and "STUDY_ID and SESSION_ID" in _page_text(incomplete)
    again = app.test_client()  # the owner, in another browser, from their own submission
    response = again.get(f"/s/{study.key}", query_string=PROLIFIC)
    assert response.status_code == 303 and response.location.endswith("/trials")
    assert again.get(f"/api/s/{study.key}/trial").get_json()["trial"]["id"] == body["trial"]["id"]
    assert _people(app, study.key) == 1


def test_a_lab_id_resumes_elsewhere_only_with_its_resume_link(app, make_study):
    study = make_study()
    lab = Client(app.test_client(), study.key)
    lab.consent(id="p01")
    page = _page_text(lab.client.get(f"/s/{study.key}/instructions"))
    link = re.search(r'<code id="resume-link">([^<]+)</code>', page).group(1).replace("&amp;", "&")
    query = {k: v[0] for k, v in parse_qs(urlsplit(link).query).items()}
    assert query["id"] == "p01" and len(query["resume"]) >= 24
    assert lab.post("instructions").status_code == 303
    body = lab.trial()
    same_browser = lab.client.get(f"/s/{study.key}", query_string={"id": "p01"})
    assert same_browser.status_code == 303 and same_browser.location.endswith("/trials")
    for guess in ({"id": "p01"}, {"id": "p01", "resume": "x" * 24}):
        response = app.test_client().get(f"/s/{study.key}", query_string=guess)
        assert response.status_code == 403 and "resume link" in _page_text(response)
    elsewhere = app.test_client()
    response = elsewhere.get(f"/s/{study.key}", query_string=query)
    assert response.status_code == 303 and response.location.endswith("/trials")
    assert (
        elsewhere.get(f"/api/s/{study.key}/trial").get_json()["trial"]["id"]
        == (body["trial"]["id"])
    )
    with app.extensions["hprune_db"].read() as s:
        stored = s.scalar(
            select(Participant.resume_hash)
            .join(Study, Study.id == Participant.study_id)
            .where(Study.public_key == study.key, Participant.external_id == "lab:p01")
        )
    assert stored and query["resume"] not in stored  # only a hash is kept


def test_an_anonymous_participant_resumes_with_the_resume_link_alone(app, make_study):
    study = make_study()
    anonymous = Client(app.test_client(), study.key)
    anonymous.consent()
    page = _page_text(anonymous.client.get(f"/s/{study.key}/instructions"))
    link = re.search(r'<code id="resume-link">([^<]+)</code>', page).group(1)
    resume = parse_qs(urlsplit(link).query)["resume"][0]
    elsewhere = app.test_client()
    response = elsewhere.get(f"/s/{study.key}", query_string={"resume": resume})
    assert response.status_code == 303 and response.location.endswith("/instructions")
    wrong = app.test_client().get(f"/s/{study.key}", query_string={"resume": "y" * 24})
    assert wrong.status_code == 403 and "not valid" in _page_text(wrong)
    assert _people(app, study.key) == 1


def test_a_link_for_someone_else_does_not_rebind_a_browser_in_a_session(app, make_study):
    # A link sent by a third party (a cross-site top-level navigation carries the cookie)
    # must not move a participant's browser into another session.
    study = make_study(attention={})
    other = Client(app.test_client(), study.key)
    other.consent(PROLIFIC_PID="PID-other", STUDY_ID="st-1", SESSION_ID="se-other")
    victim = Client(app.test_client(), study.key)
    body = victim.start(pid="PID-victim")
    for link in (
        {"PROLIFIC_PID": "PID-other", "STUDY_ID": "st-1", "SESSION_ID": "se-other"},
        {"PROLIFIC_PID": "PID-new", "STUDY_ID": "st-1", "SESSION_ID": "se-new"},
        {"id": "p99"},
    ):
        response = victim.client.get(f"/s/{study.key}", query_string=link)
        assert response.status_code == 409 and "already taking part" in _page_text(response)
        assert victim.trial()["trial"]["id"] == body["trial"]["id"]
    while body["phase"] == "trials":  # once the session is over, the browser is free again
        body = victim.answer(body["trial"]["id"], choice="left").get_json()
    response = victim.client.get(f"/s/{study.key}", query_string={"id": "p99"})
    assert response.status_code == 303 and response.location.endswith("/check")


def test_two_browsers_consenting_with_one_prolific_id_get_one_participant(app, make_study):
    study = make_study()
    first, second, impostor = (Client(app.test_client(), study.key) for _ in range(3))
    for p, ids in (
        (first, PROLIFIC),
        (second, PROLIFIC),
        (impostor, {**PROLIFIC, "SESSION_ID": "x"}),
    ):
        p.enter(**ids)
        assert p.post("check", width=1280, height=900, touch=0).status_code == 303
    assert first.post("consent", decision="agree").status_code == 303
    assert second.post("consent", decision="agree").status_code == 303  # the same person
    refused = impostor.post("consent", decision="agree")
    assert refused.status_code == 403
    assert impostor.client.get(f"/api/s/{study.key}/trial").status_code == 403
    assert _people(app, study.key) == 1
    assert second.client.get(f"/api/s/{study.key}/session").get_json()["phase"] == "instructions"


def test_ids_keys_and_tokens_with_a_trailing_newline_are_refused(app, make_study):
    study = make_study()
    client = app.test_client()
    for query in (
        {**PROLIFIC, "PROLIFIC_PID": "PID-owner\n"},
        {**PROLIFIC, "SESSION_ID": "se-owner\n"},
        {"id": "p01\n"},
        {"resume": "r" * 24 + "\n"},
    ):
        response = client.get(f"/s/{study.key}", query_string=query)
        assert response.status_code == 400 and "malformed" in _page_text(response)
    assert client.get(f"/s/{study.key}%0A").status_code == 404
    assert client.get(f"/i/{'A' * 22}%0A").status_code == 404
    p = Client(app.test_client(), study.key)
    body = p.start(pid="PID-newline")
    token = body["trial"]["images"]["left"].rsplit("/", 1)[1]
    assert p.client.get(f"/i/{token}%0A").status_code == 404
    assert p.answer(body["trial"]["id"] + "\n", choice="left").status_code == 404
    assert _people(app, study.key) == 1


def test_sessions_started_before_the_upgrade_finish_the_way_they_began(app, make_study, db_url):
    """Participants who arrived before 0004 (consent first, screen check last, trials without
    image tokens) keep going after the upgrade."""
    from alembic import command
    from sqlalchemy import update

    from study.db import alembic_config, upgrade
    from study.models import Trial

    study = make_study(attention={})
    running = Client(app.test_client(), study.key)
    body = running.start(pid="PID-upgrade")
    command.downgrade(alembic_config(db_url), "0003")  # trials lose their image tokens
    upgrade(db_url)  # ... and get new ones
    app.extensions["hprune_db"].engine.dispose()
    again = running.trial()
    assert again["trial"]["id"] == body["trial"]["id"]
    assert all(running.client.get(u).status_code == 200 for u in again["trial"]["images"].values())
    with app.extensions["hprune_db"].read() as s:
        assert s.scalar(select(func.count(Trial.id)).where(Trial.left_token.is_(None))) == 0

    legacy = Client(app.test_client(), study.key)  # as the old entry page created them
    legacy.consent(PROLIFIC_PID="PID-legacy", STUDY_ID="s", SESSION_ID="x")
    with app.extensions["hprune_db"].write() as s:
        s.execute(
            update(Participant)
            .where(person(study.key, "PID-legacy"))
            .values(phase="consent", consented_at=None, viewport_width=None, viewport_height=None)
        )
    assert legacy.client.get(f"/s/{study.key}/consent").status_code == 200
    assert legacy.post("consent", decision="agree").location.endswith("/instructions")
    assert legacy.post("instructions").location.endswith("/check")  # the check comes last
    assert legacy.post("check", width=1280, height=900, touch=0).location.endswith("/trials")
    assert legacy.trial()["phase"] == "trials"
