"""Admin login and dashboard, the responses export, and the other kinds of study."""

from __future__ import annotations

import io
import re
import zipfile

import pandas as pd
import pytest

from hprune.commands.analyze import read_responses
from hprune.contracts.responses import COLUMNS
from study.admins import set_admin_password
from study.app import create_app
from study.export import EXPORT_FILES_ALL, export_participants, export_responses, write_export
from tests.study.conftest import VARIANTS, attentive, run_cli, run_through
from tests.study.conftest import Participant as Client


def _csrf(html: str) -> str:
    return re.search(r'name="csrf-token" content="([^"]+)"', html).group(1)


@pytest.fixture
def admin_client(app):
    import secrets

    name = f"admin-{secrets.token_hex(3)}"
    set_admin_password(app.extensions["hprune_db"], name, "correct horse battery")
    client = app.test_client()
    page = client.get("/admin/login").get_data(as_text=True)
    wrong = client.post(
        "/admin/login",
        data={"username": name, "password": "wrong password!", "csrf_token": _csrf(page)},
    )
    assert wrong.status_code == 401 and "Wrong user name or password" in wrong.get_data(
        as_text=True
    )
    ok = client.post(
        "/admin/login",
        data={"username": name, "password": "correct horse battery", "csrf_token": _csrf(page)},
    )
    assert ok.status_code == 303
    cookie = ok.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    return client


def test_dashboard_needs_login_and_shows_progress_coverage_attention_and_scores(
    app, make_study, admin_client
):
    assert app.test_client().get("/admin/").status_code == 303
    study = make_study()
    for i in range(3):
        p = Client(app.test_client(), study.key)
        run_through(p, p.start(pid=f"PIDadm{i}"))
    Client(app.test_client(), study.key).consent(
        PROLIFIC_PID="PIDadm-idle", STUDY_ID="s", SESSION_ID="x"
    )
    listing = admin_client.get("/admin/").get_data(as_text=True)
    study_id = re.search(rf'href="/admin/study/(\d+)">{study.name}<', listing).group(1)
    page = admin_client.get(f"/admin/study/{study_id}").get_data(as_text=True)
    assert "Live scores" in page and "original" in page and "attention" in page.lower()
    assert re.search(r"<th>arrived</th><td>4</td>", page)
    assert "bk-sdm vs hpp-20" in page  # coverage per pair
    people = export_participants(app.config["DATABASE_URL"], study.name)
    for row in people.itertuples():  # both ids of everyone: pseudonym and Prolific ID
        assert re.search(rf"<code>{row.participant}</code></td><td>{row.prolific_pid}<", page)
    archive = admin_client.get(f"/admin/study/{study_id}/export.zip")
    assert archive.status_code == 200 and archive.mimetype == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(archive.data)).namelist()
    assert sorted(n.split("/")[1] for n in names) == sorted(EXPORT_FILES_ALL)
    assert {n.split("/")[0] for n in names} == {study.name}


def test_export_follows_the_contract_and_analysis_reads_it(app, make_study, tmp_path):
    study = make_study(attention={"broken": 1, "repeat": 1, "max_failures": 1})
    for i in range(2):
        p = Client(app.test_client(), study.key)
        run_through(p, p.start(pid=f"PIDexp{i}"))
    url = app.config["DATABASE_URL"]
    frame = export_responses(url, study=study.name)
    assert list(frame.columns) == COLUMNS
    assert len(frame) == 2 * 9
    assert set(frame["kind"]) == {"pair", "attention", "practice"}
    assert frame["left_variant"].notna().all() and frame["choice"].notna().all()
    assert (frame["answered_at"] >= frame["shown_at"]).all()
    paths = write_export(url, tmp_path / "out", study=study.name)
    from_csv = pd.read_csv(paths["responses.csv"])
    from_parquet = pd.read_parquet(paths["responses.parquet"])
    assert list(from_csv.columns) == COLUMNS and len(from_parquet) == len(frame)
    assert read_responses(url, study=study.name)["participant"].nunique() == 2
    result = run_cli(
        "study", "--db", url, "export", "--study", "nope", "--out", str(tmp_path / "x")
    )
    assert result.exit_code == 2 and "no study named 'nope'" in result.output


