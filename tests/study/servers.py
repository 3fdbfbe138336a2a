"""Servers of the tests' own: an ``hprune`` or demo process started on a free port, answering
``/healthz``, and stopped afterwards."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import requests

from tests.study.conftest import PortTaken, on_a_free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def hprune_env(instance: Path, **extra: str) -> dict[str, str]:
    """The environment of an ``hprune`` subprocess that runs this checkout's code."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "SECRET_KEY")}
    env.update(PYTHONPATH=str(ROOT), HPRUNE_INSTANCE=str(instance), **extra)
    return env


@contextlib.contextmanager
def started(
    command: list[str], env: dict, log: Path, cwd: Path = ROOT
) -> Iterator[subprocess.Popen]:
    """A process of our own (its own process group), stopped afterwards (SIGINT: gunicorn
    stops at once, where SIGTERM waits for its graceful timeout)."""
    with log.open("w") as out:
        process = subprocess.Popen(
            command, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        try:
            yield process
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGINT)  # gunicorn: quick shutdown
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)


def wait_until(check, what: str, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def answers(url: str) -> bool:
    with contextlib.suppress(requests.RequestException):
        return requests.get(url, timeout=2).status_code == 200
    return False


#: What a server started by these tests says when another process took its port first.
SERVE_BUSY = "cannot serve on 127.0.0.1:{port}"  # hprune study serve
DEMO_BUSY = "port {port} is in use"  # demo/serve_demo.sh


def serving(
    command: Callable[[int], list[str]],
    env: dict,
    log: Path,
    busy: str = SERVE_BUSY,
    cwd: Path = ROOT,
    timeout: float = 120.0,
) -> tuple[int, contextlib.ExitStack]:
    """``command(port)`` started on a free port and answering ``/healthz`` (on another port
    when the one chosen was taken before the server bound it, as its log's ``busy`` line
    says): the port, and the stack that stops the server."""

    def start(port: int) -> contextlib.ExitStack:
        stack = contextlib.ExitStack()
        process = stack.enter_context(started(command(port), env, log, cwd=cwd))
        try:
            url = f"http://127.0.0.1:{port}/healthz"
            wait_until(lambda: process.poll() is not None or answers(url), log.name, timeout)
            if process.poll() is not None:
                text = log.read_text()
                if busy.format(port=port) in text:
                    raise PortTaken(port)
                raise AssertionError(text)
        except BaseException:
            stack.close()
            raise
        return stack

    return on_a_free_port(start)
