"""Serving: the port is checked before "serving on", each server has its own gunicorn control
socket, and `make demo` (demo/serve_demo.sh) never disturbs a demo that is already running."""

from __future__ import annotations

import contextlib
import re
import socket
import sqlite3
import subprocess
from pathlib import Path

import pytest
import requests

from tests.study.conftest import run_cli
from tests.study.servers import BIN, DEMO_BUSY, ROOT, hprune_env, serving, wait_until


def test_serve_on_a_busy_port_says_so_before_serving_on(app, monkeypatch):
    monkeypatch.setenv("SECRET_KEY", "test-secret")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("study", "serve", "--db", app.config["DATABASE_URL"], "--port", str(port))
    assert result.exit_code == 2, result.output
    assert "serving on" not in result.output
    assert f"cannot serve on 127.0.0.1:{port}" in result.output and "--port" in result.output


@pytest.mark.slow
def test_two_servers_keep_their_own_gunicorn_control_sockets(tmp_path):
    """Was one shared ~/.gunicorn/gunicorn.ctl (or $XDG_RUNTIME_DIR's): the second server took
    it over, and stopping it removed the first one's."""
    from gunicorn.ctl.client import ControlClient

    envs = {}
    for name in ("a", "b"):
        envs[name] = hprune_env(tmp_path / name)
        subprocess.run([BIN / "hprune", "study", "init"], env=envs[name], cwd=ROOT, check=True,
                       capture_output=True)  # fmt: skip

    def listeners(path: Path) -> str:
        with ControlClient(str(path), timeout=10) as client:
            return str(client.send_command("show listeners"))

    serve = [str(BIN / "hprune"), "study", "serve", "--workers", "1", "--threads", "1", "--port"]
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    a_port, a_server = serving(lambda port: [*serve, str(port)], envs["a"], tmp_path / "a.log")
    with a_server:
        a_socket = a_dir / f"gunicorn-{a_port}.ctl"
        wait_until(a_socket.exists, "a's control socket")
        b_port, b_server = serving(lambda port: [*serve, str(port)], envs["b"], tmp_path / "b.log")
        with b_server:
            b_socket = b_dir / f"gunicorn-{b_port}.ctl"
            wait_until(b_socket.exists, "b's control socket")
            assert str(b_port) in listeners(b_socket) and str(b_port) not in listeners(a_socket)
        assert str(a_port) in listeners(a_socket)  # b has stopped; a's socket is a's still
    assert f"gunicorn control socket: {a_socket}" in (tmp_path / "a.log").read_text()


def _password_hash(instance: Path) -> str:
    with contextlib.closing(sqlite3.connect(instance / "study.sqlite3")) as db:
        return db.execute("SELECT password_hash FROM admins WHERE username = 'admin'").fetchone()[0]


@pytest.mark.slow
def test_make_demo_never_touches_a_running_demo(tmp_path):
    """Was: a second `make demo` reset the admin password, then failed on the busy port,
    locking the running demo's admin out."""
    instance = tmp_path / "demo"
    env = hprune_env(instance, HPRUNE=str(BIN / "hprune"))
    demo = ["bash", str(ROOT / "demo" / "serve_demo.sh")]
    log = tmp_path / "first.log"
    on = lambda free: ["env", f"DEMO_PORT={free}", *demo]  # noqa: E731
    port, first = serving(on, env, log, DEMO_BUSY, timeout=300)
    env["DEMO_PORT"] = str(port)
    with first:
        text = log.read_text()
        password = re.search(r"temporary password (\S+)", text)[1]
        assert f"export HPRUNE_INSTANCE={instance}" in text
        listed = subprocess.run([BIN / "hprune", "study", "list"], env=hprune_env(instance),
                                cwd=ROOT, capture_output=True, text=True)  # fmt: skip
        assert listed.returncode == 0 and listed.stdout.startswith("demo\t"), listed.stderr
        before = _password_hash(instance)

        again = subprocess.run(demo, env=env, cwd=ROOT, capture_output=True, text=True,
                               timeout=120)  # fmt: skip
        assert again.returncode == 1
        assert f"port {port} is in use" in again.stderr
        assert f"DEMO_PORT={port + 1} make demo" in again.stderr
        assert _password_hash(instance) == before

        _, beside = serving(on, env, tmp_path / "second.log", DEMO_BUSY)
        with beside:
            second = (tmp_path / "second.log").read_text()
            assert "the password you chose" in second and "temporary password" not in second
        assert _password_hash(instance) == before
        login = requests.Session()
        page = login.get(f"http://127.0.0.1:{port}/admin/login", timeout=10).text
        token = re.search(r'name="csrf-token" content="([^"]+)"', page)[1]
        response = login.post(
            f"http://127.0.0.1:{port}/admin/login",
            data={"username": "admin", "password": password, "csrf_token": token},
            allow_redirects=False,
            timeout=30,
        )
        assert response.status_code == 303  # the first password still works
