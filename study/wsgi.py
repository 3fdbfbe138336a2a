"""The WSGI entry point for hosting: ``gunicorn -w 2 --threads 4 'study.wsgi:app'``, and
gunicorn run in-process by ``hprune study serve``.

Configuration comes from the environment and the instance folder (see study.app; where the
instance folder is: study.instance).
"""

from __future__ import annotations

import errno
import hashlib
import os
import socket
import tempfile
from pathlib import Path

from flask import Flask

from hprune.errors import UserError

# AF_UNIX paths are limited to 108 bytes on Linux (104 on macOS), the final NUL included.
MAX_UNIX_SOCKET_PATH = 100


def ensure_port_free(host: str, port: int) -> None:
    """A one-line :class:`UserError` if nothing could listen on ``host:port`` now (another
    server has it, or the address is not this machine's), checked before anything says
    "serving on". The probe binds as gunicorn and werkzeug do (``SO_REUSEADDR``), so a port
    left in TIME_WAIT by a stopped server counts as free, a listening one as busy."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise UserError(f"cannot serve on {host}:{port}: {exc.strerror}") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            hint = " (another server is running there: stop it, or pick another --port)"
            busy = exc.errno == errno.EADDRINUSE
            raise UserError(
                f"cannot serve on {host}:{port}: {exc.strerror}{hint if busy else ''}"
            ) from None


def control_socket_path(instance: Path, port: int) -> Path:
    """gunicorn's control socket (``gunicornc -s PATH``) of the server of ``instance`` on
    ``port``: ``<instance>/gunicorn-<port>.ctl``, so that servers of other instances (or on
    other ports) keep their own instead of taking over one shared ``~/.gunicorn/gunicorn.ctl``.
    A path too long for a Unix socket goes to the temporary folder, named by a hash of it."""
    path = Path(instance) / f"gunicorn-{port}.ctl"
    if len(os.fsencode(path)) <= MAX_UNIX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(os.fsencode(path)).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"hprune-gunicorn-{digest}.ctl"


def run_gunicorn(
    app: Flask, *, bind: str, workers: int, threads: int, control_socket: Path | None = None
) -> None:
    """Serve ``app`` with gunicorn in this process (as ``hprune study serve`` does)."""
    from gunicorn.app.base import BaseApplication

    class _Server(BaseApplication):
        def load_config(self) -> None:
            self.cfg.set("bind", bind)
            self.cfg.set("workers", workers)
            self.cfg.set("threads", threads)
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("accesslog", "-")
            if control_socket is not None:
                self.cfg.set("control_socket", str(control_socket))

        def load(self) -> Flask:
            return app

    _Server().run()


def __getattr__(name: str):
    # `study.wsgi:app` is built on first access, so importing this module has no side effects.
    if name == "app":
        from study.app import create_app

        globals()["app"] = create_app()
        return globals()["app"]
    raise AttributeError(name)
