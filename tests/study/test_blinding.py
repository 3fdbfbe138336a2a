"""Blinding: nothing a participant can receive names a variant, model, file or path; left/right
is balanced per variant, and attention trials look like every other trial."""

from __future__ import annotations

import base64
import re
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import requests
from sqlalchemy import select
from sqlalchemy.orm import aliased

from hprune.contracts.manifest import METADATA_CHUNKS, png_chunk_types, read_manifest
from study.models import Participant, Stimulus, Study, Trial
from tests.study.conftest import Participant as Client
from tests.study.conftest import run_through, serve_in_thread


def _flask_cookie_payload(value: str) -> str:
    compressed = value.startswith(".")
    data = base64.urlsafe_b64decode(value.lstrip(".").split(".")[0] + "===")
    return (zlib.decompress(data) if compressed else data).decode()


class Crawler:
    """A participant's browser that keeps everything it receives."""

    def __init__(self, base: str) -> None:
        self.base, self.http = base, requests.Session()
        self.texts: list[str] = []
        self.images: list[bytes] = []
        self.seen: set[str] = set()

    def get(self, path: str, **kw) -> requests.Response:
        return self.keep(self.http.get(self.base + path if path.startswith("/") else path, **kw))

    def post(self, path: str, **kw) -> requests.Response:
        return self.keep(self.http.post(self.base + path, **kw))

    def keep(self, response: requests.Response) -> requests.Response:
        for r in [*response.history, response]:
            self.texts.append(r.url)
            self.texts.extend(f"{k}: {v}" for k, v in r.headers.items())
            for cookie in r.cookies:
                self.texts.append(f"{cookie.name}={cookie.value}")
                self.texts.append(_flask_cookie_payload(cookie.value))
            if r.headers.get("Content-Type", "").startswith("image/"):
                self.images.append(r.content)
            else:
                self.texts.append(r.text)
                self.follow_assets(r.text)
        return response

    def follow_assets(self, html: str) -> None:
        for path in re.findall(r'(?:src|href)="(/static/[^"]+)"', html):
            if path not in self.seen:
                self.seen.add(path)
                self.get(path)


def test_nothing_a_participant_receives_names_a_variant_model_or_file(app, make_study, stimuli_dir):
    study = make_study(
        attention={"broken": 2, "repeat": 2, "max_failures": 5},
        criteria=[
            {"name": "alignment", "question": "Which matches the text?", "show_prompt": True}
        ],
    )
    rows = read_manifest(stimuli_dir)
    forbidden = {study.name, "attention-broken", str(stimuli_dir), app.config["MEDIA_DIR"]}
    for r in rows:
        forbidden |= {r.variant, r.image_id, r.model_fingerprint, r.file, Path(r.file).name}
    trial_shapes = set()
    with serve_in_thread(app) as base:
        c = Crawler(base)
        c.get(
            f"/s/{study.key}",
            params={"PROLIFIC_PID": "PIDcrawl", "STUDY_ID": "s1", "SESSION_ID": "x"},
        )
        token = c.get(f"/api/s/{study.key}/session").json()["csrf_token"]
        h = {"X-CSRFToken": token}
        c.post(f"/s/{study.key}/check", data={"width": 300, "height": 200, "touch": 0}, headers=h)
        c.post(f"/s/{study.key}/check", data={"width": 1300, "height": 900, "touch": 0}, headers=h)
        c.post(f"/s/{study.key}/consent", data={"decision": "agree"}, headers=h)
        c.post(f"/s/{study.key}/instructions", headers=h)
        body = c.get(f"/api/s/{study.key}/trial").json()
        # some errors on the way: they too must say nothing
        c.post(
            f"/api/s/{study.key}/answer",
            json={"trial": "forged", "choice": "left", "rt_ms": 1},
            headers=h,
        )
        c.post(
            f"/api/s/{study.key}/answer",
            json={"trial": body["trial"]["id"], "choice": "up", "rt_ms": 1},
            headers=h,
        )
        c.get("/i/AAAAAAAAAAAAAAAAAAAAAAAA")
        c.get(f"/s/{study.key}/nothing-here")
        rng = np.random.default_rng(3)
        while body["phase"] == "trials":
            trial = body["trial"]
            trial_shapes.add((tuple(sorted(trial)), tuple(sorted(trial["images"]))))
            for url in [*trial["images"].values(), *body["preload"]]:
                c.get(url)
            choice = ["left", "right"][int(rng.integers(2))]
            body = c.post(
                f"/api/s/{study.key}/answer",
                json={"trial": trial["id"], "choice": choice, "rt_ms": 700},
                headers=h,
            ).json()
        c.get(body["redirect"])
        c.get("/")

    assert len(c.images) >= 20 and len(c.texts) > 100
    blob = "\n".join(c.texts)
    leaks = sorted(word for word in forbidden if word and word in blob)
    assert leaks == [], f"participant-visible text names {leaks}"
    for data in c.images:
        assert not METADATA_CHUNKS & set(png_chunk_types(data))
        assert not [w for w in forbidden if w and w.encode() in data]
    assert len(trial_shapes) == 1, "attention/practice trials are distinguishable"


def test_left_right_balance_within_two_points_over_a_simulated_study(app, make_study):
    study = make_study(trials_per_criterion=8, practice_trials=0, attention={})
    rng = np.random.default_rng(7)
    for i in range(48):
        p = Client(app.test_client(), study.key)
        run_through(p, p.start(pid=f"PIDbal{i:03d}"), rng=rng)
    db = app.extensions["hprune_db"]
    left, right = aliased(Stimulus), aliased(Stimulus)
    with db.read() as s:
        rows = s.execute(
            select(left.variant, right.variant)
            .select_from(Trial)
            .join(Participant, Participant.id == Trial.participant_id)
            .join(Study, Study.id == Participant.study_id)
            .join(left, left.id == Trial.left_id)
            .join(right, right.id == Trial.right_id)
            .where(Study.public_key == study.key, Trial.kind == "pair")
        ).all()
    assert len(rows) == 48 * 8
    on_left, shown = Counter(lv for lv, _ in rows), Counter()
    pairs = Counter(tuple(sorted(r)) for r in rows)
    for lv, rv in rows:
        shown[lv] += 1
        shown[rv] += 1
    shares = {v: on_left[v] / shown[v] for v in shown}
    assert all(abs(share - 0.5) <= 0.02 for share in shares.values()), shares
    assert max(pairs.values()) - min(pairs.values()) <= 1, pairs  # balanced pair coverage
