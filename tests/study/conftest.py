"""Study fixtures: real SQLite and real PostgreSQL (a fresh schema per test session), small
PNG stimuli made with PIL, studies imported through the real importer, participants driven
through the real HTTP endpoints (Flask's test client, or a real server)."""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest
from PIL import Image

from hprune.contracts.manifest import ManifestRow, sha256_file, write_manifest

T = TypeVar("T")
PG_BASE = os.environ.get("HPRUNE_TEST_POSTGRES", "postgresql+psycopg://root@127.0.0.1:5432/test")
VARIANTS = ["bk-sdm", "hpp-20", "koala", "original"]
PROMPTS = [f"p{i:02d}" for i in range(6)]


def make_stimuli(folder: Path, variants=VARIANTS, prompts=PROMPTS, seeds=(0,), size=24) -> Path:
    """A stimuli folder: one small PNG per (variant, prompt, seed), no metadata, + manifest.csv."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for v, variant in enumerate(variants):
        for p, prompt_id in enumerate(prompts):
            for seed in seeds:
                rng = np.random.default_rng([v, p, seed])
                pixels = rng.integers(0, 255, size=(size, size, 3), dtype=np.uint8)
                pixels[: size // 2] = (40 * v % 255, 30 * p % 255, 200)
                file = f"images/{variant}__{prompt_id}__s{seed}.png"
                Image.fromarray(pixels).save(folder / file, format="PNG")
                rows.append(
                    ManifestRow(
                        image_id=secrets.token_hex(6),
                        file=file,
                        sha256=sha256_file(folder / file),
                        variant=variant,
                        prompt_id=prompt_id,
                        prompt=f"a picture number {p} of shapes",
                        category="test",
                        seed=seed,
                        width=size,
                        height=size,
                        steps=2,
                        guidance=1.0,
                        model_fingerprint=f"fp-{variant}",
                        created_at="2025-01-01T00:00:00Z",
                    )
                )
    write_manifest(folder, rows)
    return folder


@pytest.fixture(scope="session")
def stimuli_dir(tmp_path_factory) -> Path:
    return make_stimuli(tmp_path_factory.mktemp("stimuli"))


@contextlib.contextmanager
def postgres_schema() -> Iterator[str]:
    """A database URL whose search_path is a fresh schema, dropped afterwards."""
    from sqlalchemy import create_engine, text

    schema = f"hprune_test_{secrets.token_hex(5)}"
    admin = create_engine(PG_BASE, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:  # pragma: no cover - the environment lacks the server
        pytest.fail(f"PostgreSQL at {PG_BASE} is not reachable: {exc}")
    try:
        yield f"{PG_BASE}?options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(
    scope="session", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def db_url(request, tmp_path_factory) -> Iterator[str]:
    """A migrated database, one per backend and test session."""
    from study.db import upgrade

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'study.sqlite3'}"
        upgrade(url)
        yield url
        return
    with postgres_schema() as url:
        upgrade(url)
        yield url


#: The test app's ``RANDOM_SEED``: every participant's trials follow from it and their entry id
#: (``study.flow.identity.order_seed``), so a failing session can be replayed.
RANDOM_SEED = 20261204


@pytest.fixture(scope="session")
def instance_dir(tmp_path_factory) -> Path:
    """The study tests' instance folder (``HPRUNE_INSTANCE`` during each study test only)."""
    return tmp_path_factory.mktemp("instance")


@pytest.fixture(autouse=True)
def _instance_env(instance_dir, monkeypatch) -> None:
    """``HPRUNE_INSTANCE`` names the tests' instance folder during each study test, and is
    restored afterwards: no command run in-process touches the checkout's own instance."""
    monkeypatch.setenv("HPRUNE_INSTANCE", str(instance_dir))


@pytest.fixture(scope="session")
def app(db_url, instance_dir, tmp_path_factory):
    from study.app import create_app

    with pytest.MonkeyPatch.context() as env:
        env.setenv("HPRUNE_INSTANCE", str(instance_dir))
        app = create_app(
            {
                "TESTING": True,
                "DATABASE_URL": db_url,
                "MEDIA_DIR": str(tmp_path_factory.mktemp("media")),
                "SECRET_KEY": "test-secret",
                "RANDOM_SEED": RANDOM_SEED,
            }
        )
    yield app
    app.extensions["hprune_db"].dispose()


