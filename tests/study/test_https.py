"""The study over HTTPS as docs/hosting.md sets it up: Debian's nginx terminating TLS on
loopback with a self-signed certificate, running the documented server block, in front of
the app started with HPRUNE_HTTPS=1 HPRUNE_PROXY_HOPS=1 and HPRUNE_X_ACCEL_REDIRECT; a whole
participant session and an admin login in Chromium."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from study.models import Answer, Participant, Study
from tests.study.conftest import PortTaken, on_a_free_port, serve_in_thread

pytestmark = [pytest.mark.browser, pytest.mark.slow]

HOSTING = Path(__file__).resolve().parents[2] / "docs" / "hosting.md"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def documented_server_block() -> str:
    """The nginx ``server { ... }`` block of docs/hosting.md, as written there."""
    blocks = re.findall(r"```nginx\n(.*?)```", HOSTING.read_text(), flags=re.S)
    assert len(blocks) == 1, "docs/hosting.md should have one nginx block"
    return blocks[0]


def nginx_config(port: int, upstream: str, media: Path, cert: Path, key: Path, run: Path) -> str:
    """The documented block with this machine's certificate, ports and paths, inside the few
    lines nginx needs to run unprivileged from a folder of its own."""
    block = documented_server_block()
    for old, new in (
        ("listen 443 ssl http2;", f"listen 127.0.0.1:{port} ssl http2;"),
        ("server_name study.example.org;", "server_name 127.0.0.1;"),
        ("# ssl_certificate ...; ssl_certificate_key ...;",
         f"ssl_certificate {cert}; ssl_certificate_key {key};"),
        ("proxy_pass http://127.0.0.1:8000;", f"proxy_pass {upstream};"),
        ("alias /srv/study/media/;", f"alias {media}/;"),
    ):  # fmt: skip
        assert old in block, f"docs/hosting.md's nginx block no longer has {old!r}"
        block = block.replace(old, new)
    temp = "\n".join(
        f"{kind}_temp_path {run / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    user = "user root;" if os.geteuid() == 0 else ""  # workers must read the test's media
    return f"""{user}
