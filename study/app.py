"""The Flask application factory.

Configuration, lowest to highest precedence: defaults below, ``<instance>/config.py``, the
environment, then ``overrides`` (tests). Environment variables:

- ``HPRUNE_INSTANCE``: the instance folder (default: ``study.instance``, the user's data
  folder for an installed hprune, ``<checkout>/instance`` in a source checkout);
  ``HPRUNE_MEDIA_DIR``: where served image copies live (default ``<instance>/media``);
- ``DATABASE_URL``: ``sqlite:///path`` (default ``<instance>/study.sqlite3``) or
  ``postgresql+psycopg://user@host/db``;
- ``SECRET_KEY``: signs the session cookie. Without it, the key in ``<instance>/secret_key``
  (written by ``hprune study init``); with neither, the app refuses to start unless
  ``HPRUNE_ENV=development``;
- ``ADMIN_IDLE_TIMEOUT`` and ``ADMIN_SESSION_LIFETIME`` (``config.py``, timedeltas): when an
  admin's login ends (default 30 minutes unused, 12 hours in all);
- ``RANDOM_SEED`` (``config.py``, an int; tests and demos only): participants' trial orders
  derived from it (``study.flow.identity.order_seed``) instead of random, so that a run can be
  repeated; each participant's seed is stored and exported either way;
- ``HPRUNE_HTTPS=1``: cookies marked Secure, HSTS; ``HPRUNE_PROXY_HOPS=N``: trust N proxies'
  X-Forwarded-* headers; ``HPRUNE_X_ACCEL_REDIRECT=/internal/prefix``: let nginx send the
  images (docs/hosting.md).

Cross-site request forgery: every POST needs Flask-WTF's token, and a browser's POST must
come from this origin (:func:`check_origin`). Flask-WTF's own HTTPS check (a same-origin
``Referer`` on every POST, ``WTF_CSRF_SSL_STRICT``) is off: the Origin check does its job,
and it refused every browser that sends no Referer (privacy settings and extensions).
Pages send ``Referrer-Policy: same-origin``: nothing leaves for other sites (the study key
stays out of Prolific's logs), and the app's own requests keep their Origin.
"""

from __future__ import annotations

import os
import secrets
from datetime import timedelta
from urllib.parse import urlsplit

from flask import Flask, current_app, jsonify, render_template, request
from flask_wtf.csrf import CSRFError, CSRFProtect
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from study import admins
from study.blueprints import admin, api, participant
from study.flask_db import get_db, init_app
from study.flow.errors import FlowError
from study.instance import SECRET_KEY_FILE, database_url, instance_folder, media_folder, secret_key

csrf = CSRFProtect()
HSTS_MAX_AGE = 365 * 24 * 3600
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CROSS_SITE = "This request came from another site and was refused."