def test_rating_study_with_two_criteria_and_active_pairs(app, make_study):
    mos = make_study(
        kind="rating",
        tie=False,
        criteria=[
            {"name": "quality", "question": "How good is the image?"},
            {"name": "alignment", "question": "How well does it match?", "show_prompt": True},
        ],
        trials_per_criterion=3,
        attention={"broken": 1, "repeat": 1, "max_failures": 5},
    )
    p = Client(app.test_client(), mos.key)
    body = p.start(pid="PIDmos")
    assert body["trial"]["kind"] == "rating" and body["trial"]["scale"]["max"] == 5
    bad = p.answer(body["trial"]["id"], choice="left")
    assert bad.status_code == 400
    final = run_through(p, body)
    assert final["phase"] == "end"
    frame = export_responses(app.extensions["hprune_db"], study=mos.name)
    main_rows = frame[frame["kind"] == "rating"]
    assert sorted(main_rows["criterion"].value_counts().to_dict().items()) == [
        ("alignment", 3),
        ("quality", 3),
    ]
    assert main_rows["right_image"].isna().all() and main_rows["rating"].between(1, 5).all()

    active = make_study(
        scheduler="active",
        scheduler_options={"warmup": 4},
        trials_per_criterion=5,
        attention={"broken": 1, "repeat": 1, "max_failures": 5},
    )
    for i in range(3):
        q = Client(app.test_client(), active.key)
        first = q.start(pid=f"PIDact{i}")
        run_through(q, first)
    frame = export_responses(app.extensions["hprune_db"], study=active.name)
    assert (frame["kind"] == "pair").sum() == 15


def test_production_refuses_to_start_without_a_secret_key(monkeypatch, tmp_path):
    monkeypatch.delenv("SECRET_KEY", raising=False)
    monkeypatch.setenv("HPRUNE_INSTANCE", str(tmp_path))
    with pytest.raises(RuntimeError, match="SECRET_KEY is not set"):
        create_app()


def test_login_is_rate_limited_per_address_and_per_user_name(app) -> None:
    import secrets
    from datetime import timedelta

    from sqlalchemy import update

    from study.admins import MAX_FAILURES_PER_ADDRESS, MAX_FAILURES_PER_USERNAME
    from study.models import LoginFailure

    name = f"limited-{secrets.token_hex(3)}"
    set_admin_password(app.extensions["hprune_db"], name, "correct horse battery")

    def attempt(address: str, password: str, username: str = name):
        client = app.test_client()
        client.environ_base["REMOTE_ADDR"] = address
        page = client.get("/admin/login").get_data(as_text=True)
        return client.post(
            "/admin/login",
            data={"username": username, "password": password, "csrf_token": _csrf(page)},
        )

    for _ in range(MAX_FAILURES_PER_ADDRESS):
        assert attempt("10.0.0.7", "wrong password!").status_code == 401
    refused = attempt("10.0.0.7", "correct horse battery")  # not even checked
    assert refused.status_code == 429 and 0 < int(refused.headers["Retry-After"]) <= 15 * 60
    assert "Too many failed logins" in refused.get_data(as_text=True)
    assert attempt("10.0.0.8", "correct horse battery").status_code == 303  # another address
    # The admin's success elsewhere does not give the guessing address its tries back.
    assert attempt("10.0.0.7", "correct horse battery").status_code == 429

    for k in range(MAX_FAILURES_PER_USERNAME):  # one name guessed from many addresses
        assert attempt(f"10.1.0.{k}", "wrong password!").status_code == 401
    assert attempt("10.1.0.0", "correct horse battery").status_code == 429  # a guesser's
    assert attempt("10.1.0.0", "x" * 12, username=f"{name}-other").status_code == 401
    # ... but an address that has not failed still gets in: nobody can lock the admin out.
    assert attempt("10.2.0.1", "correct horse battery").status_code == 303
    with app.extensions["hprune_db"].write() as db:  # a quarter of an hour later
        db.execute(update(LoginFailure).values(at=LoginFailure.at - timedelta(minutes=16)))
    assert attempt("10.1.0.0", "correct horse battery").status_code == 303
    assert attempt("10.0.0.7", "correct horse battery").status_code == 303


def test_a_rating_study_shows_live_mean_opinion_scores(app, make_study, admin_client):
    """Was: a MOS study's dashboard showed no live results (Bradley-Terry only)."""
    from analysis.mos import mos_table, rating_trials

    mos = make_study(kind="rating", tie=False, trials_per_criterion=4,
                     attention={"broken": 1, "repeat": 1, "max_failures": 5})  # fmt: skip
    for i in range(3):
        p = Client(app.test_client(), mos.key)
        run_through(p, p.start(pid=f"PIDlivemos{i}"), pick=attentive(app))
    listing = admin_client.get("/admin/").get_data(as_text=True)
    study_id = re.search(rf'href="/admin/study/(\d+)">{mos.name}<', listing).group(1)
    page = admin_client.get(f"/admin/study/{study_id}").get_data(as_text=True)
    assert "Live mean opinion scores" in page and "Live scores (Bradley-Terry" not in page
    frame = export_responses(app.config["DATABASE_URL"], study=mos.name)
    counted = frame[(frame["kind"] == "rating") & frame["passed_checks"]]  # as the scores
    expected = mos_table(rating_trials(counted))
    assert len(expected) == len(VARIANTS)
    for row in expected.itertuples():
        cells = rf"<td>{row.variant}</td><td>{row.mean:.2f}</td>\s*<td>"
        if row.n > 1:
            cells += rf"\[{row.ci_low:.2f}, {row.ci_high:.2f}\]"
        assert re.search(cells + rf".*?</td>\s*<td>{row.n}</td>", page), row.variant
