"""Admin accounts: passwords, logins and the sessions of logged-in admins.

Passwords are stored only as salted scrypt hashes (werkzeug.security). A password that
``hprune study admin create --generate`` made up is *temporary*: the dashboard asks for a new
one at the first login, before it shows anything else.

Logins are slowed by a rate limit kept in the database (so it holds across workers and
restarts), counted over ``FAILURE_WINDOW``:

- a client address with ``MAX_FAILURES_PER_ADDRESS`` failed logins is refused;
- a user name with ``MAX_FAILURES_PER_USERNAME`` failed logins (from anywhere) is refused
  only to addresses that have failed themselves: whoever guesses at the admin's name cannot
  lock the admin out of an address that has not failed.

A refused login gets HTTP 429 without its password being checked. The limit is race-free:
every login first *reserves* its attempt (counted as a failure from then on) in a short
transaction that all logins take in turn (``BEGIN IMMEDIATE`` on SQLite, a transaction-level
advisory lock on PostgreSQL), then checks the password outside it; a correct password deletes
the reservation and the earlier failures of its address. So however many attempts arrive at
once, no more passwords are checked than the limit allows.

A login for an unknown user name checks the password against a dummy hash made the same way
as real ones, so its time does not tell which names exist.

A logged-in browser holds a random token in its (signed) session cookie; the database keeps
the token's hash in ``admin_sessions``. Logging out deletes it, a password change or reset
deletes all of that admin's sessions, and a session unused for ``idle`` or older than
``lifetime`` (the app's ``ADMIN_IDLE_TIMEOUT``, ``ADMIN_SESSION_LIFETIME``) is over.
"""

from __future__ import annotations

import functools
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, text
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from hprune.errors import UserError
from study.db import Database
from study.models import Admin, AdminSession, LoginFailure

FAILURE_WINDOW = timedelta(minutes=15)
MAX_FAILURES_PER_ADDRESS = 5
MAX_FAILURES_PER_USERNAME = 10
MIN_PASSWORD_LENGTH = 10
#: Seen-time updates of a session are written at most this often (not on every page).
SEEN_RESOLUTION = timedelta(minutes=1)
# The advisory lock all logins take in turn on PostgreSQL (any fixed 64-bit number).
_LOGIN_LOCK = int.from_bytes(hashlib.sha256(b"hprune admin login").digest()[:8], "big", signed=True)


def set_admin_password(
    db: Database,
    username: str,
    password: str,
    *,
    reset: bool = False,
    temporary: bool = False,
    exist_ok: bool = False,
) -> str:
    """Create the admin (``"created"``); with ``reset`` change an existing one's password and
    end its sessions (``"reset"``); with ``exist_ok`` leave an existing one as it is
    (``"kept"``). A ``temporary`` password must be changed at the first login."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    with db.write() as session:
        admin = session.scalar(select(Admin).where(Admin.username == username))
        if admin is not None and exist_ok and not reset:
            return "kept"
        if admin is not None and not reset:
            raise UserError(
                f"admin {username!r} exists already (pass --reset to change the password)"
            )
        hashed = generate_password_hash(password)
        if admin is None:
            session.add(
                Admin(username=username, password_hash=hashed, must_change_password=temporary)
            )
            return "created"
        admin.password_hash = hashed
        admin.must_change_password = temporary
        admin.password_changed_at = None
        end_all_sessions(session, admin.id)
        return "reset"


def change_password(session: Session, admin: Admin, password: str, now: datetime) -> None:
    """The admin's own new password (no longer temporary); every session of theirs ends."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    admin.password_hash = generate_password_hash(password)
    admin.must_change_password = False
    admin.password_changed_at = now
    end_all_sessions(session, admin.id)


# --- logging in ----------------------------------------------------------------------------


@functools.cache
def _dummy_hash() -> str:
    """A hash made as real ones are, for checking the passwords of unknown user names."""
    return generate_password_hash(secrets.token_hex(16))


def warm_up() -> None:
    """Make the dummy hash now, so that the first unknown-name login is not the slow one."""
    _dummy_hash()


def password_matches(password_hash: str | None, password: str) -> bool:
    """Check ``password`` against ``password_hash`` (None: an unknown user) in the same time."""
    matches = check_password_hash(password_hash or _dummy_hash(), password)
    return matches and password_hash is not None