worker_processes 1;
pid {run / "nginx.pid"};
error_log {run / "error.log"} warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    types {{ image/png png; text/html html; }}
    {temp}
    {block}
}}
"""


def _wait_for_port(port: int, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            text = log.read_text() if log.exists() else ""
            if "Address already in use" in text:  # another process took the port first
                raise PortTaken(port)
            pytest.fail(f"nginx exited: {text}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    pytest.fail("nginx did not start listening")


@contextlib.contextmanager
def nginx(upstream: str, media: Path, folder: Path) -> Iterator[str]:
    """nginx with a fresh self-signed certificate for 127.0.0.1, in front of ``upstream``."""
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip

    def start(port: int) -> subprocess.Popen:
        config = folder / "nginx.conf"
        config.write_text(nginx_config(port, upstream, media, cert, key, folder))
        process = subprocess.Popen(
            [NGINX, "-p", str(folder), "-c", str(config), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            _wait_for_port(port, process, folder / "error.log")
        except BaseException:
            process.terminate()
            process.wait(10)
            raise
        return process

    port, process = on_a_free_port(start)
    try:
        yield f"https://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
def https_site(app, db_url, monkeypatch, tmp_path) -> Iterator[str]:
    """The app as a hosted study runs it (not in testing mode), behind nginx over TLS."""
    from study.app import create_app

    monkeypatch.setenv("HPRUNE_HTTPS", "1")
    monkeypatch.setenv("HPRUNE_PROXY_HOPS", "1")
    monkeypatch.setenv("HPRUNE_X_ACCEL_REDIRECT", "/_hprune_media")
    hosted = create_app(
        {
            "DATABASE_URL": db_url,
            "MEDIA_DIR": app.config["MEDIA_DIR"],
            "SECRET_KEY": secrets.token_hex(32),
        }
    )
    media = Path(app.config["MEDIA_DIR"])
    try:
        with (
            serve_in_thread(hosted) as upstream,
            nginx(upstream, media, tmp_path / "nginx") as base,
        ):
            yield base
    finally:
        hosted.extensions["hprune_db"].dispose()


def test_a_participant_session_and_an_admin_login_over_https(
    browser, https_site, make_study, app, artifacts_dir
):
    from study.admins import set_admin_password

    study = make_study(attention={"broken": 1, "repeat": 1, "max_failures": 5})
    context = browser.new_context(viewport={"width": 1280, "height": 860}, ignore_https_errors=True)
    page = context.new_page()
    page.route(
        "https://app.prolific.com/**",
        lambda route: route.fulfill(status=200, content_type="text/html", body="<p>Prolific</p>"),
    )
    refused, images, hsts = [], [], set()

    def watch(response):
        if response.url.startswith(https_site):
            hsts.add(response.headers.get("strict-transport-security"))
            if response.status >= 400:
                refused.append((response.request.method, response.url, response.status))
            if "/i/" in response.url and response.status == 200:
                images.append(response)

    page.on("response", watch)
    page.goto(f"{https_site}/s/{study.key}?PROLIFIC_PID=PIDtls&STUDY_ID=st&SESSION_ID=se")
    page.get_by_role("button", name="Continue").click()  # screen check
    page.get_by_role("button", name="I agree to take part").click()
    page.get_by_role("button", name="Continue").click()  # instructions
    page.wait_for_url(re.compile(r"/trials$"))
    while "/trials" in page.url:
        try:
            page.wait_for_selector("#trial-app[data-state=ready]", timeout=30_000)
        except Exception:
            if "/trials" not in page.url:
                break
            raise
        before = page.get_attribute("#trial-app", "data-trial")
        page.keyboard.press("ArrowLeft")
        page.wait_for_function(
            "id => !location.pathname.endsWith('/trials') || "
            "document.getElementById('trial-app').getAttribute('data-trial') !== id",
            arg=before,
        )
    page.wait_for_url(re.compile(r"/end$"))
    assert page.inner_text("#completion-code") == "DONE123"
    page.wait_for_url("https://app.prolific.com/submissions/complete?cc=DONE123", timeout=30_000)
    cookies = {c["name"]: c for c in context.cookies(https_site)}
    assert cookies["hprune_session"]["secure"] and cookies["hprune_session"]["httpOnly"]
    assert hsts == {"max-age=31536000"}  # pages, API and the images nginx sends
    for response in images:  # nginx sent the files, with the app's opaque ETag
        assert "x-accel-redirect" not in response.headers
        assert re.fullmatch(r'"[0-9a-f]{32}"', response.headers["etag"])
        assert response.headers["x-content-type-options"] == "nosniff"
    assert len(images) >= 16 and len({r.headers["content-length"] for r in images}) == 1
    with app.extensions["hprune_db"].read() as s:
        answered = s.scalars(
            select(Answer.id)
            .join(Participant, Participant.id == Answer.participant_id)
            .join(Study, Study.id == Participant.study_id)
            .where(Study.public_key == study.key)
        ).all()
    assert len(answered) == 9

    name, password = f"tls-{secrets.token_hex(3)}", secrets.token_urlsafe(12)
    set_admin_password(app.extensions["hprune_db"], name, password)
    admin = context.new_page()
    admin.on("response", watch)
    admin.goto(f"{https_site}/admin/login")
    admin.get_by_label("User name").fill(name)
    admin.get_by_label("Password").fill(password)
    with admin.expect_navigation():
        admin.get_by_role("button", name="Log in").click()
    assert "/admin" in admin.url and "/admin/login" not in admin.url
    admin.screenshot(path=str(artifacts_dir / "study-https-admin.png"))
    assert refused == [], refused  # no CSRF or Origin refusal anywhere on the way
    context.close()
