"""Admin accounts: passwords are stored only as salted scrypt hashes (werkzeug.security), and
password guessing is slowed by a login rate limit kept in the database (so it holds across
workers and restarts):

- at most ``MAX_FAILURES_PER_ADDRESS`` failed logins from one client address, and
- at most ``MAX_FAILURES_PER_USERNAME`` failed logins for one user name (from anywhere),

within ``FAILURE_WINDOW``; beyond that, logins from that address or for that name are refused
(HTTP 429, the password not even checked) until the oldest failure leaves the window. A
successful login clears the failures of its user name and of its address.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session
from werkzeug.security import generate_password_hash

from hprune.errors import UserError
from study.db import Database
from study.models import Admin, LoginFailure

FAILURE_WINDOW = timedelta(minutes=15)
MAX_FAILURES_PER_ADDRESS = 5
MAX_FAILURES_PER_USERNAME = 10


def set_admin_password(db: Database, username: str, password: str, *, reset: bool = False) -> bool:
    """Create the admin (True), or with ``reset`` change an existing one's password (False)."""
    with db.write() as session:
        admin = session.scalar(select(Admin).where(Admin.username == username))
        if admin is not None and not reset:
            raise UserError(
                f"admin {username!r} exists already (pass --reset to change the password)"
            )
        hashed = generate_password_hash(password)
        if admin is None:
            session.add(Admin(username=username, password_hash=hashed))
            return True
        admin.password_hash = hashed
        return False


def login_wait(session: Session, username: str, address: str, now: datetime) -> timedelta | None:
    """How long a login for ``username`` from ``address`` must wait, or None if it may try."""
    since = now - FAILURE_WINDOW
    waits = []
    for column, value, limit in (
        (LoginFailure.address, address, MAX_FAILURES_PER_ADDRESS),
        (LoginFailure.username, username, MAX_FAILURES_PER_USERNAME),
    ):
        times = session.scalars(
            select(LoginFailure.at)
            .where(column == value, LoginFailure.at > since)
            .order_by(LoginFailure.at.desc())
            .limit(limit)
        ).all()
        if len(times) >= limit:  # free again when the limit-th latest failure leaves the window
            waits.append(times[-1] + FAILURE_WINDOW - now)
    return max(waits) if waits else None


def record_failure(session: Session, username: str, address: str, now: datetime) -> None:
    """Count a failed login (and forget failures that have left the window)."""
    session.execute(delete(LoginFailure).where(LoginFailure.at <= now - FAILURE_WINDOW))
    session.add(LoginFailure(username=username[:100], address=address[:64], at=now))


def clear_failures(session: Session, username: str, address: str) -> None:
    session.execute(
        delete(LoginFailure).where(
            or_(LoginFailure.username == username, LoginFailure.address == address)
        )
    )