def login_wait(session: Session, username: str, address: str, now: datetime) -> timedelta | None:
    """How long a login for ``username`` from ``address`` must wait, or None if it may try
    (the rules in the module docstring)."""
    since = now - FAILURE_WINDOW

    def times(column, value, limit: int) -> list[datetime]:
        return list(
            session.scalars(
                select(LoginFailure.at)
                .where(column == value, LoginFailure.at > since)
                .order_by(LoginFailure.at.desc())
                .limit(limit)
            )
        )

    waits = []
    by_address = times(LoginFailure.address, address, MAX_FAILURES_PER_ADDRESS)
    if len(by_address) >= MAX_FAILURES_PER_ADDRESS:  # free when the limit-th latest one leaves
        waits.append(by_address[-1] + FAILURE_WINDOW - now)
    if by_address:  # only an address that has failed is held to the user name's limit
        by_name = times(LoginFailure.username, username[:100], MAX_FAILURES_PER_USERNAME)
        if len(by_name) >= MAX_FAILURES_PER_USERNAME:
            waits.append(min(by_name[-1], by_address[0]) + FAILURE_WINDOW - now)
    return max(waits) if waits else None


@dataclass(frozen=True)
class Attempt:
    """A login attempt that may check its password: its reserved failure row, and the hash
    of the admin it names (None for an unknown name)."""

    failure_id: int
    admin_id: int | None
    password_hash: str | None


def serialise_logins(session: Session) -> None:
    """Make the logins' reservations take turns (SQLite: BEGIN IMMEDIATE already does)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOGIN_LOCK})


def begin_attempt(db: Database, username: str, address: str, now: datetime) -> Attempt | timedelta:
    """Reserve a login attempt (counted as a failure until it succeeds), or how long to wait."""
    with db.write() as session:
        serialise_logins(session)
        wait = login_wait(session, username, address, now)
        if wait is not None:
            return wait
        session.execute(delete(LoginFailure).where(LoginFailure.at <= now - FAILURE_WINDOW))
        failure = LoginFailure(username=username[:100], address=address[:64], at=now)
        session.add(failure)
        admin = session.execute(
            select(Admin.id, Admin.password_hash).where(Admin.username == username)
        ).first()
        session.flush()
        return Attempt(failure.id, *(admin or (None, None)))


def succeed(db: Database, attempt: Attempt, address: str, now: datetime) -> str:
    """A correct password: forget this address's failures (the reservation among them) and
    open a session; its token, for the session cookie."""
    with db.write() as session:
        session.execute(
            delete(LoginFailure).where(
                (LoginFailure.id == attempt.failure_id) | (LoginFailure.address == address[:64])
            )
        )
        session.get(Admin, attempt.admin_id).last_login_at = now
        return open_session(session, attempt.admin_id, now)


# --- sessions ------------------------------------------------------------------------------


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def open_session(session: Session, admin_id: int, now: datetime) -> str:
    """A new session of the admin; its token (kept by the browser, hashed here)."""
    token = secrets.token_urlsafe(32)
    session.add(
        AdminSession(
            token_hash=_token_hash(token), admin_id=admin_id, created_at=now, last_seen_at=now
        )
    )
    return token


def find_session(
    session: Session, token: object, now: datetime, *, idle: timedelta, lifetime: timedelta
) -> Admin | None:
    """The admin of a live session ``token`` (its seen-time updated), or None; a session
    past its idle timeout or lifetime is deleted."""
    if not isinstance(token, str) or not token:
        return None
    row = session.scalar(select(AdminSession).where(AdminSession.token_hash == _token_hash(token)))
    if row is None:
        return None
    if now - row.last_seen_at > idle or now - row.created_at > lifetime:
        session.delete(row)
        return None
    if now - row.last_seen_at >= SEEN_RESOLUTION:
        row.last_seen_at = now
    return session.get(Admin, row.admin_id)


def end_session(session: Session, token: object) -> None:
    if isinstance(token, str) and token:
        session.execute(delete(AdminSession).where(AdminSession.token_hash == _token_hash(token)))


def end_all_sessions(session: Session, admin_id: int) -> None:
    session.execute(delete(AdminSession).where(AdminSession.admin_id == admin_id))


def live_sessions(session: Session, admin_id: int) -> int:
    return session.scalar(
        select(func.count(AdminSession.id)).where(AdminSession.admin_id == admin_id)
    )