BASE_SPEC = {
    "title": "Which image is better?",
    "kind": "pair",
    "tie": True,
    "criteria": [{"name": "quality", "question": "Which image looks better?"}],
    "trials_per_criterion": 6,
    "practice_trials": 1,
    "attention": {"broken": 1, "repeat": 1, "max_failures": 0},
    "min_viewport": {"width": 800, "height": 500},
    "time_limit_minutes": 60,
    "consent": {"version": "c1", "text": "You agree to look at images."},
    "instructions": {"version": "i1", "text": "Pick the better image."},
    "completion_codes": {
        "completed": "DONE123",
        "failed_attention": "FAIL456",
        "timed_out": "LATE789",
    },
    "completion_url": "https://app.prolific.com/submissions/complete?cc={code}",
}


@dataclass
class StudyHandle:
    name: str
    key: str
    spec: dict = field(default_factory=dict)


def import_spec(app, stimuli: Path, **overrides) -> StudyHandle:
    """Import a study with a fresh unique name through the real importer."""
    from study.importer import import_study
    from study.spec import parse_spec

    spec = {**BASE_SPEC, "name": f"study-{secrets.token_hex(4)}", **overrides}
    result = import_study(
        app.extensions["hprune_db"],
        stimuli,
        parse_spec(spec),
        app.config["MEDIA_DIR"],
        progress=False,
    )
    return StudyHandle(result.study_name, result.public_key, spec)


@pytest.fixture
def make_study(app, stimuli_dir):
    return lambda **overrides: import_spec(app, stimuli_dir, **overrides)


class Participant:
    """A participant driven through the real endpoints with Flask's test client."""

    def __init__(self, client, key: str) -> None:
        self.client, self.key = client, key
        self.csrf: str | None = None

    def enter(self, **params) -> object:
        response = self.client.get(f"/s/{self.key}", query_string=params)
        if response.status_code == 303:
            self.csrf = self.client.get(f"/api/s/{self.key}/session").get_json()["csrf_token"]
        return response

    def post(self, path: str, **data):
        return self.client.post(
            f"/s/{self.key}/{path}", data=data, headers={"X-CSRFToken": self.csrf}
        )

    def consent(self, width=1280, height=900, decision="agree", **params) -> None:
        """Arrive (``params``: the link's query), pass the screen check, answer the consent
        page: the participant exists from here on."""
        self.enter(**params)
        response = self.post("check", width=width, height=height, touch=0)
        assert response.status_code == 303, response.get_data(as_text=True)
        assert self.post("consent", decision=decision).status_code == 303

    def start(self, pid: str | None = None, width=1280, height=900) -> dict:
        """Screen check, consent and instructions, in that order; the first trial."""
        ids = {"PROLIFIC_PID": pid, "STUDY_ID": "s", "SESSION_ID": "x"} if pid else {}
        self.consent(width, height, **ids)
        assert self.post("instructions").status_code == 303
        return self.trial()

    def trial(self) -> dict:
        return self.client.get(f"/api/s/{self.key}/trial").get_json()

    def answer(self, trial_id: str, **fields):
        body = {"trial": trial_id, "rt_ms": 500.0, **fields}
        return self.client.post(
            f"/api/s/{self.key}/answer", json=body, headers={"X-CSRFToken": self.csrf}
        )


def answer_for(trial: dict, rng: np.random.Generator) -> dict:
    if trial["kind"] == "pair":
        return {"choice": ["left", "right"][int(rng.integers(2))]}
    return {"rating": int(rng.integers(1, 6))}


def gold_answer(app, trial_id: str) -> str | None:
    """The stored expectation of a gold trial ("left", "right" or "<=2"), None for others."""
    from sqlalchemy import select

    from study.models import Trial

    with app.extensions["hprune_db"].read() as db:
        return db.scalar(select(Trial.expected).where(Trial.public_id == trial_id))