def create_app(overrides: dict | None = None) -> Flask:
    instance = instance_folder()
    https = os.environ.get("HPRUNE_HTTPS") == "1"
    app = Flask(__name__, instance_path=str(instance), instance_relative_config=True)
    app.config.from_mapping(
        DATABASE_URL=database_url(instance),
        MEDIA_DIR=str(media_folder(instance)),
        SECRET_KEY=secret_key(instance),
        HPRUNE_ENV=os.environ.get("HPRUNE_ENV", "production"),
        X_ACCEL_REDIRECT=os.environ.get("HPRUNE_X_ACCEL_REDIRECT") or None,
        SESSION_COOKIE_NAME="hprune_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=https,
        PREFERRED_URL_SCHEME="https" if https else "http",
        HTTPS=https,
        HSTS_MAX_AGE=HSTS_MAX_AGE,
        PERMANENT_SESSION_LIFETIME=timedelta(days=30),
        # An admin's server-side session (study.admins): over after this long unused, or old.
        ADMIN_IDLE_TIMEOUT=timedelta(minutes=30),
        ADMIN_SESSION_LIFETIME=timedelta(hours=12),
        # Counted from the last change (arrival, CSRF secret): not re-signed on every request.
        SESSION_REFRESH_EACH_REQUEST=False,
        MAX_CONTENT_LENGTH=16 * 1024,
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the session: a study can take an hour
        WTF_CSRF_SSL_STRICT=False,  # check_origin instead (module docstring)
        ANSWER_MAX_BYTES=4096,
        DEMO_NOTE=os.environ.get("HPRUNE_DEMO_NOTE") or None,
        RANDOM_SEED=None,  # module docstring: never in production
    )
    app.config.from_pyfile("config.py", silent=True)
    app.config.update(overrides or {})
    if not app.config["SECRET_KEY"]:
        if app.config["HPRUNE_ENV"] != "development" and not app.testing:
            raise RuntimeError(
                "SECRET_KEY is not set: export SECRET_KEY, or run 'hprune study init' to write "
                f"{instance / SECRET_KEY_FILE} (HPRUNE_ENV=development allows a throw-away key)"
            )
        app.config["SECRET_KEY"] = secrets.token_hex(32)

    hops = int(os.environ.get("HPRUNE_PROXY_HOPS") or 0)
    if hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)

    init_app(app)
    app.before_request(check_origin)
    admins.warm_up()
    csrf.init_app(app)
    app.register_blueprint(participant.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(admin.bp)
    _register_errors(app)
    app.after_request(_security_headers)

    @app.get("/")
    def index():
        return render_template("index.html"), 200

    @app.get("/healthz")
    def healthz():
        """200 ``{"ok": true}`` while the database answers, else 503 (docs/study-api.md)."""
        try:
            with get_db(app).read() as db:
                db.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            app.logger.warning("health check: the database does not answer: %s", exc)
            return jsonify(ok=False, error="The database cannot be reached."), 503
        return jsonify(ok=True)

    return app


def wants_json() -> bool:
    return request.path.startswith("/api/")


def error_response(status: int, message: str):
    if wants_json():
        return jsonify(error=message), status
    return render_template("error.html", status=status, message=message), status


GENERIC = {
    400: "The request was not understood.",
    403: "You are not allowed to do that.",
    404: "There is nothing here.",
    405: "This address does not accept that kind of request.",
    413: "The request is too large.",
    429: "Too many requests; please wait a moment.",
    500: "Something went wrong on our side; please reload the page in a moment.",
}


def _register_errors(app: Flask) -> None:
    @app.errorhandler(CSRFError)
    def csrf_error(exc: CSRFError):
        return error_response(400, exc.description)

    @app.errorhandler(FlowError)
    def flow_error(exc: FlowError):
        return error_response(exc.status, exc.message)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        status = exc.code or 500
        return error_response(status, GENERIC.get(status, exc.name))

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        app.logger.exception("unhandled error")
        return error_response(500, GENERIC[500])


def check_origin():
    """Refuse a state-changing request that the browser says another site sent.

    Browsers send ``Origin`` with every POST, from a form or from ``fetch``: it must be this
    app's own (scheme, host and port, as the proxy forwards them: docs/hosting.md). ``null``
    (a sandboxed frame, a cross-site redirect) is refused too. A browser too old to send it
    sends a ``Referer`` (pages ask for it same-origin), which must then be ours. Clients that
    send neither are not browsers, which cross-site forgery needs, and still need the token.
    """
    if request.method not in UNSAFE_METHODS:
        return None
    origin = request.headers.get("Origin")
    if origin is None:
        referer = request.headers.get("Referer")
        if referer is None:
            return None
        parts = urlsplit(referer)
        origin = f"{parts.scheme}://{parts.netloc}"
    if origin != f"{request.scheme}://{request.host}":
        return error_response(403, CROSS_SITE)
    return None


def _security_headers(response):
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if current_app.config["HTTPS"]:
        response.headers.setdefault(
            "Strict-Transport-Security", f"max-age={current_app.config['HSTS_MAX_AGE']}"
        )
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self'; script-src 'self'; style-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'",
    )
    return response
