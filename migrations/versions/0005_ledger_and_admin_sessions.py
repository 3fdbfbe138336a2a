"""The participant ledger (simulated participants, each participant's completion code) and
server-side admin sessions (revocable, with an idle timeout), and admin passwords that must be
changed at the first login.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 09:00:00

Participants who finished before this revision were shown their study version's code for
their outcome (one code for everyone); the backfill stores exactly that code.
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ALTER TABLE ADD/DROP COLUMN (SQLite >= 3.35 has both): a batch operation would
    # copy the participants table, which SQLite's foreign keys from trials and answers forbid.
    op.add_column(
        "participants",
        sa.Column("simulated", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.add_column("participants", sa.Column("completion_code", sa.String(length=100)))
    _backfill_completion_codes()
    op.add_column(
        "admins",
        sa.Column("must_change_password", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.add_column("admins", sa.Column("password_changed_at", sa.DateTime()))
    op.create_table(
        "admin_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("admin_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["admin_id"], ["admins.id"], name=op.f("fk_admin_sessions_admin_id_admins")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_admin_sessions")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_admin_sessions_token_hash")),
    )
    with op.batch_alter_table("admin_sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_admin_sessions_admin_id"), ["admin_id"], unique=False)


def _backfill_completion_codes() -> None:
    bind = op.get_bind()
    versions = sa.table("study_versions", sa.column("id"), sa.column("spec_json"))
    people = sa.table(
        "participants", sa.column("version_id"), sa.column("outcome"), sa.column("completion_code")
    )
    for version_id, spec_json in bind.execute(sa.select(versions.c.id, versions.c.spec_json)):
        for outcome, code in json.loads(spec_json).get("completion_codes", {}).items():
            bind.execute(
                people.update()
                .where(people.c.version_id == version_id, people.c.outcome == outcome)
                .values(completion_code=code)
            )


def downgrade() -> None:
    with op.batch_alter_table("admin_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_admin_sessions_admin_id"))
    op.drop_table("admin_sessions")
    op.drop_column("admins", "password_changed_at")
    op.drop_column("admins", "must_change_password")
    op.drop_column("participants", "completion_code")
    op.drop_column("participants", "simulated")
