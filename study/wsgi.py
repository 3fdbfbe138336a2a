"""The WSGI entry point for hosting: ``gunicorn -w 2 --threads 4 'study.wsgi:app'``.

Configuration comes from the environment and the instance folder (see study.app; where the
instance folder is: study.instance).
"""

from __future__ import annotations

from flask import Flask


def run_gunicorn(app: Flask, *, bind: str, workers: int, threads: int) -> None:
    """Serve ``app`` with gunicorn in this process (as ``hprune study serve`` does)."""
    from gunicorn.app.base import BaseApplication

    class _Server(BaseApplication):
        def load_config(self) -> None:
            self.cfg.set("bind", bind)
            self.cfg.set("workers", workers)
            self.cfg.set("threads", threads)
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("accesslog", "-")

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
