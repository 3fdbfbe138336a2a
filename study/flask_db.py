"""The study database inside the web app, as flaskr's db helpers: :func:`init_app` binds one
:class:`~study.db.Database` to the app, :func:`get_db` finds it in any request.

A request opens its own transactions on it (``with get_db().write() as db:``), committed
before the page renders, so that on SQLite the write lock is not held while a template
renders. Kept apart from :mod:`study.db`, which the CLI, the export and the analysis package
use without Flask.
"""

from __future__ import annotations

from flask import Flask, current_app

from study.db import Database

EXTENSION = "hprune_db"


def init_app(app: Flask) -> Database:
    """Open the database at ``app.config["DATABASE_URL"]`` for ``app``."""
    db = app.extensions[EXTENSION] = Database(app.config["DATABASE_URL"])
    return db


def get_db(app: Flask | None = None) -> Database:
    """The database of ``app``, or of the app handling the current request."""
    return (app or current_app).extensions[EXTENSION]