def attentive(app, rng=None, *, correct: bool = True):
    """A pick that answers gold trials as an attentive person would (the stored expectation,
    which a person reads off the images), or with ``correct`` False exactly wrongly, and every
    other trial at random."""
    rng = rng or np.random.default_rng(0)

    def pick(trial: dict) -> dict:
        expected = gold_answer(app, trial["id"])
        if expected == "<=2":  # a broken image to rate
            return {"rating": 1 if correct else 5}
        if expected is None:
            return answer_for(trial, rng)
        return {"choice": expected if correct else {"left": "right", "right": "left"}[expected]}

    return pick


def run_through(p: Participant, body: dict, rng=None, pick=None) -> dict:
    """Answer every trial until the end; returns the final body."""
    rng = rng or np.random.default_rng(0)
    while body["phase"] == "trials":
        trial = body["trial"]
        fields = pick(trial) if pick else answer_for(trial, rng)
        response = p.answer(trial["id"], **fields)
        assert response.status_code == 200, response.get_data(as_text=True)
        body = response.get_json()
    return body


@pytest.fixture
def participant(app, make_study):
    def factory(key: str | None = None, **overrides) -> tuple[Participant, StudyHandle | None]:
        handle = None
        if key is None:
            handle = make_study(**overrides)
            key = handle.key
        return Participant(app.test_client(), key), handle

    return factory


def run_cli(*args: str):
    """``hprune`` in-process; the environment variables the study group sets are restored."""
    from click.testing import CliRunner

    from hprune.cli import main

    keep = {k: os.environ.get(k) for k in ("DATABASE_URL", "HPRUNE_INSTANCE")}
    return CliRunner().invoke(main, list(args), env=keep)


def free_port() -> int:
    """A port free a moment ago: another process may take it before a server binds it, so a
    server in a process of its own starts through :func:`on_a_free_port` (one in this process
    binds port 0 itself: :func:`serve_in_thread`)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PortTaken(Exception):
    """The server could not bind its port: another process took it first (a shared machine)."""


def on_a_free_port(start: Callable[[int], T], attempts: int = 5) -> tuple[int, T]:
    """``(port, start(port))`` for a free port, tried again on another one while ``start``
    raises :class:`PortTaken`."""
    for _ in range(attempts):
        port = free_port()
        try:
            return port, start(port)
        except PortTaken:
            continue
    raise AssertionError(f"no free port to serve on after {attempts} attempts")


@contextlib.contextmanager
def serve_in_thread(app) -> Iterator[str]:
    """The app on a real HTTP server (werkzeug, threaded) on a free loopback port."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)  # the port the system gives
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(5)


@pytest.fixture
def server(app):
    with serve_in_thread(app) as base:
        yield base


def through_the_gate(page) -> None:
    """From the study link's first page (the screen check) to the trials, in a browser."""
    import re

    page.get_by_role("button", name="Continue").click()  # screen check
    page.get_by_role("button", name="I agree to take part").click()
    page.get_by_role("button", name="Continue").click()  # instructions
    page.wait_for_url(re.compile(r"/trials$"))


def person(key: str, external_id: str):
    """The WHERE clause for one participant of one study: the test database is shared by the
    whole session, so an external id alone may name participants of other tests' studies."""
    from sqlalchemy import select

    from study.models import Participant as Person
    from study.models import Study

    study_id = select(Study.id).where(Study.public_key == key).scalar_subquery()
    return (Person.external_id == external_id) & (Person.study_id == study_id)


def answers_of(app, key: str, external_id: str) -> list:
    """The participant's answers, in order: (choice, rating, rt_ms, server_ms, load_ms,
    the trial's min_display_ms)."""
    from sqlalchemy import select

    from study.models import Answer, Trial
    from study.models import Participant as Person

    with app.extensions["hprune_db"].read() as s:
        return s.execute(
            select(
                Answer.choice, Answer.rating, Answer.rt_ms, Answer.server_ms, Answer.load_ms,
                Trial.min_display_ms,
            )
            .join(Trial, Trial.id == Answer.trial_id)
            .join(Person, Person.id == Answer.participant_id)
            .where(person(key, external_id))
            .order_by(Trial.position)
        ).all()  # fmt: skip


def png_bytes(size=8) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), (1, 2, 3)).save(out, format="PNG")
    return out.getvalue()
