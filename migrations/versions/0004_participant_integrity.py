"""Participant side of a paid study: per-trial image tokens, a second served copy of each
image for attention trials, resume secrets, the criterion order, and the display timing.

- ``trials.left_token`` / ``right_token``: the image URLs of one trial (fresh per trial, so a
  repeated trial cannot be recognised by its URLs); existing trials get tokens here.
- ``trials.min_display_ms``: how long the images were shown before an answer was taken.
- ``answers.load_ms``: client time from receiving the trial to its images being displayed.
- ``stimuli.check_media_path``: the served copy used in attention trials (same pixels to
  within one grey level, other bytes); empty for images imported before (the next import
  of the study re-encodes them).
- ``participants.resume_hash``: SHA-256 of the participant's resume secret (lab and
  anonymous participants); ``participants.criterion_order``: the order of the criterion
  blocks, names joined by ``|``.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 09:00:00
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


# Columns are added, and dropped, without recreating tables (SQLite's batch mode would copy
# and drop them, which its foreign keys refuse for a referenced table); uniqueness comes
# from unique indexes, which both databases create and drop in place.
NEW_COLUMNS = {
    "trials": [
        sa.Column("left_token", sa.String(length=32), nullable=True),
        sa.Column("right_token", sa.String(length=32), nullable=True),
        sa.Column("min_display_ms", sa.Integer(), nullable=True),
    ],
    "answers": [sa.Column("load_ms", sa.Float(), nullable=True)],
    "stimuli": [sa.Column("check_media_path", sa.Text(), nullable=True)],
    "participants": [
        sa.Column("resume_hash", sa.String(length=64), nullable=True),
        sa.Column("criterion_order", sa.Text(), nullable=True),
    ],
}
UNIQUE_INDEXES = {
    "ix_trials_left_token": ("trials", "left_token"),
    "ix_trials_right_token": ("trials", "right_token"),
    "ix_participants_resume_hash": ("participants", "resume_hash"),
}


def upgrade() -> None:
    for table, columns in NEW_COLUMNS.items():
        for column in columns:
            op.add_column(table, column)
    _fill_trial_tokens()
    for name, (table, column) in UNIQUE_INDEXES.items():
        op.create_index(name, table, [column], unique=True)


def _fill_trial_tokens() -> None:
    """Give every existing trial its own image tokens (a pair trial two, a rating trial one)."""
    trials = sa.table(
        "trials",
        sa.column("id", sa.Integer),
        sa.column("presentation", sa.String),
        sa.column("left_token", sa.String),
        sa.column("right_token", sa.String),
    )
    connection = op.get_bind()
    rows = connection.execute(sa.select(trials.c.id, trials.c.presentation)).all()
    update = (
        trials.update()
        .where(trials.c.id == sa.bindparam("b_id"))
        .values(left_token=sa.bindparam("b_left"), right_token=sa.bindparam("b_right"))
    )
    batch = [
        {
            "b_id": trial_id,
            "b_left": secrets.token_urlsafe(16),
            "b_right": secrets.token_urlsafe(16) if presentation == "pair" else None,
        }
        for trial_id, presentation in rows
    ]
    if batch:
        connection.execute(update, batch)


def downgrade() -> None:
    for name, (table, _) in UNIQUE_INDEXES.items():
        op.drop_index(name, table_name=table)
    for table, columns in NEW_COLUMNS.items():
        for column in columns:  # ALTER TABLE ... DROP COLUMN: SQLite 3.35+, PostgreSQL
            op.execute(f"ALTER TABLE {table} DROP COLUMN {column.name}")
