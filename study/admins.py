"""Admin accounts: passwords are stored only as salted scrypt hashes (werkzeug.security)."""

from __future__ import annotations

from sqlalchemy import select
from werkzeug.security import generate_password_hash

from hprune.errors import UserError
from study.db import Database
from study.models import Admin


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
