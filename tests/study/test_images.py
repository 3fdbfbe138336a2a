"""Images: per-trial tokens, opaque ETags, a year of caching, nothing about the file."""

from __future__ import annotations

import hashlib

from sqlalchemy import select

from hprune.contracts.manifest import read_manifest
from study.models import Stimulus, Trial


def _first_image(participant):
    p, _ = participant()
    body = p.start(pid="PID-img")
    return p, body["trial"]["images"]["left"]


def test_image_headers_cache_and_conditional_requests(participant, stimuli_dir):
    p, url = _first_image(participant)
    response = p.client.get(url)
    assert response.status_code == 200 and response.mimetype == "image/png"
    etag = response.headers["ETag"]
    assert etag.startswith('"') and len(etag) == 34
    hashes = {r.sha256 for r in read_manifest(stimuli_dir)}
    assert etag.strip('"') not in hashes and hashlib.sha256(response.data).hexdigest() not in hashes
    cache = response.headers["Cache-Control"]
    assert "public" in cache and "max-age=31536000" in cache and "immutable" in cache
    assert "Last-Modified" not in response.headers
    token = url.rsplit("/", 1)[1]
    assert response.headers["Content-Disposition"] == f'inline; filename="{token}.png"'
    again = p.client.get(url, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.data == b""


def test_unknown_and_malformed_tokens_are_plain_404s(app):
    client = app.test_client()
    for token in ("AAAAAAAAAAAAAAAAAAAAAA", "../../etc/passwd", "x" * 200, "%00"):
        response = client.get(f"/i/{token}")
        assert response.status_code == 404
        assert b"Traceback" not in response.data


def test_the_stimulus_file_name_is_not_an_image_url(app, participant):
    # Images are served under the tokens of a trial only: the stimulus's own token (the name
    # of nothing public) is no URL, so two trials cannot share one.
    p, url = _first_image(participant)
    with app.extensions["hprune_db"].read() as db:
        token = url.rsplit("/", 1)[1]
        stimulus = db.scalar(
            select(Stimulus.token).join(Trial, Trial.left_id == Stimulus.id)
            .where(Trial.left_token == token)
        )  # fmt: skip
    assert p.client.get(f"/i/{stimulus}").status_code == 404


def test_x_accel_redirect_lets_nginx_send_the_file(app, participant):
    p, url = _first_image(participant)
    app.config["X_ACCEL_REDIRECT"] = "/_hprune_media/"
    try:
        response = p.client.get(url)
    finally:
        app.config["X_ACCEL_REDIRECT"] = None
    token = url.rsplit("/", 1)[1]
    accel = response.headers["X-Accel-Redirect"]
    assert accel.startswith("/_hprune_media/") and accel.endswith(".png") and token not in accel
    assert response.data == b"" and "ETag" in response.headers
