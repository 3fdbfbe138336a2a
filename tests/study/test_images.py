"""Images: opaque tokens, strong ETags, a year of caching, nothing about the file."""

from __future__ import annotations


def _first_image(participant):
    p, _ = participant()
    body = p.start(pid="PID-img")
    return p, body["trial"]["images"]["left"]


def test_image_headers_cache_and_conditional_requests(participant):
    p, url = _first_image(participant)
    response = p.client.get(url)
    assert response.status_code == 200 and response.mimetype == "image/png"
    etag = response.headers["ETag"]
    assert etag.startswith('"') and len(etag) == 66
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


def test_x_accel_redirect_lets_nginx_send_the_file(app, participant):
    p, url = _first_image(participant)
    app.config["X_ACCEL_REDIRECT"] = "/_hprune_media/"
    try:
        response = p.client.get(url)
    finally:
        app.config["X_ACCEL_REDIRECT"] = None
    token = url.rsplit("/", 1)[1]
    accel = response.headers["X-Accel-Redirect"]
    assert accel.startswith("/_hprune_media/") and accel.endswith(f"/{token}.png")
    assert response.data == b"" and "ETag" in response.headers
